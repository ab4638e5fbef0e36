"""The kernels' tests once more with Numba's bounds checking on: no out-of-bounds access."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(os.environ.get("NUMBA_BOUNDSCHECK") == "1", reason="already running with bounds checks")
@pytest.mark.slow
def test_kernels_with_boundscheck(tmp_path: Path) -> None:
    # A separate cache folder: bounds-checked machine code must not mix with the normal cache.
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
         "tests/postprocess/test_nms.py", "tests/postprocess/test_yolo.py", "tests/postprocess/test_anchors.py", "tests/test_preprocess.py",
         "tests/test_fuzz.py::test_decode_any_array", "tests/test_fuzz.py::test_nms_any_boxes"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "IndexError" not in proc.stdout

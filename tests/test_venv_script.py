"""scripts/_venv.sh: when ``ensure_venv`` installs, and which extras it installs.

The venv's ``python`` is a stand-in that records its arguments, so each case shows exactly
which pip commands the shared set-up of ``scripts/demo`` and ``scripts/test`` would run.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TORCH = "torch==2.13.0"


def project_hash() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    """A venv whose python appends each call's arguments to ``calls.log``."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path / "calls.log"}\n')
    python.chmod(0o755)
    return tmp_path / "venv"


def ensure(venv: Path, extras: str) -> list[str]:
    """Run ``ensure_venv extras`` against ``venv``; the pip commands it ran, one per line."""
    log = venv.parent / "calls.log"
    log.unlink(missing_ok=True)
    subprocess.run(["bash", "-c", f'source "{ROOT}/scripts/_venv.sh"; ensure_venv "{extras}"'],
                   env={"PATH": "/usr/bin:/bin", "STREAMER_VENV": str(venv), "TORCH_SPEC": TORCH},
                   check=True, capture_output=True, timeout=30)
    return log.read_text().splitlines() if log.exists() else []


def stamp(venv: Path) -> str:
    return (venv / ".streamer-installed").read_text().strip()


def test_a_new_venv_installs_torch_first_then_the_extras(venv: Path) -> None:
    calls = ensure(venv, "onnx,assets")
    installs = [c for c in calls if " install " in f" {c} " and "--upgrade pip" not in c]
    assert installs[0].endswith(f"install {TORCH}")
    assert installs[1].endswith(f"install -e {ROOT}[assets,onnx]")
    assert stamp(venv) == f"{project_hash()} assets,onnx {TORCH}"


def test_the_demo_after_the_tests_installs_nothing(venv: Path) -> None:
    (venv / ".streamer-installed").write_text(f"{project_hash()} assets,onnx,ray,test {TORCH}\n")
    assert ensure(venv, "onnx,assets") == []
    assert stamp(venv) == f"{project_hash()} assets,onnx,ray,test {TORCH}"


def test_the_tests_after_the_demo_add_their_extras_and_keep_the_demos(venv: Path) -> None:
    (venv / ".streamer-installed").write_text(f"{project_hash()} assets,onnx {TORCH}\n")
    calls = ensure(venv, "onnx,assets,test,ray")
    assert any(c.endswith(f"install -e {ROOT}[assets,onnx,ray,test]") for c in calls), calls
    assert stamp(venv) == f"{project_hash()} assets,onnx,ray,test {TORCH}"
    # and then both commands are satisfied
    assert ensure(venv, "onnx,assets") == []
    assert ensure(venv, "onnx,assets,test,ray") == []


@pytest.mark.parametrize("old", [f"0123456789abcdef assets,onnx,ray,test {TORCH}",
                                 f"{{project}} assets,onnx,ray,test torch==2.14.1"])
def test_a_changed_pyproject_or_torch_pin_reinstalls_only_what_is_asked(venv: Path, old: str) -> None:
    (venv / ".streamer-installed").write_text(old.format(project=project_hash()) + "\n")
    calls = ensure(venv, "onnx,assets")
    assert any(c.endswith(f"install {TORCH}") for c in calls), calls
    assert any(c.endswith(f"install -e {ROOT}[assets,onnx]") for c in calls), calls
    assert stamp(venv) == f"{project_hash()} assets,onnx {TORCH}"

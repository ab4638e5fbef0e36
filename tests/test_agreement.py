"""streamer vs Ultralytics' own pipeline on all three sample clips, for both CPU backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.agreement import f1_score, from_jsonl, from_reference
from tests.test_cli_annotate import run_cli

DATA = Path(__file__).parent / "data"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
@pytest.mark.parametrize("clip", ["bikes", "carphone", "bigbuckbunny"])
def test_agrees_with_ultralytics(clip: str, backend: str, tmp_path: Path) -> None:
    if clip == "bikes" and backend == "onnxruntime":
        pytest.skip("covered by tests/test_cli_annotate.py::test_agrees_with_ultralytics")
    out = tmp_path / f"{clip}.jsonl"
    proc = run_cli("annotate", f"sample:{clip}", "--backend", backend, "--no-video", "--no-progress",
                   "--jsonl", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"[{backend}," in proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    reference = json.loads((DATA / f"ultralytics_{clip}.json").read_text())
    f1, tp, fp, fn = f1_score(from_jsonl(records), from_reference(reference["frames"]))
    assert f1 >= 0.98, f"{clip} [{backend}]: F1 {f1:.4f} (TP {tp}, FP {fp}, FN {fn})"

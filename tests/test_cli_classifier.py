"""The built-in classifier from the command line: a folder of real pictures prints one line per
picture in order, a clip carries the top classes into JSONL and the overlay, and a CPU run on
ONNX Runtime never loads PyTorch."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import streamer
from streamer.models import _cuda_driver_present, _torch_build_has_accelerator
from streamer.models.efficientnet import EfficientNetLite0, imagenet_names
from streamer.sinks.images import ConsoleSink
from streamer.types import Classifications, Frame, Result
from tests import lite0

LINE = re.compile(r"^\[(\d+)/(\d+)\] (\S+) (.+) \((\d{1,3}\.\d{2})%\)$")


def run(*args: str, cwd: Path, code: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m streamer ARGS`` (or ``python -c CODE ARGS``) with the test run's export cache."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", XDG_CACHE_HOME=str(lite0.cache_home()))
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "streamer", *args]
    root = Path(__file__).parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        ([], []),
        ([("cat.jpg", 281, 0.872)], ["[1/17] cat.jpg tabby (87.20%)"]),
        ([("a.png", 0, 1.0), ("b.png", 444, 0.00004)],
         ["[1/17] a.png tench (100.00%)", "[2/17] b.png bicycle-built-for-two (0.00%)"]),
    ],
)
def test_console_line_format(results: list[tuple[str, int, float]], expected: list[str]) -> None:
    out = io.StringIO()
    sink = ConsoleSink(17, stream=out)
    for name, class_id, p in results:
        frame = Frame(name, 0, np.zeros((2, 2, 3), np.uint8), None, 0.0)
        classes = Classifications(np.array([class_id], np.int32), np.array([p], np.float32))
        sink.write(Result(frame=frame, classes=classes, names=imagenet_names()))
    assert out.getvalue().splitlines() == expected


def test_annotate_a_folder_of_pictures(tmp_path: Path) -> None:
    names = lite0.write_pictures(tmp_path / "photos")
    proc = run("annotate", "photos", "--model", "efficientnet-lite0", "-o", "labelled", "--jsonl", "top5.jsonl",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    assert len(lines) == len(names)
    records = [json.loads(x) for x in (tmp_path / "top5.jsonl").read_text().splitlines()]
    all_names = imagenet_names()
    for i, (line, name, record) in enumerate(zip(lines, names, records, strict=True), start=1):
        m = LINE.match(line)
        assert m, line
        assert (int(m[1]), int(m[2]), m[3]) == (i, len(names), name)  # numbered, in sorted order
        assert m[4] in all_names
        top = record["classes"]
        assert record["source"] == name and len(top) == 5
        assert top[0]["label"] == m[4] and abs(float(m[5]) - 100 * top[0]["probability"]) <= 0.006
    bicycle = {c["class_id"] for c in records[0]["classes"]}
    assert bicycle & set(lite0.BICYCLES), records[0]
    assert any(c["class_id"] in lite0.DOG_BREEDS for c in records[1]["classes"]), records[1]
    assert sorted(p.name for p in (tmp_path / "labelled").iterdir()) == names
    original = cv2.imread(str(tmp_path / "photos" / names[2]))
    labelled = cv2.imread(str(tmp_path / "labelled" / names[2]))
    assert labelled.shape == original.shape and not np.array_equal(labelled, original)
    assert "efficientnet-lite0-57934424.pth [onnxruntime, cpu]" in proc.stderr


def test_clip_frames_carry_top_classes_in_overlay_and_jsonl(tmp_path: Path) -> None:
    clip = lite0.write_clip(tmp_path / "ten.mp4", 10, sample="sample:bikes")
    model = EfficientNetLite0(lite0.weights(), cache_dir=lite0.cache_home() / "streamer", threads=2)
    results = list(streamer.stream(str(clip), model=model, render=True))
    assert len(results) == 10
    for r in results:
        assert r.classes is not None and len(r.classes) == 5
        assert r.annotated is not None
        # The top classes are drawn in the top-left corner; the rest of the frame is untouched.
        changed = np.any(r.annotated != r.frame.image, axis=2)
        h, w = changed.shape
        assert changed[: h // 2, : w // 2].any() and not changed[h // 2 :, w // 2 :].any()
    proc = run("annotate", str(clip), "--model", "efficientnet-lite0", "--no-video", "--jsonl", "c.jsonl",
               "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(x) for x in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(10))
    assert all(len(r["classes"]) == 5 and r["classes"][0]["probability"] > 0 for r in records)
    assert "top class:" in proc.stdout


NO_TORCH = """
import sys
from streamer.cli import main
code = main(sys.argv[1:])
print("torch imported:", "torch" in sys.modules)
sys.exit(code)
"""


@pytest.mark.parametrize(("model", "device"), [("yolo11n", "cpu"), ("yolo11n", "auto"), ("efficientnet-lite0", "auto")])
def test_cpu_run_never_imports_torch(tmp_path: Path, model: str, device: str) -> None:
    if device == "auto" and _cuda_driver_present() and _torch_build_has_accelerator():
        pytest.skip("this machine has a CUDA driver and a CUDA PyTorch: auto rightly picks the GPU")
    clip = lite0.write_clip(tmp_path / "ten.mp4", 10)
    proc = run("annotate", str(clip), "--model", model, "--device", device, "--no-video", "--jsonl", "x.jsonl",
               "--no-progress", cwd=tmp_path, code=NO_TORCH)
    assert proc.returncode == 0, proc.stderr
    assert "torch imported: False" in proc.stdout
    assert len((tmp_path / "x.jsonl").read_text().splitlines()) == 10

"""`streamer annotate` end to end: the real default model on the real bikes clip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from tests.agreement import f1_score, from_jsonl, from_reference

DATA = Path(__file__).parent / "data"


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "streamer", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
    )


def read_video(path: Path) -> tuple[int, int, int, float]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open"
    w, h, fps = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), cap.get(cv2.CAP_PROP_FPS)
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n, w, h, fps


@pytest.fixture(scope="module")
def bikes_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("annotate")
    proc = run_cli("annotate", "sample:bikes", "-o", str(out / "bikes.mp4"), "--jsonl", str(out / "bikes.jsonl"))
    return proc, out


def test_annotates_every_frame(bikes_run) -> None:  # type: ignore[no-untyped-def]
    proc, out = bikes_run
    assert proc.returncode == 0, proc.stderr
    assert read_video(out / "bikes.mp4") == (250, 640, 272, 25.0)
    records = [json.loads(line) for line in (out / "bikes.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(250))
    assert all(r["source"] == "bikes" and r["latency_ms"] >= 0 for r in records)
    assert records[1]["pts"] == pytest.approx(0.04)
    det = next(d for r in records for d in r["detections"])
    assert set(det) == {"class_id", "label", "confidence", "xyxy"} and len(det["xyxy"]) == 4
    labels_per_frame = [{d["label"] for d in r["detections"]} for r in records]
    assert sum("car" in s for s in labels_per_frame) > 125
    assert "processed 250 of 250 frames" in proc.stdout and "detections: car" in proc.stdout
    assert "[250/250]" in proc.stderr
    if (os.cpu_count() or 1) >= 2:
        assert "(infer runs 2 at once)" in proc.stdout  # the CPU default: two model calls in flight


def test_agrees_with_ultralytics(bikes_run) -> None:  # type: ignore[no-untyped-def]
    proc, out = bikes_run
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (out / "bikes.jsonl").read_text().splitlines()]
    reference = json.loads((DATA / "ultralytics_bikes.json").read_text())
    f1, tp, fp, fn = f1_score(from_jsonl(records), from_reference(reference["frames"]))
    assert f1 >= 0.98, f"F1 {f1:.4f} (TP {tp}, FP {fp}, FN {fn})"


@pytest.mark.slow
def test_square_letterbox_changes_results(tmp_path: Path) -> None:
    """Square padding is available, and the agreement test is sensitive to it."""
    proc = run_cli("annotate", "sample:bikes", "--square", "--no-video", "--no-progress",
                   "--jsonl", str(tmp_path / "sq.jsonl"))
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (tmp_path / "sq.jsonl").read_text().splitlines()]
    reference = json.loads((DATA / "ultralytics_bikes.json").read_text())
    f1, *_ = f1_score(from_jsonl(records), from_reference(reference["frames"]))
    assert f1 < 0.95


@pytest.mark.slow
def test_pipeline_file_with_overrides(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    proc = run_cli(
        "run", str(root / "pipelines" / "annotate-video.yaml"), "--no-progress",
        "--set", "source=sample:carphone", "--set", "detect.classes=[0]",
        "--set", f"output.video={tmp_path / 'c.mp4'}", "--set", f"output.jsonl={tmp_path / 'c.jsonl'}",
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert len(records) == 120
    assert all(d["class_id"] == 0 for r in records for d in r["detections"])
    assert sum(bool(r["detections"]) for r in records) > 60  # the face is a person
    assert read_video(tmp_path / "c.mp4")[:3] == (120, 176, 144)


def _bad_inputs(tmp: Path) -> list[tuple[list[str], str]]:
    random_mp4 = tmp / "random.mp4"
    random_mp4.write_bytes(os.urandom(50_000))
    empty = tmp / "empty.mp4"
    empty.write_bytes(b"")
    not_model = tmp / "model.onnx"
    not_model.write_bytes(b"not a model at all")
    bad_yaml = tmp / "bad.yaml"
    bad_yaml.write_text("source: x\nmodel: [\n")
    unknown_key = tmp / "unknown.yaml"
    unknown_key.write_text("source: x\ndetect:\n  confidence: 0.5\n")
    return [
        (["annotate", str(tmp / "missing.mp4")], "missing.mp4: no such file"),
        (["annotate", str(random_mp4)], "random.mp4: cannot open as a video"),
        (["annotate", str(empty)], "empty.mp4: file is empty"),
        (["annotate", "sample:bikes", "--model", "yolo99"], "unknown model 'yolo99'"),
        (["annotate", "sample:bikes", "--model", str(not_model)], "model.onnx: not a loadable ONNX model"),
        (["annotate", "sample:bikes", "--conf", "1.5"], "detect.conf must be between 0 and 1, but got 1.5"),
        (["annotate", "sample:bikes", "--iou", "-1"], "detect.iou must be between 0 and 1"),
        (["annotate", "sample:bikes", "--imgsz", "100"], "model.imgsz must be a positive multiple of 32"),
        (["annotate", "sample:bikes", "--batch", "0"], "model.batch must be between 1 and 256"),
        (["annotate", "sample:nope"], "unknown sample 'nope'"),
        (["annotate", "ftp://example.com/a.mp4"], "unsupported URL scheme 'ftp://'"),
        (["annotate", str(random_mp4), "-o", str(random_mp4)], "output path is the same as the input"),
        (["annotate", "sample:bikes", "--device", "tpu"], "invalid device 'tpu'"),
        (["run", str(bad_yaml)], "bad.yaml:3: invalid YAML"),
        (["run", str(unknown_key)], "unknown.yaml:3: unknown key 'confidence' in 'detect', expecting one of"),
        (["run", str(tmp / "none.yaml")], "none.yaml: no such pipeline file"),
    ]


@pytest.mark.slow
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    for args, message in _bad_inputs(tmp_path):
        proc = run_cli(*args, "--no-progress", cwd=tmp_path, timeout=60)
        assert proc.returncode == 2, (args, proc.returncode, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr, (args, proc.stderr)
        error_lines = [line for line in proc.stderr.splitlines() if line.startswith("streamer:")]
        assert len(error_lines) == 1, (args, proc.stderr)


@pytest.mark.slow
def test_one_worker_writes_the_same_detections_as_the_default(bikes_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Two model calls in flight (the CPU default) change nothing in the output: same frames,
    same order, same boxes as one call at a time."""
    proc, out = bikes_run
    assert proc.returncode == 0, proc.stderr
    single = run_cli("annotate", "sample:bikes", "--workers", "1", "--no-video", "--no-progress",
                     "--jsonl", str(tmp_path / "one.jsonl"))
    assert single.returncode == 0, single.stderr

    def boxes(path: Path) -> list[tuple[int, list[object]]]:
        return [(r["frame"], r["detections"]) for r in map(json.loads, path.read_text().splitlines())]

    assert boxes(tmp_path / "one.jsonl") == boxes(out / "bikes.jsonl")


def test_the_demo_video_plays_in_chromium(bikes_run) -> None:  # type: ignore[no-untyped-def]
    """What ./scripts/demo writes (the same command on the same clip): H.264 that a browser plays."""
    from tests.sinks.test_video import browser_state

    proc, out = bikes_run
    assert proc.returncode == 0, proc.stderr
    state = browser_state(out / "bikes.mp4")
    assert "error" not in state, f"Chromium refused the file: MediaError code {state.get('error')}"
    assert (state["w"], state["h"]) == (640, 272)
    assert state["duration"] == pytest.approx(10.0, abs=0.05)


@pytest.mark.parametrize("make", [True, False])
def test_output_into_a_folder(make: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    """``-o results`` (an existing folder) or ``-o results/`` writes results/<name>.mp4 and
    .jsonl, as with several inputs; it used to fail on the file type ''."""
    from streamer.cli import main

    monkeypatch.chdir(tmp_path)
    if make:
        (tmp_path / "results").mkdir()
    assert main(["annotate", "sample:carphone", "-o", "results" if make else "results/", "--no-progress"]) == 0, \
        capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["carphone.jsonl", "carphone.mp4"]


def test_the_detections_go_next_to_the_video_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``-o results/clip_annotated.mp4`` without ``--jsonl`` writes results/clip_annotated.jsonl,
    not a stray out/carphone.jsonl in the working folder."""
    from streamer.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    assert main(["annotate", "sample:carphone", "-o", "results/clip_annotated.mp4", "--no-progress"]) == 0, \
        capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["clip_annotated.jsonl", "clip_annotated.mp4"]
    assert not (tmp_path / "out").exists()
    assert "wrote results/clip_annotated.jsonl: " in capsys.readouterr().out

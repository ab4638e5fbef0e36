"""Every kind of bad input through the CLI: exit code 2, one line naming the input and the
problem, no traceback, within 10 s. Plus the truncated files that can be partly read."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import require_tool
from tests.test_cli_annotate import run_cli


class FourD(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2  # (B, 3, H, W): no detector or classifier layout


def unsupported_layout_onnx(path: Path) -> Path:
    torch.onnx.export(FourD(), torch.zeros(1, 3, 64, 64), str(path), input_names=["images"], output_names=["out"],
                      dynamo=False)
    return path


def audio_only(path: Path) -> Path:
    """Half a second of silence in AAC, and no pictures (a voice memo, say)."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 4000), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path


def cases(tmp: Path, bikes: Path) -> list[tuple[list[str], str]]:
    truncated = tmp / "truncated.mp4"
    data = bikes.read_bytes()
    truncated.write_bytes(data[: len(data) * 30 // 100])
    random_mp4 = tmp / "random.mp4"
    random_mp4.write_bytes(bytes(range(256)) * 200)
    (tmp / "zero.mp4").write_bytes(b"")
    (tmp / "empty_folder").mkdir()
    (tmp / "empty_folder" / "notes.txt").write_text("no images here")
    (tmp / "notamodel.onnx").write_text("hello")
    bad_yaml = tmp / "bad.yaml"
    bad_yaml.write_text("source: a.mp4\n  model: [\n")
    unknown = tmp / "unknown.yaml"
    unknown.write_text("source: a.mp4\nmodel:\n  name: yolo11n\n  imgsize: 640\n")
    layout = unsupported_layout_onnx(tmp / "fourd.onnx")
    return [
        (["annotate", str(tmp / "nope.mp4")], "nope.mp4: no such file or directory"),
        (["annotate", str(random_mp4)], "random.mp4: cannot open as a video"),
        (["annotate", str(truncated)], "truncated.mp4: cannot open as a video (the MP4 index ('moov') is missing"),
        (["annotate", str(tmp / "zero.mp4")], "zero.mp4: file is empty (0 bytes)"),
        (["annotate", str(audio_only(tmp / "memo.m4a"))], "memo.m4a: cannot open as a video (it has no video stream, only audio)"),
        (["annotate", str(tmp / "empty_folder")], "empty_folder: folder has no images"),
        (["annotate", "sample:bikes", "--model", "yolo12x"], "unknown model 'yolo12x', expecting one of ['efficientnet-lite0', 'yolo11n']"),
        (["annotate", "sample:bikes", "--model", str(tmp / "notamodel.onnx")], "notamodel.onnx: not a loadable ONNX model"),
        (["annotate", "sample:bikes", "--model", str(layout)], "fourd.onnx: unsupported output layout: got shape (1, 3, 64, 64)"),
        (["run", str(bad_yaml)], "bad.yaml:2: invalid YAML"),
        (["run", str(unknown)], "unknown.yaml:4: unknown key 'imgsize' in 'model', expecting one of ['anchors', 'backend'"),
        (["annotate", "sample:bikes", "--conf", "1.5"], "detect.conf must be between 0 and 1, but got 1.5"),
        (["annotate", "sample:bikes", "--iou", "-1"], "detect.iou must be between 0 and 1, but got -1.0"),
        (["annotate", "sample:bikes", "--imgsz", "650"], "model.imgsz must be a positive multiple of 32, but got 650"),
        (["annotate", "sample:bikes", "--batch", "0"], "model.batch must be between 1 and 256, but got 0"),
        (["annotate", "ftp://example.com/clip.mp4"], "ftp://example.com/clip.mp4: unsupported URL scheme 'ftp://'"),
        (["watch", "ftp://user:pw@example.com/x", "--no-window"], "ftp://user:***@example.com/x: unsupported URL scheme"),
        (["annotate", str(bikes), "-o", str(bikes)], "output path is the same as the input"),
        (["annotate", str(bikes), "--jsonl", str(bikes)], "output path is the same as the input"),
    ]


def test_bad_input_table(tmp_path: Path, bikes: Path, capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Every row through the CLI's own entry point, in this process (the process is not the
    point here; the smoke test below runs a few rows as real processes)."""
    from streamer.cli import main

    monkeypatch.chdir(tmp_path)
    for args, message in cases(tmp_path, bikes):
        t0 = time.monotonic()
        code = main(list(args))
        elapsed = time.monotonic() - t0
        out, err = capsys.readouterr()
        assert code == 2, (args, code, err[-1500:])
        assert message in err, (args, err)
        assert "Traceback" not in err and "Traceback" not in out, (args, err)
        assert len(err.strip().splitlines()) == 1, (args, err)
        assert elapsed < 10, (args, elapsed)
        assert "pw" not in err


def test_bad_input_as_whole_processes(tmp_path: Path, bikes: Path) -> None:
    """A few rows as real processes: exit code 2, one line, no traceback, within 10 s."""
    rows = [row for row in cases(tmp_path, bikes)
            if row[0][:2] in (["annotate", str(tmp_path / "nope.mp4")], ["run", str(tmp_path / "bad.yaml")])
            or row[0][0] == "watch"]
    assert len(rows) == 3
    for args, message in rows:
        t0 = time.monotonic()
        proc = run_cli(*args, cwd=tmp_path, timeout=30)
        elapsed = time.monotonic() - t0
        assert proc.returncode == 2, (args, proc.returncode, proc.stderr[-1500:])
        assert message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)
        assert elapsed < 10, (args, elapsed)
        assert "pw" not in proc.stderr


def test_truncated_file_annotates_what_it_can(tmp_path: Path, bikes: Path) -> None:
    """A truncated MP4 whose index is at the front: the frames before the cut are annotated."""
    require_tool("ffmpeg")
    faststart = tmp_path / "fast.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(bikes), "-c", "copy", "-movflags", "+faststart",
                    str(faststart)], check=True, timeout=60)
    data = faststart.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 30 // 100])
    proc = run_cli("annotate", str(cut), "--no-progress", "-o", str(tmp_path / "o.mp4"),
                   "--jsonl", str(tmp_path / "o.jsonl"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "o.jsonl").read_text().splitlines()
    assert 30 < len(lines) < 250
    assert f"cut.mp4: read {len(lines)} of 250 frames announced by the file (the file ends early" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_unwritable_output_is_a_clear_error(tmp_path: Path) -> None:
    if shutil.which("id") and subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() == "0":
        target = tmp_path / "out.mp4"
        target.mkdir()  # root can write anywhere: use a path that is a directory instead
        proc = run_cli("annotate", "sample:bikes", "-o", str(target), "--no-progress", cwd=tmp_path)
        assert proc.returncode == 2 and "out.mp4: video path is a directory" in proc.stderr
    else:  # pragma: no cover - depends on the user running the tests
        pytest.skip("needs root to stage the case")


@pytest.mark.parametrize(("flag", "name"), [("-o", "o.mp4"), ("--jsonl", "o.jsonl")])
def test_an_output_inside_a_file_is_a_clear_error(flag: str, name: str, tmp_path: Path) -> None:
    """``-o clip.mp4/o.mp4`` (a file where a folder should be) is refused before the run, not
    after every frame has failed to be written."""
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not a folder")
    proc = run_cli("annotate", "sample:bikes", flag, str(clip / name), "--no-progress", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"streamer: {clip / name}: {clip} is a file, not a folder"

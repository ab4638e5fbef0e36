"""The NVDEC capture: its CPU fallback on real clips (this is what runs where NVDEC refuses),
the decode setting, and NVDEC itself where a GPU is present."""

from __future__ import annotations

import logging
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from streamer import assets
from streamer.config import load
from streamer.errors import ConfigError, SourceOpenError
from streamer.sources import nvdec
from streamer.sources.nvdec import NvdecCapture, resolve_decode


def read_all(capture: NvdecCapture) -> list[tuple[float | None, np.ndarray]]:
    """(pts_s, packed NV12) of every frame, read to the end."""
    out = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        assert image is not None
        out.append((capture.pts_s, np.concatenate([image.y.cpu().numpy(), image.uv.cpu().numpy().reshape(image.height // 2, -1)])))
    capture.release()
    return out


def reference(path: Path) -> list[tuple[float | None, np.ndarray]]:
    with av.open(str(path)) as container:
        return [(float(f.pts * f.time_base), f.to_ndarray(format="nv12")) for f in container.decode(video=0)]


@pytest.mark.parametrize(
    ("decode", "model_device", "available", "expected"),
    [
        ("cpu", "cuda:0", True, "cpu"),
        ("auto", "cpu", True, "cpu"),  # a CPU model would download every frame again
        ("auto", "cuda:0", True, "nvdec"),
        ("auto", "cuda:0", False, "cpu"),
        ("nvdec", "cpu", True, "nvdec"),
    ],
)
def test_resolve_decode(
    monkeypatch: pytest.MonkeyPatch, decode: str, model_device: str, available: bool, expected: str
) -> None:
    monkeypatch.setattr(nvdec, "nvdec_unavailable", lambda: None if available else "no GPU in this test")
    assert resolve_decode(decode, model_device) == expected


def test_nvdec_asked_for_where_it_cannot_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nvdec, "nvdec_unavailable", lambda: "PyTorch sees no CUDA device")
    with pytest.raises(ConfigError, match=r"capture.decode is 'nvdec', but NVDEC cannot be used here: PyTorch sees no CUDA device"):
        resolve_decode("nvdec", "cuda:0")


def test_unknown_decode_lists_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"capture.decode must be one of \['auto', 'cpu', 'nvdec'\], but got 'gpu'"):
        resolve_decode("gpu", "cuda:0")
    path = tmp_path / "p.yaml"
    path.write_text("source: x\ncapture:\n  decode: gpu\n")
    with pytest.raises(ConfigError, match=r"p.yaml:3: capture.decode must be one of \['auto', 'cpu', 'nvdec'\], but got 'gpu'"):
        load(path)
    path.write_text("source: x\ncapture:\n  decode: nvdec\n")
    assert load(path).capture.decode == "nvdec"
    path.write_text("source: x\n")
    assert load(path).capture.decode == "auto"


@pytest.mark.parametrize("sample", ["bikes", "carphone"])
def test_refused_nvdec_falls_back_to_the_same_frames(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, sample: str
) -> None:
    """With the availability check passed, PyAV really asks FFmpeg for a CUDA decoder; where
    there is no GPU it refuses, and the capture decodes on the CPU: every frame, bit for bit
    what PyAV's own NV12 conversion gives, with its timestamp."""
    monkeypatch.setattr(nvdec, "nvdec_unavailable", lambda: None)
    path = assets.sample_path(sample)
    with caplog.at_level(logging.WARNING):
        capture = NvdecCapture(str(path), device="cpu")
    if torch.cuda.is_available():
        pytest.skip("NVDEC opened: the fallback is tested where it refuses")
    assert capture.decoder == "cpu"
    assert "NVDEC cannot decode it" in caplog.text and "decoding on the CPU" in caplog.text
    assert capture.fps is not None and capture.fps > 0
    got, want = read_all(capture), reference(path)
    assert capture.error == "end of stream"
    assert len(got) == len(want) > 100
    for (pts, frame), (want_pts, want_frame) in zip(got, want, strict=True):
        assert pts == pytest.approx(want_pts)
        np.testing.assert_array_equal(frame, want_frame)


def test_without_fallback_a_refusal_is_an_open_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nvdec, "nvdec_unavailable", lambda: "PyTorch sees no CUDA device")
    path = assets.sample_path("bikes")
    with pytest.raises(SourceOpenError, match=r"bikes.mp4: NVDEC cannot decode it \(PyTorch sees no CUDA device\)"):
        NvdecCapture(str(path), device="cpu", fallback=False)


def test_keyframes_only_decodes_only_keyframes() -> None:
    path = assets.sample_path("bikes")
    with av.open(str(path)) as container:
        keyframes = sum(1 for p in container.demux(video=0) if p.size and p.is_keyframe)
    frames = read_all(NvdecCapture(str(path), device="cpu", keyframes_only=True))
    assert 0 < len(frames) == keyframes < 250


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/nonexistent/clip.mp4", r"/nonexistent/clip.mp4: cannot open \(.*No such file"),
        ("rtsp://user:secret@127.0.0.1:9/cam", r"rtsp://user:\*\*\*@127.0.0.1:9/cam: cannot open"),
    ],
    ids=["missing-file", "refused-rtsp"],
)
def test_open_errors_name_the_source_without_its_password(url: str, message: str) -> None:
    with pytest.raises(SourceOpenError, match=message) as info:
        NvdecCapture(url, device="cpu", open_timeout_s=2.0)
    assert "secret" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"transport": "http"}, r"invalid RTSP transport 'http', expecting one of \['tcp', 'udp'\]"),
        ({"open_timeout_s": 0}, r"open_timeout_s must be a positive number of seconds, but got 0"),
        ({"read_timeout_s": float("inf")}, r"read_timeout_s must be a positive number of seconds, but got inf"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        NvdecCapture(str(assets.sample_path("bikes")), device="cpu", **kwargs)  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="NVDEC needs a CUDA device (torch.cuda.is_available() is False)")
def test_nvdec_frames_stay_on_the_gpu_and_equal_the_cpu_decoder() -> None:
    """H.264 decoding is exact: NVDEC's NV12 equals FFmpeg's software decoder's."""
    path = assets.sample_path("bikes")
    capture = NvdecCapture(str(path), device="cuda:0", fallback=False)
    assert capture.decoder == "nvdec"
    ok, image = capture.read()
    assert ok and image is not None and image.device.type == "cuda"
    got = read_all(capture)
    want = reference(path)[1:]
    assert len(got) == len(want)
    for (_, frame), (_, want_frame) in zip(got, want, strict=True):
        np.testing.assert_array_equal(frame, want_frame)

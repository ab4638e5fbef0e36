"""The embedding API: `streamer.stream()` on the real model and a real clip."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import streamer
from streamer.errors import ConfigError, SourceOpenError


def test_stream_yields_results_in_order_and_stops_early() -> None:
    threads_before = threading.active_count()
    seen = []
    gen = streamer.stream("sample:carphone", model="yolo11n", render=True)
    for result in gen:
        seen.append(result.frame.index)
        assert result.detections is not None and result.annotated is not None
        assert result.annotated is not result.frame.image  # render=True draws on a copy
        assert set(result.timings_ms) >= {"preprocess", "infer", "postprocess"}
        if len(seen) == 10:
            break
    gen.close()
    assert seen == list(range(10))
    assert threading.active_count() <= threads_before


@pytest.mark.slow
def test_stream_whole_clip_detects_the_face_as_person() -> None:
    persons = 0
    frames = 0
    for result in streamer.stream("sample:carphone", classes=[0]):
        frames += 1
        assert result.detections is not None
        assert np.all(result.detections.class_id == 0)
        persons += len(result.detections) > 0
    assert frames == 120 and persons > 60


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"conf": 2.0}, ConfigError, "detect.conf must be between 0 and 1"),
        ({"source": "missing.mp4"}, SourceOpenError, "missing.mp4: no such file"),
    ],
)
def test_bad_arguments_raise_streamer_errors(kwargs, error, message) -> None:  # type: ignore[no-untyped-def]
    source = kwargs.pop("source", "sample:carphone")
    with pytest.raises(error, match=message):
        for _ in streamer.stream(source, **kwargs):
            pass


@pytest.mark.slow
def test_stream_with_tracking_carries_ids_and_counts() -> None:
    results = list(streamer.stream("sample:carphone", track=True,
                                   lines={"middle": [[88, 0], [88, 144]]}, zones={"all": [[0, 0], [176, 0], [176, 144]]}))
    assert len(results) == 120
    ids = [r.detections.tracker_id for r in results]
    assert all(i is not None and i.dtype == np.int64 and len(i) == len(r.detections) for i, r in zip(ids, results))
    confirmed = np.concatenate(ids)
    assert (confirmed >= 1).any() and set(confirmed[confirmed >= 0].tolist()) <= set(range(1, 100))
    assert all(r.analytics is not None and "middle" in r.analytics.lines for r in results)


@pytest.mark.parametrize("module", ["streamer.jobs", "streamer.sources.file", "streamer.sources.av_capture",
                                    "streamer.sinks.video", "streamer.sinks.audio"])
def test_opencv_loads_before_pyav(module: str) -> None:
    """With PyAV's FFmpeg libraries loaded first, OpenCV's window hangs in namedWindow (the
    overlay window test caught it): every way into PyAV goes through OpenCV first."""
    import subprocess
    import sys

    code = (f"import sys, {module}; m = list(sys.modules); "
            "print(m.index('cv2') < m.index('av'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "True"

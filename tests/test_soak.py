"""Soak: a long synthetic live run with disconnects leaks neither memory nor threads."""

from __future__ import annotations

import gc
import logging
import threading
import time

import psutil
import pytest

from streamer.api import build_pipeline
from streamer.sinks.jsonl import JsonlSink
from streamer.sources.live import SyntheticSource


@pytest.mark.slow
def test_30000_frames_with_disconnects(tmp_path, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="streamer.sources.live")
    process = psutil.Process()
    threads_before = threading.active_count()
    source = SyntheticSource(width=320, height=240, fps=1000, paced=False, limit=30_000, disconnect_every=2_000)
    pipeline = build_pipeline(source, "yolo11n", imgsz=160, sinks=[JsonlSink(tmp_path / "soak.jsonl")])
    pipeline.start()
    baseline = None
    while pipeline.alive():
        time.sleep(0.2)
        if baseline is None and source.produced >= 3_000:
            gc.collect()
            baseline = process.memory_info().rss
    pipeline.run()
    gc.collect()
    growth_mb = (process.memory_info().rss - (baseline or 0)) / 2**20
    assert source.produced == 30_000
    assert growth_mb < 50, f"RSS grew {growth_mb:.1f} MB"
    deadline = time.monotonic() + 5
    while threading.active_count() > threads_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= threads_before, [t.name for t in threading.enumerate()]
    reconnects = [r.getMessage() for r in caplog.records if ": reconnect " in r.getMessage()]
    assert source.reconnects == 14 and len(reconnects) == 14
    assert len({m.split(" in ")[0] for m in reconnects}) == 14  # "reconnect 1" .. "reconnect 14", once each

"""The runner with small synthetic stages: the right tool for injecting faults and counting."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from streamer.errors import StageError
from streamer.pipeline import Pipeline, QueueConfig, Stage
from streamer.queues import Policy
from streamer.sources.base import Source
from streamer.types import Frame, Result


class CountingSource(Source):
    def __init__(self, n: int, live: bool = False, period_s: float = 0.0) -> None:
        self.n = n
        self.live = live
        self.period_s = period_s
        self.i = 0
        self.closed = False

    def read(self, timeout: float) -> Frame | None:
        if self.i >= self.n:
            return None
        if self.period_s:
            time.sleep(self.period_s)
        frame = Frame("test", self.i, np.zeros((2, 2, 3), np.uint8), None, time.monotonic())
        self.i += 1
        return frame

    def close(self) -> None:
        self.closed = True


class Slow(Stage):
    def __init__(self, name: str, delay_s: float = 0.0, fail_at: int | None = None) -> None:
        self.name = name
        self.delay_s = delay_s
        self.fail_at = fail_at
        self.seen: list[int] = []
        self.flushed = False
        self.closed = False

    def process(self, item: Result) -> Result:
        if item.frame.index == self.fail_at:
            raise RuntimeError(f"boom at {self.fail_at}")
        if self.delay_s:
            time.sleep(self.delay_s)
        self.seen.append(item.frame.index)
        return item

    def flush(self) -> None:
        self.flushed = True

    def close(self) -> None:
        self.closed = True


def test_empty_source_flushes_and_closes() -> None:
    a, b = Slow("a"), Slow("b")
    p = Pipeline(CountingSource(0), [a, b])
    p.run()
    assert a.flushed and b.flushed and a.closed and b.closed and a.seen == []


def test_lossless_order_with_block_queues() -> None:
    a, b = Slow("a"), Slow("b", delay_s=0.001)
    p = Pipeline(CountingSource(200), [a, b], queue=QueueConfig(2, Policy.BLOCK))
    p.run()
    assert b.seen == list(range(200))
    assert p.dropped == 0
    stats = {s.name: s for s in p.stats()}
    assert stats["b"].processed == 200 and stats["b"].p50_ms > 0


def test_output_iteration_yields_every_result_in_order() -> None:
    p = Pipeline(CountingSource(50), [Slow("a")], output=True)
    assert [r.frame.index for r in p] == list(range(50))


def test_error_stops_pipeline_and_names_stage() -> None:
    a, b = Slow("a"), Slow("decoder", fail_at=5)
    source = CountingSource(10_000)
    p = Pipeline(source, [a, b])
    t0 = time.monotonic()
    with pytest.raises(StageError, match="stage 'decoder' failed: boom at 5") as info:
        p.run()
    assert time.monotonic() - t0 < 5
    assert isinstance(info.value.__cause__, RuntimeError)
    assert source.i < 10_000 and source.closed and a.closed and b.closed
    assert not p.alive()


def test_error_in_iteration_reaches_caller() -> None:
    p = Pipeline(CountingSource(100), [Slow("x", fail_at=3)], output=True)
    with pytest.raises(StageError, match="stage 'x'"):
        for _ in p:
            pass


def test_stop_is_graceful_items_in_flight_are_finished() -> None:
    slow = Slow("slow", delay_s=0.01)
    p = Pipeline(CountingSource(10_000), [slow], queue=QueueConfig(4, Policy.BLOCK))
    p.start()
    time.sleep(0.2)
    p.stop()
    assert p.join(timeout=5)
    read = p.frames_read
    assert slow.seen == list(range(read))  # everything read was processed, in order
    assert slow.flushed


def test_drop_oldest_counts_drops_and_keeps_newest() -> None:
    slow = Slow("slow", delay_s=0.02)
    p = Pipeline(CountingSource(200, live=True, period_s=0.001), [slow])
    assert p.queue_config.policy is Policy.DROP_OLDEST
    p.run()
    assert p.dropped > 0
    assert slow.seen[-1] == 199  # the last frame is never lost behind a full queue
    assert slow.seen == sorted(slow.seen)


def test_early_break_stops_threads() -> None:
    before = threading.active_count()
    p = Pipeline(CountingSource(100_000), [Slow("a")], output=True)
    for result in p:
        if result.frame.index == 5:
            break
    assert not p.alive()
    assert threading.active_count() <= before


def test_failed_open_closes_what_was_opened() -> None:
    class BadOpen(Slow):
        def open(self) -> None:
            raise OSError("cannot open")

    a = Slow("a")
    source = CountingSource(1)
    p = Pipeline(source, [a, BadOpen("b")])
    with pytest.raises(OSError, match="cannot open"):
        p.open()
    assert a.closed


def test_watchdog_reports_a_stuck_stage_by_name(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.WARNING, logger="streamer.pipeline")
    stuck = Slow("decoder", delay_s=1.0)
    p = Pipeline(CountingSource(3), [Slow("a"), stuck], stage_timeout_s=0.3)
    p.start()
    time.sleep(0.8)
    row = next(s for s in p.stats() if s.name == "decoder")
    assert row.state == "stalled" and row.stalled_s > 0.3
    p.run()
    messages = [r.getMessage() for r in caplog.records]
    assert any("stage 'decoder' has made no progress" in m for m in messages)
    assert not any("stage 'a'" in m for m in messages)


class Jittery(Stage):
    """A stage run by several threads whose items take random, overlapping times."""

    def __init__(self, workers: int, batch_size: int = 1, fail_at: int | None = None, seed: int = 0) -> None:
        self.name = "jittery"
        self.workers = workers
        self.batch_size = batch_size
        self.fail_at = fail_at
        self.rng = np.random.default_rng(seed)
        self.delays = self.rng.uniform(0.0, 0.004, 10_000)
        self.lock = threading.Lock()
        self.active = 0
        self.most_active = 0
        self.flushes = 0
        self.closes = 0

    def process(self, item: Result) -> Result:
        if item.frame.index == self.fail_at:
            raise RuntimeError(f"boom at {self.fail_at}")
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        time.sleep(self.delays[item.frame.index % len(self.delays)])
        with self.lock:
            self.active -= 1
        return item

    def flush(self) -> None:
        with self.lock:
            self.flushes += 1

    def close(self) -> None:
        with self.lock:
            self.closes += 1


@pytest.mark.parametrize(("workers", "batch"), [(2, 1), (3, 1), (4, 3)])
def test_stage_workers_run_at_once_and_keep_the_order(workers: int, batch: int) -> None:
    stage = Jittery(workers, batch_size=batch, seed=workers)
    after = Slow("after")
    p = Pipeline(CountingSource(300), [stage, after], queue=QueueConfig(8, Policy.BLOCK))
    p.run()
    assert after.seen == list(range(300))  # every item, once, in input order
    assert stage.most_active >= 2  # the workers really overlapped
    assert (stage.flushes, stage.closes, after.flushed) == (1, 1, True)  # END reached the next stage once


def test_stage_workers_error_stops_the_pipeline_and_closes_once() -> None:
    stage = Jittery(3, fail_at=57)
    p = Pipeline(CountingSource(10_000), [stage, Slow("after")])
    with pytest.raises(StageError, match="jittery.*boom at 57"):
        p.run()
    assert not p.alive()
    assert stage.closes == 1


def test_stage_workers_stop_is_graceful() -> None:
    stage = Jittery(3)
    after = Slow("after")
    p = Pipeline(CountingSource(100_000), [stage, after]).start()
    time.sleep(0.3)
    p.stop()
    assert p.join(timeout=5)
    assert after.seen == list(range(p.frames_read))  # everything read came out, in order
    assert after.flushed and stage.flushes == 1


def test_render_status_lines_end_with_the_extra_lines() -> None:
    from streamer.stages import RenderStage

    drops = [3]
    stage = RenderStage(status=True, extra_status=lambda: [f"dropped {drops[0]}"])
    item = Result(frame=Frame("cam", 0, np.zeros((64, 64, 3), np.uint8), None, time.monotonic() - 0.05))
    lines = stage.status_lines(item)
    assert lines[0].endswith(" fps") and lines[1].startswith("latency ") and lines[2] == "dropped 3"
    drops[0] = 7
    assert stage.status_lines(item)[2] == "dropped 7"  # asked again for every frame
    stage.process(item)
    assert item.annotated is not None and item.annotated.any()  # the overlay was drawn

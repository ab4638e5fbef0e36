"""Callers learn about a pipeline from ``Pipeline.stats()`` and sources from ``describe()``,
never by reading another object's queues, stages or private methods."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from streamer.pipeline import Pipeline, QueueConfig, Stage
from streamer.queues import Policy
from streamer.sinks.base import Sink
from streamer.sources.base import Source
from streamer.sources.live import StreamSource, SyntheticSource
from streamer.sources.multi import MultiSource
from streamer.stages import SinkStage
from streamer.types import Frame, Result

PACKAGE = Path(__file__).resolve().parent.parent / "streamer"

#: name -> (pattern, the files allowed to use it: the owner of the thing).
REACH_INS: dict[str, tuple[str, set[str]]] = {
    # ``obj._name`` on anything but self/cls (os._exit and sys._getframe are the stdlib's own).
    "private attribute": (r"\b(?!self\b|cls\b|os\b|sys\b)[A-Za-z_]\w*\._[a-z]\w*", set()),
    "a pipeline's queues or stage list": (r"(?<!self)\.(queues|stages)\b", {"pipeline.py"}),
    "a queue's per-key counter": (r"\bdropped_by_key\b", {"pipeline.py", "queues.py"}),
    "a sink stage's sink list": (r"(?<!self)(?<!streamer)\.sinks\b", {"stages.py"}),
}


@pytest.mark.parametrize("what", list(REACH_INS))
def test_no_module_reaches_into_another_object(what: str) -> None:
    pattern, owners = REACH_INS[what]
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in owners:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(pattern, code) and "import" not in code:
                hits.append(f"{rel}:{number}: {line.strip()}")
    assert hits == []


class Alternating(Source):
    """``n`` frames from two cameras in turn, as fast as the pipeline takes them."""

    live = True

    def __init__(self, n: int) -> None:
        self.n = n
        self.i = 0

    def read(self, timeout: float) -> Frame | None:
        if self.i >= self.n:
            return None
        frame = Frame("ab"[self.i % 2], self.i, np.zeros((2, 2, 3), np.uint8), None, time.monotonic())
        self.i += 1
        return frame


class Batches(Stage):
    name = "batches"

    def __init__(self, batch_size: int, delay_s: float = 0.0) -> None:
        self.batch_size = batch_size
        self.batch_timeout_s = 0.05
        self.delay_s = delay_s
        self.sizes: list[int] = []

    def process(self, item: Result) -> Result:
        return self.process_batch([item])[0]

    def process_batch(self, items: list[Result]) -> list[Result]:
        time.sleep(self.delay_s)
        self.sizes.append(len(items))
        return items


class Broken(Sink):
    name = "broken"

    def write(self, result: Result) -> None:
        raise OSError(28, "No space left on device")


@pytest.mark.parametrize("n", [0, 200])
def test_drops_by_source_add_up_to_the_drops(n: int) -> None:
    slow = Batches(1, delay_s=0.003)
    p = Pipeline(Alternating(n), [slow, Batches(1)], queue=QueueConfig(1, Policy.DROP_OLDEST), output=True)
    seen = sum(1 for _ in p)
    stats = p.stats()
    assert sum(stats.dropped_by_source.values()) == stats.dropped == p.dropped
    assert set(stats.dropped_by_source) <= {"a", "b"}
    assert seen + stats.dropped == n


@pytest.mark.parametrize(("batch_size", "workers"), [(1, 1), (4, 1), (4, 2)])
def test_stage_rows_count_batches_and_workers(batch_size: int, workers: int) -> None:
    from tests.test_pipeline import CountingSource

    stage = Batches(batch_size)
    stage.workers = workers
    p = Pipeline(CountingSource(50), [stage], queue=QueueConfig(8, Policy.BLOCK))
    p.run()
    row = p.stats().stage("batches")
    assert row is not None
    assert (row.processed, row.batches, row.workers) == (50, len(stage.sizes), workers)
    assert row.mean_batch == pytest.approx(sum(stage.sizes) / len(stage.sizes))
    assert p.stats().stage("nothing") is None


def test_rows_iterate_in_pipeline_order() -> None:
    from tests.test_pipeline import CountingSource

    p = Pipeline(CountingSource(3), [Batches(1), SinkStage([])])
    stats = p.stats()
    assert [row.name for row in stats] == ["source", "batches", "sinks"] == [row.name for row in stats.stages]
    assert len(stats) == 3 and stats[-1].name == "sinks"


@pytest.mark.parametrize(("source", "description"), [
    (SyntheticSource(width=16, height=16), "synthetic"),
    (StreamSource("rtsp://user:secret@cam.local/stream1"), "rtsp://user:***@cam.local/stream1"),
    (StreamSource("rtsp://user:secret@cam.local/stream1", source_id="door"), "door (rtsp://user:***@cam.local/stream1)"),
])
def test_sources_describe_themselves_with_passwords_masked(source: Source, description: str) -> None:
    assert source.describe() == description
    p = Pipeline(source, [Batches(1)])
    stats = p.stats()
    assert stats.source_description == description and stats.source["state"] == "connecting"


def test_several_cameras_report_each_camera() -> None:
    cams = MultiSource({"a": SyntheticSource(width=16, height=16, source_id="a"),
                        "b": SyntheticSource(width=16, height=16, source_id="b")})
    assert set(Pipeline(cams, [Batches(1)]).stats().source) == {"a", "b"}


def test_output_failures_are_in_the_stats() -> None:
    from tests.test_pipeline import CountingSource

    p = Pipeline(CountingSource(3), [SinkStage([Broken()])])
    p.run()
    stats = p.stats()
    assert stats.output_failures == 3
    assert stats.failure_lines == ("output 'broken' failed 3 time(s), recovered: [Errno 28] No space left on device",)

"""A stage that never returns does not cost the recording: shutdown gives up on the stuck
thread after its timeout and still finalizes the outputs that can be finalized."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from streamer.pipeline import Pipeline, QueueConfig, Stage
from streamer.queues import Policy
from streamer.sinks.base import Sink
from streamer.sinks.video import VideoSink
from streamer.sources.base import Source
from streamer.stages import SinkStage
from streamer.types import Frame, Result
from tests.sinks.test_video import streams

N = 40  # frames the source offers; the hang comes well before the end


class Frames(Source):
    """``N`` frames of 64x48, 25 fps stream time, read at once (a file)."""

    def __init__(self) -> None:
        self.i = 0

    def read(self, timeout: float) -> Frame | None:
        if self.i >= N:
            return None
        image = np.full((48, 64, 3), (self.i * 5) % 256, np.uint8)
        frame = Frame("frames", self.i, image, self.i / 25, time.monotonic())
        self.i += 1
        return frame


class Gate:
    """Lets ``after`` items through, then blocks the next one until released."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.passed = 0
        self.stuck = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> None:
        if self.passed == self.after:
            self.stuck.set()
            self.release.wait()
        self.passed += 1


class HangingSink(Sink):
    name = "hanging"

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    def write(self, result: Result) -> None:
        self.gate()


class HangingStage(Stage):
    name = "hanging"

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    def process(self, item: Result) -> Result:
        self.gate()
        return item


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate(after=12)
    yield g
    g.release.set()  # let the abandoned thread end with the test


@pytest.mark.parametrize(("where", "written"), [
    ("sink after the video", 13),  # the video had the frame the other sink hangs on
    ("stage before the sinks", 12),
])
def test_a_hung_stage_still_leaves_a_playable_recording(tmp_path: Path, gate: Gate, where: str, written: int) -> None:
    path = tmp_path / "out.mp4"
    video = VideoSink(path, fps=25)
    if where == "stage before the sinks":
        stages: list[Stage] = [HangingStage(gate), SinkStage([video])]
    else:
        stages = [SinkStage([video, HangingSink(gate)])]
    p = Pipeline(Frames(), stages, queue=QueueConfig(4, Policy.BLOCK), stage_timeout_s=None)
    p.start()
    assert gate.stuck.wait(10)
    p.stop()
    assert not p.join(timeout=0.3)  # stuck: the stop cannot finish
    started = time.monotonic()
    p.close(timeout_s=0.5)
    assert time.monotonic() - started < 5
    assert path.exists() and not video.temp_path.exists()
    (stream,) = streams(path)
    assert int(stream["nb_read_frames"]) == written == video.frames


class Recorder(Sink):
    def __init__(self, name: str) -> None:
        self.name = name
        self.written = 0
        self.closed = 0

    def write(self, result: Result) -> None:
        self.written += 1

    def close(self) -> None:
        self.closed += 1


def test_abandon_closes_the_idle_sinks_and_leaves_the_busy_one(gate: Gate) -> None:
    gate.after = 0
    first, last = Recorder("first"), Recorder("last")
    hanging = HangingSink(gate)
    stage = SinkStage([first, hanging, last])
    stage.open()
    item = Result(frame=Frame("x", 0, np.zeros((2, 2, 3), np.uint8), None, 0.0))
    writer = threading.Thread(target=stage.process, args=(item,), daemon=True)
    writer.start()
    assert gate.stuck.wait(5)
    stage.abandon()
    assert (first.written, first.closed, last.written, last.closed) == (1, 1, 0, 1)
    gate.release.set()  # the stuck call returns: the closed sink after it is not written to
    writer.join(5)
    assert (last.written, last.closed) == (0, 1)
    stage.close()  # the thread's own close then closes only what is still open
    assert (first.closed, last.closed) == (1, 1)

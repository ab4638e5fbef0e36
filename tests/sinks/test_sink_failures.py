"""A failing output is reported and disabled while the others keep every frame."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamer.api import build_pipeline
from streamer.sinks.base import Sink
from streamer.sinks.jsonl import JsonlSink
from streamer.stages import SinkStage
from streamer.types import Result
from tests.fakes import DelayModel


class DiskFull(Sink):
    name = "disk"

    def __init__(self, fail_from: int, recover_at: int | None = None) -> None:
        self.fail_from = fail_from
        self.recover_at = recover_at
        self.written = 0
        self.calls = 0

    def write(self, result: Result) -> None:
        self.calls += 1
        i = result.frame.index
        if i >= self.fail_from and (self.recover_at is None or i < self.recover_at):
            raise OSError(28, "No space left on device")
        self.written += 1


def run(bikes: Path, tmp_path: Path, failing: DiskFull, caplog: pytest.LogCaptureFixture) -> tuple[SinkStage, list[dict]]:  # type: ignore[type-arg]
    jsonl = JsonlSink(tmp_path / "out.jsonl")
    pipeline = build_pipeline(str(bikes), DelayModel(0.0), sinks=[failing, jsonl])
    pipeline.run()
    stage = next(s for s in pipeline.stages if isinstance(s, SinkStage))
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    return stage, records


def test_failing_sink_is_disabled_and_others_continue(bikes: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    failing = DiskFull(fail_from=10)
    stage, records = run(bikes, tmp_path, failing, caplog)
    assert [r["frame"] for r in records] == list(range(250))
    assert failing.written == 10 and failing.calls == 15  # 5 failures in a row, then disabled
    assert stage.disabled == ["disk"]
    assert stage.failure_lines() == ["output 'disk' failed 5 time(s), disabled: [Errno 28] No space left on device"]
    assert sum("sink 'disk' failed" in r.getMessage() for r in caplog.records) == 1  # reported once


def test_transient_failure_recovers(bikes: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    failing = DiskFull(fail_from=10, recover_at=13)
    stage, records = run(bikes, tmp_path, failing, caplog)
    assert len(records) == 250 and failing.written == 247
    assert stage.disabled == [] and "recovered" in stage.failure_lines()[0]


class Recorder(Sink):
    """Logs its open and close calls into a shared list; ``fail_open`` makes open raise."""

    def __init__(self, name: str, log: list[str], fail_open: bool = False) -> None:
        self.name = name
        self.log = log
        self.fail_open = fail_open

    def open(self) -> None:
        if self.fail_open:
            raise OSError(13, f"{self.name}: permission denied")
        self.log.append(f"open {self.name}")

    def write(self, result: Result) -> None:
        pass

    def close(self) -> None:
        self.log.append(f"close {self.name}")


@pytest.mark.parametrize(
    ("failing", "expected"),
    [
        (None, ["open a", "open b", "open c"]),
        (0, []),
        (1, ["open a", "close a"]),
        (2, ["open a", "open b", "close b", "close a"]),
    ],
)
def test_sink_stage_open_closes_what_it_opened_when_a_later_sink_fails(
    failing: int | None, expected: list[str]
) -> None:
    calls: list[str] = []
    stage = SinkStage([Recorder(name, calls, fail_open=i == failing) for i, name in enumerate("abc")])
    if failing is None:
        stage.open()
    else:
        with pytest.raises(OSError, match="permission denied"):
            stage.open()
    assert calls == expected
    stage.close()  # closing after a failed open closes nothing twice
    assert calls.count("close a") == (1 if failing != 0 else 0)


class FailsToFinish(Sink):
    name = "video"

    def __init__(self, at: str) -> None:
        self.at = at

    def write(self, result: Result) -> None:
        pass

    def flush(self) -> None:
        if self.at == "flush":
            raise OSError(28, "No space left on device")

    def close(self) -> None:
        if self.at == "close":
            raise OSError(28, "No space left on device")

    def summary(self) -> str:
        return "out.mp4: 250 frames"


@pytest.mark.parametrize("at", ["flush", "close"])
def test_an_output_that_cannot_finish_is_not_called_written(at: str, bikes: Path) -> None:
    """A file whose end could not be written is incomplete: the summary must not say "wrote",
    nor its failure "recovered" because no call failed after it."""
    sink = FailsToFinish(at)
    pipeline = build_pipeline(str(bikes), DelayModel(0.0), sinks=[sink])
    pipeline.run()
    if at == "flush":  # the jobs flush before they close; a flush failure counts the same
        stage = next(s for s in pipeline.stages if isinstance(s, SinkStage))
        stage.flush()
    stats = pipeline.stats()
    assert stats.incomplete_outputs == ("video",)
    assert [line.split(":")[0] for line in stats.failure_lines] == ["output 'video' failed 1 time(s), not finished"]
    assert stats.written_lines([sink]) == ["not complete out.mp4: 250 frames"]

"""The in-process executor: a job built by :mod:`streamer.compose`, run in this process.

It only runs what it is given: start, loop until the source ends, the window is closed or a
signal comes, stop with a grace period, summarize. :func:`run_recorded` runs annotate's
pipeline (every frame, a progress line), :func:`run_live` watch's (the newest frames, an
optional window, a status line every few seconds) and :func:`drive` a monitor, in-process or
on Ray (status lines per camera, the dashboard's address). The Ray executor's files sit
beside this one: :mod:`.ray_monitor` and :mod:`.ray_annotate`.
"""

from __future__ import annotations

import collections
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TextIO

from streamer.models import Model
from streamer.pipeline import Pipeline
from streamer.progress import Progress, format_duration
from streamer.sinks.base import Sink
from streamer.sinks.counting import CountingSink
from streamer.sinks.window import QUIT, OverlayWindow
from streamer.stats import PipelineStats

if TYPE_CHECKING:
    from streamer.monitor import MonitorRun

#: How long a stopped job waits for the frames in flight before it gives up on a stuck stage.
STOP_GRACE_S = 10.0


@dataclass
class RunSummary:
    frames: int
    seconds: float
    interrupted: bool
    lines: list[str] = field(default_factory=list)
    sink_failures: int = 0
    signum: int | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Recorded:
    """annotate's job, built: its pipeline, what counts its results and the files it writes."""

    pipeline: Pipeline
    model: Model
    counter: CountingSink
    #: The outputs whose "wrote ..." lines end the summary.
    outputs: list[Sink]
    #: A progress bar while it runs (a folder of images prints a line per image instead).
    progress: bool = True


@dataclass
class Live:
    """watch's job, built: its pipeline, what counts its results, its outputs and window."""

    pipeline: Pipeline
    model: Model
    counter: CountingSink
    outputs: list[Sink]
    window: OverlayWindow | None
    status_interval_s: float


class StopOnSignal:
    """First SIGINT/SIGTERM: graceful stop (frames in flight are still written).
    Second: exit at once. Installed only in the main thread; restored on exit."""

    def __init__(self, pipeline: Pipeline, err: TextIO) -> None:
        self.pipeline = pipeline
        self.err = err
        self.signum: int | None = None
        #: When the first signal arrived (``time.monotonic()``).
        self.stopped_at: float | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            self.err.write("\nstreamer: second interrupt, exiting now\n")
            self.err.flush()
            os._exit(128 + signum)
        self.signum = signum
        self.stopped_at = time.monotonic()
        name = signal.Signals(signum).name
        self.err.write(f"\nstreamer: {name} received, finishing the frames in flight (press Ctrl+C again to quit at once)\n")
        self.err.flush()
        self.pipeline.stop()


def run_recorded(job: Recorded, err: TextIO, *, show_progress: bool = True,
                 on_frames: Callable[[int, int | None], object] | None = None) -> RunSummary:
    """Every frame of a recorded source, in order, into the job's outputs.

    ``on_frames(done, total)`` is called about every 0.2 s (a Ray task reports its progress)."""
    pipeline, counter = job.pipeline, job.counter
    pipeline.open()
    source = pipeline.source
    info = job.model.info
    total = source.total_frames
    err.write(
        f"annotating {source.source_id}"
        + (f" ({total} frames" + (f", {source.fps:g} fps)" if source.fps else ")") if total else "")
        + f" with {Path(info.path).name} [{info.backend}, {info.device}]\n"
    )
    progress = Progress(total, stream=err) if show_progress and job.progress else None
    started = time.monotonic()
    stuck = False
    with StopOnSignal(pipeline, err) as stopper:
        pipeline.start()
        try:
            while not pipeline.join(timeout=0.2):
                if progress is not None:
                    progress.update(counter.frames)
                if stopper.stopped_at is not None and time.monotonic() - stopper.stopped_at > STOP_GRACE_S:
                    stuck = True  # close() gives up on the stuck stage and finalizes the outputs
                    break
                if on_frames is not None:
                    on_frames(counter.frames, total)
        finally:
            pipeline.close(timeout_s=2.0 if stuck else 10.0)
    elapsed = time.monotonic() - started
    if progress is not None:
        progress.finish(counter.frames)
    pipeline.raise_error()
    summary = RunSummary(counter.frames, elapsed, stopper.signum is not None, signum=stopper.signum)
    summary.lines = summary_lines(pipeline.stats(), source.summary(), counter, job.outputs, summary, total)
    return summary


def run_live(job: Live, err: TextIO) -> RunSummary:
    """The newest frames of a live source into the job's window and outputs, a status line
    every ``status_interval_s``, until the source ends, the window is closed or a signal."""
    pipeline, window = job.pipeline, job.window
    pipeline.open()
    info = job.model.info
    err.write(f"watching {pipeline.source.describe()} with {Path(info.path).name} [{info.backend}, {info.device}]"
              + (" - keys: q quit, space pause, s snapshot" if window else " - Ctrl+C stops") + "\n")
    err.flush()
    started = time.monotonic()
    next_status = started + job.status_interval_s
    try:
        if window is not None:
            window.open()
        with StopOnSignal(pipeline, err) as stopper:
            pipeline.start()
            while True:
                if window is not None:
                    try:
                        result = pipeline.next_result(0.005)
                    except StopIteration:
                        break
                    if result is not None:
                        window.show(result.image)
                    if window.poll(1) == QUIT:
                        break
                elif pipeline.join(timeout=0.2):
                    break
                now = time.monotonic()
                if now >= next_status:
                    next_status = now + job.status_interval_s
                    err.write(status_line(pipeline, pipeline.stats()) + "\n")
                    err.flush()
    finally:
        if window is not None:
            window.close()
        # Graceful: what was captured and is in flight still reaches the recording and JSONL.
        pipeline.stop()
        # A stage still stuck after STOP_GRACE_S is given up on; what can be finalized is.
        stopped = pipeline.join(timeout=STOP_GRACE_S)
        pipeline.close(timeout_s=10.0 if stopped else 2.0)
    pipeline.raise_error()
    elapsed = time.monotonic() - started
    summary = RunSummary(job.counter.frames, elapsed, stopper.signum is not None, signum=stopper.signum)
    last_status = status_line(pipeline, pipeline.stats())
    summary.lines = summary_lines(pipeline.stats(), pipeline.source.summary(), job.counter, job.outputs, summary, None)
    summary.lines.insert(1, last_status)
    return summary


def drive(monitor: MonitorRun, err: TextIO, *, status_interval_s: float, duration_s: float | None, banner: str,
          headline: Callable[[RunSummary, float], str], extra: Callable[[], list[str]] = list) -> RunSummary:
    """Run a started-to-be monitor until it ends, a signal or ``duration_s``; its summary.

    Shared by the in-process and the Ray monitor: status lines every ``status_interval_s``,
    the dashboard's address on stdout, a graceful stop, and the same summary (``headline``
    first, then each camera's line, ``extra``, the source's note, failed outputs and the
    files written).
    """
    started = time.monotonic()
    monitor.start()
    if monitor.server is not None:
        err.write(f"dashboard: {monitor.server.url}\n")
        print(f"dashboard: {monitor.server.url}", flush=True)
    err.write(banner + "\n")
    err.flush()
    next_status = time.monotonic() + status_interval_s
    lines: list[str] = []
    try:
        with StopOnSignal(monitor.pipeline, err) as stopper:
            ended = False
            while True:
                now = time.monotonic()
                if ended or now >= next_status:
                    lines = monitor.status_lines()
                    if ended:  # the cameras' last lines go into the summary
                        break
                    next_status = now + status_interval_s
                    err.write("\n".join(lines) + "\n")
                    err.flush()
                if duration_s is not None and now - started >= duration_s:
                    monitor.pipeline.stop()
                ended = monitor.pipeline.join(timeout=0.2)
    finally:
        monitor.stop()
    monitor.pipeline.raise_error()
    elapsed = time.monotonic() - started
    summary = RunSummary(monitor.camera_stats.frames, elapsed, stopper.signum is not None, signum=stopper.signum)
    stats = monitor.pipeline.stats()
    source_note = monitor.source.summary()
    summary.lines = [headline(summary, elapsed), *lines, *extra(), *([source_note] if source_note else []),
                     *sink_failure_lines(stats, summary),
                     *stats.written_lines([*monitor.camera_outputs, monitor.events, monitor.mqtt])]
    return summary


def sink_failure_lines(stats: PipelineStats, run: RunSummary) -> list[str]:
    """The summary lines of the outputs that failed; counts them into ``run.sink_failures``."""
    run.sink_failures += stats.output_failures
    return list(stats.failure_lines)


def summary_lines(stats: PipelineStats, source_note: str | None, counter: CountingSink, sinks: Sequence[Sink],
                  run: RunSummary, total: int | None) -> list[str]:
    """A finished job's summary (``stats``: its pipeline's, at the end): frames and speed,
    detections, tracks and counts, stage times, the source's note, failed outputs and the
    files written."""
    lines = []
    head = f"{'stopped after' if run.interrupted else 'processed'} {run.frames}"
    head += f" of {total} frames" if total else " frames"
    head += f" in {format_duration(run.seconds)} ({run.fps:.1f} fps)"
    lines.append(head)
    if counter.per_class:
        parts = [f"{label} {n} on {counter.frames_with[label]} frames" for label, n in counter.per_class.most_common()]
        lines.append("detections: " + ", ".join(parts))
    elif counter.top_class:
        parts = [f"{label} {n}" for label, n in counter.top_class.most_common()]
        lines.append("top class: " + ", ".join(parts))
    else:
        lines.append("detections: none")
    lines.extend(tracking_lines(counter))
    lines.extend(stats.notes)
    stage_times = ", ".join(f"{s.name} {s.p50_ms:.1f}" for s in stats)
    overlapping = [f"{s.name} runs {s.workers} at once" for s in stats if s.workers > 1]
    lines.append(f"stage times (median ms per frame): {stage_times}" + (f" ({', '.join(overlapping)})" if overlapping else ""))
    if source_note:
        lines.append(source_note)
    lines.extend(sink_failure_lines(stats, run))
    lines.extend(stats.written_lines(sinks))
    return lines


def tracking_lines(counter: CountingSink) -> list[str]:
    """Summary lines for tracks per class, line counts and zone totals (one source or many)."""
    lines: list[str] = []
    if counter.tracks:
        per_class = collections.Counter(counter.tracks.values())
        parts = ", ".join(f"{label} {n}" for label, n in per_class.most_common())
        lines.append(f"tracks: {len(counter.tracks)} ({parts})")
    many = len(counter.analytics) > 1
    for source, analytics in sorted(counter.analytics.items()):
        record = analytics.to_record(counter.names)
        for name, c in record["lines"].items():
            classes = ", ".join(f"{label} {n['in']}/{n['out']}" for label, n in c["classes"].items())
            text = f"line {name}: in {c['in']}, out {c['out']}" + (f" (in/out: {classes})" if classes else "")
            lines.append(f"{source}: {text}" if many else text)
        for name, entered in record["zone_entries"].items():
            now = record["zones"].get(name, {})
            text = (f"zone {name}: entered by " + (", ".join(f"{label} {n}" for label, n in entered.items()) or "nothing")
                    + "; inside at the end: " + (", ".join(f"{label} {n}" for label, n in now.items()) or "nothing"))
            lines.append(f"{source}: {text}" if many else text)
    return lines


def status_line(pipeline: Pipeline, stats: PipelineStats) -> str:
    """One console line for a live pipeline (``stats``: its stats now): state, fps, latency,
    drops per stage, reconnects."""
    last = stats[-1]
    lat50, lat95 = pipeline.latency.percentiles()
    status = stats.source
    drops = [(s.name, s.dropped) for s in stats if s.dropped]
    total_drops = sum(n for _, n in drops)
    parts = [
        f"{pipeline.source.source_id}: {status.get('state', 'running')}",
        f"{last.fps:.1f} fps",
        f"latency p50 {lat50:.0f} ms p95 {lat95:.0f} ms",
        f"dropped {total_drops}" + (" (" + ", ".join(f"{n} {c}" for n, c in drops) + ")" if drops else ""),
    ]
    if status.get("reconnects"):
        parts.append(f"reconnects {status['reconnects']}")
    return " | ".join(parts)

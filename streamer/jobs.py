"""Jobs: a validated pipeline configuration turned into a running pipeline with progress,
signals and a final summary. The CLI and ``streamer run`` both end up here; the pipeline
itself comes from :func:`streamer.compose.build_from_config`."""

from __future__ import annotations

import collections
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from streamer.compose import (  # noqa: F401 - inference_plan: still importable here
    build_from_config,
    inference_plan,
    model_for,
    source_for,
    watch_outputs_for,
)
from streamer.config import PipelineConfig
from streamer.errors import ConfigError
from streamer.pipeline import Pipeline
from streamer.progress import Progress, format_duration
from streamer.sinks.base import Sink
from streamer.sinks.images import ConsoleSink, ImageFolderSink
from streamer.sinks.jsonl import JsonlSink
from streamer.sinks.video import VideoSink
from streamer.sinks.window import QUIT, OverlayWindow, check_display
from streamer.sources import source_path
from streamer.sources.file import ImageSource
from streamer.sources.live import LiveSource
from streamer.types import Result

log = logging.getLogger(__name__)


class CountingSink(Sink):
    """Counts frames and detections per class for the summary."""

    name = "summary"

    def __init__(self) -> None:
        self.frames = 0
        self.per_class: collections.Counter[str] = collections.Counter()
        self.frames_with: collections.Counter[str] = collections.Counter()
        self.top_class: collections.Counter[str] = collections.Counter()
        #: (source, track id) -> label of every confirmed track seen.
        self.tracks: dict[tuple[str, int], str] = {}
        #: source -> its newest line counts and zone occupancy.
        self.analytics: dict[str, Any] = {}
        #: Class names of the model, as the results carry them.
        self.names: tuple[str, ...] = ()

    def write(self, result: Result) -> None:
        self.frames += 1
        self.names = result.names
        if result.detections is not None and len(result.detections):
            labels = [result.label(int(c)) for c in result.detections.class_id]
            self.per_class.update(labels)
            self.frames_with.update(set(labels))
            ids = result.detections.tracker_id
            if ids is not None:
                source = result.frame.source_id
                for track_id, label in zip(ids.tolist(), labels, strict=True):
                    if track_id >= 0:
                        self.tracks.setdefault((source, track_id), label)
        if result.analytics is not None:
            self.analytics[result.frame.source_id] = result.analytics
        if result.classes is not None and len(result.classes):
            self.top_class[result.label(int(result.classes.class_id[0]))] += 1


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


#: How long a stopped job waits for the frames in flight before it gives up on a stuck stage.
STOP_GRACE_S = 10.0


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


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _check_outputs(cfg: PipelineConfig) -> None:
    src = source_path(cfg.source)
    outputs = [p for p in (cfg.output.video, cfg.output.jsonl) if p]
    if src is not None:
        for out in outputs:
            if _same_file(Path(out), src):
                raise ConfigError(f"{out}: output path is the same as the input {cfg.source}; choose another output")
    if cfg.output.video and cfg.output.jsonl and _same_file(Path(cfg.output.video), Path(cfg.output.jsonl)):
        raise ConfigError(f"{cfg.output.video}: the video and JSONL outputs must be different files")


def run_annotate(cfg: PipelineConfig, err: TextIO | None = None, show_progress: bool = True,
                 on_frames: Callable[[int, int | None], object] | None = None) -> RunSummary:
    """Annotate a recorded source: every frame, in order, into the configured outputs.

    ``on_frames(done, total)`` is called about every 0.2 s (a Ray task reports its progress)."""
    err = err or sys.stderr
    _check_outputs(cfg)
    source = source_for(cfg)
    model = model_for(cfg.model)
    images = isinstance(source, ImageSource)
    # The input's sound is carried into the annotated file (a file source; None otherwise).
    audio = source_path(cfg.source)
    video = (VideoSink(cfg.output.video, like=source,
                       audio_from=str(audio) if audio is not None and audio.is_file() else None,
                       **cfg.output.video_options())
             if cfg.output.video and not images else None)
    sinks: list[Sink] = []
    if video is not None:
        sinks.append(video)
    if images and cfg.output.images:
        sinks.append(ImageFolderSink(cfg.output.images))
    if cfg.output.jsonl:
        sinks.append(JsonlSink(cfg.output.jsonl))
    counter = CountingSink()
    sinks.append(counter)
    # One line per image says what it is; a progress bar would only repeat that.
    console = ConsoleSink(like=source) if images else None
    pipeline = build_from_config(cfg, source, model, sinks=[*sinks, console] if console is not None else sinks)
    pipeline.open()
    info = model.info
    total = source.total_frames
    err.write(
        f"annotating {source.source_id}"
        + (f" ({total} frames" + (f", {source.fps:g} fps)" if source.fps else ")") if total else "")
        + f" with {Path(info.path).name} [{info.backend}, {info.device}]\n"
    )
    progress = Progress(total, stream=err) if show_progress and console is None else None
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
    interrupted = stopper.signum is not None
    summary = RunSummary(counter.frames, elapsed, interrupted, signum=stopper.signum)
    summary.lines = _summary_lines(pipeline, counter, sinks, summary, total)
    return summary


def sink_failure_lines(pipeline: Pipeline, run: RunSummary) -> list[str]:
    """The summary lines of the outputs that failed; counts them into ``run.sink_failures``."""
    stats = pipeline.stats()
    run.sink_failures += stats.output_failures
    return list(stats.failure_lines)


def _summary_lines(pipeline: Pipeline, counter: CountingSink, sinks: list[Sink], run: RunSummary, total: int | None) -> list[str]:
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
    stats = pipeline.stats()
    lines.extend(stats.notes)
    stage_times = ", ".join(f"{s.name} {s.p50_ms:.1f}" for s in stats)
    overlapping = [f"{s.name} runs {s.workers} at once" for s in stats if s.workers > 1]
    lines.append(f"stage times (median ms per frame): {stage_times}" + (f" ({', '.join(overlapping)})" if overlapping else ""))
    source_note = pipeline.source.summary()
    if source_note:
        lines.append(source_note)
    lines.extend(sink_failure_lines(pipeline, run))
    lines.extend(written_lines(sinks, stats.incomplete_outputs))
    return lines


def written_lines(sinks: Sequence[Sink | None], incomplete: Sequence[str]) -> list[str]:
    """"wrote ..." for each output with a summary; "not complete: ..." for one that failed."""
    notes = [(sink.name, sink.summary()) for sink in sinks if sink is not None]
    return [f"{'not complete' if name in incomplete else 'wrote'} {note}" for name, note in notes if note]


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


def status_line(pipeline: Pipeline) -> str:
    """One console line for a live pipeline: state, fps, latency, drops per stage, reconnects."""
    stats = pipeline.stats()
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


def run_watch(cfg: PipelineConfig, err: TextIO | None = None) -> RunSummary:
    """Live view: newest frames only, overlay window and/or recording, status every few seconds."""
    err = err or sys.stderr
    _check_outputs(cfg)
    window = OverlayWindow(title=f"streamer - {cfg.source}", snapshot_dir=cfg.output.snapshots) if cfg.output.window else None
    if window is not None:
        check_display()  # before loading anything: say it at once
    source = source_for(cfg, live=True)
    if not isinstance(source, LiveSource):
        raise ConfigError(f"{cfg.source}: watch needs a live source (a webcam index, a URL, synthetic or a video file)")
    model = model_for(cfg.model)
    sinks: list[Sink] = []
    video = VideoSink(cfg.output.video, fps=None, measure_fps=True, **cfg.output.video_options()) if cfg.output.video else None
    if video is not None:
        sinks.append(video)
    if cfg.output.jsonl:
        sinks.append(JsonlSink(cfg.output.jsonl))
    counter = CountingSink()
    sinks.append(counter)
    sinks.extend(watch_outputs_for(cfg, source))

    def dropped_line() -> list[str]:  # drawn on each frame, once ``pipeline`` below exists
        return [f"dropped {pipeline.dropped + source.dropped}"]

    pipeline = build_from_config(cfg, source, model, sinks=sinks, render=window is not None or video is not None,
                                 render_status=True, extra_status=dropped_line, output=window is not None)
    pipeline.open()
    info = model.info
    err.write(f"watching {source.describe()} with {Path(info.path).name} [{info.backend}, {info.device}]"
              + (" - keys: q quit, space pause, s snapshot" if window else " - Ctrl+C stops") + "\n")
    err.flush()
    started = time.monotonic()
    next_status = started + cfg.output.status_interval_s
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
                    next_status = now + cfg.output.status_interval_s
                    err.write(status_line(pipeline) + "\n")
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
    summary = RunSummary(counter.frames, elapsed, stopper.signum is not None, signum=stopper.signum)
    summary.lines = _summary_lines(pipeline, counter, sinks, summary, None)
    summary.lines.insert(1, status_line(pipeline))
    return summary

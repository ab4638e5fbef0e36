"""Annotating several files: which files, where each output goes, and one file's run.

Shared by both executors: in-process the files run one after another, on Ray one task
each (:mod:`.ray_annotate`). Either way a file's outputs are written under a temporary
name next to their final one and renamed only once complete, so an interrupted or retried
run never leaves half a file under the final name.
"""

from __future__ import annotations

import dataclasses
import io
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from streamer.config import PipelineConfig
from streamer.errors import ConfigError, StageError, StreamerError
from streamer.paths import overwritten
from streamer.progress import format_duration
from streamer.sources import source_path

#: Container suffixes taken from a folder of videos (OpenCV's FFmpeg reads them all).
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".ts", ".mpg", ".mpeg", ".flv"})
TMP_MARK = ".partial-"


def videos_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def expand_sources(sources: list[str]) -> list[str]:
    """Each source as given, a folder that holds videos replaced by its videos (sorted)."""
    out: list[str] = []
    for spec in sources:
        path = source_path(spec)
        if path is not None and path.is_dir():
            videos = videos_in(path)
            if videos:
                out.extend(str(v) for v in videos)
                continue
            if len(sources) > 1:
                raise ConfigError(f"{spec}: no video files in this folder (a folder of images is annotated on its own)")
        out.append(spec)
    if not out:
        raise ConfigError("no input files")
    return out


def output_name(spec: str) -> str:
    return Path(spec.removeprefix("sample:")).stem or "output"


@dataclass(frozen=True)
class FileJob:
    """One input and its final outputs (None: not written)."""

    source: str
    name: str
    video: str | None
    jsonl: str | None


def plan(sources: list[str], outdir: str | os.PathLike[str], video: bool = True) -> list[FileJob]:
    """``OUTDIR/<name>.mp4`` and ``OUTDIR/<name>.jsonl`` per input; two inputs of one name are an error."""
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: with several inputs the output must be a folder")
    jobs: list[FileJob] = []
    seen: dict[str, str] = {}
    for spec in expand_sources(sources):
        name = output_name(spec)
        if name in seen:
            raise ConfigError(f"{spec} and {seen[name]} would both write {out / name}.*: rename one")
        seen[name] = spec
        job = FileJob(spec, name, str(out / f"{name}.mp4") if video else None, str(out / f"{name}.jsonl"))
        clash = overwritten((job.video, job.jsonl), source_path(spec))
        if clash is not None:
            raise ConfigError(f"{clash}: output path is the same as the input {spec}; choose another output folder")
        jobs.append(job)
    return jobs


def temporary(path: str, token: str) -> str:
    """``out/a.mp4`` -> ``out/.a.partial-TOKEN.mp4``: hidden, same folder (renames stay atomic), same suffix
    (the container is chosen by it)."""
    p = Path(path)
    return str(p.with_name(f".{p.stem}{TMP_MARK}{token}{p.suffix}"))


def remove_leftovers(job: FileJob) -> None:
    """Temporary files a killed attempt could not remove."""
    for final in (job.video, job.jsonl):
        if final is None:
            continue
        p = Path(final)
        if p.parent.is_dir():
            # The video writer's own ``.part`` file as well as ours.
            for leftover in p.parent.glob(f".{p.stem}{TMP_MARK}*"):
                leftover.unlink(missing_ok=True)


class FileFailed(StreamerError):
    """A file's run failed for a reason a retry would not change (bad input, a full disk)."""


def annotate_file(cfg: PipelineConfig, job: FileJob, on_frames: Callable[[int, int | None], object] | None = None,
                  err: Any = None, show_progress: bool = False) -> dict[str, Any]:
    """Run the in-process annotate on one file into temporary outputs, then rename them.

    Returns ``{"name", "frames", "seconds", "lines"}``. A ``StreamerError`` (the input is bad,
    an output cannot be written) becomes :class:`FileFailed`; anything else propagates, so a
    Ray task is retried. An interrupted run (a signal) raises too: its output is not complete.
    """
    from streamer.jobs import run_annotate

    token = uuid.uuid4().hex[:12]
    temps = {final: temporary(final, token) for final in (job.video, job.jsonl) if final is not None}
    output = dataclasses.replace(cfg.output, video=temps.get(job.video) if job.video else None,
                                 jsonl=temps.get(job.jsonl) if job.jsonl else None)
    one = dataclasses.replace(cfg, source=job.source, job="annotate", output=output)
    try:
        try:
            summary = run_annotate(one, err=err if err is not None else io.StringIO(), show_progress=show_progress,
                                   on_frames=on_frames)
        except StageError as exc:
            if isinstance(exc.cause, StreamerError):
                raise FileFailed(f"{job.source}: {exc.cause}") from None
            raise
        except FileFailed:
            raise
        except StreamerError as exc:
            raise FileFailed(str(exc) if job.source in str(exc) else f"{job.source}: {exc}") from None
        if summary.interrupted:
            raise InterruptedError(f"{job.source}: stopped by a signal before the end")
        if summary.sink_failures:
            raise FileFailed(f"{job.source}: an output failed: " + "; ".join(summary.lines[-1:]))
        for final, temp in temps.items():
            os.replace(temp, final)
    finally:
        for temp in temps.values():
            Path(temp).unlink(missing_ok=True)
            Path(temp + ".part").unlink(missing_ok=True)
    return {"name": job.name, "source": job.source, "frames": summary.frames, "seconds": summary.seconds,
            "lines": summary.lines}


@dataclass
class BatchSummary:
    """What the CLI prints: one line per file, failures by name; exit 1 when any failed."""

    results: list[dict[str, Any]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    frames: int = 0
    nodes: int = 0
    interrupted: bool = False
    lines: list[str] = field(default_factory=list)


def batch_lines(summary: BatchSummary, jobs: list[FileJob], ray: bool = False) -> list[str]:
    """The end-of-run lines: totals, one line per file written, then every failure by name."""
    fps = summary.frames / summary.seconds if summary.seconds > 0 else 0.0
    where = f" on {summary.nodes} Ray node(s)" if ray else ""
    lines = [f"annotated {len(summary.results)} of {len(jobs)} files, {summary.frames} frames in "
             f"{format_duration(summary.seconds)} ({fps:.1f} fps in total){where}"]
    by_name = {r["name"]: r for r in summary.results}
    for job in jobs:
        r = by_name.get(job.name)
        if r is None:
            continue
        head = r["lines"][0] if r.get("lines") else f"{r['frames']} frames"
        lines.append(f"{job.source}: {head} -> {', '.join(p for p in (job.video, job.jsonl) if p)}")
    lines.extend(f"FAILED {source}: {reason}" for source, reason in summary.failed)
    return lines


def run_annotate_local(cfg: PipelineConfig, jobs: list[FileJob], err: TextIO | None = None,
                       show_progress: bool = True) -> BatchSummary:
    """The same many-file run in this process, one file after another."""
    err = err or sys.stderr
    summary = BatchSummary(nodes=0)
    started = time.monotonic()
    for job in jobs:
        try:
            summary.results.append(annotate_file(cfg, job, err=err, show_progress=show_progress))
        except FileFailed as exc:
            summary.failed.append((job.source, str(exc)))
            err.write(f"failed: {exc}\n")
        except KeyboardInterrupt:
            summary.interrupted = True
            break
    summary.seconds = time.monotonic() - started
    summary.frames = sum(int(r["frames"]) for r in summary.results)
    summary.lines = batch_lines(summary, jobs)
    return summary


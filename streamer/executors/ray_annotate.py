"""Annotating many files on a Ray cluster: one task per file, one progress line over all.

Each task runs the in-process annotate (:func:`streamer.jobs.run_annotate`) on its file, so
its outputs equal a local run's; it writes under temporary names and renames when complete
(:func:`.files.annotate_file`). A task whose worker or node dies is retried
(``executor.file_retries``; Ray places the retry where there is room, another node when
its own is gone); so is one that raised something unexpected. A bad input is not retried:
it is reported by name while the other files finish, and the run exits 1.

Inputs and the output folder must be at the same path on every node (a shared or
replicated file system), as for any Ray job that reads and writes files.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from streamer.config import PipelineConfig
from streamer.executors import ray_cluster
from streamer.executors.files import BatchSummary, FileJob, FileFailed, annotate_file, batch_lines, remove_leftovers
from streamer.progress import Progress, format_duration

log = logging.getLogger(__name__)

BOARD_POLL_S = 0.5


class ProgressBoard:
    """Frames done per file, reported by the tasks (a Ray actor; no CPU reserved)."""

    def __init__(self) -> None:
        self.files: dict[str, dict[str, Any]] = {}

    def report(self, name: str, done: int, total: int | None, pid: int, node: str, attempt: str) -> None:
        entry = self.files.setdefault(name, {"attempts": []})
        if attempt not in entry["attempts"]:
            entry["attempts"].append(attempt)
        entry.update(done=done, total=total, pid=pid, node=node, attempt=attempt)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return self.files


def annotate_task(cfg: PipelineConfig, job: FileJob, board: Any) -> dict[str, Any]:
    """The body of one file's Ray task."""
    import uuid

    import ray

    from streamer.executors.ray_workers import node_identity

    identity = node_identity()
    attempt = uuid.uuid4().hex[:8]
    last = [0.0]

    def report(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.25:
            last[0] = now
            board.report.remote(job.name, done, total, identity["pid"], identity["node"], attempt)

    report(0, None)
    try:
        result = annotate_file(cfg, job, on_frames=report)
    except FileFailed as exc:
        return {"name": job.name, "source": job.source, "error": str(exc), "node": identity["node"]}
    # The last frame count, so the progress line ends at the total.
    ray.get(board.report.remote(job.name, result["frames"], result["frames"], identity["pid"], identity["node"],
                                attempt), timeout=10)
    result["node"] = identity["node"]
    return result


def frame_counts(cfg: PipelineConfig, jobs: list[FileJob]) -> dict[str, int]:
    """Frames per input, from each container's header where this machine can read it (for the
    progress line's total before every task has started)."""
    from streamer.compose import source_for

    counts: dict[str, int] = {}
    for job in jobs:
        try:
            source = source_for(dataclasses.replace(cfg, source=job.source, job="annotate"))
            source.open()
            try:
                if source.total_frames:
                    counts[job.name] = int(source.total_frames)
            finally:
                source.close()
        except Exception as exc:  # noqa: BLE001 - the task reports the real error, if any
            log.debug("cannot count the frames of %s: %s", job.source, exc)
    return counts


def run_annotate_ray(cfg: PipelineConfig, jobs: list[FileJob], err: TextIO | None = None, show_progress: bool = True,
                     on_board: Callable[[dict[str, dict[str, Any]]], object] | None = None) -> BatchSummary:
    """Annotate ``jobs`` (see :func:`.files.plan`) over the cluster ``cfg.executor`` names.

    ``on_board`` receives the progress board (per file: frames done, total, worker pid, node,
    attempts) about every half second.
    """
    err = err or sys.stderr
    ex = cfg.executor
    summary = BatchSummary()
    with ray_cluster.connected(ex) as ray:
        nodes = ray_cluster.alive_nodes(ray)
        board = ray.remote(ProgressBoard).options(num_cpus=0).remote()
        task = ray.remote(annotate_task).options(num_cpus=ex.file_cpus, max_retries=ex.file_retries,
                                                 retry_exceptions=True, scheduling_strategy="SPREAD")
        pending = {task.remote(cfg, job, board): job for job in jobs}
        err.write(f"annotating {len(jobs)} files on a Ray cluster of {len(nodes)} node(s) "
                  f"({sum(n.get('Resources', {}).get('CPU', 0) for n in nodes):g} CPUs)\n")
        err.flush()
        probed = frame_counts(cfg, jobs) if show_progress else {}
        progress = Progress(None, label=f"0/{len(jobs)} files", stream=err) if show_progress else None
        started = time.monotonic()
        snapshot: dict[str, dict[str, Any]] = {}
        next_poll = 0.0
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=BOARD_POLL_S)
                for ref in ready:
                    job = pending.pop(ref)
                    try:
                        result = ray.get(ref, timeout=ex.call_timeout_s)
                    except Exception as exc:  # noqa: BLE001 - every retry used up: report this file, go on
                        text = str(exc).strip().splitlines()
                        result = {"name": job.name, "source": job.source,
                                  "error": f"{job.source}: failed after {ex.file_retries} retries: "
                                           f"{type(exc).__name__}: {text[-1] if text else ''}"}
                    if "error" in result:
                        summary.failed.append((job.source, result["error"]))
                        err.write(f"\nfailed: {result['error']}\n")
                    else:
                        summary.results.append(result)
                now = time.monotonic()
                if now >= next_poll:
                    next_poll = now + BOARD_POLL_S
                    try:
                        snapshot = ray.get(board.snapshot.remote(), timeout=ex.call_timeout_s)
                    except Exception as exc:  # noqa: BLE001 - progress is optional; the files are not
                        log.debug("progress board: %s", exc)
                    if on_board is not None:
                        on_board(snapshot)
                if progress is not None:
                    totals = [snapshot.get(job.name, {}).get("total") or probed.get(job.name) for job in jobs]
                    progress.total = sum(totals) if all(totals) else None  # type: ignore[arg-type]
                    done_files = len(summary.results) + len(summary.failed)
                    progress.label = f"{done_files}/{len(jobs)} files"
                    progress.update(sum(int(e.get("done") or 0) for e in snapshot.values()))
        except KeyboardInterrupt:
            summary.interrupted = True
            for ref in pending:
                ray.cancel(ref, force=True)
        summary.seconds = time.monotonic() - started
        summary.frames = sum(int(r.get("frames") or 0) for r in summary.results)
        if progress is not None:
            progress.label = f"{len(summary.results) + len(summary.failed)}/{len(jobs)} files"
            progress.finish(summary.frames)
        summary.nodes = len({r.get("node") for r in summary.results if r.get("node")})
    for job in jobs:
        remove_leftovers(job)
    summary.lines = batch_lines(summary, jobs, ray=True)
    return summary

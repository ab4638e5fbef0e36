"""The job entries: each asks :mod:`streamer.compose` for its whole job in one call and runs it
with an executor. The CLI, ``streamer run`` and the Ray file tasks all end up here.

======================  ==========================================  =====================================
entry                   built by                                    run by
======================  ==========================================  =====================================
:func:`run_annotate`    :func:`streamer.compose.annotate`           :func:`.executors.local.run_recorded`
:func:`run_watch`       :func:`streamer.compose.watch`              :func:`.executors.local.run_live`
:func:`run_monitor`     :func:`streamer.compose.monitor`            :func:`.executors.local.drive`
:func:`run_monitor_ray` :func:`streamer.compose.ray_monitor`        :func:`.executors.local.drive`, on a
                                                                    Ray cluster it joins or starts
======================  ==========================================  =====================================
"""

from __future__ import annotations

import collections
import sys
from collections.abc import Callable
from typing import TextIO

from streamer import compose
from streamer.config import PipelineConfig
from streamer.executors import ray_cluster
from streamer.executors.local import RunSummary, drive, run_live, run_recorded


def run_annotate(cfg: PipelineConfig, err: TextIO | None = None, show_progress: bool = True,
                 on_frames: Callable[[int, int | None], object] | None = None) -> RunSummary:
    """Annotate a recorded source: every frame, in order, into the configured outputs.

    ``on_frames(done, total)`` is called about every 0.2 s (a Ray task reports its progress)."""
    job = compose.annotate(cfg)
    return run_recorded(job, err or sys.stderr, show_progress=show_progress, on_frames=on_frames)


def run_watch(cfg: PipelineConfig, err: TextIO | None = None) -> RunSummary:
    """Live view: newest frames only, overlay window and/or recording, status every few seconds."""
    job = compose.watch(cfg)
    return run_live(job, err or sys.stderr)


def run_monitor(cfg: PipelineConfig, err: TextIO | None = None, *, duration_s: float | None = None) -> RunSummary:
    """``streamer monitor``: many cameras in this process, until a signal or ``duration_s``."""
    monitor = compose.monitor(cfg)
    names = monitor.names
    return drive(
        monitor, err or sys.stderr, status_interval_s=cfg.output.status_interval_s, duration_s=duration_s,
        banner=f"monitoring {len(names)} cameras: {', '.join(names)} (Ctrl+C stops)",
        headline=lambda run, elapsed: (f"processed {run.frames} frames from {len(names)} cameras in {elapsed:.0f}s "
                                       f"({run.fps:.1f} fps in total)"),
    )


def run_monitor_ray(cfg: PipelineConfig, err: TextIO | None = None, *, duration_s: float | None = None) -> RunSummary:
    """``streamer monitor`` with ``executor.kind: ray``: the same lines and summary as in-process."""
    with ray_cluster.connected(cfg.executor) as ray:
        nodes = ray_cluster.alive_nodes(ray)
        monitor = compose.ray_monitor(cfg, ray)
        names = monitor.names

        def headline(run: RunSummary, elapsed: float) -> str:
            used = monitor.source.nodes_used
            return (f"processed {run.frames} frames from {len(names)} cameras on {len(used)} Ray "
                    f"node(s) in {elapsed:.0f}s ({run.fps:.1f} fps in total)")

        def moved() -> list[str]:
            moves = collections.Counter({n: s.moves for n, s in monitor.source.cameras.items() if s.moves})
            return ["moved to another node: " + ", ".join(f"{n} {k}x" for n, k in moves.items())] if moves else []

        return drive(
            monitor, err or sys.stderr, status_interval_s=cfg.output.status_interval_s, duration_s=duration_s,
            banner=(f"monitoring {len(names)} cameras on a Ray cluster of {len(nodes)} node(s): "
                    f"{', '.join(names)} (Ctrl+C stops)"),
            headline=headline, extra=moved,
        )

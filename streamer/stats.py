"""Per-stage counters and timing percentiles, and the per-camera record of a monitor."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

import numpy as np

_WINDOW = 512  # timings kept per stage for percentiles: about 20 s at 25 fps
_FPS_WINDOW_S = 2.0


class Summarized(Protocol):
    """An output with a name and a line for a run's summary (a sink)."""

    name: str

    def summary(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class StageStats:
    """A snapshot of one stage's counters. Times are milliseconds per processed item."""

    name: str
    processed: int
    dropped: int
    errors: int
    queue_depth: int
    fps: float
    p50_ms: float
    p95_ms: float
    last_error: str | None
    state: str = "running"
    stalled_s: float = 0.0
    #: Calls of the stage's ``process``/``process_batch`` (one per batch); ``processed`` counts items.
    batches: int = 0
    #: Threads running the stage at once (see ``Stage.workers``).
    workers: int = 1

    @property
    def mean_batch(self) -> float:
        """Items per call: 1.0 for an unbatched stage, up to its batch size for the infer stage."""
        return self.processed / self.batches if self.batches else 0.0


@dataclass(frozen=True, slots=True)
class PipelineStats:
    """A snapshot of a whole pipeline, from :meth:`streamer.pipeline.Pipeline.stats`.

    ``stages`` has the source's row first, then one row per stage in order (each row's
    ``dropped`` is what its input queue evicted); iterating, indexing and ``len`` go over
    those rows.
    """

    stages: tuple[StageStats, ...]
    #: Frames evicted from the queues between stages and the output queue, in total...
    dropped: int
    #: ...and by the source id of the evicted frame (a camera of a monitor).
    dropped_by_source: dict[str, int]
    #: ``Source.describe()``: what is read, credentials masked.
    source_description: str
    #: ``Source.status()``: connection state, reconnects... (per camera for several cameras).
    source: dict[str, object]
    #: Failures of the stages' outputs (sinks) while running, and one summary line per output.
    output_failures: int = 0
    failure_lines: tuple[str, ...] = ()
    #: Outputs disabled after failing or that failed to finish: their files are not complete.
    incomplete_outputs: tuple[str, ...] = ()
    #: The stages' own summary lines (``Stage.summary_lines``).
    notes: tuple[str, ...] = ()

    def written_lines(self, outputs: Sequence[Summarized | None]) -> list[str]:
        """"wrote ..." for each of ``outputs`` with a summary; "not complete: ..." for one that
        failed (its name is among :attr:`incomplete_outputs`)."""
        notes = [(out.name, out.summary()) for out in outputs if out is not None]
        return [f"{'not complete' if name in self.incomplete_outputs else 'wrote'} {note}" for name, note in notes if note]

    def stage(self, name: str) -> StageStats | None:
        """The row of the stage called ``name`` ("source", "infer"...), or None."""
        return next((row for row in self.stages if row.name == name), None)

    def __iter__(self) -> Iterator[StageStats]:
        return iter(self.stages)

    def __len__(self) -> int:
        return len(self.stages)

    def __getitem__(self, index: int) -> StageStats:
        return self.stages[index]


class StageMeter:
    """Mutable counters owned by one stage thread; ``snapshot`` may be called from any thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.processed = 0
        self.batches = 0
        self.errors = 0
        self.last_error: str | None = None
        self.state = "idle"
        # When each worker started the item it is on now (absent while it waits for input).
        self._busy: dict[int, float] = {}
        self.stalled_reported = False
        self._lock = threading.Lock()
        self._times_ms: collections.deque[float] = collections.deque(maxlen=_WINDOW)
        self._done_at: collections.deque[float] = collections.deque(maxlen=_WINDOW)

    def begin(self, worker: int = 0) -> None:
        """``worker`` started an item (stages run by several threads have one key each)."""
        self._busy[worker] = time.monotonic()

    def end(self, worker: int = 0) -> None:
        self._busy.pop(worker, None)

    @property
    def busy_since(self) -> float | None:
        """When the oldest item still being processed was started; None while all wait for input."""
        starts = list(self._busy.values())
        return min(starts) if starts else None

    def record(self, elapsed_ms: float, items: int = 1) -> None:
        now = time.monotonic()
        with self._lock:
            self.processed += items
            self.batches += 1
            for _ in range(items):
                self._times_ms.append(elapsed_ms)
                self._done_at.append(now)

    def record_error(self, message: str) -> None:
        with self._lock:
            self.errors += 1
            self.last_error = message

    def fps(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            recent = [t for t in self._done_at if now - t <= _FPS_WINDOW_S]
        if len(recent) < 2:
            return 0.0
        span = now - recent[0]
        return (len(recent) - 1) / span if span > 0 else 0.0

    def percentiles(self) -> tuple[float, float]:
        with self._lock:
            times = np.fromiter(self._times_ms, dtype=np.float64, count=len(self._times_ms))
        if times.size == 0:
            return 0.0, 0.0
        p50, p95 = np.percentile(times, [50, 95])
        return float(p50), float(p95)

    def snapshot(self, dropped: int = 0, queue_depth: int = 0, workers: int = 1) -> StageStats:
        p50, p95 = self.percentiles()
        return StageStats(
            name=self.name,
            processed=self.processed,
            dropped=dropped,
            errors=self.errors,
            queue_depth=queue_depth,
            fps=round(self.fps(), 2),
            p50_ms=round(p50, 3),
            p95_ms=round(p95, 3),
            last_error=self.last_error,
            state=self.state,
            stalled_s=round(time.monotonic() - since, 3) if (since := self.busy_since) is not None else 0.0,
            batches=self.batches,
            workers=workers,
        )


# Latency bucket bounds in seconds: 5 ms (a light model on a GPU) to 10 s (a stalled
# pipeline), dense where live video usually sits (30-500 ms).
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)


class LatencyHistogram:
    """Cumulative-bucket histogram of latencies, for Prometheus; safe to share between threads.

    Unlike :class:`StageMeter`'s window it never forgets, which is what a Prometheus
    histogram needs: ``rate()`` over the buckets gives any window later.
    """

    def __init__(self, bounds_s: tuple[float, ...] = LATENCY_BUCKETS_S) -> None:
        if not bounds_s or list(bounds_s) != sorted(set(bounds_s)) or bounds_s[0] <= 0:
            raise ValueError(f"histogram bounds must be positive and strictly increasing, but got {bounds_s}")
        self.bounds_s = tuple(float(b) for b in bounds_s)
        self._counts = [0] * (len(self.bounds_s) + 1)  # per bucket, the last one above every bound
        self._sum_s = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        index = int(np.searchsorted(self.bounds_s, seconds, side="left"))  # le: bound inclusive
        with self._lock:
            self._counts[index] += 1
            self._sum_s += seconds

    def snapshot(self) -> dict[str, object]:
        """``{"le": bounds, "counts": cumulative counts per bound then the total, "sum_s": s}``."""
        with self._lock:
            counts, total = list(self._counts), self._sum_s
        return {"le": list(self.bounds_s), "counts": np.cumsum(counts).tolist(), "sum_s": total}


@dataclass(frozen=True, slots=True)
class Shedding:
    """What a camera of the in-process monitor decodes and what the model takes of it.

    ``decode_level``: its decode level (``streamer.sources.shedding``); frames a second
    decoded, inferred (results) and skipped (read but never seen by the model: not decoded,
    or decoded and overtaken by a newer frame); ``max_fps``: its cap (None: none);
    ``result_age_s``: how old its newest result's frame is (None: no result yet).
    """

    decode_level: str
    decoded_fps: float
    inferred_fps: float
    skipped_fps: float
    max_fps: float | None
    result_age_s: float | None


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a camera of the Ray monitor runs: its actor's node, and how often it restarted."""

    node: str | None
    node_ip: str | None
    actor_restarts: int


@dataclass(frozen=True, slots=True)
class CameraStatus:
    """One camera as a monitor reports it, in-process or on Ray: what the dashboard's tiles,
    ``/api/stats`` and ``/metrics`` show (:meth:`record`).

    ``latency_histogram`` is :meth:`LatencyHistogram.snapshot`; ``url`` is already
    password-masked; ``size`` is ``WIDTHxHEIGHT`` of the current stream. Each executor adds
    what only it knows: ``shedding`` (in-process), ``placement`` (Ray). ``extras`` are the
    tracks in view and the camera's line and zone counts, when it has them.
    """

    state: str
    fps: float
    latency_ms_p50: float
    latency_ms_p95: float
    latency_histogram: dict[str, object]
    dropped: int
    reconnects: int
    frames: int
    url: str
    last_error: str | None
    size: str | None
    shedding: Shedding | None = None
    placement: Placement | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The camera's JSON object: every field flat, then the executor's own group and the
        extras; a group the executor does not have is left out, not shown as nulls (people
        script against these keys)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _GROUPS}
        for group in (self.shedding, self.placement):
            if group is not None:
                out.update(asdict(group))
        out.update(self.extras)
        return out


_GROUPS = ("shedding", "placement", "extras")

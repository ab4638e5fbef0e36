"""Per-stage counters and timing percentiles."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass

import numpy as np

_WINDOW = 512  # timings kept per stage for percentiles: about 20 s at 25 fps
_FPS_WINDOW_S = 2.0


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


class StageMeter:
    """Mutable counters owned by one stage thread; ``snapshot`` may be called from any thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.processed = 0
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

    def snapshot(self, dropped: int = 0, queue_depth: int = 0) -> StageStats:
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
        )

"""Progress lines for long work (frames done of total, fps, ETA)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """Prints ``[done/total] pct fps ETA``: in place on a terminal, a line every few seconds otherwise."""

    def __init__(self, total: int | None, label: str = "", stream: TextIO | None = None, interval_s: float | None = None) -> None:
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval_s = interval_s if interval_s is not None else (0.25 if self.tty else 5.0)
        self.started = time.monotonic()
        self._last = 0.0
        self._width = 0

    def line(self, done: int) -> str:
        elapsed = time.monotonic() - self.started
        fps = done / elapsed if elapsed > 0 else 0.0
        prefix = f"{self.label} " if self.label else ""
        if self.total:
            width = len(str(self.total))
            pct = 100.0 * done / self.total
            eta = (self.total - done) / fps if fps > 0 else 0.0
            return f"{prefix}[{done:>{width}}/{self.total}] {pct:5.1f}%  {fps:6.1f} fps  ETA {format_duration(eta)}"
        return f"{prefix}[{done}] {fps:6.1f} fps  elapsed {format_duration(elapsed)}"

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval_s:
            return
        self._last = now
        text = self.line(done)
        if self.tty:
            pad = " " * max(0, self._width - len(text))
            self.stream.write("\r" + text + pad)
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self, done: int) -> None:
        self.update(done, force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

"""Several live cameras behind one source, for one pipeline and batched inference."""

from __future__ import annotations

import logging
import threading
import time

from streamer.errors import SourceReadError
from streamer.sources.base import TIMEOUT, Source
from streamer.sources.live import LiveSource
from streamer.types import Frame

log = logging.getLogger(__name__)


class MultiSource(Source):
    """Hands out the newest frame of each camera in turn.

    Each camera keeps its own capture thread and one-frame slot, so a camera that is down or
    slow never delays the others: its slot is simply empty. ``read`` takes cameras round
    robin, so a fast camera cannot starve a slow one. The stream ends when every camera has
    ended (a camera that gave up reconnecting is logged and left out).
    """

    live = True

    def __init__(self, cameras: dict[str, LiveSource]) -> None:
        if not cameras:
            raise ValueError("MultiSource needs at least one camera")
        self.cameras = cameras
        self.source_id = "cameras"
        self._names = list(cameras)
        self._next = 0
        self._event = threading.Event()
        self._reported: set[str] = set()
        for camera in cameras.values():
            camera.listener = self._event

    @property
    def kind(self) -> str:
        return "cameras"

    @property
    def streams(self) -> int:
        return len(self.cameras)

    @property
    def dropped(self) -> int:
        return sum(c.dropped for c in self.cameras.values())

    def open(self) -> None:
        """Start every camera; when one fails to open, stop the ones already started."""
        started: list[LiveSource] = []
        try:
            for camera in self.cameras.values():
                camera.open()
                started.append(camera)
        except BaseException:
            for camera in reversed(started):
                camera.close()
            raise

    def read(self, timeout: float) -> Frame | None | object:
        deadline = time.monotonic() + timeout
        while True:
            self._event.clear()
            n = len(self._names)
            for offset in range(n):
                name = self._names[(self._next + offset) % n]
                frame = self.cameras[name].take()
                if frame is not None:
                    self._next = (self._next + offset + 1) % n
                    return frame
            if all(self._ended(name) for name in self._names):
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return TIMEOUT
            self._event.wait(remaining)

    def _ended(self, name: str) -> bool:
        camera = self.cameras[name]
        if not camera.ended:
            return False
        if name not in self._reported:
            self._reported.add(name)
            try:
                camera.read(0)
            except SourceReadError as exc:
                log.error("%s", exc)
        return True

    def close(self) -> None:
        for camera in self.cameras.values():
            camera.close()

    def status(self) -> dict[str, object]:
        return {name: camera.status() for name, camera in self.cameras.items()}

    def summary(self) -> str | None:
        return "; ".join(filter(None, (c.summary() for c in self.cameras.values())))

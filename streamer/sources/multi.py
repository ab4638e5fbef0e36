"""Several live cameras behind one source, for one pipeline and batched inference."""

from __future__ import annotations

import logging
import threading
import time

from streamer.errors import SourceReadError
from streamer.sources.base import TIMEOUT, Source
from streamer.sources.live import STREAMING, LiveSource
from streamer.sources.shedding import ShedController, ShedSettings
from streamer.types import Frame

log = logging.getLogger(__name__)


class MultiSource(Source):
    """Hands out the newest frame of the camera served least recently.

    Each camera keeps its own capture thread and one-frame slot, so a camera that is down or
    slow never delays the others: its slot is simply empty. ``read`` takes, among the cameras
    with a frame, the one whose frame was taken longest ago, so with N cameras each gets
    about 1/N of the model however fast it delivers; a camera with ``max_fps`` is passed
    over until 1/max_fps has gone by since its last frame was taken (its slot keeps only the
    newest meanwhile). The pipeline pulls from here only when the model has room (its edges
    up to the model are lossless), so what is read is what the model consumes; the
    :class:`~streamer.sources.shedding.ShedController` turns that into each camera's decode
    level. The stream ends when every camera has ended (a camera that gave up reconnecting
    is logged and left out).
    """

    live = True

    def __init__(self, cameras: dict[str, LiveSource], shedding: ShedSettings | None = None) -> None:
        if not cameras:
            raise ValueError("MultiSource needs at least one camera")
        self.cameras = cameras
        self.source_id = "cameras"
        self._names = list(cameras)
        #: When each camera's newest frame was taken (0: never), for least-recently-served order.
        self.served_at = dict.fromkeys(cameras, 0.0)
        self.shed = ShedController({name: camera.decode for name, camera in cameras.items()}, shedding,
                                   caps={name: c.max_fps for name, c in cameras.items() if c.max_fps is not None})
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

    def fps_of(self, source_id: str) -> float | None:
        camera = self.cameras.get(source_id)
        return camera.fps or None if camera is not None else None

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
            now = time.monotonic()
            self.shed.tick((n for n, c in self.cameras.items() if c.state == STREAMING), now)
            self._event.clear()
            name, wake_at = self._next_camera(now)
            if name is not None:
                frame = self.cameras[name].take()
                if frame is not None:
                    self.served_at[name] = now
                    self.shed.taken(name)
                    return frame
                continue
            if all(self._ended(name) for name in self._names):
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return TIMEOUT
            wait = remaining if wake_at is None else min(remaining, max(0.0, wake_at - time.monotonic()))
            started = time.monotonic()
            self._event.wait(wait)
            if wake_at is None:
                # Only a wait with no frame held back by a cap means the model went hungry.
                self.shed.observe_wait(time.monotonic() - started)

    def _next_camera(self, now: float) -> tuple[str | None, float | None]:
        """The least recently served camera with a frame it may hand out now; else None and
        when the soonest capped camera with a frame may hand it out (None if none waits)."""
        best: str | None = None
        wake_at: float | None = None
        for name in self._names:
            camera = self.cameras[name]
            if not camera.has_frame() or camera.max_fps == 0:
                continue  # fps 0: never detected, whatever its capture still decodes
            if camera.max_fps is not None:
                due = self.served_at[name] + 1.0 / camera.max_fps
                if due > now:
                    wake_at = due if wake_at is None else min(wake_at, due)
                    continue
            if best is None or self.served_at[name] < self.served_at[best]:
                best = name
        return best, wake_at

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
        return "; ".join(filter(None, [*(c.summary() for c in self.cameras.values()), self.shed.summary()]))

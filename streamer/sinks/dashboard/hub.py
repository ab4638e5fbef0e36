"""The frame hub between the pipeline and the web server.

Pipeline threads call :meth:`DashboardHub.publish` with every rendered frame. Publishing
costs a lock and a clock read: at most ``max_fps`` frames per camera are kept, and only as a
reference to the newest one. One encoder thread JPEG-encodes the pending frames, newest
only, cameras in turn, so all cameras together never use more than one core for the
dashboard, and the sinks thread never waits for an encode, a web client or a socket.
Web threads block in :meth:`DashboardHub.wait_frame` until a newer JPEG exists.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import cv2
import numpy as np

from streamer.errors import ConfigError

log = logging.getLogger(__name__)

StatsProvider = Callable[[], Mapping[str, Any]]


class _Slot:
    """One camera: its newest JPEG, the frame waiting to be encoded and the throttle."""

    __slots__ = ("seq", "jpeg", "pending", "next_due", "encoded", "skipped", "replaced")

    def __init__(self) -> None:
        self.seq = 0
        self.jpeg: bytes | None = None
        self.pending: np.ndarray | None = None  # the pipeline's frame, never written to
        self.next_due = 0.0
        self.encoded = 0
        self.skipped = 0  # offered sooner than 1 / max_fps after the previous one
        self.replaced = 0  # accepted but overtaken by a newer frame before the encoder got to it


class DashboardHub:
    """Thread-safe store of each camera's newest JPEG plus the stats provider.

    ``max_fps`` caps JPEG encodes per camera: a browser cannot use more. ``max_width``
    optionally downscales wider frames before encoding (for 4K cameras on a small screen).
    The encoder thread starts with the first frame; :meth:`close` stops it.
    """

    def __init__(
        self,
        cameras: list[str],
        stats: StatsProvider,
        max_fps: float = 15,
        quality: int = 80,
        max_width: int | None = None,
    ) -> None:
        if len(set(cameras)) != len(cameras):
            raise ConfigError(f"dashboard camera names must be unique, but got {list(cameras)}")
        if not max_fps > 0:
            raise ConfigError(f"dashboard max_fps must be > 0, but got {max_fps}")
        if not 1 <= quality <= 100:
            raise ConfigError(f"dashboard JPEG quality must be between 1 and 100, but got {quality}")
        if max_width is not None and max_width < 16:
            raise ConfigError(f"dashboard max_width must be at least 16, but got {max_width}")
        self._cameras = list(cameras)
        self._stats = stats
        self.max_fps = float(max_fps)
        self.quality = int(quality)
        self.max_width = max_width
        self._interval = 1.0 / self.max_fps
        self._slots = {name: _Slot() for name in self._cameras}
        self._cond = threading.Condition()  # guards the slots; web threads wait on it
        self._work = threading.Condition(threading.Lock())  # wakes the encoder
        self._next = 0  # round-robin start for the encoder
        self._closed = False
        self._encoder: threading.Thread | None = None
        self._warned_unknown: set[str] = set()

    @property
    def cameras(self) -> list[str]:
        """Camera names in display order (a copy)."""
        return list(self._cameras)

    def publish(self, camera: str, image_bgr: np.ndarray) -> bool:
        """Offer a rendered frame; True when it was kept for encoding (False when throttled).

        Never blocks on encoding or on web clients: the frame is kept by reference (the hub
        never writes to it) and replaces a kept frame the encoder has not reached yet.
        """
        slot = self._slots.get(camera)
        if slot is None:
            if camera not in self._warned_unknown:
                self._warned_unknown.add(camera)
                log.warning("dashboard: frames of unknown camera %r are ignored", camera)
            return False
        now = time.monotonic()
        with self._cond:
            if self._closed or now < slot.next_due:
                slot.skipped += 1
                return False
            late = now - slot.next_due
            slot.next_due = slot.next_due + self._interval if late < self._interval else now + self._interval
            if slot.pending is not None:
                slot.replaced += 1
            slot.pending = image_bgr
        self._start_encoder()
        with self._work:
            self._work.notify()
        return True

    def _start_encoder(self) -> None:
        if self._encoder is not None:
            return
        with self._cond:
            if self._encoder is not None or self._closed:
                return
            self._encoder = threading.Thread(target=self._encode_loop, name="dashboard-jpeg", daemon=True)
            self._encoder.start()

    def _take_pending(self) -> tuple[_Slot, np.ndarray] | None:
        """The next camera with a pending frame, round robin, so one busy camera cannot starve the rest."""
        with self._cond:
            n = len(self._cameras)
            for offset in range(n):
                slot = self._slots[self._cameras[(self._next + offset) % n]]
                if slot.pending is not None:
                    image, slot.pending = slot.pending, None
                    self._next = (self._next + offset + 1) % n
                    return slot, image
        return None

    def _encode_loop(self) -> None:
        while True:
            with self._work:
                while not self._closed and not self._has_pending():
                    self._work.wait(0.5)
            if self._closed:
                return
            taken = self._take_pending()
            if taken is None:
                continue
            slot, image = taken
            try:
                jpeg = self._encode(image)
            except Exception:  # noqa: BLE001 - one bad frame must not end the dashboard
                log.warning("dashboard: encoding a frame failed", exc_info=True)
                jpeg = None
            if jpeg is not None:
                with self._cond:
                    slot.jpeg = jpeg
                    slot.seq += 1
                    slot.encoded += 1
                    self._cond.notify_all()

    def _has_pending(self) -> bool:
        return any(slot.pending is not None for slot in self._slots.values())

    def _encode(self, image: np.ndarray) -> bytes | None:
        if self.max_width is not None and image.ndim >= 2 and image.shape[1] > self.max_width:
            height = max(1, round(image.shape[0] * self.max_width / image.shape[1]))
            image = cv2.resize(image, (self.max_width, height), interpolation=cv2.INTER_AREA)
        try:
            ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        except cv2.error as exc:
            log.debug("dashboard: cannot encode a frame of shape %s: %s", getattr(image, "shape", "?"), exc)
            return None
        return buffer.tobytes() if ok else None

    def close(self) -> None:
        """Stop the encoder thread and wake every waiting web thread; safe to call twice."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        with self._work:
            self._work.notify_all()
        encoder = self._encoder
        if encoder is not None and encoder is not threading.current_thread():
            encoder.join(timeout=2.0)

    @property
    def closed(self) -> bool:
        return self._closed

    def latest(self, camera: str) -> tuple[int, bytes] | None:
        """The newest ``(seq, jpeg)`` of ``camera``, or None before its first frame.

        Raises ``KeyError`` for a camera the hub does not know.
        """
        slot = self._slots[camera]
        with self._cond:
            return (slot.seq, slot.jpeg) if slot.jpeg is not None else None

    def wait_frame(self, camera: str, after_seq: int, timeout: float) -> tuple[int, bytes] | None:
        """Block until ``camera`` has a JPEG newer than ``after_seq``; None after ``timeout`` s.

        Raises ``KeyError`` for a camera the hub does not know.
        """
        slot = self._slots[camera]
        with self._cond:
            self._cond.wait_for(lambda: self._closed or (slot.seq > after_seq and slot.jpeg is not None), timeout)
            if slot.seq > after_seq and slot.jpeg is not None:
                return slot.seq, slot.jpeg
            return None

    def encoded(self, camera: str) -> int:
        """How many JPEGs were encoded for ``camera`` (to check throttling)."""
        with self._cond:
            return self._slots[camera].encoded

    def encoder_stats(self) -> dict[str, dict[str, int]]:
        """Per camera: JPEGs encoded, frames skipped by the fps cap, kept frames overtaken."""
        with self._cond:
            return {
                name: {"encoded": s.encoded, "skipped": s.skipped, "replaced": s.replaced}
                for name, s in self._slots.items()
            }

    def stats(self) -> dict[str, Any]:
        """The provider's stats dict (see :mod:`streamer.sinks.dashboard` for its schema)."""
        return dict(self._stats())

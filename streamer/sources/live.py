"""Live sources: webcams, RTSP/HTTP streams and a synthetic camera, all with reconnect.

A live source reads in its own thread as fast as the stream delivers and keeps only the
newest frame in a one-frame slot, so nothing buffers up behind the decoder (the usual cause
of growing RTSP delay when a slow loop reads ``cv2.VideoCapture`` directly). ``read()``
hands out the newest frame not yet taken; frames overwritten before being taken are counted
as ``dropped``.

On a failed read, an end of stream, or no frame for ``stall_timeout_s``, the reader closes
the capture and reopens it with exponential backoff (``backoff_initial_s`` doubling up to
``backoff_max_s``), forever unless ``max_reconnects`` is set. Each state change is logged
once. URLs are always shown with the password masked. Stream URLs are read through PyAV
(``streamer.sources.av_capture``) or OpenCV's FFmpeg backend, see ``StreamSource``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from streamer.errors import ConfigError, SourceOpenError, SourceReadError
from streamer.sources.base import TIMEOUT, Source
from streamer.sources.shedding import ALL, KEYFRAMES, OFF, DecodeControl
from streamer.types import Frame

if TYPE_CHECKING:
    from streamer.sinks.remux import StreamCopy

log = logging.getLogger(__name__)

# Connection states, as shown in logs, stats and the dashboard.
CONNECTING = "connecting"
STREAMING = "streaming"
STALLED = "stalled"
RECONNECTING = "reconnecting"
ENDED = "ended"


def mask_url(url: str) -> str:
    """``rtsp://user:secret@host/path`` → ``rtsp://user:***@host/path`` (password never shown)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"(//[^/:@]*:)[^@/]*@", r"\1***@", url)
    if parts.password is None and "@" not in parts.netloc:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    netloc = f"{user}:***@{host}" if parts.password is not None else f"{user}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def mask_text(text: str, url: str) -> str:
    """Remove the password of ``url`` from any text (an OpenCV or FFmpeg message, say)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        text = text.replace(password, "***")
    return text


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    stall_timeout_s: float = 5.0
    open_timeout_s: float = 5.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    max_reconnects: int | None = None

    def __post_init__(self) -> None:
        for name in ("stall_timeout_s", "open_timeout_s", "backoff_initial_s", "backoff_max_s"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive number of seconds, but got {value}")
        if self.max_reconnects is not None and self.max_reconnects < 0:
            raise ConfigError(f"max_reconnects must be >= 0, but got {self.max_reconnects}")

    def backoff(self, attempt: int) -> float:
        """Delay before reconnect number ``attempt`` (1-based): 0.5, 1, 2, 4, 8, 10, 10, ..."""
        return min(self.backoff_max_s, self.backoff_initial_s * 2 ** max(0, attempt - 1))


class Capture(Protocol):
    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def release(self) -> None: ...


class Pending:
    """A decoded picture that becomes an (H, W, 3) uint8 BGR array only when the pipeline takes
    it (``pending()``): a frame that a newer one replaces in the slot is never converted."""

    __slots__ = ("_convert", "shape")

    def __init__(self, height: int, width: int, convert: Callable[[], np.ndarray]) -> None:
        self.shape = (height, width, 3)
        self._convert = convert

    def __call__(self) -> np.ndarray:
        return self._convert()


def decode_control(fps: float | None, shed: bool) -> DecodeControl:
    """A camera's decode level: ``fps`` 0 decodes nothing (its packets are still read and
    recorded), ``shed`` False decodes every frame, else the controller chooses."""
    if fps == 0:
        return DecodeControl(OFF, floor=OFF, ceiling=OFF)
    if not shed:
        return DecodeControl(ALL, floor=ALL)
    return DecodeControl(ALL, floor=KEYFRAMES)


def _materialized(frame: Frame) -> Frame:
    """``frame`` with its picture converted, in the taker's thread, if it was still pending."""
    image: object = frame.image
    if isinstance(image, Pending):
        frame.image = image()
    return frame


class LiveSource(Source):
    """Base of the live sources: a reader thread, a newest-frame slot and reconnects."""

    live = True

    def __init__(self, source_id: str, policy: ReconnectPolicy | None = None, *, max_fps: float | None = None,
                 shed: bool = True, record: str | None = None) -> None:
        if max_fps is not None and not (max_fps >= 0 and math.isfinite(max_fps)):
            raise ConfigError(f"{source_id}: fps must be a number >= 0, but got {max_fps}")
        self.source_id = source_id
        self.policy = policy or ReconnectPolicy()
        #: At most this many frames a second go to the model (None: as many as it takes).
        self.max_fps = max_fps
        #: What this camera decodes; captures that can skip decoding follow it.
        self.decode = decode_control(max_fps, shed)
        #: The camera's own packets copied into a file, for captures that read packets.
        self.recording: StreamCopy | None = None
        if record is not None:
            from streamer.sinks.remux import StreamCopy

            self.recording = StreamCopy(record, source_id)
        self.state = CONNECTING
        self.reconnects = 0
        self._dropped = 0
        self.frames = 0
        self.last_error: str | None = None
        self.size: tuple[int, int] | None = None  # (width, height) of the current stream
        self._slot: Frame | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ended = False
        self._failure: str | None = None
        self._index = 0
        self._last_frame_at = 0.0
        self._state_since = time.monotonic()
        #: Set on every new frame, for a consumer that waits on several sources at once.
        self.listener: threading.Event | None = None

    # -- to implement -------------------------------------------------------------

    @abstractmethod
    def _connect(self) -> Capture:
        """Open the device or stream; raise ``SourceOpenError`` when it does not open."""

    def _ends_naturally(self) -> bool:
        """True when an end of stream is final (never for cameras and live URLs)."""
        return False

    # -- Source API -----------------------------------------------------------------

    def open(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._reader, name=f"streamer-capture-{self.source_id}", daemon=True)
        self._thread.start()

    def read(self, timeout: float) -> Frame | None | object:
        with self._cond:
            if self._slot is None and not self._ended:
                self._cond.wait(timeout)
            frame, self._slot = self._slot, None
            if frame is not None:
                return _materialized(frame)
            if self._ended:
                if self._failure is not None:
                    raise SourceReadError(self._failure)
                return None
            return TIMEOUT

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        thread = self._thread
        if thread is not None:
            # The reader may sit in a blocking OpenCV call; it notices the stop flag as soon
            # as that returns (bounded by the open/read timeouts) and releases the capture.
            thread.join(timeout=2.0)
            if thread.is_alive():
                log.warning("%s: capture thread still busy in the driver; it will exit on its own", self.describe())
        if self.recording is not None:
            self.recording.close()
        self._set_state(ENDED)

    @property
    def dropped(self) -> int:
        return self._dropped

    def status(self) -> dict[str, object]:
        now = time.monotonic()
        age = now - self._last_frame_at if self._last_frame_at else None
        return {
            "state": self.state,
            "state_for_s": round(now - self._state_since, 3),
            "frames": self.frames,
            "dropped": self.dropped,
            "reconnects": self.reconnects,
            "last_frame_age_s": None if age is None else round(age, 3),
            "size": None if self.size is None else f"{self.size[0]}x{self.size[1]}",
            "last_error": self.last_error,
        }

    def summary(self) -> str | None:
        d = self.decode
        shed = ""
        if d.packets and d.skipped:
            shed = f", {d.skipped} of {d.packets} packets not decoded ({100 * d.skipped / d.packets:.0f} %)"
        return (
            f"{self.describe()}: {self.frames} frames captured, {self.dropped} dropped at the source "
            f"(newer frame arrived first){shed}, {self.reconnects} reconnects"
        )

    # -- internals -------------------------------------------------------------------

    def _set_state(self, state: str, detail: str = "") -> None:
        if state == self.state:
            return
        self.state = state
        self._state_since = time.monotonic()
        message = f"{self.describe()}: {state}" + (f" ({detail})" if detail else "")
        (log.warning if state in (STALLED, RECONNECTING) else log.info)(message)

    def _publish(self, image: np.ndarray | Pending, pts_s: float | None = None) -> None:
        now = time.monotonic()
        frame = Frame(self.source_id, self._index, image, pts_s, now)  # type: ignore[arg-type]  # Pending until taken
        self._index += 1
        self.frames += 1
        self._last_frame_at = now
        with self._cond:
            if self._slot is not None:
                self._dropped += 1
            self._slot = frame
            self._cond.notify()
        if self.listener is not None:
            self.listener.set()

    def take(self) -> Frame | None:
        """The newest frame not yet taken, without waiting (None when there is none)."""
        with self._cond:
            frame, self._slot = self._slot, None
        return None if frame is None else _materialized(frame)

    def has_frame(self) -> bool:
        """Whether ``take`` would return a frame now."""
        return self._slot is not None

    @property
    def ended(self) -> bool:
        return self._ended

    def _finish(self, failure: str | None = None) -> None:
        with self._cond:
            self._ended = True
            self._failure = failure
            self._cond.notify_all()
        if self.listener is not None:
            self.listener.set()
        self._set_state(ENDED, failure or "")

    def _wait(self, seconds: float) -> bool:
        """Sleep unless stopped; True when the source was stopped meanwhile."""
        return self._stop.wait(seconds)

    def _reader(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            if attempt == 0:
                self._set_state(CONNECTING)
            try:
                capture = self._connect()
            except SourceOpenError as exc:
                self.last_error = mask_text(str(exc), getattr(self, "url", ""))
                capture = None
            except Exception as exc:  # noqa: BLE001 - a driver error is one more failed attempt
                self.last_error = mask_text(f"{type(exc).__name__}: {exc}", getattr(self, "url", ""))
                capture = None
            reason = self.last_error or "cannot connect"
            if capture is not None:
                outcome, reason = self._stream(capture)
                if outcome == "stopped":
                    break
                if outcome == "ended":
                    self._finish()
                    return
                if outcome == "streamed":
                    attempt = 0  # it worked for a while: start the backoff over
            attempt += 1
            self.reconnects += 1
            if self.policy.max_reconnects is not None and self.reconnects > self.policy.max_reconnects:
                self._finish(
                    f"{self.describe()}: gave up after {self.policy.max_reconnects} reconnects (last error: {reason})"
                )
                return
            delay = self.policy.backoff(attempt)
            self._set_state(RECONNECTING)
            log.warning("%s: reconnect %d in %.1f s (%s)", self.describe(), self.reconnects, delay, reason)
            if self._wait(delay):
                break
        self._finish()

    def _stream(self, capture: Capture) -> tuple[str, str]:
        """Read until failure, stall or stop.

        Returns (outcome, reason): outcome is 'stopped', 'ended' (a final end of stream),
        'streamed' (frames came, then the stream failed) or 'failed' (no frame at all).
        """
        got_any = False
        # A capture that can leave frames undecoded reads one packet at a time and hands out
        # pictures still to be converted; a packet that decodes to nothing still proves the
        # stream alive (a camera at keyframes only has a frame a GOP). A stream that stops
        # sending ends the read itself, at PyAV's read timeout.
        read_pending = getattr(capture, "read_pending", None)
        try:
            last = time.monotonic()
            while not self._stop.is_set():
                raised = None
                try:
                    ok, image = read_pending() if read_pending is not None else capture.read()
                except Exception as exc:  # noqa: BLE001 - a driver error mid-stream is a failed read
                    ok, image, raised = False, None, f"{type(exc).__name__}: {exc}"
                now = time.monotonic()
                if ok and image is None and read_pending is not None:
                    last = now
                    continue
                if not ok or image is None:
                    if self._ends_naturally():
                        return "ended", "end of stream"
                    if now - last >= 0.9 * self.policy.stall_timeout_s:
                        reason = f"no frame for {now - last:.1f} s"
                        self._set_state(STALLED, reason)
                    else:
                        reason = "stream ended or read failed" if got_any else "no frame after connecting"
                        detail = raised or getattr(capture, "error", None)  # a capture that knows why says so
                        if detail:
                            # a driver's message may quote the URL, password included
                            reason = mask_text(f"{reason}: {detail}", getattr(self, "url", ""))
                    self.last_error = reason
                    return ("streamed" if got_any else "failed"), reason
                if now - last > self.policy.stall_timeout_s:
                    # The driver returned a frame, but only after a stall: show that it happened.
                    self._set_state(STALLED, f"no frame for {now - last:.1f} s")
                last = now
                h, w = image.shape[:2]
                if self.size != (w, h):  # a camera may change resolution without reconnecting
                    if self.size is not None:
                        log.warning("%s: frame size changed from %dx%d to %dx%d", self.describe(), *self.size, w, h)
                    self.size = (w, h)
                if not got_any:
                    got_any = True
                    self.last_error = None
                if self.state != STREAMING:
                    self._set_state(STREAMING, f"{self.size[0]}x{self.size[1]}" if self.size else "")
                # A capture that knows the stream's timestamps (PyAV) exposes the last one.
                self._publish(image, getattr(capture, "pts_s", None))
            return "stopped", "stopped"
        finally:
            try:
                capture.release()
            except Exception:  # noqa: BLE001
                pass


# ----------------------------------------------------------------------------- streams

#: OpenCV's FFmpeg backend reads its options from this variable with C ``getenv`` at every
#: open. Writing it while other threads run races with those reads (and with every other
#: ``getenv`` in the process), so it is written at most once, before the first capture.
CAPTURE_OPTIONS_VAR = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_USER = "the environment"
_transport_lock = threading.Lock()
_transport: str | None = None  # the RTSP transport this process settled on, or _USER
_capturing = False  # a stream capture has opened: from now on the environment is read-only


def _settle_transport(transport: str) -> None:
    """Fix the process-wide RTSP transport when the first stream source is made.

    TCP is OpenCV's default when the variable is unset, so it needs no write; UDP sets the
    variable once, which is only allowed before any capture thread opens a stream. A value
    the user exported is left alone (it wins over ``transport``).
    """
    global _transport
    with _transport_lock:
        if _transport is None:
            if CAPTURE_OPTIONS_VAR in os.environ:
                log.info("RTSP options come from %s=%s", CAPTURE_OPTIONS_VAR, os.environ[CAPTURE_OPTIONS_VAR])
                _transport = _USER
                return
            if transport == "udp":
                if _capturing:
                    raise ConfigError(
                        "RTSP transport 'udp' must be chosen before the first capture opens "
                        "(OpenCV reads it from the process environment)"
                    )
                os.environ[CAPTURE_OPTIONS_VAR] = "rtsp_transport;udp"
            _transport = transport
        elif _transport not in (transport, _USER):
            raise ConfigError(
                f"RTSP transport {transport!r} conflicts with {_transport!r} chosen earlier in this process "
                "(OpenCV reads it from the process environment: one transport per process)"
            )


#: Stream capture backends; ``auto`` is the one the figures favour (see StreamSource).
CAPTURE_BACKENDS = ("auto", "pyav", "opencv")
AUTO_BACKEND = "pyav"
#: Overrides what ``auto`` means, for every process started with it (tests run both paths).
BACKEND_VAR = "STREAMER_CAPTURE_BACKEND"


def resolve_backend(backend: str) -> str:
    """The concrete backend for ``backend``: ``auto`` is ``$STREAMER_CAPTURE_BACKEND`` when set,
    else ``AUTO_BACKEND``."""
    if backend not in CAPTURE_BACKENDS:
        raise ConfigError(f"invalid capture backend {backend!r}, expecting one of {list(CAPTURE_BACKENDS)}")
    if backend != "auto":
        return backend
    chosen = os.environ.get(BACKEND_VAR, "").strip().lower() or AUTO_BACKEND
    if chosen not in CAPTURE_BACKENDS[1:]:
        raise ConfigError(f"{BACKEND_VAR}={chosen!r} is invalid, expecting one of {list(CAPTURE_BACKENDS[1:])}")
    return chosen


class StreamSource(LiveSource):
    """RTSP/RTSPS/HTTP(S) streams (MJPEG, HLS, ...) through PyAV or OpenCV's FFmpeg backend.

    RTSP uses TCP by default (``transport='udp'`` to change). ``backend``:

    * ``pyav`` (what ``auto`` picks): options per open (see ``streamer.sources.av_capture``),
      so each source has its own transport, a small probe (first frame ~0.1 s after connect
      instead of ~1.1 s), and ``Frame.pts_s`` from the stream's timestamps. It is the
      default because ``scripts/bench_capture.py`` (loopback RTSP, bikes at 25 and 30 fps,
      3 interleaved rounds; figures in docs/architecture.md) found: first frame 0.06 s vs
      0.95-1.13 s, back 0.10 s vs 0.99-1.18 s after a server restart, the same frame out of
      the decoder within 2 ms of OpenCV's, the same jitter; it costs 0.15-0.25 ms more CPU
      per frame at 640x272 (1.23 vs 1.07 ms at 25 fps, 1.17 vs 0.92 at 30 fps: about 0.5 %
      of a core per camera).
    * ``opencv``: OpenCV takes FFmpeg options only from the process-wide
      ``OPENCV_FFMPEG_CAPTURE_OPTIONS``, so the transport is one per process, settled when
      the first such source is made (see ``_settle_transport``), and probing keeps FFmpeg's
      defaults.

    Both bound the open by ``open_timeout_s`` and each read by half the stall timeout: with
    one decoder thread FFmpeg gives up on a hung server after about two read timeouts.
    """

    def __init__(
        self,
        url: str,
        source_id: str | None = None,
        policy: ReconnectPolicy | None = None,
        transport: str = "tcp",
        backend: str = "auto",
        *,
        max_fps: float | None = None,
        shed: bool = True,
        record: str | None = None,
    ) -> None:
        if transport not in ("tcp", "udp"):
            raise ConfigError(f"invalid RTSP transport {transport!r}, expecting one of ['tcp', 'udp']")
        self.backend = resolve_backend(backend)
        if self.backend == "opencv":
            _settle_transport(transport)
        self.url = url
        self.transport = transport
        if record is not None and self.backend != "pyav":
            raise ConfigError(f"{mask_url(url)}: a recording by copy needs capture.backend pyav (or auto), "
                              f"not {self.backend!r}")
        super().__init__(source_id or mask_url(url), policy, max_fps=max_fps, shed=shed, record=record)

    def describe(self) -> str:
        masked = mask_url(self.url)
        return masked if self.source_id == masked else f"{self.source_id} ({masked})"

    def open(self) -> None:
        log.info("%s: reading through %s over %s", self.describe(), self.backend, self.transport)
        super().open()

    def _read_timeout_s(self) -> float:
        return max(0.1, self.policy.stall_timeout_s / 2)

    def _connect(self) -> Capture:
        if self.backend == "pyav":
            from streamer.sources.av_capture import PyAvCapture

            capture = PyAvCapture(
                self.url, transport=self.transport,
                open_timeout_s=self.policy.open_timeout_s, read_timeout_s=self._read_timeout_s(),
                control=self.decode, tap=self.recording.write if self.recording is not None else None,
            )
            if capture.fps is not None:
                self.fps = capture.fps
            return capture
        p = self.policy
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(p.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self._read_timeout_s() * 1000),
            cv2.CAP_PROP_N_THREADS, 1,
        ]
        global _capturing
        _capturing = True
        cap = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            raise SourceOpenError(f"{mask_url(self.url)}: cannot connect (refused, unreachable, not found or timed out)")
        fps = cap.get(cv2.CAP_PROP_FPS)
        if fps and math.isfinite(fps) and 0 < fps < 1000:
            self.fps = float(fps)
        return cap


# ----------------------------------------------------------------------------- webcams


class CameraSource(LiveSource):
    """A local camera by index, with optional size, frame rate and FOURCC (e.g. ``MJPG``)."""

    def __init__(
        self,
        index: int,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        fourcc: str | None = None,
        source_id: str | None = None,
        policy: ReconnectPolicy | None = None,
        max_fps: float | None = None,
    ) -> None:
        if fourcc is not None and len(fourcc) != 4:
            raise ConfigError(f"camera fourcc must be 4 characters like 'MJPG', but got {fourcc!r}")
        self.index = index
        self.width, self.height, self.requested_fps, self.fourcc = width, height, fps, fourcc
        super().__init__(source_id or f"camera{index}", policy, max_fps=max_fps)

    def _connect(self) -> Capture:
        cap = cv2.VideoCapture(self.index)
        if not cap.isOpened():
            cap.release()
            raise SourceOpenError(f"camera {self.index}: cannot open (no such device, or busy)")
        if self.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc))
        if self.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        if self.requested_fps:
            cap.set(cv2.CAP_PROP_FPS, self.requested_fps)
        # One buffered frame at most: the driver must not queue stale frames either.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and math.isfinite(fps) and fps > 0 else self.requested_fps
        return cap


# ----------------------------------------------------------------------------- synthetic


class _Pacer:
    """Releases frames at ``fps`` like a camera; after a hiccup it does not burst to catch up
    by more than one frame."""

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self.next_at = time.monotonic()

    def wait(self) -> None:
        delay = self.next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.next_at = max(self.next_at + self.period, time.monotonic() - self.period)


class _SyntheticCapture:
    """Draws a test pattern paced like a camera: moving shapes and a frame counter."""

    def __init__(self, owner: SyntheticSource) -> None:
        self.owner = owner
        self.pacer = _Pacer(owner.fps_value)

    def read(self) -> tuple[bool, np.ndarray | None]:
        o = self.owner
        if o.limit is not None and o.produced >= o.limit:
            return False, None
        if o.disconnect_every and o.produced and o.produced % o.disconnect_every == 0 and not o.just_reconnected:
            o.just_reconnected = True
            return False, None  # a simulated disconnect: the source must reconnect
        o.just_reconnected = False
        if o.paced:
            self.pacer.wait()
        image = o.render(o.produced)
        o.produced += 1
        return True, image

    def release(self) -> None:
        pass


class SyntheticSource(LiveSource):
    """A test-pattern camera for tests and trying streamer without a camera.

    ``paced=True`` delivers ``fps`` frames per second like a real camera; ``limit`` ends the
    stream after that many frames; ``disconnect_every`` simulates a dropped connection every
    N frames (the source reconnects like a real stream).
    """

    def __init__(
        self,
        *,
        width: int = 640,
        height: int = 480,
        fps: float = 30.0,
        limit: int | None = None,
        paced: bool = True,
        disconnect_every: int | None = None,
        source_id: str = "synthetic",
        policy: ReconnectPolicy | None = None,
        max_fps: float | None = None,
    ) -> None:
        if width < 16 or height < 16:
            raise ConfigError(f"synthetic frame size must be at least 16x16, but got {width}x{height}")
        if not fps > 0:
            raise ConfigError(f"synthetic fps must be > 0, but got {fps}")
        super().__init__(source_id, policy or ReconnectPolicy(backoff_initial_s=0.01, backoff_max_s=0.05),
                         max_fps=max_fps)
        self.width, self.height = width, height
        self.fps = self.fps_value = float(fps)
        self.limit = limit
        self.total_frames = None
        self.paced = paced
        self.disconnect_every = disconnect_every
        self.produced = 0
        #: The capture just simulated a disconnect: the next read after reconnecting delivers.
        self.just_reconnected = False
        self._background = self._make_background()

    def _make_background(self) -> np.ndarray:
        y = np.linspace(40, 90, self.height, dtype=np.float32)[:, None]
        x = np.linspace(0, 30, self.width, dtype=np.float32)[None, :]
        base = (y + x).astype(np.uint8)
        return np.dstack([base, base, base + 10])

    def render(self, n: int) -> np.ndarray:
        image = self._background.copy()
        w, h = self.width, self.height
        t = n / self.fps_value
        cx = int((0.5 + 0.4 * math.sin(t * 1.3)) * w)
        cy = int((0.5 + 0.35 * math.cos(t * 0.9)) * h)
        r = max(4, min(w, h) // 10)
        cv2.circle(image, (cx, cy), r, (40, 160, 240), -1, cv2.LINE_AA)
        bx = int((n * 3) % max(1, w - 2 * r))
        cv2.rectangle(image, (bx, h - 3 * r), (bx + 2 * r, h - r), (200, 80, 60), -1)
        scale = max(0.4, min(w, h) / 480)
        cv2.putText(image, f"#{n}", (8, int(30 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 2, cv2.LINE_AA)
        return image

    def _ends_naturally(self) -> bool:
        return self.limit is not None and self.produced >= self.limit

    def _connect(self) -> Capture:
        return _SyntheticCapture(self)


# ----------------------------------------------------------------------------- replayed files


class _PacedFileCapture:
    def __init__(self, cap: cv2.VideoCapture, fps: float, loop: bool) -> None:
        self.cap = cap
        self.loop = loop
        self.pacer = _Pacer(fps)

    def read(self) -> tuple[bool, np.ndarray | None]:
        ok, image = self.cap.read()
        if not ok and self.loop:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self.cap.read()
        self.pacer.wait()
        return ok, image

    def release(self) -> None:
        self.cap.release()


class ReplaySource(LiveSource):
    """A video file played back in real time, like a camera (``watch clip.mp4``).

    Frames are released at the file's frame rate whether or not the pipeline keeps up, so a
    slow model drops frames exactly as it would on a live camera. ``loop`` replays forever.
    Read through PyAV by default (``backend``, as for streams): packets are released at their
    own timestamps and decoded as the camera's decode level says, so a replayed camera sheds
    load exactly like an RTSP one; ``opencv`` decodes every frame.
    """

    def __init__(self, path: str, *, loop: bool = False, source_id: str | None = None,
                 policy: ReconnectPolicy | None = None, backend: str = "auto", max_fps: float | None = None,
                 shed: bool = True, record: str | None = None) -> None:
        from pathlib import Path

        self.path = Path(path)
        self.loop = loop
        self.done = False
        self.backend = resolve_backend(backend)
        if record is not None and self.backend != "pyav":
            raise ConfigError(f"{self.path}: a recording by copy needs capture.backend pyav (or auto), "
                              f"not {self.backend!r}")
        super().__init__(source_id or self.path.name, policy, max_fps=max_fps, shed=shed, record=record)

    def open(self) -> None:
        from streamer.sources.file import VideoFileSource

        probe = VideoFileSource(self.path)  # same checks and messages as annotate
        probe.open()
        self.fps = probe.fps or 25.0
        self.total_frames = None if self.loop else probe.total_frames
        probe.close()
        super().open()

    def _ends_naturally(self) -> bool:
        return not self.loop

    def _connect(self) -> Capture:
        if self.backend == "pyav":
            from streamer.sources.av_capture import ReplayCapture

            return ReplayCapture(self.path, loop=self.loop, control=self.decode,
                                 tap=self.recording.write if self.recording is not None else None)
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise SourceOpenError(f"{self.path}: cannot open as a video")
        return _PacedFileCapture(cap, self.fps or 25.0, self.loop)

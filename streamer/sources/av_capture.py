"""Stream capture through PyAV: FFmpeg options per open, and the stream's own timestamps.

OpenCV's FFmpeg backend takes options only from the process-wide environment, so every
stream in a process shares one RTSP transport and the probing defaults (about 1 s of
buffered stream before the first frame). PyAV opens each stream with its own options:

* ``rtsp_transport`` per source (TCP and UDP cameras side by side, nothing written to
  ``os.environ``);
* two timeouts: PyAV's interrupt callback bounds the whole open (connect, DESCRIBE, SETUP,
  PLAY, probe) by ``open_timeout_s`` and every packet read by ``read_timeout_s``; FFmpeg's
  own socket ``timeout`` is set to the read timeout as well, so a socket that never answers
  fails even inside calls the callback does not reach. A hung server (connection open,
  nothing sent) is reported after about two read timeouts, as with OpenCV;
* a small probe (``probesize``/``analyzeduration``): RTSP and H.264 carry the stream
  parameters in the SDP, so no buffered second of video is needed to learn them. The
  ``nobuffer`` flag is *not* set: with it FFmpeg drops the keyframe read during the probe
  and the first frame waits for the next keyframe (about 1 s later on a 1 s GOP).

Frames come out as (H, W, 3) uint8 BGR arrays, like OpenCV's, and ``pts_s`` is the
frame's presentation time in seconds on the stream's clock (``None`` before the sender's
first RTCP report fixes it, usually the first frame only).

Decoding follows a :class:`~streamer.sources.shedding.DecodeControl` when one is given:
every packet is read (and handed to a recorder), but only the packets the camera's decode
level asks for reach the decoder, and a decoded frame is converted to BGR only when the
pipeline takes it (``read_pending``). A file replayed as a camera (:class:`ReplayCapture`) is
read the same way, paced by its packets' timestamps.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2  # noqa: F401  # before av (streamer/__init__.py says why)

# isort: split

import av
import av.error
import numpy as np
from av.video.reformatter import VideoReformatter

from streamer.errors import ConfigError, SourceOpenError
from streamer.sources.live import Pending, mask_text, mask_url
from streamer.sources.shedding import ALL, NONREF, DecodeControl

log = logging.getLogger(__name__)

TRANSPORTS = ("tcp", "udp")


def _masked(exc: BaseException, url: str) -> str:
    """FFmpeg's message without the URL (PyAV appends it, password included)."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return mask_text(str(text), url)


#: Called with every video packet read, decoded or not (a recording by copy).
PacketTap = Callable[[Any], None]

#: A replayed file more than this far behind its own clock re-anchors instead of bursting.
_REPLAY_MAX_LAG_S = 0.25


class _AvReader:
    """The packet loop shared by streams and replayed files (see the module's doc)."""

    fps: float | None
    error: str | None
    pts_s: float | None

    def _start(self, container: Any, *, threads: int, control: DecodeControl | None, tap: PacketTap | None,
               pace: bool = False, loop: bool = False) -> None:
        self._container = container
        if not container.streams.video:
            raise SourceOpenError(f"{self._name()}: the stream has no video")
        stream = container.streams.video[0]
        # Slice threads decode one frame on several cores without holding frames back;
        # frame threads would add one frame of delay per thread.
        stream.thread_type = "SLICE"
        stream.thread_count = threads
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate and 0 < float(rate) < 1000 else None
        self.error = None
        self.pts_s = None
        self._stream = stream
        self._codec = stream.codec_context
        #: Seconds per tick of the stream's timestamps, as a float: Fraction arithmetic on
        #: every packet costs a microsecond each time.
        self._tb_s: float | None = float(stream.time_base) if stream.time_base is not None else None
        self.control = control if control is not None else DecodeControl(ALL, floor=ALL)
        self.control.fps = self.control.fps or self.fps
        self._tap = tap
        self._pace, self._loop = pace, loop
        self._packets: Iterator[Any] = container.demux(stream)
        self._ready: list[Any] = []
        self._since_key = 0
        self._keyframes = 0
        self._synced = False
        self._skip_nonref = False
        # Pacing a replay: the wall time its first packet was due, and the stream time it had.
        self._anchor: tuple[float, float] | None = None
        self._loop_offset_s = 0.0
        self._last_pts_s = 0.0
        # One converter for the whole stream: ``frame.to_ndarray(format=...)`` builds a new
        # swscale context for every frame, a quarter of a millisecond each at 640x272.
        self._reformatter = VideoReformatter()
        self._convert_lock = threading.Lock()

    def _name(self) -> str:
        raise NotImplementedError

    def read_pending(self) -> tuple[bool, Pending | None]:
        """Read one packet: ``(True, picture)`` when a frame came out of the decoder (not yet
        converted), ``(True, None)`` when the packet was read but not decoded (or the decoder
        held its frame back), ``(False, None)`` at the end or on an error (``error`` says which)."""
        if self._ready:
            return True, self._pending(self._ready.pop(0))
        try:
            packet = next(self._packets)
        except StopIteration:
            if self._loop and self._rewind():
                return True, None
            self.error = "end of stream"
            return False, None
        except (av.error.FFmpegError, OSError) as exc:
            self.error = _masked(exc, getattr(self, "url", ""))
            log.debug("read failed: %s", self.error)
            return False, None
        if packet.size == 0:  # the demuxer's flush packet at the end
            return True, None
        tb_s = self._tb_s
        if self._loop and packet.pts is not None and tb_s is not None:  # where a rewind carries on from
            self._last_pts_s = max(self._last_pts_s, packet.pts * tb_s + self._loop_offset_s)
        # Packets come in decode order: paced by their presentation times, the frames before
        # a B-frame would leave in bursts (a P packet is due frames ahead of the B packets
        # after it), so the decode times pace the replay.
        stamp = packet.dts if packet.dts is not None else packet.pts
        if self._pace and stamp is not None and tb_s is not None:
            self._wait_for(stamp * tb_s + self._loop_offset_s)
        control = self.control
        control.packets += 1
        if self._tap is not None:
            self._tap(packet)
        if packet.is_keyframe:
            if self._keyframes:
                control.gop = self._since_key + 1
            self._keyframes += 1
            self._since_key = 0
            self._synced = True
        else:
            self._since_key += 1
        # A packet after a skipped one refers to a frame the decoder never saw: wait for the
        # next keyframe. Only a stream with no keyframe flags at all is decoded regardless.
        in_chain = self._synced or (self._keyframes == 0 and control.step == ALL)
        if not in_chain or not control.decodes(self._since_key):
            self._synced = False
            control.skipped += 1
            return True, None
        skip_nonref = control.step == NONREF
        if skip_nonref != self._skip_nonref:
            self._codec.skip_frame = "NONREF" if skip_nonref else "DEFAULT"
            self._skip_nonref = skip_nonref
        try:
            frames = self._codec.decode(packet)
        except (av.error.FFmpegError, OSError) as exc:
            # Damaged data (a lost packet): the frames up to the next keyframe would be smeared.
            log.debug("%s: undecodable packet (%s)", self._name(), _masked(exc, getattr(self, "url", "")))
            self._synced = False
            control.skipped += 1
            return True, None
        if not frames:
            return True, None
        control.decoded += len(frames)
        self._ready.extend(frames[1:])
        return True, self._pending(frames[0])

    def read(self) -> tuple[bool, np.ndarray | None]:
        """The next decoded frame as a BGR array (every packet of the current level read)."""
        while True:
            ok, pending = self.read_pending()
            if not ok:
                return False, None
            if pending is not None:
                return True, pending()

    def _pending(self, frame: Any) -> Pending:
        if frame.pict_type == av.video.frame.PictureType.B:
            self.control.has_nonref = True
        pts = None if frame.pts is None or self._tb_s is None else frame.pts * self._tb_s
        self.pts_s = None if pts is None else pts + self._loop_offset_s
        return Pending(frame.height, frame.width, lambda: self._to_bgr(frame))

    def _to_bgr(self, frame: Any) -> np.ndarray:
        with self._convert_lock:  # the reformatter's context is not shared between threads
            return self._reformatter.reformat(frame, format="bgr24").to_ndarray()

    def _wait_for(self, at_s: float) -> None:
        """Sleep until the packet at ``at_s`` (stream time) is due on the replay's clock (a camera
        sends it then)."""
        now = time.monotonic()
        if self._anchor is None:
            self._anchor = (now, at_s)
        due = self._anchor[0] + (at_s - self._anchor[1])
        if due > now:
            time.sleep(due - now)
        elif now - due > _REPLAY_MAX_LAG_S:
            self._anchor = (now, at_s)  # fell behind (a stalled machine): no burst to catch up

    def _rewind(self) -> bool:
        """Start the file over, its clock carrying on one frame after the last packet."""
        try:
            self._container.seek(0, stream=self._stream)
        except (av.error.FFmpegError, OSError) as exc:
            self.error = f"cannot rewind: {exc}"
            return False
        step = 1.0 / (self.fps or 25.0)
        start = self._stream.start_time
        first_s = start * self._tb_s if start is not None and self._tb_s is not None else 0.0
        self._loop_offset_s = self._last_pts_s + step - first_s
        self._codec.flush_buffers()
        self._packets = self._container.demux(self._stream)
        self._synced = False
        self._since_key = 0
        return True

    def release(self) -> None:
        self._container.close()


class PyAvCapture(_AvReader):
    """One open stream; ``read()`` decodes the next video frame (the ``Capture`` protocol).

    ``read()`` returns ``(True, image)`` or ``(False, None)`` when the stream failed, ended
    or timed out; the reason is kept in ``error`` (password masked). ``pts_s`` is the
    presentation time of the frame the last ``read()`` returned. ``read_pending()`` is the
    same one packet at a time, with the conversion left to whoever takes the frame.
    ``control`` sets what is decoded (everything when None); ``tap`` sees every packet. Not
    thread-safe: one thread opens, reads and releases it (a pending frame may be converted
    in another).
    """

    def __init__(
        self,
        url: str,
        *,
        transport: str = "tcp",
        open_timeout_s: float = 5.0,
        read_timeout_s: float = 2.5,
        threads: int = 1,
        control: DecodeControl | None = None,
        tap: PacketTap | None = None,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ConfigError(f"invalid RTSP transport {transport!r}, expecting one of {list(TRANSPORTS)}")
        for name, value in (("open_timeout_s", open_timeout_s), ("read_timeout_s", read_timeout_s)):
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive number of seconds, but got {value}")
        if threads not in (1, 2):
            raise ConfigError(f"decoder threads must be 1 or 2, but got {threads}")
        self.url = url
        options = {
            "timeout": str(int(read_timeout_s * 1_000_000)),  # socket I/O, microseconds
            "probesize": "32",
            "analyzeduration": "0",
        }
        if url.lower().startswith(("rtsp://", "rtsps://")):
            options["rtsp_transport"] = transport
        try:
            container: Any = av.open(url, options=options, timeout=(open_timeout_s, read_timeout_s))
        except (av.error.FFmpegError, OSError) as exc:
            raise SourceOpenError(f"{mask_url(url)}: cannot connect ({_masked(exc, url)})") from None
        try:
            self._start(container, threads=threads, control=control, tap=tap)
        except BaseException:
            container.close()
            raise

    def _name(self) -> str:
        return mask_url(self.url)


class ReplayCapture(_AvReader):
    """A video file read like a camera: packets released at their own timestamps (unless
    ``pace`` is False), decoded as ``control`` says, and (with ``loop``) started over forever
    with a clock that carries on."""

    def __init__(self, path: str | Path, *, loop: bool = False, control: DecodeControl | None = None,
                 tap: PacketTap | None = None, pace: bool = True) -> None:
        self.path = Path(path)
        try:
            container: Any = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as exc:
            raise SourceOpenError(f"{self.path}: cannot open as a video ({exc.__class__.__name__})") from None
        try:
            self._start(container, threads=1, control=control, tap=tap, pace=pace, loop=loop)
        except BaseException:
            container.close()
            raise

    def _name(self) -> str:
        return str(self.path)

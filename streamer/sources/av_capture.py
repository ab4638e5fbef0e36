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
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

import cv2  # noqa: F401  # before av (streamer/__init__.py says why)

# isort: split

import av
import av.error
import numpy as np
from av.video.reformatter import VideoReformatter

from streamer.errors import ConfigError, SourceOpenError
from streamer.sources.live import mask_text, mask_url

log = logging.getLogger(__name__)

TRANSPORTS = ("tcp", "udp")


def _masked(exc: BaseException, url: str) -> str:
    """FFmpeg's message without the URL (PyAV appends it, password included)."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return mask_text(str(text), url)


class PyAvCapture:
    """One open stream; ``read()`` decodes the next video frame (the ``Capture`` protocol).

    ``read()`` returns ``(True, image)`` or ``(False, None)`` when the stream failed, ended
    or timed out; the reason is kept in ``error`` (password masked). ``pts_s`` is the
    presentation time of the frame the last ``read()`` returned. Not thread-safe: one
    thread opens, reads and releases it.
    """

    def __init__(
        self,
        url: str,
        *,
        transport: str = "tcp",
        open_timeout_s: float = 5.0,
        read_timeout_s: float = 2.5,
        threads: int = 1,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ConfigError(f"invalid RTSP transport {transport!r}, expecting one of {list(TRANSPORTS)}")
        for name, value in (("open_timeout_s", open_timeout_s), ("read_timeout_s", read_timeout_s)):
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive number of seconds, but got {value}")
        if threads not in (1, 2):
            raise ConfigError(f"decoder threads must be 1 or 2, but got {threads}")
        self.url = url
        self.error: str | None = None
        self.pts_s: float | None = None
        self.fps: float | None = None
        options = {
            "timeout": str(int(read_timeout_s * 1_000_000)),  # socket I/O, microseconds
            "probesize": "32",
            "analyzeduration": "0",
        }
        if url.lower().startswith(("rtsp://", "rtsps://")):
            options["rtsp_transport"] = transport
        try:
            self._container: Any = av.open(url, options=options, timeout=(open_timeout_s, read_timeout_s))
        except (av.error.FFmpegError, OSError) as exc:
            raise SourceOpenError(f"{mask_url(url)}: cannot connect ({_masked(exc, url)})") from None
        try:
            if not self._container.streams.video:
                raise SourceOpenError(f"{mask_url(url)}: the stream has no video")
            stream = self._container.streams.video[0]
            # Slice threads decode one frame on several cores without holding frames back;
            # frame threads would add one frame of delay per thread.
            stream.thread_type = "SLICE"
            stream.thread_count = threads
            rate = stream.average_rate or stream.guessed_rate
            if rate and 0 < float(rate) < 1000:
                self.fps = float(rate)
            self._time_base = stream.time_base
            # One converter for the whole stream: ``frame.to_ndarray(format=...)`` builds a new
            # swscale context for every frame, a quarter of a millisecond each at 640x272.
            self._reformatter = VideoReformatter()
            self._frames: Iterator[Any] = self._container.decode(stream)
        except BaseException:
            self._container.close()
            raise

    def read(self) -> tuple[bool, np.ndarray | None]:
        try:
            frame = next(self._frames)
        except StopIteration:
            self.error = "end of stream"
            return False, None
        except (av.error.FFmpegError, OSError) as exc:
            self.error = _masked(exc, self.url)
            log.debug("read failed: %s", self.error)
            return False, None
        self.pts_s = None if frame.pts is None or self._time_base is None else float(frame.pts * self._time_base)
        return True, self._reformatter.reformat(frame, format="bgr24").to_ndarray()

    def release(self) -> None:
        self._container.close()

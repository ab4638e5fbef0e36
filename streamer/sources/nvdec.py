"""NVDEC decoding through PyAV: frames stay on the GPU as NV12 from the decoder on.

Decoding 1080p H.264 costs a CPU core about 7 ms a frame, and converting it to BGR about as
much again; the host then uploads every frame for the model. NVDEC decodes on the GPU's own
video engines instead (an H200 has seven), and with PyAV's
``HWAccel(device_type="cuda", is_hw_owned=True)`` the decoded picture stays in GPU memory as
NV12 (format ``cuda``), handed to torch through DLPack without touching the host. Measured on
an H200: 32 such decoders gave 2368 fps of 1080p; downloading NVDEC's frames to BGR gave 355.

Two details of PyAV's export: a CUDA plane refuses ``__dlpack__(stream=...)`` ("CUDA stream
synchronization is not supported"), so the device is synchronised first and the capsule is
taken with ``stream=None``; and the planes are copied into torch's own memory (about 3 MB of
device-to-device copy for 1080p) so that a frame held downstream, in a newest-frame slot or a
batch, never pins a surface of the decoder's pool.

When NVDEC refuses (no CUDA device, an FFmpeg without it, a codec or profile it cannot
decode), :class:`NvdecCapture` decodes on the CPU instead and uploads NV12 frames, so what
comes out is the same kind of frame either way; ``decoder`` says which it is.

:func:`resolve_decode` turns ``capture.decode`` (``auto``, ``cpu``, ``nvdec``) into the decoder
a source should use given the model's device.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterator
from typing import Any

import cv2  # noqa: F401  # before av (streamer/__init__.py says why)

# isort: split

import av
import av.error
import torch
from av.codec.hwaccel import HWAccel, hwdevices_available
from av.video.reformatter import VideoReformatter

from streamer.errors import ConfigError, SourceOpenError
from streamer.gpu.nv12 import Nv12Image
from streamer.sources.live import mask_text, mask_url

log = logging.getLogger(__name__)

#: What ``capture.decode`` accepts.
DECODE_CHOICES = ("auto", "cpu", "nvdec")


def nvdec_unavailable() -> str | None:
    """Why NVDEC cannot be used in this process, or None when it may be (a decoder can still
    refuse a particular stream when it opens)."""
    if "cuda" not in hwdevices_available():
        return f"PyAV's FFmpeg has no CUDA device type (it has {hwdevices_available()})"
    if not torch.cuda.is_available():
        return "PyTorch sees no CUDA device"
    return None


def resolve_decode(decode: str, model_device: str) -> str:
    """``cpu`` or ``nvdec`` for ``capture.decode`` = ``decode`` and a model on ``model_device``.

    ``auto``: NVDEC when the model runs on CUDA and NVDEC is there (frames then never leave
    the GPU), the CPU otherwise (a CPU model would only download the frames again).
    ``nvdec`` where NVDEC cannot work is a ``ConfigError`` saying why.
    """
    if decode not in DECODE_CHOICES:
        raise ConfigError(f"capture.decode must be one of {list(DECODE_CHOICES)}, but got {decode!r}")
    if decode == "cpu":
        return "cpu"
    why = nvdec_unavailable()
    if decode == "nvdec":
        if why is not None:
            raise ConfigError(f"capture.decode is 'nvdec', but NVDEC cannot be used here: {why}")
        return "nvdec"
    return "nvdec" if why is None and model_device.startswith("cuda") else "cpu"


def _reason(exc: BaseException, url: str) -> str:
    """FFmpeg's message, without the URL and its password."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return mask_text(str(text), url)


class NvdecCapture:
    """One open stream or file, decoded by NVDEC (the ``Capture`` protocol of live sources).

    ``read()`` returns ``(True, Nv12Image)`` with both planes on ``device``, or
    ``(False, None)`` at the end, on a failure or a timeout (the reason in ``error``, password
    masked). ``pts_s`` is the last frame's presentation time in seconds. ``decoder`` is
    ``"nvdec"`` or, when NVDEC refused and ``fallback`` allows it, ``"cpu"`` (CPU decode, NV12
    uploaded to ``device``). ``keyframes_only`` (settable while reading) sends only keyframes
    to the decoder, the cheapest decode level for a stream that cannot be kept up with.

    ``device``: where frames are delivered; NVDEC decodes on it when it is a CUDA device
    (``cuda:N``), else on GPU 0. Not thread-safe: one thread opens, reads and releases it.
    """

    def __init__(
        self,
        url: str,
        *,
        device: str | torch.device = "cuda:0",
        transport: str = "tcp",
        open_timeout_s: float = 5.0,
        read_timeout_s: float = 2.5,
        fallback: bool = True,
        keyframes_only: bool = False,
    ) -> None:
        if transport not in ("tcp", "udp"):
            raise ConfigError(f"invalid RTSP transport {transport!r}, expecting one of ['tcp', 'udp']")
        for name, value in (("open_timeout_s", open_timeout_s), ("read_timeout_s", read_timeout_s)):
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive number of seconds, but got {value}")
        self.url = url
        self.device = torch.device(device)
        self.fallback = fallback
        self.keyframes_only = keyframes_only
        self.error: str | None = None
        self.pts_s: float | None = None
        self.fps: float | None = None
        self.decoder = "nvdec"
        self._options = {"timeout": str(int(read_timeout_s * 1_000_000)), "probesize": "32", "analyzeduration": "0"}
        if url.lower().startswith(("rtsp://", "rtsps://")):
            self._options["rtsp_transport"] = transport
        self._timeout = (open_timeout_s, read_timeout_s)
        self._reformatter = VideoReformatter()
        self._pending: deque[Any] = deque()
        self._decoded_any = False
        self._open(nvdec=True)

    def _open(self, nvdec: bool) -> None:
        why = nvdec_unavailable() if nvdec else None
        if nvdec and why is not None:
            self._refused(why)
            nvdec = False
        if nvdec:
            gpu = self.device.index if self.device.type == "cuda" and self.device.index is not None else 0
            hwaccel = HWAccel(device_type="cuda", device=str(gpu), allow_software_fallback=False, is_hw_owned=True)
            try:
                self._container: Any = av.open(self.url, options=self._options, timeout=self._timeout, hwaccel=hwaccel)
            except (av.error.FFmpegError, OSError, NotImplementedError) as exc:
                self._refused(_reason(exc, self.url))
                nvdec = False
        if not nvdec:
            try:
                self._container = av.open(self.url, options=self._options, timeout=self._timeout)
            except (av.error.FFmpegError, OSError) as exc:
                raise SourceOpenError(f"{mask_url(self.url)}: cannot open ({_reason(exc, self.url)})") from None
        self.decoder = "nvdec" if nvdec else "cpu"
        try:
            if not self._container.streams.video:
                raise SourceOpenError(f"{mask_url(self.url)}: the stream has no video")
            stream = self._container.streams.video[0]
            if not nvdec:
                stream.thread_type = "SLICE"  # no frames held back, as in the CPU capture
                stream.thread_count = 1
            rate = stream.average_rate or stream.guessed_rate
            if rate and 0 < float(rate) < 1000:
                self.fps = float(rate)
            self._time_base = stream.time_base
            self._codec = stream.codec_context
            self._packets: Iterator[Any] = self._container.demux(stream)
        except BaseException:
            self._container.close()
            raise

    def _refused(self, why: str) -> None:
        """NVDEC cannot decode this stream: fall back to the CPU, or fail when not allowed to."""
        if not self.fallback:
            raise SourceOpenError(f"{mask_url(self.url)}: NVDEC cannot decode it ({why})")
        log.warning("%s: NVDEC cannot decode it (%s); decoding on the CPU", mask_url(self.url), why)

    def _next_frame(self) -> Any:
        """The next decoded frame; StopIteration at the end of the stream."""
        while not self._pending:
            packet = next(self._packets)  # the demuxer ends with an empty packet, which flushes
            if self.keyframes_only and packet.size and not packet.is_keyframe:
                continue
            self._pending.extend(self._codec.decode(packet))
        return self._pending.popleft()

    def read(self) -> tuple[bool, Nv12Image | None]:
        try:
            frame = self._next_frame()
        except StopIteration:
            self.error = "end of stream"
            return False, None
        except (av.error.FFmpegError, OSError) as exc:
            if self.decoder == "nvdec" and not self._decoded_any and self.fallback:
                # Opened, but the decoder refused the first picture (a profile NVDEC lacks).
                self._container.close()
                self._refused(_reason(exc, self.url))
                self._pending.clear()
                self._open(nvdec=False)
                return self.read()
            self.error = _reason(exc, self.url)
            log.debug("read failed: %s", self.error)
            return False, None
        self._decoded_any = True
        self.pts_s = None if frame.pts is None or self._time_base is None else float(frame.pts * self._time_base)
        try:
            return True, self._to_image(frame)
        except ValueError as exc:  # a picture NV12 cannot hold (odd size)
            self.error = str(exc)
            return False, None

    def _to_image(self, frame: Any) -> Nv12Image:
        if frame.format.name == "cuda":
            # PyAV exports CUDA planes only without a stream: the decoder's copy must be done.
            torch.cuda.synchronize(self.device if self.device.type == "cuda" else None)
            y = torch.from_dlpack(frame.planes[0].__dlpack__(stream=None))
            uv = torch.from_dlpack(frame.planes[1].__dlpack__(stream=None))
            return Nv12Image(y.clone(), uv.clone()).to(self.device)
        if frame.format.name != "nv12":
            frame = self._reformatter.reformat(frame, format="nv12")
        y = torch.from_dlpack(frame.planes[0].__dlpack__(stream=None))
        uv = torch.from_dlpack(frame.planes[1].__dlpack__(stream=None))
        image = Nv12Image(y, uv)
        if self.device.type == "cpu":
            return Nv12Image(y.clone(), uv.clone())  # own memory: the frame's buffer is reused
        return image.to(self.device)

    def release(self) -> None:
        self._container.close()

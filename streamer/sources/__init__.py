"""Sources: where frames come from, chosen from one string."""

from __future__ import annotations

import re
from pathlib import Path

from streamer import assets
from streamer.errors import SourceOpenError
from streamer.sources.base import TIMEOUT, Source
from streamer.sources.file import IMAGE_SUFFIXES, ImageSource, VideoFileSource
from streamer.sources.live import CameraSource, ReconnectPolicy, ReplaySource, StreamSource, SyntheticSource, mask_url

__all__ = ["TIMEOUT", "ReconnectPolicy", "Source", "make_source", "mask_url", "source_path"]

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
LIVE_SCHEMES = ("rtsp", "rtsps", "http", "https")


def source_path(spec: str) -> Path | None:
    """The local file or folder a source spec refers to, if any."""
    if spec.startswith("sample:"):
        return assets.sample_path(spec)
    if _SCHEME.match(spec) or spec.isdigit() or spec.startswith("synthetic"):
        return None
    return Path(spec)


_SYNTHETIC = re.compile(r"^synthetic(?::(\d+)x(\d+))?(?:@(\d+(?:\.\d+)?))?$")


def make_source(
    spec: str,
    *,
    policy: ReconnectPolicy | None = None,
    transport: str = "tcp",
    backend: str = "auto",
    source_id: str | None = None,
    realtime: bool = False,
    loop: bool = False,
    max_fps: float | None = None,
    shed: bool = True,
    record: str | None = None,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    fourcc: str | None = None,
) -> Source:
    """Build (but do not open) the source named by ``spec``.

    ``spec``: ``sample:NAME``, a video file, an image file, a folder of images, a webcam
    index (``0``), an ``rtsp://``, ``rtsps://``, ``http://`` or ``https://`` URL, or
    ``synthetic[:WxH][@FPS]`` (a paced test pattern, default 640x480@30). With ``realtime``
    a video file plays at its own frame rate like a camera (``loop`` replays it forever).
    ``backend`` (``auto``, ``pyav`` or ``opencv``) reads URLs and replayed files; see
    ``StreamSource``. For live sources: ``max_fps`` caps how many frames a second are handed
    out (0: none), ``shed`` lets the source decode only what is taken (see
    ``streamer.sources.shedding``), ``record`` copies a stream's or replayed file's own
    packets into that MP4. ``width``, ``height``, ``fps`` and ``fourcc`` are the mode a webcam
    is asked for (``CameraSource`` checks them); other sources have their own and ignore them.
    """
    spec = str(spec).strip()
    if not spec:
        raise SourceOpenError("empty source: expecting a file, a folder, a URL, a webcam index or sample:NAME")
    scheme = _SCHEME.match(spec)
    if scheme:
        name = scheme.group(1).lower()
        if name not in LIVE_SCHEMES:
            raise SourceOpenError(
                f"{mask_url(spec)}: unsupported URL scheme '{name}://', expecting one of "
                f"{[s + '://' for s in LIVE_SCHEMES]}"
            )
        return StreamSource(spec, source_id=source_id, policy=policy, transport=transport, backend=backend,
                            max_fps=max_fps, shed=shed, record=record)
    if record is not None and not realtime:
        raise SourceOpenError(f"{spec}: only a stream or a replayed video file can be recorded by copy")
    if spec.isdigit():
        if record is not None:
            raise SourceOpenError(f"webcam {spec}: a webcam sends no packets to copy; record it with the boxes drawn "
                                  "(record_boxes: true)")
        return CameraSource(int(spec), width=width, height=height, fps=fps, fourcc=fourcc, source_id=source_id,
                            policy=policy, max_fps=max_fps)
    synthetic = _SYNTHETIC.match(spec)
    if synthetic:
        w, h, rate = synthetic.groups()
        if record is not None:
            raise SourceOpenError(f"{spec}: a synthetic camera sends no packets to copy; record it with the boxes "
                                  "drawn (record_boxes: true)")
        return SyntheticSource(
            width=int(w or 640), height=int(h or 480), fps=float(rate or 30), source_id=source_id or "synthetic",
            max_fps=max_fps,
        )
    if spec.startswith("synthetic"):
        raise SourceOpenError(f"{spec}: invalid synthetic source, expecting synthetic[:WIDTHxHEIGHT][@FPS]")
    return _file_source(spec, source_path(spec), source_id=source_id, realtime=realtime, loop=loop, policy=policy,
                        backend=backend, max_fps=max_fps, shed=shed, record=record)


def _file_source(spec: str, path: Path | None, *, source_id: str | None, realtime: bool, loop: bool,
                 policy: ReconnectPolicy | None, backend: str, max_fps: float | None, shed: bool,
                 record: str | None) -> Source:
    """The source of a local file or folder ``path`` (what ``spec`` names): its images, its
    frames as they are, or with ``realtime`` replayed at its own rate like a camera."""
    assert path is not None
    sid = source_id or (spec.removeprefix("sample:") if spec.startswith("sample:") else path.name)
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource(path, source_id=sid)
    if realtime:
        return ReplaySource(str(path), loop=loop, source_id=sid, policy=policy, backend=backend, max_fps=max_fps,
                            shed=shed, record=record)
    return VideoFileSource(path, source_id=sid)

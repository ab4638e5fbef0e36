"""Sources: where frames come from, chosen from one string."""

from __future__ import annotations

import re
from pathlib import Path

from streamer import assets
from streamer.errors import SourceOpenError
from streamer.sources.base import TIMEOUT, Source
from streamer.sources.file import IMAGE_SUFFIXES, ImageSource, VideoFileSource

__all__ = ["TIMEOUT", "Source", "make_source", "source_path"]

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
LIVE_SCHEMES = ("rtsp", "rtsps", "http", "https")


def source_path(spec: str) -> Path | None:
    """The local file or folder a source spec refers to, if any."""
    if spec.startswith("sample:"):
        return assets.sample_path(spec)
    if _SCHEME.match(spec) or spec.isdigit() or spec == "synthetic":
        return None
    return Path(spec)


def make_source(spec: str) -> Source:
    """Build (but do not open) the source named by ``spec``.

    ``spec``: ``sample:NAME``, a video file, an image file, or a folder of images.
    """
    spec = str(spec).strip()
    if not spec:
        raise SourceOpenError("empty source: expecting a file, a folder, a URL, a webcam index or sample:NAME")
    scheme = _SCHEME.match(spec)
    if scheme:
        name = scheme.group(1).lower()
        raise SourceOpenError(
            f"{spec}: unsupported URL scheme '{name}://' (live streams are not supported yet)"
        )
    path = source_path(spec)
    assert path is not None
    source_id = spec.removeprefix("sample:") if spec.startswith("sample:") else path.name
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource(path, source_id=source_id)
    return VideoFileSource(path, source_id=source_id)

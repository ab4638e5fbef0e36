"""The source interface: something that yields frames until it ends."""

from __future__ import annotations

from abc import ABC, abstractmethod
from fractions import Fraction

from streamer.types import Frame


class Source(ABC):
    """A producer of :class:`Frame` objects.

    Lifecycle: ``open()`` once, ``read()`` until it returns None (end of stream), ``close()``
    (only after a successful ``open()``). ``read`` must return within ``timeout`` seconds:
    ``TIMEOUT`` when nothing arrived yet (a live source that is waiting or reconnecting).
    """

    #: True for cameras and streams: the pipeline drops old frames instead of queueing them.
    live: bool = False
    #: Stable identifier written to JSONL and shown in stats (credentials masked).
    source_id: str = "source"
    #: Frames per second reported by the container or device, when known.
    fps: float | None = None
    #: Number of frames the source expects to deliver, when known (files).
    total_frames: int | None = None
    #: Width over height of one pixel when it is not square (a file's sample aspect ratio).
    sample_aspect: Fraction | None = None

    @property
    def kind(self) -> str:
        """How a pipeline queues this source's frames: a key of :data:`streamer.defaults.QUEUES`."""
        return "live" if self.live else "file"

    @property
    def streams(self) -> int:
        """How many streams the source interleaves (queues that scale keep a slot for each)."""
        return 1

    def open(self) -> None:  # noqa: B027 - optional hook
        """Acquire the device, file or connection. Raise ``SourceOpenError`` on failure."""

    @abstractmethod
    def read(self, timeout: float) -> Frame | None | object:
        """Return the next frame, ``None`` at end of stream, or :data:`TIMEOUT`."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what ``open`` acquired."""

    @property
    def dropped(self) -> int:
        """Frames the source discarded itself (a live source's newest-frame slot overwritten
        before the pipeline took it); a file drops none."""
        return 0

    def fps_of(self, source_id: str) -> float | None:
        """The nominal frame rate of the stream ``source_id`` (a source of several streams
        knows each one's; a single stream is the source itself), or None when not known."""
        return self.fps or None

    def describe(self) -> str:
        """What the source reads, for logs and stats (a URL with its password masked)."""
        return self.source_id

    def status(self) -> dict[str, object]:
        """Source-specific state for stats (connection state, reconnects...)."""
        return {}

    def summary(self) -> str | None:
        """A line for the end-of-run summary when the source has something to report."""
        return None


class _Timeout:
    def __repr__(self) -> str:
        return "TIMEOUT"


TIMEOUT: object = _Timeout()
"""Returned by :meth:`Source.read` when no frame arrived within the timeout."""

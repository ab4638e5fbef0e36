"""The sink interface: where results go."""

from __future__ import annotations

from abc import ABC, abstractmethod

from streamer.types import Result


class Sink(ABC):
    """Consumes results at the end of the pipeline.

    ``open()`` before the first result (check paths, connect); ``write()`` per result;
    ``flush()`` at end of stream (finalize files); ``close()`` always, after a successful
    ``open()``. ``needs_render`` asks the pipeline to draw detections on the frame.
    """

    name: str = "sink"
    needs_render: bool = False

    def open(self) -> None:  # noqa: B027 - optional hook
        pass

    @abstractmethod
    def write(self, result: Result) -> None:
        """Consume one result."""

    def idle(self) -> None:  # noqa: B027 - optional hook
        """Called about every 0.1 s while no result arrives."""

    def flush(self) -> None:  # noqa: B027 - optional hook
        pass

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def summary(self) -> str | None:
        """One line for the end-of-run summary (what was written where)."""
        return None


class ForSource(Sink):
    """Hands ``sink`` only the results of one source (a camera's own JSONL or recording).

    Wrapping instead of dispatching inside another sink keeps each camera's outputs separate
    in the sink stage: one camera's full disk disables that camera's file, nothing else.
    """

    def __init__(self, sink: Sink, source_id: str) -> None:
        self.inner = sink
        self.source_id = source_id
        self.name = f"{source_id} {sink.name}"
        self.needs_render = sink.needs_render

    def open(self) -> None:
        self.inner.open()

    def write(self, result: Result) -> None:
        if result.frame.source_id == self.source_id:
            self.inner.write(result)

    def idle(self) -> None:
        self.inner.idle()

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()

    def summary(self) -> str | None:
        return self.inner.summary()

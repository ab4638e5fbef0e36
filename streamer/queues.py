"""Bounded queues between stages.

Two policies:

* ``BLOCK``: a full queue makes ``put`` wait (with a timeout). Nothing is ever lost; used for
  files and image folders so that the output has every input frame, in order.
* ``DROP_OLDEST``: a full queue evicts its oldest item to make room. The newest item always
  gets in; every eviction is counted. Used for live sources so latency cannot build up.

End of stream travels in-band as the :data:`END` marker, which is never dropped.
"""

from __future__ import annotations

import collections
import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Policy(enum.Enum):
    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"
    #: At most one item per key (camera): a new item replaces the queued one of its key.
    #: Used by multi-camera pipelines so that one busy camera never pushes out the others.
    LATEST_PER_KEY = "latest_per_key"

    @classmethod
    def parse(cls, text: str | Policy) -> Policy:
        if isinstance(text, Policy):
            return text
        for policy in cls:
            if policy.value == text:
                return policy
        raise ValueError(f"invalid queue policy {text!r}, expecting one of {[p.value for p in cls]}")


class _EndOfStream:
    _instance: _EndOfStream | None = None

    def __new__(cls) -> _EndOfStream:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "END"


END: Any = _EndOfStream()
"""The in-band end-of-stream marker. Every stage passes it on after flushing."""


class Empty(Exception):
    """``get`` timed out with nothing to return."""


class BoundedQueue(Generic[T]):
    """A thread-safe FIFO of at most ``maxsize`` items with a full-queue ``policy``."""

    def __init__(
        self, maxsize: int, policy: Policy = Policy.BLOCK, name: str = "", key: Callable[[Any], str] | None = None
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"queue size must be >= 1, but got {maxsize}")
        if policy is Policy.LATEST_PER_KEY and key is None:
            raise ValueError("a latest_per_key queue needs a key function")
        self.maxsize = maxsize
        self.policy = policy
        self.name = name
        self.key = key
        self.dropped_by_key: collections.Counter[str] = collections.Counter()
        self._items: collections.deque[Any] = collections.deque()
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self.dropped = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def put(self, item: T, timeout: float) -> bool:
        """Add ``item``; return False if a ``BLOCK`` queue stayed full for ``timeout`` seconds.

        The END marker is always accepted: a queue may briefly hold ``maxsize + 1`` items so
        that end of stream can never be lost or deadlock behind a full queue.
        """
        with self._lock:
            if item is not END and self.policy is Policy.LATEST_PER_KEY:
                assert self.key is not None
                k = self.key(item)
                for i, queued in enumerate(self._items):
                    if queued is not END and self.key(queued) == k:
                        del self._items[i]
                        self.dropped += 1
                        self.dropped_by_key[k] += 1
                        break
            if item is not END and len(self._items) >= self.maxsize:
                if self.policy in (Policy.DROP_OLDEST, Policy.LATEST_PER_KEY):
                    self._drop_oldest_locked()
                elif not self._wait_for_room_locked(timeout):
                    return False
            self._items.append(item)
            self._not_empty.notify()
            return True

    def _drop_oldest_locked(self) -> None:
        for i, queued in enumerate(self._items):
            if queued is not END:
                del self._items[i]
                self.dropped += 1
                if self.key is not None:
                    self.dropped_by_key[self.key(queued)] += 1
                return

    def wait_for_room(self, timeout: float) -> bool:
        """Wait until a ``put`` would not have to wait; False after ``timeout`` seconds.

        A live source waits here *before* it takes a frame, so the frame it then takes is
        the newest one, not one that aged in its hand while the queue was full."""
        with self._lock:
            return self._wait_for_room_locked(timeout)

    def _wait_for_room_locked(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while len(self._items) >= self.maxsize:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._not_full.wait(remaining)
        return True

    def get(self, timeout: float) -> T:
        """Remove and return the oldest item; raise :class:`Empty` after ``timeout`` seconds."""
        with self._lock:
            if not self._items:
                deadline = time.monotonic() + timeout
                while not self._items:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise Empty
                    self._not_empty.wait(remaining)
            item = self._items.popleft()
            self._not_full.notify()
            return item

    def get_nowait(self) -> T:
        with self._lock:
            if not self._items:
                raise Empty
            item = self._items.popleft()
            self._not_full.notify()
            return item

    def clear(self) -> int:
        """Drop everything queued (END markers included); return how many items were removed."""
        with self._lock:
            n = len(self._items)
            self._items.clear()
            self._not_full.notify_all()
            return n


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """Every edge of a pipeline: ``size`` slots, and what a full queue does (``policy``)."""

    size: int = 4
    policy: Policy = Policy.BLOCK
    #: When set (and the pipeline has a model), every edge is lossless instead: one frame into
    #: the first stage, ``feed`` into the model, ``size`` after it. The source is then read
    #: only as fast as the model takes frames, so a live source sheds its load where it is
    #: cheapest, in its own slot before the frame is decoded or converted, and nothing the
    #: model worked on is thrown away.
    feed: int | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.size, int) and self.size >= 1):
            raise ValueError(f"queue size must be an integer >= 1, but got {self.size!r}")
        if self.feed is not None and not (isinstance(self.feed, int) and self.feed >= 1):
            raise ValueError(f"queue feed must be an integer >= 1, but got {self.feed!r}")
        if not isinstance(self.policy, Policy):
            raise TypeError(f"queue policy must be one of {[p.value for p in Policy]}, but got {self.policy!r}")

    def edges(self, stages: list[str]) -> list[tuple[int, Policy]]:
        """(size, policy) of the queue into each of ``stages``, in order."""
        if self.feed is None or "infer" not in stages:
            return [(self.size, self.policy)] * len(stages)
        model_at = stages.index("infer")
        return [(1 if i < model_at else self.feed if i == model_at else self.size, Policy.BLOCK)
                for i in range(len(stages))]

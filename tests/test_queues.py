from __future__ import annotations

import threading
import time

import pytest

from streamer.queues import END, BoundedQueue, Empty, Policy


def test_empty_get_times_out() -> None:
    q: BoundedQueue[int] = BoundedQueue(2)
    t0 = time.monotonic()
    with pytest.raises(Empty):
        q.get(0.05)
    assert 0.04 <= time.monotonic() - t0 < 1.0


@pytest.mark.parametrize("size", [0, -1])
def test_size_must_be_positive(size: int) -> None:
    with pytest.raises(ValueError, match="queue size must be >= 1"):
        BoundedQueue(size)


def test_block_keeps_everything_in_order() -> None:
    q: BoundedQueue[int] = BoundedQueue(2, Policy.BLOCK)
    assert q.put(1, 0.01) and q.put(2, 0.01)
    assert q.put(3, 0.05) is False  # full: put times out, nothing dropped
    assert q.dropped == 0
    assert [q.get(0.01), q.get(0.01)] == [1, 2]


def test_block_put_waits_for_room() -> None:
    q: BoundedQueue[int] = BoundedQueue(1, Policy.BLOCK)
    q.put(1, 0.01)
    threading.Timer(0.05, lambda: q.get(1.0)).start()
    assert q.put(2, 2.0) is True
    assert q.get(0.1) == 2


def test_drop_oldest_keeps_newest_and_counts() -> None:
    q: BoundedQueue[int] = BoundedQueue(2, Policy.DROP_OLDEST)
    for i in range(10):
        assert q.put(i, 0.0)
    assert q.dropped == 8
    assert [q.get(0.01), q.get(0.01)] == [8, 9]


def test_end_is_never_dropped_or_refused() -> None:
    q: BoundedQueue[object] = BoundedQueue(1, Policy.DROP_OLDEST)
    q.put(1, 0.0)
    assert q.put(END, 0.0)
    q.put(2, 0.0)  # evicts 1, not END
    assert q.get(0.01) is END
    assert q.get(0.01) == 2
    blocking: BoundedQueue[object] = BoundedQueue(1, Policy.BLOCK)
    blocking.put(1, 0.0)
    assert blocking.put(END, 0.0)  # a full BLOCK queue still takes END at once


def test_policy_parse_lists_choices() -> None:
    assert Policy.parse("drop_oldest") is Policy.DROP_OLDEST
    with pytest.raises(ValueError, match=r"expecting one of \['block', 'drop_oldest', 'latest_per_key'\]"):
        Policy.parse("latest")


def test_latest_per_key_keeps_one_per_camera() -> None:
    q: BoundedQueue[tuple[str, int]] = BoundedQueue(3, Policy.LATEST_PER_KEY, key=lambda item: item[0])
    for i in range(5):
        q.put(("a", i), 0.0)
    q.put(("b", 0), 0.0)
    q.put(("a", 5), 0.0)
    assert q.dropped == 5 and q.dropped_by_key == {"a": 5}
    assert [q.get(0.01), q.get(0.01)] == [("b", 0), ("a", 5)]
    with pytest.raises(ValueError, match="needs a key function"):
        BoundedQueue(2, Policy.LATEST_PER_KEY)

"""The tracker's rules, one small scene per rule, and its settings checks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

import streamer
from streamer.errors import ConfigError
from streamer.track import Tracker
from streamer.types import Detections
from tests.track.scenes import make_scene


def dets(boxes: Sequence[Sequence[float]], scores: Sequence[float] | None = None) -> Detections:
    xyxy = np.asarray(boxes, np.float32).reshape(-1, 4)
    conf = np.full(len(xyxy), 0.9, np.float32) if scores is None else np.asarray(scores, np.float32)
    return Detections(xyxy, conf, np.arange(len(xyxy), dtype=np.int32))


def box(x: float, y: float = 100.0, w: float = 40.0, h: float = 80.0) -> list[float]:
    return [x, y, x + w, y + h]


def ids_of(d: Detections) -> list[int]:
    assert d.tracker_id is not None
    return d.tracker_id.tolist()


def run(tracker: Tracker, frames: Sequence[Detections], fps: float = 30.0, times: Sequence[float] | None = None) -> list[list[int]]:
    return [ids_of(tracker.update(d, times[f] if times is not None else f / fps)) for f, d in enumerate(frames)]


def walker(frames: int, *, x0: float = 100.0, speed: float = 3.0, absent: range = range(0)) -> list[Detections]:
    """One box walking right; no detection in the frames of ``absent``."""
    return [dets([] if f in absent else [box(x0 + speed * f)]) for f in range(frames)]


def test_empty_input() -> None:
    tracker = Tracker()
    out = tracker.update(Detections.empty(), 0.0)
    assert len(out) == 0 and out.tracker_id is not None and out.tracker_id.dtype == np.int64
    assert len(tracker.tracks) == 0
    # Empty frames between seen ones are updates too: the track ages, then is found again.
    frames = walker(12, absent=range(4, 8))
    assert run(Tracker(), frames) == [[1]] * 4 + [[]] * 4 + [[1]] * 4


def test_one_box_moving_keeps_its_id() -> None:
    ids = run(Tracker(), walker(60))
    assert ids == [[1]] * 60


def test_rows_are_the_input_rows() -> None:
    tracker = Tracker()
    d = Detections(
        np.array([box(10), box(300), box(600, w=0)], np.float32),
        np.array([0.9, 0.05, 0.9], np.float32),
        np.array([3, 4, 5], np.int32),
        data={"tag": np.array([7, 8, 9])},
    )
    out = tracker.update(d, 0.0)
    np.testing.assert_array_equal(out.xyxy, d.xyxy)  # the detector's boxes, not the filter's
    np.testing.assert_array_equal(out.confidence, d.confidence)
    np.testing.assert_array_equal(out.class_id, d.class_id)
    np.testing.assert_array_equal(out.data["tag"], [7, 8, 9])
    # Below track_low_thresh: never tracked; zero width: never tracked.
    assert ids_of(out) == [1, -1, -1]


def test_first_update_confirms_at_once_later_births_wait_one_update() -> None:
    frames = [dets([box(10)]), dets([box(13), box(400)]), dets([box(16), box(403)]), dets([box(19), box(406)])]
    assert run(Tracker(), frames) == [[1], [1, -1], [1, 2], [1, 2]]


def test_a_birth_not_seen_again_is_dropped_and_costs_no_id() -> None:
    # Clutter that appears for one frame at a time never gets an id; ids stay 1, 2, 3.
    frames = []
    for f in range(40):
        boxes = [box(10 + 3 * f)]
        if f % 5 == 1:
            boxes.append(box(900 - 20 * f, y=400))
        if f >= 10:
            boxes.append(box(300 + 2 * f, y=250))
        if f >= 20:
            boxes.append(box(600 - 2 * f, y=600))
        frames.append(dets(boxes))
    ids = run(Tracker(), frames)
    seen = sorted({i for row in ids for i in row if i >= 0})
    assert seen == [1, 2, 3]
    assert ids[11][-1] == 2 and ids[21][-1] == 3


def test_miss_and_recovery_within_the_buffer_keeps_the_id() -> None:
    ids = run(Tracker(), walker(60, absent=range(20, 45)))  # 25 frames unseen < 30
    assert ids[19] == [1] and ids[45] == [1] and ids[-1] == [1]


def test_lost_beyond_the_buffer_gets_a_new_id() -> None:
    ids = run(Tracker(), walker(90, absent=range(20, 52)))  # 32 frames unseen > 30
    assert ids[19] == [1]
    assert ids[52] == [-1] and ids[53] == [2]  # a new birth: unconfirmed first, then id 2


def test_low_score_boxes_keep_a_track_but_never_start_one() -> None:
    frames = [dets([box(10 + 3 * f)], [0.9 if f < 5 else 0.15]) for f in range(40)]
    assert run(Tracker(), frames) == [[1]] * 40
    assert run(Tracker(), [dets([box(10 + 3 * f)], [0.15]) for f in range(10)]) == [[-1]] * 10


def test_duplicate_of_a_lost_track_is_dropped() -> None:
    # Two overlapping objects (IoU ~0.9) tracked from the first frame; when B's box is no
    # longer detected, lost B duplicates tracked A and goes; when B is detected again it is a
    # new object, not B found again.
    a = box(100)
    b = [102, 100, 142, 182]
    frames = [dets([a, b]) for _ in range(10)] + [dets([a]) for _ in range(3)] + [dets([a, b]) for _ in range(3)]
    ids = run(Tracker(), frames)
    assert ids[0] == [1, 2] and ids[10] == [1]
    assert ids[13] == [1, -1] and ids[14] == [1, 3]


@pytest.mark.parametrize("time_aware", [True, False])
def test_a_zero_buffer_drops_lost_tracks_at_once(time_aware: bool) -> None:
    frames = walker(20, absent=range(10, 11))
    ids = run(Tracker(track_buffer=0, time_aware=time_aware), frames)
    assert ids[:10] == [[1]] * 10 and ids[11] == [-1] and ids[12:] == [[2]] * 8


def test_two_trackers_count_their_own_ids() -> None:
    first, second = Tracker(), Tracker()
    assert run(first, walker(5)) == [[1]] * 5
    assert run(second, walker(5)) == [[1]] * 5
    first.reset()
    assert run(first, walker(3, x0=500)) == [[1]] * 3


def test_tracks_view() -> None:
    tracker = Tracker()
    run(tracker, [dets([box(10 + 3 * f), box(400)]) for f in range(5)])
    view = tracker.tracks
    assert view.tracker_id.tolist() == [1, 2] and view.xyxy.dtype == np.float32
    np.testing.assert_allclose(view.xyxy[1], box(400), atol=1e-3)


def test_exported() -> None:
    assert streamer.Tracker is Tracker


# --- time ---------------------------------------------------------------------------------


def test_time_aware_equals_bytetrack_at_the_nominal_rate() -> None:
    scene = make_scene(1, frames=150)
    with_time = run(Tracker(frame_rate=30), scene.detections, fps=30)
    by_update = Tracker(time_aware=False)
    plain = [ids_of(by_update.update(d)) for d in scene.detections]
    assert with_time == plain


def test_the_lost_buffer_is_a_duration_when_time_aware() -> None:
    # 10 updates a second at frame_rate 30: the buffer of 30 frames is one second.
    times = [0.1 * f for f in range(40)]
    frames = [dets([] if 10 <= f < 22 else [box(100 + 9 * f)]) for f in range(40)]  # 1.2 s unseen
    ids = run(Tracker(frame_rate=30), frames, times=times)
    assert ids[9] == [1] and ids[23] == [2]
    frames = [dets([] if 10 <= f < 18 else [box(100 + 9 * f)]) for f in range(40)]  # 0.8 s unseen
    assert run(Tracker(frame_rate=30), frames, times=times)[18:] == [[1]] * 22
    # Counting updates instead, 12 empty updates are well within 30.
    frames = [dets([] if 10 <= f < 22 else [box(100 + 9 * f)]) for f in range(40)]
    assert run(Tracker(frame_rate=30, time_aware=False), frames, times=times)[22:] == [[1]] * 18


@pytest.mark.parametrize(("time_aware", "after_gap"), [(True, [[1]] * 3), (False, [[-1], [2], [2]])])
def test_the_motion_model_steps_by_time(time_aware: bool, after_gap: list[list[int]]) -> None:
    # 12 px per frame for a 40 px wide box, then 5 frames dropped (72 px between updates).
    # On the clock the prediction lands on the box; counting updates it falls 60 px behind,
    # the track is lost and the box starts a new one.
    times = [f / 30 for f in range(20)] + [f / 30 for f in range(25, 28)]
    frames = [dets([box(100 + 12 * round(t * 30))]) for t in times]
    ids = run(Tracker(frame_rate=30, time_aware=time_aware), frames, times=times)
    assert ids[:20] == [[1]] * 20 and ids[20:] == after_gap


@pytest.mark.parametrize(
    ("times", "expect_new_id_at"),
    [
        ([0.0, 0.033, 0.066, 0.0, 0.033], 3),  # backwards: a new stream (a loop of a file)
        ([0.0, 0.033, 0.066, 5.0, 5.033], 3),  # a gap of 5 s > the 1 s buffer
    ],
)
def test_starting_afresh(times: list[float], expect_new_id_at: int) -> None:
    frames = [dets([box(100)]) for _ in times]
    ids = run(Tracker(frame_rate=30), frames, times=times)
    # The new start confirms its tracks at once, and ids keep counting.
    assert ids[:expect_new_id_at] == [[1]] * expect_new_id_at
    assert ids[expect_new_id_at:] == [[2]] * (len(times) - expect_new_id_at)


# --- settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("track_high_thresh", 1.5, "track_high_thresh: expected a number in [0, 1], got 1.5"),
        ("track_high_thresh", "0.3", "track_high_thresh: expected a number in [0, 1], got '0.3'"),
        ("track_low_thresh", -0.1, "track_low_thresh: expected a number in [0, 1], got -0.1"),
        ("track_low_thresh", 0.4, "track_low_thresh: expected at most track_high_thresh (0.25), got 0.4"),
        ("new_track_thresh", float("nan"), "new_track_thresh: expected a number in [0, 1], got nan"),
        ("track_buffer", -1, "track_buffer: expected a whole number of frames >= 0, got -1"),
        ("track_buffer", 2.5, "track_buffer: expected a whole number of frames >= 0, got 2.5"),
        ("match_thresh", True, "match_thresh: expected a number in [0, 1], got True"),
        ("fuse_score", 1, "fuse_score: expected true or false, got 1"),
        ("frame_rate", 0, "frame_rate: expected a number in > 0, got 0"),
        ("frame_rate", float("inf"), "frame_rate: expected a number in > 0, got inf"),
        ("time_aware", "yes", "time_aware: expected true or false, got 'yes'"),
    ],
)
def test_bad_settings(setting: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Tracker(**{setting: value})  # type: ignore[arg-type]
    assert str(info.value) == f"Tracker {message}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([[0, 0, 1, 1]], 0.0), "detections: expected streamer.Detections, got list"),
        ((Detections.empty(), float("nan")), "timestamp_s: expected a finite number of seconds or None, got nan"),
        ((Detections.empty(), "0.5"), "timestamp_s: expected a finite number of seconds or None, got '0.5'"),
    ],
)
def test_bad_update_arguments(args: tuple[object, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Tracker().update(*args)  # type: ignore[arg-type]
    assert str(info.value) == f"Tracker.update {message}"


def _one_box(x: float) -> Detections:
    return Detections(np.array([[x, 50, x + 40, 130]], np.float32), np.array([0.9], np.float32),
                      np.zeros(1, np.int32))


def test_a_pipeline_slower_than_the_buffer_still_tracks() -> None:
    """A model at about 1 fps on a 30 fps stream: updates 1.0-1.1 s apart, longer than the
    30-frame buffer at 30 fps. The object keeps its id, also across one missed update, and a
    real reconnect gap (far longer than the pace) still starts afresh."""
    tracker = Tracker(frame_rate=30.0)
    t, ids = 0.0, []
    for i in range(12):
        t += 1.0 + 0.1 * (i % 2)
        if i == 6:
            tracker.update(Detections.empty(), t)  # missed on one update
            continue
        ids.append(int(tracker.update(_one_box(100 + 2 * i), t).tracker_id[0]))
    assert set(ids) == {1}, ids
    out = tracker.update(_one_box(130), t + 60.0)  # a minute without frames: a reconnect
    assert int(out.tracker_id[0]) == 2


def test_at_the_stream_rate_the_buffer_is_track_buffer_frames() -> None:
    """Fed at the nominal rate, the pace floor changes nothing: a lost track is dropped once
    more than 30 frames have passed (checked after matching, as ByteTrack does, so a detection
    31 frames later still finds it), and one 32 frames later gets a new id."""
    for missed, same in ((30, True), (31, True), (32, False)):
        tracker = Tracker(frame_rate=25.0)
        frame = 0
        for _ in range(5):
            tracker.update(_one_box(100), frame / 25.0)
            frame += 1
        for _ in range(missed - 1):
            tracker.update(Detections.empty(), frame / 25.0)
            frame += 1
        out = tracker.update(_one_box(100), frame / 25.0)
        assert (int(out.tracker_id[0]) == 1) is same, (missed, out.tracker_id)

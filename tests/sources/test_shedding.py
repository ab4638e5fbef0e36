"""Decode levels: which packets each level decodes (on a real camera-like clip, whose frames
must come out exactly as when everything is decoded), and the controller's moves."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from streamer.sources.av_capture import ReplayCapture
from streamer.sources.shedding import (
    ALL,
    KEYFRAMES,
    NONREF,
    OFF,
    STEPS,
    DecodeControl,
    ShedController,
    ShedSettings,
    fair_shares,
)
from tests.clips import make_camera_clip
from tests.conftest import require_tool

GOP = 10


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """160x90 at 30 fps, a keyframe every 10 frames, no B-frames, 317 frames."""
    require_tool("ffmpeg")
    return make_camera_clip(tmp_path_factory.mktemp("clips") / "cam.mp4", width=160, height=90, gop=GOP)


def decode_all(clip: Path, step: int) -> tuple[DecodeControl, list[tuple[float | None, str]]]:
    """Every frame ``step`` decodes from the whole clip: (pts, digest of its BGR picture)."""
    control = DecodeControl(step, floor=OFF)
    capture = ReplayCapture(clip, control=control, pace=False)
    frames = []
    try:
        while True:
            ok, pending = capture.read_pending()
            if not ok:
                break
            if pending is not None:
                frames.append((capture.pts_s, hashlib.sha1(pending().tobytes()).hexdigest()))
    finally:
        capture.release()
    return control, frames


# --------------------------------------------------------------------------- levels

@pytest.mark.parametrize(("step", "gop", "expected"), [
    (OFF, 30, 0), (KEYFRAMES, 30, 1), (STEPS.index("gop/8"), 30, 3), (STEPS.index("gop/4"), 30, 7),
    (STEPS.index("gop/2"), 30, 15), (NONREF, 30, None), (ALL, 30, None),
    (STEPS.index("gop/8"), 4, 2),  # never fewer than two frames a GOP above keyframes only
])
def test_frames_per_gop(step: int, gop: int, expected: int | None) -> None:
    control = DecodeControl(step, floor=OFF)
    control.gop = gop
    assert control.frames_per_gop() == expected


def test_decode_steps_are_checked() -> None:
    with pytest.raises(ValueError, match="floor <= ceiling"):
        DecodeControl(floor=ALL, ceiling=KEYFRAMES)


@pytest.mark.parametrize(("has_nonref", "up_from_gop2"), [(False, ALL), (True, NONREF)])
def test_nonref_is_passed_over_when_it_saves_nothing(has_nonref: bool, up_from_gop2: int) -> None:
    control = DecodeControl(STEPS.index("gop/2"))
    control.has_nonref = has_nonref
    assert control.next_step(+1) == up_from_gop2
    control.step = ALL
    assert control.next_step(-1) == (NONREF if has_nonref else STEPS.index("gop/2"))
    assert control.next_step(+1) is None  # the ceiling
    control.step = KEYFRAMES
    assert control.next_step(-1) is None  # the floor: a camera is never turned off by load


def test_each_level_decodes_its_share_and_the_same_pictures(clip: Path) -> None:
    control, every = decode_all(clip, ALL)
    total = control.packets
    assert total == len(every) == 317 and control.skipped == 0
    assert control.gop == GOP
    by_pts = dict(every)
    for step, per_gop in ((KEYFRAMES, 1), (STEPS.index("gop/4"), 2), (STEPS.index("gop/2"), 5)):
        control, frames = decode_all(clip, step)
        assert len(frames) == control.decoded and control.skipped == total - len(frames)
        # From the second GOP on, when the capture has measured the GOP (the last one has 7
        # frames, more than any of these levels takes):
        later = [(pts, digest) for pts, digest in frames if pts is not None and pts >= GOP / 30 - 1e-6]
        assert len(later) == per_gop * (-(-total // GOP) - 1), STEPS[step]
        # Skipping never smears a picture: each frame is the one a full decode gives.
        assert all(by_pts[pts] == digest for pts, digest in frames), STEPS[step]
        positions = sorted({round(pts * 30) % GOP for pts, _ in later})
        assert positions == list(range(per_gop)), STEPS[step]
    control, frames = decode_all(clip, OFF)
    assert frames == [] and control.packets == total


def test_a_looped_replay_carries_its_clock_on(clip: Path) -> None:
    capture = ReplayCapture(clip, loop=True, control=DecodeControl(KEYFRAMES), pace=False)
    stamps = []
    try:
        while len(stamps) < 70:  # 32 keyframes a pass: past the second rewind
            ok, pending = capture.read_pending()
            assert ok, capture.error
            if pending is not None:
                stamps.append(capture.pts_s)
    finally:
        capture.release()
    frames_apart = np.round(np.diff(np.array(stamps, dtype=np.float64)) * 30).astype(int)
    # A keyframe every 10 frames; across each rewind the clip's last GOP (7 frames) then the
    # first frame again, one frame after the last packet.
    assert sorted(set(frames_apart.tolist())) == [7, GOP]
    assert (frames_apart == 7).sum() == 2


# --------------------------------------------------------------------------- the controller

def controller(n: int = 2, step: int = ALL, **settings: float) -> tuple[ShedController, dict[str, DecodeControl]]:
    controls = {f"c{i}": DecodeControl(step) for i in range(n)}
    for c in controls.values():
        c.fps, c.gop = 30.0, 30
    return ShedController(controls, ShedSettings(tick_s=1.0, hold_s=2.0, **settings)), controls


def feed(shed: ShedController, controls: dict[str, DecodeControl], *, decoded: float, taken: float,
         waited_s: float, at: float) -> None:
    """One second of counters: each camera decoded and handed over so many frames."""
    for name, control in controls.items():
        control.packets += 30
        control.decoded += int(decoded)
        control.skipped += 30 - int(decoded)
        for _ in range(int(taken)):
            shed.taken(name)
    shed.observe_wait(waited_s)
    assert shed.tick(now=at)


def test_no_tick_before_its_time() -> None:
    shed, _ = controller()
    assert not shed.tick(now=shed._last_tick + 0.5)


def test_levels_go_down_while_the_model_is_saturated_and_hold_between_moves() -> None:
    shed, controls = controller()
    t = shed._last_tick
    steps = []
    for second in range(1, 12):
        c = controls["c0"]
        decoded = c.expected_fps(c.step)
        feed(shed, controls, decoded=decoded, taken=3, waited_s=0.0, at=t + second)
        steps.append(c.step)
    # From every frame down to the cheapest level still giving 1.5 x the 3 frames taken
    # (gop/4: 7 a second; gop/8 would give 3), one step at most every hold_s.
    assert steps[-1] == STEPS.index("gop/4")
    moves = [i for i in range(1, len(steps)) if steps[i] != steps[i - 1]]
    assert all(b - a >= 2 for a, b in zip(moves, moves[1:]))
    assert "share of the model is 3.0" in shed.reasons["c0"]
    assert "load shed before decoding" in (shed.summary() or "")


def test_levels_go_up_while_the_model_waits() -> None:
    shed, controls = controller(step=KEYFRAMES)
    t = shed._last_tick
    for second in range(1, 14):
        c = controls["c0"]
        decoded = c.expected_fps(c.step)
        feed(shed, controls, decoded=decoded, taken=decoded, waited_s=0.5, at=t + second)
    assert controls["c0"].step == ALL and shed.reasons["c0"] == "the model was waiting for frames"


@pytest.mark.parametrize(("cameras", "expected"), [
    ({}, {}),
    ({"a": (10.0, None), "b": (20.0, None)}, {"a": 15.0, "b": 15.0}),
    ({"a": (2.0, 2.0), "b": (14.0, None), "c": (14.0, None)}, {"a": 2.0, "b": 14.0, "c": 14.0}),
    ({"a": (1.0, 5.0), "b": (29.0, None)}, {"a": 5.0, "b": 25.0}),  # under its cap: owed the cap
    ({"a": (3.0, 10.0), "b": (3.0, 10.0)}, {"a": 3.0, "b": 3.0}),  # caps above the share change nothing
])
def test_fair_shares(cameras: dict[str, tuple[float, float | None]], expected: dict[str, float]) -> None:
    assert fair_shares(cameras) == pytest.approx(expected)


def test_a_camera_that_fell_behind_its_share_is_raised_not_lowered() -> None:
    """The model is saturated; one camera at keyframes got 1 frame a second, the other 20:
    each is owed 10.5, so the starved one goes up instead of further down."""
    shed, controls = controller(step=ALL)
    controls["c0"].step = KEYFRAMES
    t = shed._last_tick
    for name, (decoded, taken) in {"c0": (1, 1), "c1": (30, 20)}.items():
        controls[name].packets += 30
        controls[name].decoded += decoded
        for _ in range(taken):
            shed.taken(name)
    assert shed.tick(now=t + 1)
    assert controls["c0"].step == STEPS.index("gop/8") and "share of the model is 10.5" in shed.reasons["c0"]
    assert controls["c1"].step == ALL  # gop/2 would decode 15, under 1.5 x 10.5


def test_a_hungry_model_raises_one_camera_a_tick_the_one_that_got_least() -> None:
    """Raising every camera at once would overshoot what the model takes and leave every
    frame waiting in its slot; supply creeps up one camera at a time."""
    shed, controls = controller(n=4, step=STEPS.index("gop/8"))
    controls["c0"].step = KEYFRAMES
    t = shed._last_tick
    for name, control in controls.items():
        got = 1 if name == "c0" else 3  # each hands over all it decodes
        control.packets += 30
        control.decoded += got
        for _ in range(got):
            shed.taken(name)
    shed.observe_wait(0.5)
    assert shed.tick(now=t + 1)
    assert {name: STEPS[c.step] for name, c in controls.items()} == {
        "c0": "gop/8", "c1": "gop/8", "c2": "gop/8", "c3": "gop/8"}


def test_cameras_in_step_with_frames_left_over_are_raised_for_a_hungry_model() -> None:
    """GOPs that start together: each camera's 7 frames come at once and the model, which
    takes one, waits for the rest of the GOP; a longer window is what feeds it."""
    shed, controls = controller(n=2, step=STEPS.index("gop/4"))
    t = shed._last_tick
    feed(shed, controls, decoded=7, taken=1, waited_s=0.6, at=t + 1)
    assert sorted(STEPS[c.step] for c in controls.values()) == ["gop/2", "gop/4"]


def test_a_camera_held_at_its_cap_is_not_raised_for_a_hungry_model() -> None:
    """A camera capped at 2 fps hands over its 2: raising it would feed nothing."""
    shed, controls = controller(n=1, step=STEPS.index("gop/4"))
    shed.caps = {"c0": 2.0}
    t = shed._last_tick
    for second in range(1, 6):
        feed(shed, controls, decoded=7, taken=2, waited_s=0.5, at=t + second)
    assert controls["c0"].step == STEPS.index("gop/4")

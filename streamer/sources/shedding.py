"""Decode levels: how much of a camera's stream is decoded, and the one controller that sets them.

A camera reads every packet of its stream at the rate the stream delivers (so the connection
stays healthy and nothing backs up in the network), but decodes only what the pipeline will
use. Each camera has a :class:`DecodeControl`, a ladder of levels from cheapest to dearest:

========  =====================================  ===========================================
step      what is decoded                        decoded per GOP of ``G`` frames
========  =====================================  ===========================================
off       nothing (the camera's frames are not   0: packets are read (and recorded) only
          wanted: ``fps: 0``)
keyframes keyframes only; other packets never    1: an I-frame costs about 5 P-frames, so
          reach the decoder                      about 1/6 of decoding everything
gop/8     the first G/8 frames of each GOP       G/8 (a P-frame needs every frame before it
gop/4     the first G/4 frames of each GOP       G/4  in its GOP, so a frame late in the GOP
gop/2     the first G/2 frames of each GOP       G/2  costs all the frames before it)
nonref    everything but frames nothing refers   G minus the B-frames (IP cameras send none,
          to (FFmpeg's ``skip_frame`` NONREF)     so the step is passed over for them)
all       every frame                            G
========  =====================================  ===========================================

Nothing is converted to BGR until the pipeline takes the frame (``Pending``), so a frame
decoded only to keep the reference chain intact costs its decode and no more.

:class:`ShedController` is the one controller for all the cameras of a pipeline. The
pipeline's edges up to the model are lossless, so a camera's frame is taken from its slot
only when the model has room for it: what is taken is what the model consumes. Every
``tick_s`` the controller compares, per camera, what was decoded with what was taken:

* the model waited for frames (the source found no camera with a frame for more than
  ``starved_share`` of the time, so at those moments every camera's slot was empty): the
  camera that got least, and is not held at its cap, goes one step up. Frames left over
  do not exclude a camera: cameras whose GOPs start together decode the first frames of
  each GOP at the same moment and leave the model idle for the rest of it, and only a
  longer decoding window fills that gap. One camera a tick, so that supply creeps up to
  what the model takes instead of overshooting it: a model fed more than it can take
  leaves every camera's frame waiting in its slot, and the picture goes stale;
* otherwise the model is saturated, and each camera is owed its fair share of what all
  took: the total shared equally, a capped camera taking no more than its cap and leaving
  the rest to the others (water-filling). A camera that got under ``behind`` × its share
  while its level decodes less than ``raise_below`` × its share goes one step up (it fell
  behind the others); one whose step below would still decode ``headroom`` × its share
  goes one step down (the frames above that are decoded only to be overwritten in the
  slot). Targets from the share, not from what each camera happened to get, keep a camera
  that fell behind from being lowered further for it.

A camera waits ``hold_s`` after each change before the next one (hysteresis), so a level
does not flap on one noisy second.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: The ladder, cheapest first. ``gop/N`` decodes the first G/N frames of each GOP.
STEPS: tuple[str, ...] = ("off", "keyframes", "gop/8", "gop/4", "gop/2", "nonref", "all")
OFF, KEYFRAMES, ALL = 0, 1, len(STEPS) - 1
NONREF = STEPS.index("nonref")
_GOP_DIVISOR = {STEPS.index("gop/8"): 8, STEPS.index("gop/4"): 4, STEPS.index("gop/2"): 2}


class DecodeControl:
    """One camera's decode level and what its capture counted, shared by two threads.

    The capture thread reads ``step`` before each packet and bumps the counters; the
    controller reads the counters and moves ``step``. Plain int reads and writes are atomic
    in CPython, so neither waits for the other. ``gop`` is the keyframe interval the
    capture measured (packets from one keyframe to the next), ``fps`` the stream's rate.
    ``floor``/``ceiling`` bound the steps the controller may choose (a camera that is not
    wanted sits at ``off``; ``shed: false`` pins every camera at ``all``).
    """

    def __init__(self, step: int = ALL, *, floor: int = KEYFRAMES, ceiling: int = ALL) -> None:
        if not 0 <= floor <= ceiling < len(STEPS):
            raise ValueError(f"decode steps must satisfy 0 <= floor <= ceiling < {len(STEPS)}, "
                             f"but got floor {floor}, ceiling {ceiling}")
        self.floor, self.ceiling = floor, ceiling
        self.step = min(max(step, floor), ceiling)
        self.packets = 0
        self.decoded = 0
        self.skipped = 0
        self.gop: int | None = None
        self.fps: float | None = None
        #: Seen a frame that nothing refers to (B-frames): only then does ``nonref`` save anything.
        self.has_nonref = False
        self.changed_at = 0.0

    @property
    def level(self) -> str:
        return STEPS[self.step]

    @property
    def gop_estimate(self) -> int:
        """The keyframe interval: measured, else a second of frames (30 before the rate is known)."""
        return self.gop or max(1, round(self.fps or 30.0))

    def frames_per_gop(self, step: int | None = None) -> int | None:
        """How many frames of each GOP ``step`` decodes; None for every frame."""
        step = self.step if step is None else step
        if step == OFF:
            return 0
        if step == KEYFRAMES:
            return 1
        divisor = _GOP_DIVISOR.get(step)
        if divisor is None:
            return None
        return max(2, self.gop_estimate // divisor)

    def decodes(self, since_key: int) -> bool:
        """Whether the packet ``since_key`` packets after the last keyframe goes to the decoder."""
        wanted = self.frames_per_gop()
        return wanted is None or since_key < wanted

    def expected_fps(self, step: int) -> float:
        """Frames per second ``step`` decodes, from the measured GOP and frame rate."""
        fps = self.fps or 25.0
        gop = self.gop_estimate
        per_gop = self.frames_per_gop(step)
        if per_gop is None:
            return fps
        return fps * min(per_gop, gop) / gop

    def next_step(self, direction: int) -> int | None:
        """The step above (``+1``) or below (``-1``), past ``nonref`` when it would save
        nothing; None at the floor or ceiling."""
        step = self.step + direction
        if step == NONREF and not self.has_nonref:
            step += direction
        if step < self.floor or step > self.ceiling:
            return None
        return step


@dataclass
class _Window:
    """What one camera's counters were at the last tick."""

    packets: int = 0
    decoded: int = 0
    taken: int = 0
    packet_fps: float = 0.0
    decoded_fps: float = 0.0
    taken_fps: float = 0.0


@dataclass(frozen=True)
class ShedSettings:
    tick_s: float = 1.0
    hold_s: float = 2.0
    #: The model is underfed when the source waited longer than this share of a tick.
    starved_share: float = 0.15
    #: Step down only while the step below still decodes this many times the camera's share.
    headroom: float = 1.5
    #: Step up a camera that got less than ``behind`` x its share while its level decodes
    #: less than ``raise_below`` x its share.
    raise_below: float = 1.15
    behind: float = 0.7


def fair_shares(cameras: dict[str, tuple[float, float | None]]) -> dict[str, float]:
    """Each camera's fair share of what all took together: ``cameras`` maps a name to (frames
    a second it took, its cap or None). The total is split equally; a camera capped below
    its part gets its cap and the rest is split among the others (water-filling)."""
    total = sum(taken for taken, _ in cameras.values())
    shares: dict[str, float] = {}
    open_ = dict(cameras)
    while open_:
        part = total / len(open_)
        capped = {name: cap for name, (_, cap) in open_.items() if cap is not None and cap < part}
        if not capped:
            shares.update(dict.fromkeys(open_, part))
            break
        for name, cap in capped.items():
            shares[name] = cap
            total -= cap
            del open_[name]
    return shares


class ShedController:
    """Moves each camera's decode level from what the model takes (see the module's doc).

    ``observe_wait`` is called by the consumer with the seconds it waited for any frame;
    ``taken`` by the consumer for each frame it took; ``tick`` (from the consumer's thread,
    at most once per ``tick_s``) updates the rates and moves levels. ``reasons`` keeps, per
    camera, why its level last moved, for the summary.
    """

    def __init__(self, controls: dict[str, DecodeControl], settings: ShedSettings | None = None, *,
                 caps: dict[str, float] | None = None) -> None:
        self.controls = controls
        self.settings = settings or ShedSettings()
        self.windows = {name: _Window() for name in controls}
        self._taken = dict.fromkeys(controls, 0)
        self._waited_s = 0.0
        self._last_tick = time.monotonic()
        self.changes = 0
        self.reasons: dict[str, str] = {}
        #: Why the last level change was made (for the summary).
        self.last_reason: str | None = None
        self.lowest: dict[str, int] = {name: c.step for name, c in controls.items()}
        #: A camera's detection cap (frames a second), where it has one.
        self.caps = dict(caps or {})

    def taken(self, name: str) -> None:
        self._taken[name] = self._taken.get(name, 0) + 1

    def observe_wait(self, seconds: float) -> None:
        self._waited_s += seconds

    def tick(self, active: Iterable[str] | None = None, now: float | None = None) -> bool:
        """Update rates and levels when a tick is due; True when it was. ``active``: the
        cameras that can deliver now (streaming); the others keep their level."""
        now = time.monotonic() if now is None else now
        dt = now - self._last_tick
        if dt < self.settings.tick_s:
            return False
        # Called by the one thread that reads the cameras (MultiSource.read): no lock.
        self._last_tick = now
        waited, self._waited_s = self._waited_s, 0.0
        live = set(self.controls if active is None else active)
        windows = []
        for name, control in self.controls.items():
            window = self.windows[name]
            taken = self._taken.get(name, 0)
            packets, decoded = control.packets, control.decoded
            window.packet_fps = (packets - window.packets) / dt
            window.decoded_fps = (decoded - window.decoded) / dt
            window.taken_fps = (taken - window.taken) / dt
            window.packets, window.decoded, window.taken = packets, decoded, taken
            if name in live:
                windows.append((name, control, window))
        ready = [(n, c, w) for n, c, w in windows if now - c.changed_at >= self.settings.hold_s]
        if waited > self.settings.starved_share * dt:
            self._feed_the_model(ready, now)
        else:
            shares = fair_shares({name: (w.taken_fps, self.caps.get(name)) for name, _, w in windows})
            for name, control, window in ready:
                self._adjust(name, control, window, shares[name], now)
        return True

    def _feed_the_model(self, ready: list[tuple[str, DecodeControl, _Window]], now: float) -> None:
        """The model waited: one step up for the camera that got least, unless its cap holds it."""
        candidates = [
            (w.taken_fps, c.step, name, c) for name, c, w in ready
            if c.next_step(+1) is not None and (name not in self.caps or w.taken_fps < 0.9 * self.caps[name])
        ]
        if candidates:
            _, _, name, control = min(candidates, key=lambda t: (t[0], t[1]))
            self._move(name, control, control.next_step(+1), now, "the model was waiting for frames")  # type: ignore[arg-type]

    def summary(self) -> str | None:
        """How much was shed and why, for a run's summary (None when nothing was)."""
        shed = {name: c for name, c in self.controls.items() if c.skipped}
        if not shed:
            return None
        packets = sum(c.packets for c in self.controls.values())
        skipped = sum(c.skipped for c in self.controls.values())
        lowest = ", ".join(f"{name} {STEPS[self.lowest.get(name, c.step)]}" for name, c in shed.items())
        why = self.last_reason
        return (f"load shed before decoding: {skipped} of {packets} packets not decoded "
                f"({100 * skipped / max(packets, 1):.0f} %), {self.changes} level changes; lowest level: {lowest}"
                + (f" (last reason: {why})" if why else ""))

    def _adjust(self, name: str, control: DecodeControl, window: _Window, share: float, now: float) -> None:
        """The model is saturated: move ``name`` toward its fair ``share``."""
        s = self.settings
        up, down = control.next_step(+1), control.next_step(-1)
        if window.decoded_fps <= 0 and window.taken_fps <= 0:
            return  # nothing measured yet (connecting, or between keyframes of a long GOP)
        if (up is not None and window.taken_fps < s.behind * share
                and control.expected_fps(control.step) < s.raise_below * share):
            self._move(name, control, up, now, f"its share of the model is {share:.1f} fps")
        elif down is not None and control.expected_fps(down) >= s.headroom * share:
            self._move(name, control, down, now,
                       f"its share of the model is {share:.1f} of {window.decoded_fps:.1f} decoded fps")

    def _move(self, name: str, control: DecodeControl, step: int, now: float, why: str) -> None:
        log.debug("%s: decode %s -> %s (%s)", name, control.level, STEPS[step], why)
        control.step = step
        control.changed_at = now
        self.changes += 1
        self.reasons[name] = why
        self.last_reason = why
        self.lowest[name] = min(self.lowest.get(name, step), step)

"""ByteTrack multi-object tracking, one :class:`Tracker` per stream, aware of frame times.

Reference semantics: Ultralytics' ``BYTETracker`` with its ``bytetrack.yaml`` defaults
(Ultralytics 8.4), detection-level and class-agnostic, with two deliberate differences:

* ids are handed out only when a track is confirmed, so they run 1, 2, 3 ... without gaps
  (Ultralytics numbers a track at birth, and a track that never confirms leaves a hole);
* with ``time_aware=True`` and a timestamp per update, the motion model and the lost buffer
  run on the clock instead of on the number of updates, so dropped frames neither freeze the
  prediction nor stretch the time a lost object is waited for.

Without timestamps (or with ``time_aware=False``) the tracker gives the same rows the same
identities as Ultralytics' ``BYTETracker`` fed the same detections (checked row by row with
``scripts/bench_track.py``); ``track_buffer`` then counts updates, as Ultralytics 8.4 does
whatever the frame rate (the original ByteTrack scaled it by ``frame_rate / 30``).

State lives in arrays, one row per track, ordered like ByteTrack's lists (tracked tracks,
then lost ones); an update is a fixed sequence of whole-array steps whatever the number of
tracks.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from streamer.errors import ConfigError
from streamer.track import kalman
from streamer.track.matching import fuse_score, iou_matrix, linear_assignment
from streamer.types import Detections

# Stage thresholds that ByteTrack fixes rather than configures.
LOW_MATCH_THRESH = 0.5  # low-score detections against still-tracked tracks, plain IoU cost
UNCONFIRMED_MATCH_THRESH = 0.7  # tracks born on the last update against leftover detections
DUPLICATE_COST = 0.15  # a tracked and a lost track overlapping with IoU > 0.85 are one object

# Times are compared in nominal frames; timestamps that are multiples of 1/fps are not exact
# in binary, and a buffer of exactly 30 frames must not expire after 29.9999999 of them.
_TIME_EPS = 1e-6

# A pipeline slower than the stream (a heavy model on a small CPU) processes a frame every
# second or more: a buffer of 30 frames at 30 fps would then expire after one missed update
# and every gap would look like a reconnect. So the buffer is never shorter than this many
# updates at the pace the tracker is fed (a moving average of the steps).
MIN_LOST_UPDATES = 3
_PACE_WEIGHT = 0.25


@dataclass(frozen=True, slots=True)
class Tracks:
    """The confirmed tracks followed now (matched on the last update).

    ``tracker_id``: int64 (K,); ``xyxy``: float32 (K, 4), the Kalman filter's box
    ``[x1, y1, x2, y2]`` in source-frame pixels (not the detector's).
    """

    tracker_id: np.ndarray
    xyxy: np.ndarray

    def __len__(self) -> int:
        return int(self.tracker_id.shape[0])


def _number(name: str, value: object, low: float, high: float, *, low_open: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = (v > low if low_open else v >= low) and v <= high
    if not ok:
        span = f"{'(' if low_open else '['}{low:g}, {high:g}]" if math.isfinite(high) else f"> {low:g}"
        raise ConfigError(f"Tracker {name}: expected a number in {span}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"Tracker {name}: expected true or false, got {value!r}")
    return bool(value)


class Tracker:
    """ByteTrack over :class:`~streamer.types.Detections`, one instance per stream.

    Settings (Ultralytics' ``bytetrack.yaml`` defaults):

    * ``track_high_thresh``: a detection is *high* when ``confidence >= track_high_thresh``;
      high detections are matched first, against tracked and lost tracks, with cost
      ``1 − IoU · confidence`` (``fuse_score``) or ``1 − IoU``, accepted below ``match_thresh``.
    * ``track_low_thresh``: *low* detections, ``track_low_thresh < confidence <
      track_high_thresh``, are matched second, only against tracks that were followed on the
      previous update and are still unmatched, with cost ``1 − IoU`` below 0.5; they keep a
      track alive but never start one.
    * ``new_track_thresh``: a leftover high detection with ``confidence >= new_track_thresh``
      starts a track. A new track is *unconfirmed*; it is confirmed when a leftover high
      detection matches it on the next update (cost below 0.7), otherwise it is dropped. On
      the first update of a stream new tracks are confirmed at once.
    * ``track_buffer``: how long a lost track is kept for re-identification, in nominal
      frames (``track_buffer / frame_rate`` seconds when time-aware, else updates).
    * ``frame_rate``: the nominal frame rate the motion model and ``track_buffer`` count in;
      set it to the source's fps.
    * ``time_aware``: with a ``timestamp_s`` per update, the Kalman step is ``dt = (t −
      t_prev) · frame_rate`` nominal frames and a lost track is dropped once ``t −
      t_last_seen > track_buffer / frame_rate`` — or, when the tracker is fed more slowly
      than that allows (a model slower than the stream), after ``MIN_LOST_UPDATES`` updates
      at the average pace of this stream's updates. Without timestamps, or with
      ``time_aware=False``, every update is one frame, exactly as ByteTrack counts. A
      timestamp earlier than the previous one, or a gap longer than the lost buffer (and
      than one frame), starts the stream afresh: all tracks are dropped (ids keep counting)
      and the new tracks of that update are confirmed at once, as on a first update.

    After matching, a lost track not seen for more than the buffer is dropped, and a
    tracked and a lost track whose boxes overlap with IoU > 0.85 are taken for one object:
    the one followed for the shorter time goes.

    Ids: positive int64, 1, 2, 3 ... in the order tracks are confirmed, never reused; each
    tracker counts on its own. A lost track that is found again keeps its id.
    """

    def __init__(
        self,
        track_high_thresh: float = 0.25,
        track_low_thresh: float = 0.1,
        new_track_thresh: float = 0.25,
        track_buffer: int = 30,
        match_thresh: float = 0.8,
        fuse_score: bool = True,
        frame_rate: float = 30.0,
        time_aware: bool = True,
    ) -> None:
        self.track_high_thresh = _number("track_high_thresh", track_high_thresh, 0.0, 1.0)
        self.track_low_thresh = _number("track_low_thresh", track_low_thresh, 0.0, 1.0)
        if self.track_low_thresh > self.track_high_thresh:
            raise ConfigError(
                f"Tracker track_low_thresh: expected at most track_high_thresh ({self.track_high_thresh:g}), "
                f"got {track_low_thresh!r}"
            )
        self.new_track_thresh = _number("new_track_thresh", new_track_thresh, 0.0, 1.0)
        if not isinstance(track_buffer, (int, np.integer)) or isinstance(track_buffer, bool) or track_buffer < 0:
            raise ConfigError(f"Tracker track_buffer: expected a whole number of frames >= 0, got {track_buffer!r}")
        self.track_buffer = int(track_buffer)
        self.match_thresh = _number("match_thresh", match_thresh, 0.0, 1.0)
        self.fuse_score = _flag("fuse_score", fuse_score)
        self.frame_rate = _number("frame_rate", frame_rate, 0.0, math.inf, low_open=True)
        self.time_aware = _flag("time_aware", time_aware)
        self.reset()

    def reset(self) -> None:
        """Forget every track and restart ids at 1, as for a new stream."""
        self._next_id = 1
        self._clock = 0.0
        self._pace: float | None = None  # nominal frames per update, averaged; None before a step
        self._drop_all()

    def _buffer(self) -> float:
        """How long a lost track is kept, in nominal frames: ``track_buffer``, but never less
        than ``MIN_LOST_UPDATES`` updates at the pace of this stream's updates."""
        if not self.time_aware or self.track_buffer == 0 or self._pace is None:
            return float(self.track_buffer)
        return max(float(self.track_buffer), MIN_LOST_UPDATES * self._pace)

    def _drop_all(self) -> None:
        self._mean = np.empty((0, 8), np.float64)
        self._cov = np.empty((0, 8, 8), np.float64)
        self._tracked = np.empty(0, bool)  # Tracked (matched on the last update), else Lost
        self._confirmed = np.empty(0, bool)
        self._id = np.empty(0, np.int64)  # -1 until confirmed
        self._start = np.empty(0, np.float64)  # clock at birth, in nominal frames
        self._last = np.empty(0, np.float64)  # clock when last matched
        self._t_prev: float | None = None
        self._first = True

    @property
    def tracks(self) -> Tracks:
        """The confirmed tracks followed now: ids and Kalman boxes (a copy)."""
        sel = self._tracked & self._confirmed
        return Tracks(self._id[sel].copy(), kalman.xyah_to_xyxy(self._mean[sel]).astype(np.float32))

    def _advance(self, timestamp_s: float | None) -> float:
        """Move the clock; return the step in nominal frames (starting afresh when needed)."""
        if not self.time_aware or timestamp_s is None:
            self._t_prev = None
            self._clock += 1.0
            return 1.0
        if isinstance(timestamp_s, bool) or not isinstance(timestamp_s, numbers.Real) or not math.isfinite(timestamp_s):
            raise ConfigError(f"Tracker.update timestamp_s: expected a finite number of seconds or None, got {timestamp_s!r}")
        t = float(timestamp_s)
        step = 1.0
        if self._t_prev is not None:
            step = (t - self._t_prev) * self.frame_rate
            # A gap no track could be found again after; one frame is never such a gap, even
            # with track_buffer 0 (lost tracks go at once, followed ones go on).
            if self._pace is None and step >= 0.0:
                self._pace = step  # the first step sets the pace: nothing to compare it with yet
            elif step < 0.0 or step > max(self._buffer(), 1.0) + _TIME_EPS:
                self._drop_all()
                step = 1.0
            else:
                self._pace += _PACE_WEIGHT * (step - self._pace)
        self._t_prev = t
        self._clock += step
        return step

    def update(self, detections: Detections, timestamp_s: float | None = None) -> Detections:
        """Associate one frame's detections with the tracks; return them with ``tracker_id``.

        The result has the same rows in the same order as ``detections`` (the detector's
        boxes, scores, classes and ``data``, shared, not copied), with ``tracker_id`` int64
        (N,): the confirmed track's id for a row that a confirmed track took on this update,
        ``-1`` for every other row (below ``track_low_thresh``, unmatched, clutter, or the
        birth of a track not yet confirmed). Rows whose box has no positive width and height
        are never tracked. An empty ``detections`` is valid: tracks age and get lost.
        ``timestamp_s`` is the frame's time in seconds (e.g. ``Frame.pts_s``); see the class
        notes for how it is used.
        """
        if not isinstance(detections, Detections):
            raise ConfigError(f"Tracker.update detections: expected streamer.Detections, got {type(detections).__name__}")
        step = self._advance(timestamp_s)
        first = self._first
        self._first = False
        clock = self._clock

        n = len(detections)
        xyxy = detections.xyxy
        scores = detections.confidence.astype(np.float64)
        z = kalman.xyxy_to_xyah(xyxy)
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(z).all(axis=1) & (z[:, 2] > 0) & (z[:, 3] > 0)
        hi = np.flatnonzero(valid & (scores >= self.track_high_thresh))
        lo = np.flatnonzero(valid & (scores > self.track_low_thresh) & (scores < self.track_high_thresh))

        mean, cov = self._mean, self._cov
        tracked_before = self._tracked
        m_old = len(tracked_before)
        # Tracks confirmed on an earlier update, tracked then lost: ByteTrack's strack pool.
        pool = np.flatnonzero(self._confirmed)
        unconf = np.flatnonzero(~self._confirmed)

        if pool.size:
            pm = mean[pool]
            # A lost track's height stops changing while nothing is seen of it.
            pm[~tracked_before[pool], 7] = 0.0
            pm, pc = kalman.predict_kernel(pm, cov[pool], np.full(pool.size, step))
            # In place: every array is replaced by a reordered copy before update returns.
            mean[pool] = pm
            cov[pool] = pc
            pool_boxes = kalman.xyah_to_xyxy(pm)
        else:
            pool_boxes = np.empty((0, 4), np.float64)

        # Stage 1: high detections against tracked and lost tracks.
        iou1 = iou_matrix(pool_boxes, xyxy[hi])
        cost1 = fuse_score(iou1, scores[hi]) if self.fuse_score else 1.0 - iou1
        pairs1, u_pool, u_hi = linear_assignment(cost1, self.match_thresh)

        # Stage 2: low detections against the tracks followed until now that stage 1 left.
        r = u_pool[tracked_before[pool[u_pool]]]
        iou2 = iou_matrix(pool_boxes[r], xyxy[lo])
        pairs2, u_r, _ = linear_assignment(1.0 - iou2, LOW_MATCH_THRESH)
        newly_lost = pool[r[u_r]]

        # Stage 3: tracks born on the last update against the high detections left over.
        left_hi = hi[u_hi]
        iou3 = iou_matrix(kalman.xyah_to_xyxy(mean[unconf]), xyxy[left_hi])
        cost3 = fuse_score(iou3, scores[left_hi]) if self.fuse_score else 1.0 - iou3
        pairs3, u_unconf, u_left = linear_assignment(cost3, UNCONFIRMED_MATCH_THRESH)

        # Stage 4: what is still left and confident enough starts a track.
        cand = left_hi[u_left]
        born = cand[scores[cand] >= self.new_track_thresh]

        matched = np.concatenate([pool[pairs1[:, 0]], pool[r[pairs2[:, 0]]], unconf[pairs3[:, 0]]])
        rows = np.concatenate([hi[pairs1[:, 1]], lo[pairs2[:, 1]], left_hi[pairs3[:, 1]]])

        tracked = tracked_before.copy()
        confirmed = self._confirmed
        last = self._last
        row_of = np.full(m_old, -1, np.int64)
        if matched.size:
            um, uc = kalman.update(mean[matched], cov[matched], z[rows])
            mean[matched] = um
            cov[matched] = uc
            tracked[matched] = True
            confirmed[matched] = True
            last[matched] = clock
            row_of[matched] = rows
        tracked[newly_lost] = False

        removed = np.zeros(m_old, bool)
        removed[unconf[u_unconf]] = True
        # A lost track is kept only for the buffer (checked after matching, as ByteTrack).
        removed |= ~tracked & (clock - last > self._buffer() + _TIME_EPS)

        # New order, as ByteTrack's lists: tracked before (in order), born, found again,
        # then lost before (in order), lost now.
        born_at = m_old + np.arange(born.size)
        order = np.concatenate(
            [
                np.flatnonzero(tracked_before & tracked & ~removed),
                born_at,
                np.flatnonzero(~tracked_before & tracked),
                np.flatnonzero(~tracked_before & ~tracked & ~removed),
                newly_lost[~removed[newly_lost]],
            ]
        )
        if born.size:
            bm, bc = kalman.initiate(z[born])
            mean = np.concatenate([mean, bm])
            cov = np.concatenate([cov, bc])
            tracked = np.concatenate([tracked, np.ones(born.size, bool)])
            confirmed = np.concatenate([confirmed, np.full(born.size, first)])
            ids = np.concatenate([self._id, np.full(born.size, -1, np.int64)])
            start = np.concatenate([self._start, np.full(born.size, clock)])
            last = np.concatenate([last, np.full(born.size, clock)])
            row_of = np.concatenate([row_of, born])
        else:
            ids, start = self._id, self._start

        mean, cov, tracked, confirmed = mean[order], cov[order], tracked[order], confirmed[order]
        ids, start, last, row_of = ids[order], start[order], last[order], row_of[order]

        keep = self._drop_duplicates(mean, tracked, last - start)
        if keep is not None:
            mean, cov, tracked, confirmed = mean[keep], cov[keep], tracked[keep], confirmed[keep]
            ids, start, last, row_of = ids[keep], start[keep], last[keep], row_of[keep]

        fresh = np.flatnonzero(tracked & confirmed & (ids < 0))
        if fresh.size:
            ids[fresh] = np.arange(self._next_id, self._next_id + fresh.size)
            self._next_id += int(fresh.size)

        self._mean, self._cov, self._tracked, self._confirmed = mean, cov, tracked, confirmed
        self._id, self._start, self._last = ids, start, last

        out = np.full(n, -1, np.int64)
        shown = tracked & confirmed
        out[row_of[shown]] = ids[shown]
        return Detections(
            xyxy=detections.xyxy,
            confidence=detections.confidence,
            class_id=detections.class_id,
            tracker_id=out,
            data=dict(detections.data),
        )

    @staticmethod
    def _drop_duplicates(mean: np.ndarray, tracked: np.ndarray, age: np.ndarray) -> np.ndarray | None:
        """Rows to keep after dropping the shorter-lived of each tracked/lost duplicate pair."""
        t_rows = np.flatnonzero(tracked)
        l_rows = np.flatnonzero(~tracked)
        if t_rows.size == 0 or l_rows.size == 0:
            return None
        boxes = kalman.xyah_to_xyxy(mean)
        p, q = np.nonzero(1.0 - iou_matrix(boxes[t_rows], boxes[l_rows]) < DUPLICATE_COST)
        if p.size == 0:
            return None
        tp, tq = t_rows[p], l_rows[q]
        lost_goes = age[tp] > age[tq]
        drop = np.zeros(len(mean), bool)
        drop[tq[lost_goes]] = True
        drop[tp[~lost_goes]] = True
        return np.flatnonzero(~drop)

"""A second model on the detector's boxes: an ImageNet classifier on each detected object.

``ObjectClassifier.classify`` cuts the boxes out of the frame, runs the classifier once on
all of them together, and writes the top-k classes into the detections' ``data``:

- ``cls_top_ids``: int32 (N, k), class ids of the classifier, best first; -1 where a row was
  not classified (class not asked for, box too small, or not a confirmed track);
- ``cls_top_p``: float32 (N, k), their probabilities; 0 where not classified.

With tracks (``detections.tracker_id``, int64, -1 = not a confirmed track) an object is
classified when its track is first seen and again only every ``every_s`` seconds (never again
when None): the result is kept per track id. A breed or a vehicle type does not change from
one frame to the next, so classifying every frame would spend the model on the same answer.
The cache is bounded and forgets tracks not seen for ``forget_s`` seconds; state is per
stream, so use one ObjectClassifier per camera.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamer.errors import ConfigError
from streamer.models.base import Model
from streamer.postprocess.decode import decode_classes
from streamer.types import Detections

IDS_KEY = "cls_top_ids"
PROBS_KEY = "cls_top_p"


def check_task(model: Model, key: str, expected: str) -> None:
    """Open ``model`` and insist that it is a ``detect`` or ``classify`` model.

    Raises :class:`ConfigError` with one line naming the configuration ``key`` (say
    ``classify.model``), the model and what it is instead.
    """
    if expected not in ("detect", "classify"):
        raise ValueError(f"expected must be 'detect' or 'classify', but got {expected!r}")
    model.ensure_open()
    info = model.info
    if info.task != expected:
        wanted = "an image classifier (task 'classify')" if expected == "classify" else "an object detector (task 'detect')"
        raise ConfigError(
            f"{key}: {info.path} is a {info.task} model (output layout '{info.layout}'), but {key} needs {wanted}"
        )


def check_classifier(model: Model, key: str) -> None:
    """``model`` must be a classifier (where a detector was given, say which key is wrong)."""
    check_task(model, key, "classify")


def check_detector(model: Model, key: str) -> None:
    """``model`` must be a detector (where a classifier was given, say which key is wrong)."""
    check_task(model, key, "detect")


def square_crop(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The square around ``box`` (x1, y1, x2, y2 in pixels) with side its longer edge, kept inside
    the frame (shifted, then shrunk only if the frame is smaller): a view, no copy.

    A square keeps the object's proportions through the resize to the classifier's square
    input, and the strip of context on the short sides is what ImageNet pictures have too.
    """
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    side = int(round(max(x2 - x1, y2 - y1)))
    side = max(1, min(side, w, h))
    left = int(round((x1 + x2 - side) / 2))
    top = int(round((y1 + y2 - side) / 2))
    left = min(max(left, 0), w - side)
    top = min(max(top, 0), h - side)
    return image[top : top + side, left : left + side]


@dataclass(slots=True)
class _TrackResult:
    ids: np.ndarray  # int32 (k,)
    probs: np.ndarray  # float32 (k,)
    classified_at: float
    seen_at: float


class ObjectClassifier:
    """Classifies detected objects with ``model`` (a classifier: task 'classify').

    ``classes``: detector class ids to classify (None: every detection). ``top_k``: classes
    kept per object. ``min_box``: boxes whose shorter side is under this many pixels are
    left unclassified (too few pixels to tell a breed). ``every_s``: seconds between two
    classifications of the same track (None: once per track). ``max_tracks`` bounds the
    per-track cache; ``forget_s``: a track not seen for this long is dropped from it.

    Counters for tests and stats: ``calls`` (model calls), ``crops`` (objects classified),
    ``reused`` (rows filled from the cache), ``evicted`` (tracks dropped from a full cache).
    """

    def __init__(
        self,
        model: Model,
        classes: Sequence[int] | None,
        top_k: int = 1,
        min_box: int = 32,
        every_s: float | None = None,
        *,
        max_tracks: int = 1024,
        forget_s: float = 30.0,
    ) -> None:
        if classes is not None:
            classes = list(classes)
            if not all(isinstance(c, int | np.integer) and c >= 0 for c in classes):
                raise ConfigError(f"classes must be detector class ids >= 0, but got {classes}")
        if not isinstance(top_k, int) or top_k < 1:
            raise ConfigError(f"top_k must be an integer >= 1, but got {top_k!r}")
        if min_box < 0:
            raise ConfigError(f"min_box must be >= 0 pixels, but got {min_box}")
        if every_s is not None and not every_s > 0:
            raise ConfigError(f"every_s must be > 0 seconds or None (once per track), but got {every_s}")
        if max_tracks < 1:
            raise ConfigError(f"max_tracks must be >= 1, but got {max_tracks}")
        if not forget_s > 0:
            raise ConfigError(f"forget_s must be > 0 seconds, but got {forget_s}")
        self.model = model
        self.classes = None if classes is None else np.array(sorted(set(int(c) for c in classes)), np.int64)
        self.top_k = top_k
        self.min_box = float(min_box)
        self.every_s = every_s
        self.max_tracks = max_tracks
        self.forget_s = forget_s
        self.calls = 0
        self.crops = 0
        self.reused = 0
        self.evicted = 0
        self._tracks: collections.OrderedDict[int, _TrackResult] = collections.OrderedDict()
        self._opened = False

    def open(self) -> None:
        """Load the model and check that it is a classifier (also done on first use)."""
        check_classifier(self.model, "classifier")
        k_max = len(self.model.info.names)
        if k_max and self.top_k > k_max:
            raise ConfigError(f"top_k must be at most the classifier's {k_max} classes, but got {self.top_k}")
        self._opened = True

    @property
    def tracks(self) -> int:
        """Tracks whose result is cached now."""
        return len(self._tracks)

    def eligible(self, detections: Detections) -> np.ndarray:
        """(N,) bool: rows of a class asked for, with a box at least ``min_box`` on its shorter side."""
        xyxy = detections.xyxy
        short = np.minimum(xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1])
        mask = short >= self.min_box
        if self.classes is not None:
            mask &= np.isin(detections.class_id, self.classes)
        return mask

    def classify(self, frame_image: np.ndarray, detections: Detections, t: float) -> None:
        """Fill ``detections.data[cls_top_ids / cls_top_p]`` for the objects in ``frame_image``.

        ``frame_image``: the (H, W, 3) uint8 BGR frame the boxes are in; ``t``: the frame's
        time in seconds (stream time or a monotonic clock), used for ``every_s`` and forgetting.
        """
        if not self._opened:
            self.open()
        n = len(detections)
        k = self.top_k
        ids = np.full((n, k), -1, np.int32)
        probs = np.zeros((n, k), np.float32)
        rows = np.flatnonzero(self.eligible(detections)) if n else np.empty(0, np.int64)
        track_ids = detections.tracker_id
        todo: list[int] = []
        if track_ids is None:
            todo = rows.tolist()
        else:
            for row in rows.tolist():
                tid = int(track_ids[row])
                if tid < 0:
                    continue  # not a confirmed track yet: next frame it will be, if it is real
                cached = self._tracks.get(tid)
                if cached is not None:
                    cached.seen_at = t
                    self._tracks.move_to_end(tid)
                    fresh = self.every_s is None or t - cached.classified_at < self.every_s
                    if fresh:
                        ids[row], probs[row] = cached.ids, cached.probs
                        self.reused += 1
                        continue
                todo.append(row)
        if todo:
            top_ids, top_p = self._run(frame_image, detections.xyxy[todo])
            ids[todo], probs[todo] = top_ids, top_p
            if track_ids is not None:
                for i, row in enumerate(todo):
                    self._remember(int(track_ids[row]), top_ids[i], top_p[i], t)
        if track_ids is not None:
            self._forget(t)
        detections.data[IDS_KEY] = ids
        detections.data[PROBS_KEY] = probs

    def _run(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of every box: one model call for all of them (more only past the model's max batch)."""
        crops = [square_crop(image, box) for box in boxes]
        limit = self.model.info.max_batch or len(crops)
        out_ids = np.empty((len(crops), self.top_k), np.int32)
        out_p = np.empty((len(crops), self.top_k), np.float32)
        for start in range(0, len(crops), limit):
            chunk = crops[start : start + limit]
            raw = self.model(self.model.classify_input(chunk))
            self.calls += 1
            for i in range(len(chunk)):
                top = decode_classes(raw[i], self.top_k)
                out_ids[start + i], out_p[start + i] = top.class_id, top.probability
        self.crops += len(crops)
        return out_ids, out_p

    def _remember(self, tid: int, ids: np.ndarray, probs: np.ndarray, t: float) -> None:
        self._tracks[tid] = _TrackResult(ids.copy(), probs.copy(), t, t)
        self._tracks.move_to_end(tid)
        while len(self._tracks) > self.max_tracks:
            self._tracks.popitem(last=False)  # the least recently seen track
            self.evicted += 1

    def _forget(self, t: float) -> None:
        # Entries are ordered by when they were last seen, so the stale ones are at the front.
        while self._tracks:
            tid, oldest = next(iter(self._tracks.items()))
            if t - oldest.seen_at <= self.forget_s:
                break
            del self._tracks[tid]

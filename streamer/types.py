"""Central data types that flow through a pipeline.

Coordinates: unless said otherwise, boxes are ``[x1, y1, x2, y2]`` float32 in *source-frame*
pixels (the decoded frame, before letterboxing), with x to the right and y down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(slots=True)
class Frame:
    """One decoded picture from a source.

    ``index`` is the source's own frame counter: a gap between consecutive frames a stage
    receives means frames were dropped upstream. ``image`` is (H, W, 3) uint8 BGR.
    ``pts_s`` is the stream time in seconds when the container knows it.
    ``captured_at`` is ``time.monotonic()`` when the frame left the decoder; latency is
    measured from it.
    """

    source_id: str
    index: int
    image: np.ndarray
    pts_s: float | None
    captured_at: float

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How a source frame was placed into the model input.

    A source pixel ``(x, y)`` lands at ``(x * scale + pad_x, y * scale + pad_y)`` in the
    model input of size ``input_hw`` = (height, width).
    """

    scale: float
    pad_x: int
    pad_y: int
    input_hw: tuple[int, int]
    source_hw: tuple[int, int]


def _check_array(name: str, value: Any, ndim: int, tail: tuple[int, ...], n: int | None) -> None:
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{name} must be a np.ndarray, but got {type(value).__name__}")
    shape_text = "(_" + "".join(f", {t}" for t in tail) + ")"
    if value.ndim != ndim or tuple(value.shape[1:]) != tail:
        raise ValueError(
            f"{name} must be a {ndim}D np.ndarray with shape {shape_text}, but got shape {value.shape}"
        )
    if n is not None and value.shape[0] != n:
        raise ValueError(f"{name} must have {n} rows to match xyxy, but got {value.shape[0]}")


@dataclass(slots=True)
class Detections:
    """Detections of one frame, one array per field.

    ``xyxy``: float32 (N, 4), ``[x1, y1, x2, y2]`` in source-frame pixels.
    ``confidence``: float32 (N,), the class score used for ranking.
    ``class_id``: int32 (N,).
    ``tracker_id``: optional int64 (N,).
    ``data``: optional extra per-detection arrays of length N.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    tracker_id: np.ndarray | None = None
    data: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_array("xyxy", self.xyxy, 2, (4,), None)
        n = int(self.xyxy.shape[0])
        _check_array("confidence", self.confidence, 1, (), n)
        _check_array("class_id", self.class_id, 1, (), n)
        if self.tracker_id is not None:
            _check_array("tracker_id", self.tracker_id, 1, (), n)
        for key, value in self.data.items():
            if not isinstance(value, np.ndarray) or len(value) != n:
                got = len(value) if hasattr(value, "__len__") else type(value).__name__
                raise ValueError(f"data[{key!r}] must be an array of length {n}, but got {got}")

    @classmethod
    def empty(cls) -> Detections:
        return cls(
            xyxy=np.empty((0, 4), np.float32),
            confidence=np.empty((0,), np.float32),
            class_id=np.empty((0,), np.int32),
        )

    def __eq__(self, other: object) -> bool:
        """Field by field with ``np.array_equal``: the dataclass default compares arrays
        with ``==``, whose element-wise result has no single truth value."""
        if not isinstance(other, Detections):
            return NotImplemented
        if (self.tracker_id is None) != (other.tracker_id is None) or self.data.keys() != other.data.keys():
            return False
        pairs = [(self.xyxy, other.xyxy), (self.confidence, other.confidence), (self.class_id, other.class_id)]
        if self.tracker_id is not None and other.tracker_id is not None:
            pairs.append((self.tracker_id, other.tracker_id))
        pairs.extend((value, other.data[key]) for key, value in self.data.items())
        return all(np.array_equal(a, b) for a, b in pairs)

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, index: np.ndarray | slice | list[int]) -> Detections:
        if isinstance(index, np.ndarray) and index.dtype == bool and index.shape != (len(self),):
            raise ValueError(f"boolean mask must have shape ({len(self)},), but got {index.shape}")
        return Detections(
            xyxy=self.xyxy[index],
            confidence=self.confidence[index],
            class_id=self.class_id[index],
            tracker_id=None if self.tracker_id is None else self.tracker_id[index],
            data={k: v[index] for k, v in self.data.items()},
        )


@dataclass(slots=True)
class Classifications:
    """Top-k classes of one frame, best first: ``class_id`` int32 (K,), ``probability`` float32 (K,)."""

    class_id: np.ndarray
    probability: np.ndarray

    def __len__(self) -> int:
        return int(self.class_id.shape[0])


@dataclass(slots=True)
class Result:
    """Everything known about one frame as it moves through the pipeline.

    Stages fill fields in order: ``letterbox`` and ``input`` (preprocess), ``raw`` (inference),
    ``detections`` / ``classes`` (postprocess), ``detections.tracker_id``, ``analytics`` and
    ``trails`` (track, when tracking is on), ``annotated`` (render). ``timings_ms`` maps a
    stage name to the milliseconds that stage spent on this frame.
    """

    frame: Frame
    letterbox: Letterbox | None = None
    input: np.ndarray | None = None
    raw: np.ndarray | None = None
    detections: Detections | None = None
    classes: Classifications | None = None
    annotated: np.ndarray | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    names: tuple[str, ...] = ()
    #: Line counts and zone occupancy of this frame's source, when lines or zones are set
    #: (``streamer.analytics.FrameAnalytics``).
    analytics: Any = None
    #: Class names of the classifier run on the detected objects (``classify:``); its
    #: results are ``detections.data["cls_top_ids"]`` / ``["cls_top_p"]`` (N, k).
    object_names: tuple[str, ...] = ()
    #: Recent anchor points of each confirmed track on this frame, for drawing trails:
    #: track id -> float32 (K, 2) source pixels, oldest first.
    trails: dict[int, np.ndarray] | None = None

    @property
    def image(self) -> np.ndarray:
        """The rendered picture when there is one, else the source picture."""
        return self.annotated if self.annotated is not None else self.frame.image

    def label(self, class_id: int) -> str:
        return self.names[class_id] if 0 <= class_id < len(self.names) else str(class_id)

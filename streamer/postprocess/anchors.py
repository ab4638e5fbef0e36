"""SSD-style anchor-based detection heads: anchors, box decoding and their configuration.

An SSD head predicts, for every anchor (a fixed "default box"), four box regressions and one
score per class. Everything here works in **model-input pixels** until the last step, which
maps boxes back through the letterbox to source-frame pixels.

**Anchors** (:func:`generate_anchors`). For level ``k`` with stride ``s_k``, minimum size
``m_k``, optional maximum size ``M_k`` and aspect ratios ``r`` (``r = w / h``), on an input of
``H × W`` pixels::

    feature map   f_h = ceil(H / s_k),  f_w = ceil(W / s_k)
    cell (y, x)   cx = (x + 0.5) · s_k,  cy = (y + 0.5) · s_k
    ratio r       w = m_k · sqrt(r),     h = m_k / sqrt(r)
    extra box     w = h = sqrt(m_k · M_k)         (only when max sizes are given)
    clip          w = min(w, W),  h = min(h, H)   (only with ``clip``)

The extra box comes right after the first ratio equal to 1, or last when no ratio is 1, so
``aspect_ratios = (1, 2, 0.5, 3, 1/3)`` gives SSD's order (1, extra, 2, 1/2, 3, 1/3). Anchors
are ordered (level, y, x, anchor) — the order in which SSD heads flatten their outputs —
computed in float64 and returned as float32 ``(A, 4)`` ``cx, cy, w, h``.

**Boxes** (:func:`decode_ssd`), the standard SSD encoding with variances ``(v_xy, v_wh)``::

    cx = a_cx + l_x · v_xy · a_w        cy = a_cy + l_y · v_xy · a_h
    w  = a_w · exp(l_w · v_wh)          h  = a_h · exp(l_h · v_wh)
    x1, y1, x2, y2 = cx − w/2, cy − h/2, cx + w/2, cy + h/2

evaluated in float64 from the float32 inputs, in that order, and rounded to float32.

**Scores**. With ``softmax`` the scores are logits over all ``C`` columns, background
included: ``p_c = exp(x_c − max x) / Σ_j exp(x_j − max x)`` in float64 (the sum taken in
column order), rounded to float32. Without it the scores are used as they are. Each anchor
keeps its best foreground column (the first maximum; NaN never wins); it is a candidate when
that score is strictly greater than ``conf`` and its class passes the class filter. Class ids
count foreground classes only: column ``c`` is class ``c − 1`` when it comes after the
background column, ``c`` otherwise. Candidates are in anchor order; when more than
``max_nms`` remain, the ``max_nms`` best (ties: earlier anchor first) go on, still in anchor
order, to class-aware NMS (:func:`streamer.postprocess.nms.nms`), then to
:func:`streamer.postprocess.yolo.scale_and_clip`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np

from streamer import _numba  # noqa: F401 - sets the Numba cache folder before numba loads
from numba import njit

from streamer.errors import ConfigError, ModelError
from streamer.postprocess.checks import as_float32
from streamer.postprocess.yolo import MAX_NMS, finish_detections
from streamer.types import Detections, Letterbox

_REAL = (np.floating, np.integer, np.bool_)


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and value > 0


def _positive_finite(values: tuple[Any, ...]) -> bool:
    return all(_is_number(v) and math.isfinite(float(v)) and float(v) > 0 for v in values)


def _as_tuple(value: object) -> tuple[Any, ...]:
    if isinstance(value, tuple | list):
        return tuple(value)
    if isinstance(value, np.ndarray):
        return tuple(value.tolist())
    return (value,)


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


@dataclass(frozen=True)
class AnchorConfig:
    """How an SSD-style head lays out its anchors and encodes its outputs.

    The defaults are SSD300's anchors (Liu et al., 2016): six levels on a 300×300 input,
    8732 anchors, variances (0.1, 0.2), background in column 0, softmax scores.

    ``strides``: pixels between anchor centres, one per level (positive integers).
    ``min_sizes`` / ``max_sizes``: anchor sizes in input pixels per level; ``max_sizes`` is
    empty (no extra box) or one per level, each larger than that level's minimum.
    ``aspect_ratios``: ``w / h`` of the anchors at each location, one tuple per level (in a
    pipeline file, a list of lists); from Python a flat tuple applies to every level.
    ``variances``: ``(v_xy, v_wh)`` of the box encoding.
    ``background_index``: the score column of the background class, -1 when there is none.
    ``softmax``: scores are logits to soften over all columns (else used as they are).
    ``input_size``: the model input the anchors are laid on, ``(height, width)`` or one side.
    ``clip``: clamp anchor widths to the input width and heights to its height
    (torchvision's ``DefaultBoxGenerator(clip=True)``; centres are never moved).
    """

    strides: tuple[int, ...] = (8, 16, 32, 64, 100, 300)
    min_sizes: tuple[float, ...] = (30.0, 60.0, 111.0, 162.0, 213.0, 264.0)
    max_sizes: tuple[float, ...] = (60.0, 111.0, 162.0, 213.0, 264.0, 315.0)
    aspect_ratios: tuple[tuple[float, ...], ...] = (
        (1.0, 2.0, 0.5),
        (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0),
        (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0),
        (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0),
        (1.0, 2.0, 0.5),
        (1.0, 2.0, 0.5),
    )
    variances: tuple[float, ...] = (0.1, 0.2)
    background_index: int = 0
    softmax: bool = True
    input_size: tuple[int, ...] = (300, 300)
    clip: bool = False

    def __post_init__(self) -> None:
        strides = _as_tuple(self.strides)
        _check(
            len(strides) > 0 and all(_is_positive_int(s) for s in strides),
            f"anchors.strides must be a non-empty list of positive integers, but got {list(strides)}",
        )
        levels = len(strides)
        min_sizes = _as_tuple(self.min_sizes)
        _check(
            len(min_sizes) == levels,
            f"anchors.min_sizes must have one size per level ({levels}), but got {len(min_sizes)}: {list(min_sizes)}",
        )
        _check(_positive_finite(min_sizes), f"anchors.min_sizes must be positive numbers, but got {list(min_sizes)}")
        max_sizes = _as_tuple(self.max_sizes)
        _check(
            len(max_sizes) in (0, levels),
            f"anchors.max_sizes must be empty or have one size per level ({levels}), but got {len(max_sizes)}: "
            f"{list(max_sizes)}",
        )
        _check(_positive_finite(max_sizes), f"anchors.max_sizes must be positive numbers, but got {list(max_sizes)}")
        for k, (low, high) in enumerate(zip(min_sizes, max_sizes, strict=False)):
            _check(high > low, f"anchors.max_sizes[{k}] must be larger than min_sizes[{k}] = {low}, but got {high}")
        ratios = _as_tuple(self.aspect_ratios)
        if ratios and all(_is_number(r) for r in ratios):
            ratios = (ratios,) * levels
        _check(
            len(ratios) == levels and all(isinstance(r, tuple | list | np.ndarray) for r in ratios),
            f"anchors.aspect_ratios must have one list of ratios per level ({levels}), but got {list(ratios)}",
        )
        per_level = tuple(_as_tuple(r) for r in ratios)
        for k, level in enumerate(per_level):
            _check(
                len(level) > 0 and _positive_finite(level),
                f"anchors.aspect_ratios[{k}] must be a non-empty list of positive numbers, but got {list(level)}",
            )
        variances = _as_tuple(self.variances)
        _check(
            len(variances) == 2 and _positive_finite(variances),
            f"anchors.variances must be two positive numbers (v_xy, v_wh), but got {list(variances)}",
        )
        bg = self.background_index
        _check(
            isinstance(bg, int | np.integer) and not isinstance(bg, bool) and bg >= -1,
            f"anchors.background_index must be a column index >= 0, or -1 for none, but got {bg!r}",
        )
        for name in ("softmax", "clip"):
            value = getattr(self, name)
            _check(isinstance(value, bool | np.bool_), f"anchors.{name} must be true or false, but got {value!r}")
        size = _as_tuple(self.input_size)
        if len(size) == 1:
            size = size * 2
        _check(
            len(size) == 2 and all(_is_positive_int(s) for s in size),
            "anchors.input_size must be one or two positive integers (height, width), "
            f"but got {list(_as_tuple(self.input_size))}",
        )
        set_ = object.__setattr__
        set_(self, "strides", tuple(int(s) for s in strides))
        set_(self, "min_sizes", tuple(float(v) for v in min_sizes))
        set_(self, "max_sizes", tuple(float(v) for v in max_sizes))
        set_(self, "aspect_ratios", tuple(tuple(float(r) for r in level) for level in per_level))
        set_(self, "variances", (float(variances[0]), float(variances[1])))
        set_(self, "background_index", int(bg))
        set_(self, "softmax", bool(self.softmax))
        set_(self, "clip", bool(self.clip))
        set_(self, "input_size", (int(size[0]), int(size[1])))

    @property
    def input_hw(self) -> tuple[int, int]:
        """The model input ``(height, width)`` in pixels."""
        return int(self.input_size[0]), int(self.input_size[1])

    @property
    def feature_sizes(self) -> tuple[tuple[int, int], ...]:
        """``(f_h, f_w)`` of each level: ``ceil(H / stride)``, ``ceil(W / stride)``."""
        h, w = self.input_hw
        return tuple((-(-h // s), -(-w // s)) for s in self.strides)

    @property
    def anchors_per_location(self) -> tuple[int, ...]:
        """Anchors at each cell of each level: the ratios, plus one when max sizes are given."""
        extra = 1 if self.max_sizes else 0
        return tuple(len(r) + extra for r in self.aspect_ratios)

    @property
    def num_anchors(self) -> int:
        """``A``, the number of anchors over all levels."""
        return sum(fh * fw * n for (fh, fw), n in zip(self.feature_sizes, self.anchors_per_location, strict=True))

    def num_foreground(self, num_classes: int) -> int:
        """Classes a detection can have when the head has ``num_classes`` score columns."""
        return num_classes - (1 if self.background_index >= 0 else 0)

    def anchors(self) -> np.ndarray:
        """The anchors, see :func:`generate_anchors`."""
        return generate_anchors(self)


def _location_shapes(min_size: float, max_size: float | None, ratios: tuple[float, ...]) -> np.ndarray:
    """``(n, 2)`` float64 ``w, h`` of the anchors at one location, in their documented order."""
    r = np.asarray(ratios, np.float64)
    root = np.sqrt(r)
    shapes = np.stack([min_size * root, min_size / root], axis=1)
    if max_size is None:
        return shapes
    side = math.sqrt(min_size * max_size)
    ones = np.flatnonzero(r == 1.0)
    at = int(ones[0]) + 1 if ones.size else len(r)
    return np.insert(shapes, at, [side, side], axis=0)


def generate_anchors(config: AnchorConfig) -> np.ndarray:
    """Anchors of ``config``: float32 ``(A, 4)`` ``cx, cy, w, h`` in model-input pixels.

    Order (level, y, x, anchor); formulas in the module docstring.
    """
    height, width = config.input_hw
    levels = []
    for k, (stride, (fh, fw)) in enumerate(zip(config.strides, config.feature_sizes, strict=True)):
        max_size = config.max_sizes[k] if config.max_sizes else None
        shapes = _location_shapes(config.min_sizes[k], max_size, config.aspect_ratios[k])
        if config.clip:
            shapes = np.minimum(shapes, np.array([width, height], np.float64))
        n = shapes.shape[0]
        level = np.empty((fh, fw, n, 4), np.float64)
        level[..., 0] = ((np.arange(fw, dtype=np.float64) + 0.5) * stride)[None, :, None]
        level[..., 1] = ((np.arange(fh, dtype=np.float64) + 0.5) * stride)[:, None, None]
        level[..., 2:] = shapes[None, None]
        levels.append(level.reshape(-1, 4))
    return np.concatenate(levels).astype(np.float32)


@njit(nogil=True, cache=True, error_model="numpy")
def candidates_ssd(
    loc: np.ndarray,
    scores: np.ndarray,
    anchors: np.ndarray,
    variances: tuple[float, float],
    conf: float,
    class_mask: np.ndarray,
    background_index: int,
    softmax: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Select and decode the candidates of one SSD output.

    ``loc``: (A, 4) float32 ``l_x, l_y, l_w, l_h``; ``scores``: (A, C) float32;
    ``anchors``: (A, 4) float32 ``cx, cy, w, h`` in input pixels; ``class_mask``: (C − 1,)
    bool with a background column, (C,) without. Returns ``boxes`` (N, 4) float32 xyxy in
    model-input pixels, ``scores`` (N,) float32 and foreground ``classes`` (N,) int32, in
    anchor order (rules in the module docstring).
    """
    a = scores.shape[0]
    c_all = scores.shape[1]
    thres = np.float32(conf)
    v_xy = np.float64(variances[0])
    v_wh = np.float64(variances[1])
    probs = np.empty(c_all, np.float64)
    anchor = np.empty(a, np.int64)
    classes = np.empty(a, np.int32)
    kept_scores = np.empty(a, np.float32)
    n = 0
    for k in range(a):
        best = np.float32(-np.inf)
        best_c = -1
        if softmax:
            m = -np.inf
            for c in range(c_all):
                v = np.float64(scores[k, c])
                if v > m:
                    m = v
            total = 0.0
            for c in range(c_all):
                e = np.exp(np.float64(scores[k, c]) - m)
                probs[c] = e
                total += e
            for c in range(c_all):
                if c == background_index:
                    continue
                p = np.float32(probs[c] / total)
                if p > best:
                    best = p
                    best_c = c
        else:
            for c in range(c_all):
                if c == background_index:
                    continue
                p = scores[k, c]
                if p > best:
                    best = p
                    best_c = c
        if best > thres:
            cls = best_c - 1 if background_index >= 0 and best_c > background_index else best_c
            if class_mask[cls]:
                anchor[n] = k
                classes[n] = cls
                kept_scores[n] = best
                n += 1
    boxes = np.empty((n, 4), np.float32)
    for i in range(n):
        k = anchor[i]
        aw = np.float64(anchors[k, 2])
        ah = np.float64(anchors[k, 3])
        cx = np.float64(anchors[k, 0]) + np.float64(loc[k, 0]) * v_xy * aw
        cy = np.float64(anchors[k, 1]) + np.float64(loc[k, 1]) * v_xy * ah
        half_w = aw * np.exp(np.float64(loc[k, 2]) * v_wh) / 2.0
        half_h = ah * np.exp(np.float64(loc[k, 3]) * v_wh) / 2.0
        boxes[i, 0] = np.float32(cx - half_w)
        boxes[i, 1] = np.float32(cy - half_h)
        boxes[i, 2] = np.float32(cx + half_w)
        boxes[i, 3] = np.float32(cy + half_h)
    return boxes, kept_scores[:n].copy(), classes[:n].copy()


@njit(nogil=True, cache=True, error_model="numpy")
def decode_ssd(
    loc: np.ndarray,
    scores: np.ndarray,
    anchors: np.ndarray,
    variances: tuple[float, float],
    conf: float,
    iou: float,
    class_mask: np.ndarray,
    background_index: int,
    softmax: bool,
    max_det: int,
    max_nms: int,
    scale: float,
    pad_x: float,
    pad_y: float,
    width: int,
    height: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates, class-aware NMS and mapping to source pixels for one SSD output, in one call.

    Inputs as :func:`candidates_ssd`; ``scale``, ``pad_x``, ``pad_y`` describe the letterbox
    and ``width``, ``height`` the source frame. Returns ``boxes`` (N, 4) float32 xyxy in
    source pixels, ``scores`` (N,) float32 and ``classes`` (N,) int32, best score first.
    """
    boxes, kept_scores, classes = candidates_ssd(
        loc, scores, anchors, variances, conf, class_mask, background_index, softmax
    )
    return finish_detections(
        boxes, kept_scores, classes, iou, False, max_det, max_nms, True, scale, pad_x, pad_y, width, height
    )


def ssd_output_split(raw: np.ndarray, num_anchors: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Split one image's SSD output (batch axis removed) into ``(loc, scores)``.

    ``raw`` is ``(A, 4 + C)`` (anchor-major: four regressions, then ``C`` scores per anchor)
    or its transpose ``(4 + C, A)``; a square output is read as anchor-major. ``C`` counts
    every score column, background included. Returns float32 C-contiguous ``loc`` (A, 4)
    and ``scores`` (A, C).
    """
    if isinstance(num_anchors, bool) or not isinstance(num_anchors, int | np.integer) or num_anchors < 0:
        raise ConfigError(f"num_anchors must be an integer >= 0, but got {num_anchors!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) or num_classes < 1:
        raise ConfigError(f"num_classes must be an integer >= 1, but got {num_classes!r}")
    out = as_float32(raw, "SSD output")
    cols = 4 + int(num_classes)
    if out.shape == (num_anchors, cols):
        return np.ascontiguousarray(out[:, :4]), np.ascontiguousarray(out[:, 4:])
    if out.shape == (cols, num_anchors):
        return np.ascontiguousarray(out[:4].T), np.ascontiguousarray(out[4:].T)
    raise ModelError(
        f"SSD output must have shape (A, 4 + C) = ({num_anchors}, {cols}) or ({cols}, {num_anchors}) for "
        f"{num_anchors} anchors and {num_classes} score columns, but got {out.shape}"
    )


def decode_anchor_detections(
    loc: np.ndarray,
    scores: np.ndarray,
    anchors: np.ndarray,
    class_mask: np.ndarray,
    lb: Letterbox,
    config: AnchorConfig,
    *,
    conf: float,
    iou: float,
    max_det: int = 300,
    max_nms: int = MAX_NMS,
) -> Detections:
    """Decode one image's SSD output into detections in source pixels, inputs checked.

    ``loc`` (A, 4) and ``scores`` (A, C) come from :func:`ssd_output_split`; ``anchors``
    (A, 4) from ``config.anchors()``; ``class_mask`` holds one bool per foreground class;
    ``lb`` is how the frame was letterboxed into ``config.input_size``. Anything that does not
    fit raises :class:`~streamer.errors.ModelError` saying what was expected and what was found.
    """
    loc32 = as_float32(loc, "SSD box regressions")
    if loc32.ndim != 2 or loc32.shape[1] != 4:
        raise ModelError(f"SSD box regressions must have shape (A, 4), but got {loc32.shape}")
    a = loc32.shape[0]
    scores32 = as_float32(scores, "SSD class scores")
    if scores32.ndim != 2 or scores32.shape[0] != a or scores32.shape[1] < 1:
        raise ModelError(
            f"SSD class scores must have shape ({a}, C) to match the box regressions, but got {scores32.shape}"
        )
    anchors32 = as_float32(anchors, "anchors")
    if anchors32.shape != (a, 4):
        raise ModelError(
            f"anchors must have shape ({a}, 4) to match the model output, but got {anchors32.shape}: "
            "the anchor configuration does not describe this model"
        )
    c_all = scores32.shape[1]
    bg = config.background_index
    if bg >= c_all:
        raise ModelError(
            f"anchors.background_index must be below the model's {c_all} score columns (or -1), but got {bg}"
        )
    fg = config.num_foreground(c_all)
    if fg < 1:
        raise ModelError(
            f"SSD class scores must have at least one foreground column besides the background, but got {c_all}"
        )
    mask = np.asarray(class_mask)
    if mask.shape != (fg,) or not issubclass(mask.dtype.type, (np.bool_, np.integer)):
        raise ModelError(
            f"class_mask must be ({fg},) bools, one per foreground class, but got shape {mask.shape} dtype {mask.dtype}"
        )
    if tuple(lb.input_hw) != config.input_hw:
        raise ModelError(
            f"the anchors are laid on a {config.input_hw[1]}x{config.input_hw[0]} input, but the frame was "
            f"letterboxed to {lb.input_hw[1]}x{lb.input_hw[0]}"
        )
    h, w = lb.source_hw
    v_xy, v_wh = config.variances
    boxes, kept, classes = decode_ssd(
        loc32,
        scores32,
        anchors32,
        (float(v_xy), float(v_wh)),
        float(conf),
        float(iou),
        mask.astype(np.bool_),
        int(bg),
        bool(config.softmax),
        int(max_det),
        int(max_nms),
        float(lb.scale),
        float(lb.pad_x),
        float(lb.pad_y),
        int(w),
        int(h),
    )
    return Detections(boxes, kept, classes)

"""SSD anchors and decoding: generation and the Numba kernel against the NumPy reference, known answers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from streamer.errors import ConfigError, ModelError
from streamer.postprocess import anchors_reference as ref
from streamer.postprocess.anchors import (
    AnchorConfig,
    decode_anchor_detections,
    decode_ssd,
    generate_anchors,
    ssd_output_split,
)
from streamer.preprocess import letterbox_params
from streamer.types import Letterbox

SQRT2 = math.sqrt(2.0)


def run_both(
    loc: np.ndarray, scores: np.ndarray, anchors: np.ndarray, **kw: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    args: dict[str, Any] = dict(variances=(0.1, 0.2), conf=0.25, iou=0.45, background_index=0, softmax=True,
                                max_det=300, max_nms=30000, scale=1.0, pad_x=0.0, pad_y=0.0, width=640, height=640)
    args.update(kw)
    fg = scores.shape[1] - (1 if args["background_index"] >= 0 else 0)
    mask = args.pop("class_mask", np.ones(fg, np.bool_))
    order = ("variances", "conf", "iou", "class_mask", "background_index", "softmax", "max_det", "max_nms",
             "scale", "pad_x", "pad_y", "width", "height")
    values = [mask if name == "class_mask" else args[name] for name in order]
    got = decode_ssd(loc, scores, anchors, *values)
    want = ref.decode_ssd(loc, scores, anchors, *values)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)
    return got


# --------------------------------------------------------------------------- generation

CONFIGS = [
    AnchorConfig(),
    AnchorConfig(strides=(32,), min_sizes=(16.0,), max_sizes=(36.0,), aspect_ratios=(1.0, 2.0), input_size=(32, 64)),
    AnchorConfig(strides=(16, 32), min_sizes=(20, 50), max_sizes=(), aspect_ratios=((0.5, 2.0), (1.0,)),
                 input_size=(100, 60)),
    AnchorConfig(strides=(8, 16, 64), min_sizes=(24, 48, 300), max_sizes=(48, 300, 400),
                 aspect_ratios=(2.0, 0.5), input_size=(320, 256), clip=True),
    AnchorConfig(strides=(7,), min_sizes=(10,), max_sizes=(11,), aspect_ratios=((3.0, 1.0, 1.0),), input_size=15),
]


@pytest.mark.parametrize("config", CONFIGS, ids=range(len(CONFIGS)))
def test_generation_matches_reference(config: AnchorConfig) -> None:
    got = generate_anchors(config)
    want = ref.generate_anchors(config)
    assert got.dtype == np.float32 and got.shape == (config.num_anchors, 4)
    np.testing.assert_array_equal(got, want)


def test_ssd300_has_8732_anchors() -> None:
    config = AnchorConfig()
    assert config.feature_sizes == ((38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1))
    assert config.anchors_per_location == (4, 6, 6, 6, 4, 4)
    assert config.num_anchors == 8732 == len(config.anchors())


def test_generation_order_is_level_y_x_anchor() -> None:
    # 64 wide, 32 high, stride 32: one row of two cells; ratios 1 then 2, extra box after ratio 1.
    got = generate_anchors(CONFIGS[1])
    want = np.array(
        [
            [16, 16, 16, 16], [16, 16, 24, 24], [16, 16, 16 * SQRT2, 16 / SQRT2],
            [48, 16, 16, 16], [48, 16, 24, 24], [48, 16, 16 * SQRT2, 16 / SQRT2],
        ],
        np.float32,
    )
    np.testing.assert_array_equal(got, want)


def test_extra_box_goes_last_without_ratio_one_and_clip_limits_sizes() -> None:
    config = AnchorConfig(strides=(64,), min_sizes=(300,), max_sizes=(400,), aspect_ratios=(2.0,),
                          input_size=(64, 256), clip=True)
    got = generate_anchors(config)
    assert got.shape == (4 * 2, 4)
    np.testing.assert_allclose(got[0], [32, 32, 256, 64])  # 300·√2 × 300/√2, clipped to 256 × 64
    np.testing.assert_allclose(got[1], [32, 32, 256, 64])  # extra box √(300·400) = 346.4, clipped
    np.testing.assert_allclose(got[2, :2], [96, 32])


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(strides=()), "anchors.strides must be a non-empty list of positive integers, but got []"),
        (dict(strides=(8, 0)), "but got [8, 0]"),
        (dict(strides=(8.5,), min_sizes=(1,), max_sizes=(), aspect_ratios=(1,)), "but got [8.5]"),
        (dict(min_sizes=(30, 60)), "anchors.min_sizes must have one size per level (6), but got 2"),
        (dict(min_sizes=(30, 60, 111, 162, 213, -1)), "anchors.min_sizes must be positive numbers"),
        (dict(max_sizes=(1, 2)), "anchors.max_sizes must be empty or have one size per level (6), but got 2"),
        (dict(max_sizes=(60, 111, 162, 213, 264, 200)), "anchors.max_sizes[5] must be larger than min_sizes[5] = 264.0, but got 200"),
        (dict(aspect_ratios=((1, 2),) * 5), "anchors.aspect_ratios must have one list of ratios per level (6)"),
        (dict(aspect_ratios=((1, 2),) * 5 + ((),)), "anchors.aspect_ratios[5] must be a non-empty list"),
        (dict(aspect_ratios=(1, float("nan"))), "anchors.aspect_ratios[0] must be a non-empty list of positive numbers"),
        (dict(variances=(0.1,)), "anchors.variances must be two positive numbers (v_xy, v_wh), but got [0.1]"),
        (dict(variances=(0.1, 0)), "but got [0.1, 0]"),
        (dict(background_index=-2), "anchors.background_index must be a column index >= 0, or -1 for none, but got -2"),
        (dict(background_index=True), "but got True"),
        (dict(softmax="yes"), "anchors.softmax must be true or false, but got 'yes'"),
        (dict(input_size=(300, 0)), "anchors.input_size must be one or two positive integers (height, width), but got [300, 0]"),
        (dict(input_size=(1, 2, 3)), "but got [1, 2, 3]"),
    ],
)
def test_invalid_config_says_expected_and_got(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        AnchorConfig(**kwargs)
    assert message in str(info.value)


def test_config_normalises_its_fields() -> None:
    config = AnchorConfig(strides=[16], min_sizes=[20], max_sizes=[], aspect_ratios=[1, 2],  # type: ignore[arg-type]
                          variances=[1, 2], input_size=(64,))  # type: ignore[arg-type]
    assert config.strides == (16,) and config.min_sizes == (20.0,) and config.max_sizes == ()
    assert config.aspect_ratios == ((1.0, 2.0),) and config.variances == (1.0, 2.0)
    assert config.input_hw == (64, 64) and config.num_anchors == 16 * 2
    assert config.num_foreground(21) == 20 and AnchorConfig(background_index=-1).num_foreground(21) == 21


# --------------------------------------------------------------------------- output split


def test_output_split_accepts_both_orientations() -> None:
    raw = np.arange(5 * 7, dtype=np.float32).reshape(5, 7)
    loc, scores = ssd_output_split(raw, 5, 3)
    np.testing.assert_array_equal(loc, raw[:, :4])
    np.testing.assert_array_equal(scores, raw[:, 4:])
    loc_t, scores_t = ssd_output_split(np.ascontiguousarray(raw.T), 5, 3)
    np.testing.assert_array_equal(loc_t, loc)
    np.testing.assert_array_equal(scores_t, scores)
    assert loc_t.flags.c_contiguous and scores_t.flags.c_contiguous and scores_t.dtype == np.float32


def test_output_split_empty_and_square() -> None:
    loc, scores = ssd_output_split(np.zeros((0, 6)), 0, 2)
    assert loc.shape == (0, 4) and scores.shape == (0, 2)
    square = np.arange(36, dtype=np.float32).reshape(6, 6)
    loc, _ = ssd_output_split(square, 6, 2)
    np.testing.assert_array_equal(loc, square[:, :4])  # a square output is read anchor-major


@pytest.mark.parametrize(
    ("raw", "anchors", "classes", "error", "message"),
    [
        (np.zeros((5, 8)), 5, 3, ModelError, "must have shape (A, 4 + C) = (5, 7) or (7, 5) for 5 anchors and 3 score columns, but got (5, 8)"),
        (np.zeros((1, 5, 7)), 5, 3, ModelError, "but got (1, 5, 7)"),
        (np.zeros((5, 7), np.complex64), 5, 3, ModelError, "must hold real numbers, but got dtype complex64"),
        ([[0.0] * 7] * 5, 5, 3, ModelError, "must be a numpy array, but got list"),
        (np.zeros((5, 4)), 5, 0, ConfigError, "num_classes must be an integer >= 1, but got 0"),
        (np.zeros((5, 7)), -1, 3, ConfigError, "num_anchors must be an integer >= 0, but got -1"),
    ],
)
def test_output_split_rejects_wrong_shapes(raw: Any, anchors: int, classes: int, error: type, message: str) -> None:
    with pytest.raises(error) as info:
        ssd_output_split(raw, anchors, classes)
    assert message in str(info.value)


# --------------------------------------------------------------------------- kernel against reference


def test_empty_input() -> None:
    boxes, scores, classes = run_both(np.zeros((0, 4), np.float32), np.zeros((0, 21), np.float32),
                                      np.zeros((0, 4), np.float32))
    assert boxes.shape == (0, 4) and scores.shape == (0,) and classes.shape == (0,)
    assert boxes.dtype == np.float32 and scores.dtype == np.float32 and classes.dtype == np.int32


def random_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    a = int(rng.integers(0, 2001))
    softmax = bool(rng.random() < 0.5)
    background = int(rng.integers(-1, 3)) if rng.random() < 0.7 else -1
    c_all = int(rng.integers(max(background + 1, 1 if background < 0 else 2), 25))
    centres = rng.uniform(0, 640, (max(1, a // 40), 2))
    anchors = np.empty((a, 4), np.float32)
    anchors[:, :2] = centres[rng.integers(0, len(centres), a)] + rng.normal(0, 8, (a, 2))
    anchors[:, 2:] = rng.uniform(8, 250, (a, 2))
    loc = rng.normal(0, 1.5, (a, 4)).astype(np.float32)
    if rng.random() < 0.1 and a:
        loc[rng.integers(0, a, 3)] = np.float32(rng.choice([1e4, -1e4, np.nan]))  # overflow and NaN boxes
    if softmax:
        # Small integer logits: many exact ties between classes, anchors and probabilities.
        scores = rng.integers(-4, 5, (a, c_all)).astype(np.float32)
        conf = float(rng.choice([0.05, 0.2, 0.4]))
    else:
        scores = (rng.integers(0, 21, (a, c_all)) / 20).astype(np.float32)
        conf = float(rng.choice([0.3, 0.6, 0.85]))
    kw: dict[str, Any] = dict(
        variances=(float(rng.choice([0.1, 0.2])), float(rng.choice([0.2, 0.3]))),
        conf=conf,
        iou=float(rng.choice([0.3, 0.45, 0.7])),
        background_index=background,
        softmax=softmax,
        max_det=int(rng.choice([5, 100, 300])),
        max_nms=int(rng.choice([50, 30000])),
        scale=float(rng.choice([1.0, 0.5, 1.7])),
        pad_x=float(rng.integers(0, 20)),
        pad_y=float(rng.integers(0, 40)),
        width=int(rng.choice([640, 1280])),
        height=int(rng.choice([360, 720])),
    )
    if rng.random() < 0.35:
        kw["class_mask"] = rng.random(c_all - (1 if background >= 0 else 0)) < 0.5
    return loc, scores, anchors, kw


@pytest.mark.parametrize("seed", range(200))
def test_kernel_matches_reference(seed: int) -> None:
    loc, scores, anchors, kw = random_case(np.random.default_rng(seed))
    boxes, kept, classes = run_both(loc, scores, anchors, **kw)
    assert len(boxes) <= kw["max_det"]
    assert np.all(np.diff(kept) <= 0)
    fg = scores.shape[1] - (1 if kw["background_index"] >= 0 else 0)
    assert np.all((classes >= 0) & (classes < fg))
    if "class_mask" in kw:
        assert np.all(kw["class_mask"][classes])


def test_background_column_never_wins_and_ids_skip_it() -> None:
    anchors = np.array([[50, 50, 20, 20], [200, 200, 20, 20], [400, 400, 20, 20]], np.float32)
    loc = np.zeros((3, 4), np.float32)
    scores = np.array([[0.9, 0.1, 0.0], [0.95, 0.3, 0.6], [0.2, 0.7, 0.4]], np.float32)
    _, kept, classes = run_both(loc, scores, anchors, background_index=0, softmax=False, conf=0.25)
    assert classes.tolist() == [0, 1] and kept.tolist() == [pytest.approx(0.7), pytest.approx(0.6)]
    _, _, classes = run_both(loc, scores, anchors, background_index=2, softmax=False, conf=0.25)
    assert classes.tolist() == [0, 0, 1]  # column 0 is class 0, column 1 class 1; column 2 is background
    _, kept, classes = run_both(loc, scores, anchors, background_index=-1, softmax=False, conf=0.25)
    assert classes.tolist() == [0, 0, 1] and kept.tolist() == [pytest.approx(v) for v in (0.95, 0.9, 0.7)]


def test_softmax_probability_and_tie_goes_to_the_first_class() -> None:
    anchors = np.array([[100, 100, 40, 40]], np.float32)
    scores = np.array([[0.0, 2.0, 2.0, 1.0]], np.float32)
    _, kept, classes = run_both(np.zeros((1, 4), np.float32), scores, anchors, softmax=True, conf=0.1)
    e = np.exp([0.0, 2.0, 2.0, 1.0])
    assert classes.tolist() == [0]
    assert kept[0] == pytest.approx(e[1] / e.sum(), rel=1e-6)


# --------------------------------------------------------------------------- known answer


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area_a = (a[:, 2:] - a[:, :2]).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).prod(1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def test_decode_of_encoded_boxes_gives_them_back_in_source_pixels() -> None:
    config = AnchorConfig()  # SSD300: 21 columns, background 0, softmax
    anchors = config.anchors()
    source = np.array([[100, 50, 300, 200], [420, 260, 600, 350], [10, 300, 90, 355]], np.float32)
    labels = [3, 11, 0]  # foreground ids; columns 4, 12, 1
    lb = letterbox_params((360, 640), config.input_size, rect=False)
    assert lb.input_hw == (300, 300)
    in_boxes = source * np.float32(lb.scale) + np.array([lb.pad_x, lb.pad_y] * 2, np.float32)
    centres = np.stack([(anchors[:, 0] - anchors[:, 2] / 2), (anchors[:, 1] - anchors[:, 3] / 2),
                        (anchors[:, 0] + anchors[:, 2] / 2), (anchors[:, 1] + anchors[:, 3] / 2)], axis=1)
    overlap = box_iou(in_boxes, centres)
    targets = np.zeros((len(anchors), 4), np.float32)
    targets[:] = [10, 10, 20, 20]
    logits = np.zeros((len(anchors), 21), np.float32)
    logits[:, 0] = 6.0  # background everywhere else
    for obj, (box, label) in enumerate(zip(in_boxes, labels, strict=True)):
        matched = np.argsort(-overlap[obj])[:4]  # several anchors vote for the same object
        targets[matched] = box
        logits[matched, 0] = 0.0
        logits[matched, 1 + label] = np.linspace(5.0, 4.0, len(matched))
    loc = ref.encode_boxes(targets, anchors, config.variances)
    raw = np.concatenate([loc, logits], axis=1)
    loc2, scores = ssd_output_split(np.ascontiguousarray(raw.T), config.num_anchors, 21)
    mask = np.ones(20, np.bool_)
    dets = decode_anchor_detections(loc2, scores, anchors, mask, lb, config, conf=0.5, iou=0.45)
    assert len(dets) == 3  # NMS leaves one box per object
    order = np.argsort(dets.class_id)
    np.testing.assert_allclose(dets.xyxy[order], source[[2, 0, 1]], atol=2e-3)
    assert dets.class_id[order].tolist() == [0, 3, 11]
    p = 1 / (1 + 20 * np.exp(-5.0))  # logit 5 for the class, 0 for the other 20 columns
    np.testing.assert_allclose(dets.confidence, p, rtol=1e-6)
    mask[3] = False
    assert sorted(decode_anchor_detections(loc2, scores, anchors, mask, lb, config, conf=0.5, iou=0.45).class_id) == [0, 11]


# --------------------------------------------------------------------------- checked entry point

SMALL = AnchorConfig(strides=(32,), min_sizes=(16.0,), max_sizes=(36.0,), aspect_ratios=(1.0, 2.0),
                     input_size=(32, 64))
SMALL_LB = Letterbox(scale=1.0, pad_x=0, pad_y=0, input_hw=(32, 64), source_hw=(32, 64))


def entry(**changes: Any) -> Any:
    a = SMALL.num_anchors
    args: dict[str, Any] = dict(loc=np.zeros((a, 4), np.float32), scores=np.zeros((a, 3), np.float32),
                                anchors=SMALL.anchors(), class_mask=np.ones(2, np.bool_), lb=SMALL_LB, config=SMALL)
    args.update(changes)
    return decode_anchor_detections(**args, conf=0.25, iou=0.45)


def test_entry_point_accepts_matching_inputs() -> None:
    scores = np.full((6, 3), -5.0, np.float32)
    scores[:, 0] = 5.0  # background
    scores[4, 2] = 9.0
    dets = entry(scores=scores)
    assert dets.class_id.tolist() == [1]
    np.testing.assert_array_equal(dets.xyxy, [[36, 4, 60, 28]])  # anchor 4: the extra 24x24 box at (48, 16)
    assert len(entry(loc=np.zeros((0, 4)), scores=np.zeros((0, 3)), anchors=np.zeros((0, 4)))) == 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(loc=np.zeros((6, 5))), "SSD box regressions must have shape (A, 4), but got (6, 5)"),
        (dict(loc=np.zeros(24)), "SSD box regressions must have shape (A, 4), but got (24,)"),
        (dict(loc="boxes"), "SSD box regressions must be a numpy array, but got str"),
        (dict(scores=np.zeros((5, 3))), "SSD class scores must have shape (6, C) to match the box regressions, but got (5, 3)"),
        (dict(scores=np.zeros((6, 0))), "but got (6, 0)"),
        (dict(anchors=np.zeros((8732, 4))), "anchors must have shape (6, 4) to match the model output, but got (8732, 4)"),
        (dict(class_mask=np.ones(3, np.bool_)), "class_mask must be (2,) bools, one per foreground class, but got shape (3,)"),
        (dict(class_mask=np.ones(2, np.float32)), "but got shape (2,) dtype float32"),
        (dict(scores=np.zeros((6, 1))), "at least one foreground column besides the background, but got 1"),
        (dict(config=AnchorConfig(strides=(32,), min_sizes=(16.0,), max_sizes=(36.0,), aspect_ratios=(1.0, 2.0),
                                  input_size=(32, 64), background_index=3)),
         "anchors.background_index must be below the model's 3 score columns (or -1), but got 3"),
        (dict(lb=Letterbox(1.0, 0, 0, (64, 64), (64, 64))),
         "the anchors are laid on a 64x32 input, but the frame was letterboxed to 64x64"),
    ],
)
def test_entry_point_rejects_wrong_shapes(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelError) as info:
        entry(**changes)
    assert message in str(info.value)

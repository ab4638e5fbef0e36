"""Decoding of YOLO outputs: Numba kernels against the NumPy reference, and known answers."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.postprocess import reference, yolo


def random_v8(rng: np.random.Generator, nc: int, anchors: int, hot: float) -> np.ndarray:
    out = np.empty((4 + nc, anchors), np.float32)
    centres = rng.uniform(0, 640, (max(1, anchors // 30), 2))
    c = centres[rng.integers(0, len(centres), anchors)] + rng.normal(0, 6, (anchors, 2))
    out[0], out[1] = c[:, 0], c[:, 1]
    out[2:4] = rng.uniform(4, 200, (2, anchors))
    scores = rng.random((nc, anchors)).astype(np.float32) * np.float32(hot)
    out[4:] = scores
    return out


def run_both(layout: str, out: np.ndarray, **kw):  # type: ignore[no-untyped-def]
    args = dict(conf=0.25, iou=0.7, agnostic=False, multi_label=False, max_det=300, max_nms=30000,
                scale=1.0, pad_x=0.0, pad_y=8.0, width=640, height=272)
    args.update(kw)
    nc = out.shape[0] - 4 if layout == "v8" else out.shape[1] - 5
    mask = args.pop("class_mask", np.ones(nc, np.bool_))
    fn = yolo.postprocess_v8 if layout == "v8" else yolo.postprocess_v5
    got = fn(out, args["conf"], args["iou"], mask, args["agnostic"], args["multi_label"], args["max_det"],
             args["max_nms"], args["scale"], args["pad_x"], args["pad_y"], args["width"], args["height"])
    want = reference.postprocess(layout, out, args["conf"], args["iou"], mask, args["agnostic"], args["multi_label"],
                                 args["max_det"], args["max_nms"], args["scale"], args["pad_x"], args["pad_y"],
                                 args["width"], args["height"])
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    return got


def test_empty_output() -> None:
    boxes, scores, classes = run_both("v8", np.zeros((84, 0), np.float32))
    assert boxes.shape == (0, 4) and scores.shape == (0,) and classes.shape == (0,)


@pytest.mark.parametrize("seed", range(200))
def test_v8_random_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    nc = int(rng.integers(1, 81))
    anchors = int(rng.integers(0, 3000))
    out = random_v8(rng, nc, anchors, hot=float(rng.choice([0.3, 1.0])))
    kw: dict[str, object] = dict(
        conf=float(rng.choice([0.001, 0.1, 0.25, 0.6])),
        iou=float(rng.choice([0.45, 0.7])),
        agnostic=bool(seed % 5 == 0),
        multi_label=bool(seed % 7 == 0),
        max_det=int(rng.choice([10, 300])),
        max_nms=int(rng.choice([100, 30000])),
        scale=float(rng.choice([1.0, 0.5, 3.6363637])),
        pad_x=float(rng.integers(0, 20)),
        pad_y=float(rng.integers(0, 20)),
    )
    if seed % 3 == 0:
        mask = rng.random(nc) < 0.5
        kw["class_mask"] = mask
    run_both("v8", out, **kw)


@pytest.mark.parametrize("seed", range(100))
def test_v5_random_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    nc = int(rng.integers(1, 81))
    anchors = int(rng.integers(0, 3000))
    v8 = random_v8(rng, nc, anchors, hot=1.0)
    obj = rng.random((1, anchors)).astype(np.float32)
    out = np.ascontiguousarray(np.concatenate([v8[:4], obj, v8[4:]]).T)
    run_both("v5", out, conf=float(rng.choice([0.01, 0.25])), multi_label=bool(seed % 4 == 0))


@pytest.mark.parametrize("candidates", [0, 1_000, 10_000, 30_000, 40_000])
def test_candidate_counts_up_to_max_nms(candidates: int) -> None:
    rng = np.random.default_rng(candidates)
    out = random_v8(rng, 4, max(candidates, 1), hot=0.1)
    out[4:, :candidates] += 0.5  # exactly `candidates` anchors pass conf 0.25
    boxes, _, _ = run_both("v8", out)
    assert len(boxes) <= 300


def test_known_box_maps_back_to_source_pixels() -> None:
    # One object at source box (100, 50)-(300, 150) in a 640x272 frame letterboxed to 640x288
    # (pad_y 8), plus a weaker duplicate that NMS must remove.
    out = np.zeros((4 + 3, 10), np.float32)
    out[:4, 0] = [200, 108, 200, 100]
    out[:4, 1] = [202, 108, 200, 100]
    out[4 + 2, 0] = 0.9
    out[4 + 2, 1] = 0.8
    out[4 + 1, 2] = 0.2  # below conf
    boxes, scores, classes = run_both("v8", out)
    np.testing.assert_allclose(boxes, [[100, 50, 300, 150]])
    assert scores.tolist() == [pytest.approx(0.9)] and classes.tolist() == [2]


def test_class_filter_applies_to_the_best_class() -> None:
    out = np.zeros((4 + 2, 1), np.float32)
    out[:4, 0] = [50, 50, 20, 20]
    out[4:, 0] = [0.9, 0.5]  # best class 0; class 1 also above conf
    mask = np.array([False, True])
    boxes, _, _ = run_both("v8", out, class_mask=mask)
    assert len(boxes) == 0  # like Ultralytics: filtered by the box's best class
    boxes, _, classes = run_both("v8", out, class_mask=mask, multi_label=True)
    assert classes.tolist() == [1]


def test_boxes_are_clipped() -> None:
    out = np.zeros((5, 1), np.float32)
    out[:4, 0] = [630, 5, 40, 30]
    out[4, 0] = 0.9
    boxes, _, _ = run_both("v8", out, pad_y=0.0, width=640, height=272)
    assert boxes.tolist() == [[610.0, 0.0, 640.0, 20.0]]


def test_end2end_keeps_rows_above_conf_in_score_order() -> None:
    out = np.array(
        [[10, 10, 20, 20, 0.3, 1], [0, 0, 5, 5, 0.9, 0], [1, 1, 2, 2, 0.1, 0], [0, 0, 1, 1, 0.8, 99]], np.float32
    )
    boxes, scores, classes = yolo.postprocess_end2end(out, 0.25, np.ones(2, np.bool_), 300, 1.0, 0.0, 0.0, 640, 640)
    assert classes.tolist() == [0, 1]  # class 99 is outside the model's classes
    np.testing.assert_allclose(scores, [0.9, 0.3])

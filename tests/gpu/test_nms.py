"""Batch decode + NMS in torch against the Numba path, on CPU tensors.

The Numba kernels (``postprocess_v8``, one image at a time) are the reference: same rows,
same order, same float32 values, on random outputs built to be hard (clusters of heavy
overlaps, exact score ties, the max_nms cut, class filters, multi-label) and on the default
model's raw outputs for frames of the three sample clips.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from streamer import assets
from streamer.gpu import nms as gpu_nms
from streamer.gpu.nms import decode_nms_v8
from streamer.models.torch_yolo import TorchYoloModel
from streamer.postprocess import yolo
from streamer.preprocess import letterbox_params, letterbox_into
from streamer.types import Detections, Letterbox
from tests.gpu.test_nv12 import decoded_nv12

import cv2


def numba_detections(raw: np.ndarray, boxes: list[Letterbox], **params: object) -> list[Detections]:
    mask = params.pop("class_mask", None)
    nc = raw.shape[1] - 4
    mask = np.ones(nc, np.bool_) if mask is None else mask
    out = []
    for one, lb in zip(raw, boxes, strict=True):
        h, w = lb.source_hw
        xyxy, conf, cls = yolo.postprocess_v8(
            np.ascontiguousarray(one), params["conf"], params["iou"], mask, params["agnostic"], params["multi_label"],
            params["max_det"], params["max_nms"], lb.scale, lb.pad_x, lb.pad_y, w, h,
        )
        out.append(Detections(xyxy, conf, cls))
    return out


def assert_same(got: list[Detections], want: list[Detections]) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_array_equal(g.class_id, w.class_id, err_msg=f"image {i}: classes")
        np.testing.assert_array_equal(g.confidence, w.confidence, err_msg=f"image {i}: scores")
        np.testing.assert_array_equal(g.xyxy, w.xyxy, err_msg=f"image {i}: boxes")


def random_output(rng: np.random.Generator, batch: int, nc: int, anchors: int, ties: bool) -> np.ndarray:
    """(B, 4 + nc, A) float32 like a detector's: boxes clustered around a few objects, sparse scores."""
    out = np.empty((batch, 4 + nc, anchors), np.float32)
    for b in range(batch):
        centres = rng.uniform(0, 640, (max(1, anchors // 25), 2))
        cxcy = centres[rng.integers(0, len(centres), anchors)] + rng.normal(0, 6, (anchors, 2))
        out[b, :2] = cxcy.T
        out[b, 2:4] = rng.uniform(2, 140, (2, anchors))
        scores = rng.random((nc, anchors)) ** 3  # most low, some above conf
        if ties:
            scores = np.round(scores * 8) / 8  # exact ties across anchors and classes
        out[b, 4:] = scores
    return out


def letterboxes(rng: np.random.Generator, batch: int) -> list[Letterbox]:
    sizes = [(272, 640), (144, 176), (720, 1280), (1080, 1920), (480, 270)]
    return [letterbox_params(sizes[int(rng.integers(0, len(sizes)))], 640) for _ in range(batch)]


def cases() -> Iterator[tuple[int, dict[str, object]]]:
    for seed in range(60):
        rng = np.random.default_rng(1000 + seed)
        nc = int(rng.choice([1, 3, 80]))
        mask = rng.random(nc) < 0.7 if seed % 5 == 4 else None
        yield seed, {
            "conf": float(rng.choice([0.05, 0.25, 0.5])),
            "iou": float(rng.choice([0.0, 0.3, 0.45, 0.7, 1.0])),
            "agnostic": seed % 4 == 1,
            "multi_label": seed % 6 == 2,
            "max_det": int(rng.choice([1, 10, 300])),
            "max_nms": int(rng.choice([7, 50, yolo.MAX_NMS])),
            "class_mask": mask,
            "nc": nc,
        }


@pytest.mark.parametrize(("seed", "params"), list(cases()), ids=[f"seed{s}" for s, _ in cases()])
def test_random_outputs_match_numba(seed: int, params: dict[str, object]) -> None:
    rng = np.random.default_rng(seed)
    nc = int(params.pop("nc"))  # type: ignore[call-overload]
    batch = int(rng.integers(1, 5))
    raw = random_output(rng, batch, nc, int(rng.integers(1, 600)), ties=seed % 3 == 0)
    boxes = letterboxes(rng, batch)
    got = decode_nms_v8(torch.from_numpy(raw), boxes, **params).to_host()  # type: ignore[arg-type]
    assert_same(got, numba_detections(raw, boxes, **params))
    assert all(len(d) <= int(params["max_det"]) for d in got)  # type: ignore[call-overload]


def test_small_chunks_and_row_tiles_give_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pairwise blocks split into many chunks and row tiles (as with huge candidate counts)."""
    rng = np.random.default_rng(7)
    raw = random_output(rng, 3, 2, 500, ties=True)
    boxes = letterboxes(rng, 3)
    params: dict[str, object] = {"conf": 0.05, "iou": 0.45, "agnostic": False, "multi_label": False, "max_det": 300,
                                 "max_nms": yolo.MAX_NMS}
    whole = decode_nms_v8(torch.from_numpy(raw), boxes, **params).to_host()  # type: ignore[arg-type]
    monkeypatch.setattr(gpu_nms, "_BLOCK_BUDGET", 300)
    assert_same(decode_nms_v8(torch.from_numpy(raw), boxes, **params).to_host(), whole)  # type: ignore[arg-type]
    assert_same(whole, numba_detections(raw, boxes, **params))


@pytest.mark.parametrize(
    ("raw", "n_boxes", "max_det", "expected"),
    [
        (np.zeros((0, 84, 10), np.float32), 0, 300, []),
        (np.zeros((2, 84, 10), np.float32), 2, 300, [0, 0]),  # no score above conf
        (np.full((1, 84, 10), 0.9, np.float32), 1, 0, [0]),  # max_det 0
    ],
    ids=["empty-batch", "no-candidates", "max-det-0"],
)
def test_edge_cases(raw: np.ndarray, n_boxes: int, max_det: int, expected: list[int]) -> None:
    lb = letterbox_params((640, 640), 640)
    got = decode_nms_v8(torch.from_numpy(raw), [lb] * n_boxes, max_det=max_det)
    assert tuple(got.rows.shape) == (sum(expected), 6)
    assert [len(d) for d in got.to_host()] == expected


def test_nan_scores_and_boxes_behave_like_the_kernel() -> None:
    rng = np.random.default_rng(3)
    raw = random_output(rng, 2, 5, 200, ties=False)
    raw[0, 4:, ::7] = np.nan  # whole anchors of NaN scores
    raw[1, 6, ::5] = np.nan  # one NaN class among real ones
    raw[1, :4, ::11] = np.nan  # NaN boxes: IoU NaN never suppresses, mapped to 0
    boxes = letterboxes(rng, 2)
    params: dict[str, object] = {"conf": 0.1, "iou": 0.5, "agnostic": False, "multi_label": False, "max_det": 300,
                                 "max_nms": yolo.MAX_NMS}
    assert_same(decode_nms_v8(torch.from_numpy(raw), boxes, **params).to_host(), numba_detections(raw, boxes, **params))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "boxes", "mask", "message"),
    [
        (torch.zeros((2, 84)), 2, None, r"raw must be a float tensor of shape \(B, 4 \+ nc, A\), but got shape \(2, 84\)"),
        (torch.zeros((2, 84, 5), dtype=torch.int32), 2, None, r"but got shape \(2, 84, 5\) dtype torch.int32"),
        (torch.zeros((2, 84, 5)), 1, None, r"got 1 letterboxes for a batch of 2"),
        (torch.zeros((1, 84, 5)), 1, np.ones(79, np.bool_), r"class_mask must be \(80,\) bool for 80 classes, but got shape \(79,\)"),
    ],
    ids=["ndim", "dtype", "letterboxes", "mask"],
)
def test_bad_inputs_say_what_was_expected(raw: torch.Tensor, boxes: int, mask: np.ndarray | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_nms_v8(raw, [letterbox_params((640, 640), 640)] * boxes, class_mask=mask)


@pytest.fixture(scope="module")
def model() -> TorchYoloModel:
    native = TorchYoloModel(assets.model_path("yolo11n"), threads=1)
    native.open()
    return native


def test_default_model_on_the_sample_clips_gives_the_same_boxes(model: TorchYoloModel) -> None:
    """One mixed batch (three clips, three sizes, padded like the infer stage pads) through the
    real model; the torch decode and the Numba decode see the same raw output."""
    frames = [
        cv2.cvtColor(packed, cv2.COLOR_YUV2BGR_NV12)
        for sample, index in (("bikes", 43), ("bikes", 120), ("carphone", 30), ("bigbuckbunny", 60))
        for packed in decoded_nv12(sample, (index,))
    ]
    boxes = [letterbox_params(f.shape[:2], 640) for f in frames]
    h, w = max(lb.input_hw[0] for lb in boxes), max(lb.input_hw[1] for lb in boxes)
    batch = np.full((len(frames), 3, h, w), 114 / 255, np.float32)
    for i, (frame, lb) in enumerate(zip(frames, boxes, strict=True)):
        batch[i, :, : lb.input_hw[0], : lb.input_hw[1]] = letterbox_into(frame, lb, np.empty((3, *lb.input_hw), np.float32))
    raw = model(batch)
    for params in (
        {"conf": 0.25, "iou": 0.7, "agnostic": False, "multi_label": False, "max_det": 300, "max_nms": yolo.MAX_NMS},
        {"conf": 0.01, "iou": 0.45, "agnostic": True, "multi_label": True, "max_det": 100, "max_nms": 2000},
    ):
        got = decode_nms_v8(torch.from_numpy(raw), boxes, **params).to_host()  # type: ignore[arg-type]
        want = numba_detections(raw, boxes, **params)
        assert_same(got, want)
        if params["conf"] == 0.25:
            assert sum(len(d) for d in want) >= 8, "the busy frames should give several detections"

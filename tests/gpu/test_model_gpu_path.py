"""The torch model's device-side entry points (``detect``, ``detect_frames``), run on the CPU
with the real default model and sample clips; on CUDA where a GPU is present."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import torch

from streamer import assets
from streamer.config import DetectConfig
from streamer.gpu.nv12 import Nv12Image, Nv12Letterbox
from streamer.models.torch_yolo import TorchYoloModel
from streamer.preprocess import letterbox_params
from streamer.preprocess_torch import DeviceLetterbox
from streamer.types import Detections
from tests.agreement import f1_score
from tests.gpu.test_nms import assert_same, numba_detections
from tests.gpu.test_nv12 import decoded_nv12

PARAMS: dict[str, object] = {"conf": 0.25, "iou": 0.7, "agnostic": False, "multi_label": False, "max_det": 300,
                             "max_nms": 30000}


@pytest.fixture(scope="module")
def model() -> TorchYoloModel:
    native = TorchYoloModel(assets.model_path("yolo11n"), threads=1)
    native.open()
    return native


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """Packed NV12 of busy frames of two clips of different sizes."""
    return decoded_nv12("bikes", (43, 44, 150)) + decoded_nv12("bigbuckbunny", (60,))


def as_rows(detections: list[Detections]) -> list[list[tuple[list[float], float, int]]]:
    return [[(box.tolist(), float(c), int(k)) for box, c, k in zip(d.xyxy, d.confidence, d.class_id)] for d in detections]


def test_detect_matches_the_numba_decoder_on_the_same_batch(model: TorchYoloModel, frames: list[np.ndarray]) -> None:
    images = [Nv12Image.from_packed(p) for p in frames]
    boxes = [letterbox_params(im.shape, 640) for im in images]
    batch = Nv12Letterbox("cpu")(images, boxes)
    assert not model.device_postprocess  # on the CPU the pipeline keeps the Numba decoder
    got = model.detect(batch, boxes)
    assert_same(got, numba_detections(model(batch), boxes, **dict(PARAMS)))
    assert sum(len(d) for d in got) >= 8


def test_detect_takes_the_detect_section(model: TorchYoloModel, frames: list[np.ndarray]) -> None:
    """``detect:``'s classes and thresholds reach the device decoder as they reach the Numba one."""
    images = [Nv12Image.from_packed(p) for p in frames]
    boxes = [letterbox_params(im.shape, 640) for im in images]
    batch = Nv12Letterbox("cpu")(images, boxes)
    settings = DetectConfig(conf=0.4, iou=0.5, classes=(0, 1), max_det=5)
    got = model.detect(batch, boxes, settings)
    mask = np.zeros(80, np.bool_)
    mask[[0, 1]] = True
    want = numba_detections(model(batch), boxes, **{**PARAMS, "conf": 0.4, "iou": 0.5, "max_det": 5, "class_mask": mask})
    assert_same(got, want)
    assert sum(len(d) for d in got) >= 2 and all(set(d.class_id.tolist()) <= {0, 1} for d in got)


def test_detect_frames_from_nv12_agrees_with_the_bgr_path(model: TorchYoloModel, frames: list[np.ndarray]) -> None:
    """NV12 frames through the one-call path against today's path: BGR from cvtColor,
    letterboxed on the host, Numba decode. Inputs differ by under a grey level."""
    images = [Nv12Image.from_packed(p) for p in frames]
    boxes = [letterbox_params(im.shape, 640) for im in images]
    got = model.detect_frames(images, boxes)
    bgr = [cv2.cvtColor(p, cv2.COLOR_YUV2BGR_NV12) for p in frames]
    reference_batch = DeviceLetterbox(torch.device("cpu"))(bgr, boxes)
    want = numba_detections(model(reference_batch), boxes, **dict(PARAMS))
    f1, tp, fp, fn = f1_score(as_rows(got), as_rows(want))
    assert f1 >= 0.98, (f1, tp, fp, fn)
    assert tp >= 8


def test_cuda_graphs_asked_for_off_cuda_run_eagerly(caplog: pytest.LogCaptureFixture) -> None:
    model = TorchYoloModel(assets.model_path("yolo11n"), threads=1, cuda_graphs=True)
    with caplog.at_level(logging.WARNING):
        model.open()
    assert "CUDA graphs need a CUDA device; running eagerly on cpu" in caplog.text
    assert model.info.device == "cpu"


def test_bad_graph_buckets_fail_at_construction() -> None:
    with pytest.raises(ValueError, match=r"batch buckets must be strictly increasing, but got \[8, 4\]"):
        TorchYoloModel(assets.model_path("yolo11n"), graph_buckets=(8, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA path needs a CUDA device (torch.cuda.is_available() is False)")
@pytest.mark.parametrize("half", [False, True], ids=["fp32", "fp16"])
def test_cuda_detect_frames_agrees_with_the_cpu_path(
    model: TorchYoloModel, frames: list[np.ndarray], half: bool
) -> None:
    cuda = TorchYoloModel(assets.model_path("yolo11n"), device="cuda", half=half)
    cuda.open()
    assert cuda.device_postprocess and cuda.device_preprocess
    images = [Nv12Image.from_packed(p, "cuda") for p in frames]
    boxes = [letterbox_params(im.shape, 640) for im in images]
    got = cuda.detect_frames(images, boxes)
    cpu = model.detect_frames([Nv12Image.from_packed(p) for p in frames], boxes)
    f1, tp, fp, fn = f1_score(as_rows(got), as_rows(cpu))
    assert f1 >= 0.98, (f1, tp, fp, fn)


def test_device_letterbox_takes_nv12_and_bgr_frames_in_one_batch(frames: list[np.ndarray]) -> None:
    """A camera on NVDEC and one decoded on the CPU share a batch; each lands in its own slot."""
    nv12 = Nv12Image.from_packed(frames[0])
    bgr = cv2.cvtColor(frames[3], cv2.COLOR_YUV2BGR_NV12)
    boxes = [letterbox_params(nv12.shape, 640), letterbox_params(bgr.shape[:2], 640)]
    out = torch.full((3, 3, 384, 640), float("nan"))
    letterbox = DeviceLetterbox(torch.device("cpu"))
    assert letterbox([nv12, bgr], boxes, out) is out
    torch.testing.assert_close(out[0], Nv12Letterbox("cpu")([nv12], boxes[:1], torch.empty((1, 3, 384, 640)))[0])
    torch.testing.assert_close(out[1], letterbox([bgr], boxes[1:])[0])
    assert torch.isnan(out[2]).all()

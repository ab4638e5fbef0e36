"""Letterboxing on the model's device (used on CUDA), checked here on the CPU device."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import streamer
from streamer import assets
from streamer.models.torch_yolo import TorchYoloModel
from streamer.preprocess import letterbox_params, letterbox_reference
from streamer.preprocess_torch import DeviceLetterbox
from tests.agreement import f1_score, from_reference


@pytest.mark.parametrize("size", [(272, 640), (144, 176), (720, 1280), (1080, 1920), (37, 91)])
def test_matches_cpu_letterbox(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(size[0])
    # Smooth content, as in video: OpenCV's fixed-point interpolation error stays small there.
    small = rng.integers(0, 256, (size[0] // 8 + 2, size[1] // 8 + 2, 3), dtype=np.uint8)
    import cv2

    image = cv2.resize(small, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
    lbs = [letterbox_params(size, 640, rect=True), letterbox_params(size, 640, rect=False)]
    for lb in lbs:
        got = DeviceLetterbox(torch.device("cpu"))([image], [lb])[0].numpy()
        want = letterbox_reference(image, lb)
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 2.5 / 255


def test_mixed_sizes_share_one_padded_batch() -> None:
    a = np.full((272, 640, 3), 200, np.uint8)
    b = np.full((144, 176, 3), 50, np.uint8)
    lba, lbb = letterbox_params((272, 640), 640), letterbox_params((144, 176), 640)
    batch = DeviceLetterbox(torch.device("cpu"))([a, b], [lba, lbb])
    assert tuple(batch.shape) == (2, 3, max(lba.input_hw[0], lbb.input_hw[0]), 640)
    assert float(batch[0, 0, 100, 100]) == pytest.approx(200 / 255, abs=1e-6)
    assert float(batch[0, 0, -1, 0]) == pytest.approx(114 / 255, abs=1e-6)  # padding below the frame


@pytest.mark.slow
def test_pipeline_with_device_preprocessing_agrees_with_ultralytics() -> None:
    model = TorchYoloModel(assets.model_path("yolo11n"), device="cpu", device_preprocess=True)
    frames = []
    for result in streamer.stream("sample:carphone", model=model):
        assert result.detections is not None
        d = result.detections
        frames.append([(box.tolist(), float(c), int(k)) for box, c, k in zip(d.xyxy, d.confidence, d.class_id)])
    assert model.device_preprocess
    reference = json.loads((Path(__file__).parent / "data" / "ultralytics_carphone.json").read_text())
    f1, tp, fp, fn = f1_score(frames, from_reference(reference["frames"]))
    assert f1 >= 0.98, (f1, tp, fp, fn)


def test_staging_buffers_are_per_thread() -> None:
    """Infer workers share one DeviceLetterbox: a staging buffer shared between threads would
    be refilled by one worker while another's copy from it is still in flight."""
    import threading

    lb = DeviceLetterbox(torch.device("cpu"))
    shapes = [(0, 0, 3), (4, 6, 3), (8, 8, 3)]
    got: dict[str, list[torch.Tensor]] = {}
    barrier = threading.Barrier(2)

    def worker(name: str) -> None:
        barrier.wait()  # both threads stage at the same time
        got[name] = [lb._staging_buffer(shape)[0] for shape in shapes] + [lb._staging_buffer(shapes[1])[0]]

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    for name in ("a", "b"):
        assert [tuple(t.shape) for t in got[name]] == [*shapes, shapes[1]]
        assert got[name][3] is got[name][1], "a thread reuses its own buffer for the same size"
    assert all(a is not b for a, b in zip(got["a"], got["b"])), "two threads were handed the same buffer"
    assert all(buf.dtype == torch.uint8 for buf in got["a"] + got["b"])

"""Batch buckets, padding and slicing of the graphed model, on the CPU with the real network;
the CUDA capture itself where a GPU is present."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamer import assets
from streamer.gpu.graphs import DEFAULT_BUCKETS, GraphedModel, bucket_for, check_buckets, plan
from streamer.gpu.nv12 import Nv12Image, Nv12Letterbox
from streamer.models.torch_yolo import TorchYoloModel
from streamer.models.yolo_arch import YoloDetectionModel
from streamer.preprocess import letterbox_params
from tests.gpu.test_nv12 import decoded_nv12


@pytest.mark.parametrize(
    ("buckets", "message"),
    [
        ((), r"batch buckets must be positive integers, but got \[\]"),
        ((0, 1), r"positive integers, but got \[0, 1\]"),
        ((1, 2.5), r"positive integers, but got \[1, 2.5\]"),
        ((2, 1), r"strictly increasing, but got \[2, 1\]"),
        ((1, 1, 2), r"strictly increasing, but got \[1, 1, 2\]"),
    ],
)
def test_bad_buckets(buckets: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_buckets(buckets)


@pytest.mark.parametrize(("n", "bucket"), [(1, 1), (2, 2), (3, 4), (4, 4), (5, 8), (33, 64), (64, 64)])
def test_bucket_for(n: int, bucket: int) -> None:
    assert bucket_for(n, DEFAULT_BUCKETS) == bucket


@pytest.mark.parametrize("n", [0, -1, 65])
def test_no_bucket(n: int) -> None:
    with pytest.raises(ValueError, match=rf"a batch of {n} has no bucket, expecting 1 to 64 rows"):
        bucket_for(n, DEFAULT_BUCKETS)


@pytest.mark.parametrize(
    ("n", "chunks"),
    [
        (0, []),
        (1, [(0, 1, 1)]),
        (6, [(0, 6, 8)]),
        (64, [(0, 64, 64)]),
        (70, [(0, 64, 64), (64, 70, 8)]),
        (129, [(0, 64, 64), (64, 128, 64), (128, 129, 1)]),
    ],
)
def test_plan(n: int, chunks: list[tuple[int, int, int]]) -> None:
    assert plan(n, DEFAULT_BUCKETS) == chunks


@pytest.fixture(scope="module")
def network() -> YoloDetectionModel:
    model = TorchYoloModel(assets.model_path("yolo11n"), threads=1)
    model.open()
    return model.network


def eager(net: YoloDetectionModel, batch: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(batch)


def test_padded_batches_come_back_sliced_and_in_order(network: YoloDetectionModel) -> None:
    graphed = GraphedModel(network, device="cpu", buckets=(1, 2, 4))
    assert not graphed.uses_graphs
    rng = np.random.default_rng(0)
    for n, padded in ((4, 0), (3, 1), (1, 0), (6, 0), (7, 1)):  # 6 = 4 + 2; 7 = 4 + 3 in a 4
        batch = torch.from_numpy(rng.random((n, 3, 64, 96), dtype=np.float32))
        before = graphed.padded_rows
        got = graphed(batch)
        assert tuple(got.shape) == (n, 84, 126)
        torch.testing.assert_close(got, eager(network, batch), rtol=1e-4, atol=1e-3)
        assert graphed.padded_rows - before == padded
    assert graphed.shapes == [(64, 96)]
    assert graphed.eager_batches == 0


def test_rows_written_straight_into_the_static_input(network: YoloDetectionModel) -> None:
    """The letterbox writes its frames into the graph's input buffer: no separate batch."""
    frames = [Nv12Image.from_packed(p) for p in decoded_nv12("carphone", (0, 40, 80))]
    boxes = [letterbox_params(f.shape, 160) for f in frames]
    hw = boxes[0].input_hw
    letterbox = Nv12Letterbox("cpu")
    graphed = GraphedModel(network, device="cpu", buckets=(1, 4))
    graphed.capture(hw)
    got = graphed.run(3, hw, lambda buffer: letterbox(frames, boxes, buffer))
    torch.testing.assert_close(got, eager(network, letterbox(frames, boxes)), rtol=1e-4, atol=1e-3)
    assert graphed.padded_rows == 1


def test_shapes_past_the_limit_run_eagerly(network: YoloDetectionModel) -> None:
    graphed = GraphedModel(network, device="cpu", buckets=(1, 2), max_shapes=1)
    assert graphed.capture((64, 64))
    assert not graphed.capture((96, 64))
    batch = torch.rand((2, 3, 96, 64))
    torch.testing.assert_close(graphed(batch), eager(network, batch), rtol=1e-4, atol=1e-3)
    assert graphed.eager_batches == 1
    assert graphed.shapes == [(64, 64)]


def test_bad_batch_shape(network: YoloDetectionModel) -> None:
    with pytest.raises(ValueError, match=r"batch must have shape \(N, 3, H, W\), but got \(2, 64, 64\)"):
        GraphedModel(network, device="cpu")(torch.zeros((2, 64, 64)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device (torch.cuda.is_available() is False)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_graphs_replay_the_eager_model(dtype: torch.dtype) -> None:
    model = TorchYoloModel(assets.model_path("yolo11n"), device="cuda", half=dtype == torch.float16)
    model.open()
    net = model.network
    graphed = GraphedModel(net, device="cuda", dtype=dtype, buckets=(1, 2, 8), channels_last=True)
    assert graphed.capture((640, 640))
    assert graphed.uses_graphs and torch.backends.cudnn.benchmark
    batch = torch.rand((5, 3, 640, 640), device="cuda", dtype=dtype).contiguous(memory_format=torch.channels_last)
    got = graphed(batch)
    want = eager(net, batch)
    scale = float(want.float().abs().max())
    assert float((got.float() - want.float()).abs().max()) <= (1e-2 if dtype == torch.float16 else 1e-3) * scale
    assert graphed.padded_rows == 3

"""The native PyTorch YOLOv8 / YOLO11 against ONNX Runtime on the same ONNX files.

The default model on real frames checks the architecture's semantics; random-weight
exports of other versions and scales check that sizes are read from the weights.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

from streamer import assets
from streamer.errors import ModelError
from streamer.models.onnx import OnnxRuntimeModel
from streamer.models.torch_yolo import TorchYoloModel
from streamer.models.yolo_arch import (
    C2PSA,
    Bottleneck,
    C2f,
    C3k,
    C3k2,
    PSABlock,
    YoloDetectionModel,
    build_from_scale,
)
from streamer.postprocess import yolo
from streamer.preprocess import letterbox

THREADS = 1


def assert_close(got: np.ndarray, ref: np.ndarray) -> None:
    """Raw outputs agree within 1e-3 of the reference's largest magnitude."""
    assert got.dtype == np.float32
    assert got.shape == ref.shape
    bound = 1e-3 * float(np.abs(ref).max())
    worst = float(np.abs(got - ref).max())
    assert worst <= bound, f"max |diff| {worst} > {bound}"


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes a (N, 4) against b (M, 4): (N, M)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area_a = (a[:, 2:] - a[:, :2]).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).prod(1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def read_frame(spec: str, index: int) -> np.ndarray:
    """Frame ``index`` of a sample clip (read in order, no seeking), or the sample still image."""
    path = assets.sample_path(spec)
    if path.suffix == ".png":
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert image is not None, path
        return image
    cap = cv2.VideoCapture(str(path))
    try:
        for _ in range(index + 1):
            ok, frame = cap.read()
            assert ok, f"cannot read frame {index} of {path}"
    finally:
        cap.release()
    return frame


@pytest.fixture(scope="module")
def default_models(model_file: Path) -> tuple[TorchYoloModel, OnnxRuntimeModel]:
    native = TorchYoloModel(model_file, threads=THREADS)
    native.open()
    reference = OnnxRuntimeModel(model_file, threads=THREADS)
    reference.open()
    return native, reference


def test_default_model_info(default_models: tuple[TorchYoloModel, OnnxRuntimeModel]) -> None:
    native, reference = default_models
    assert native.network.version == "v11"
    assert native.info.backend == "torch"
    assert native.info.layout == reference.info.layout == "v8"
    assert native.info.names == reference.info.names
    assert len(native.info.names) == 80
    assert native.info.imgsz == reference.info.imgsz == (640, 640)
    assert native.info.stride == 32
    assert "AGPL" in native.info.licence


@pytest.mark.parametrize(
    ("spec", "index", "busy"),
    [
        ("sample:bikes", 0, False),
        ("sample:bikes", 43, True),
        ("sample:carphone", 0, False),
        ("sample:bigbuckbunny", 0, False),
        ("sample:testimg", 0, True),
    ],
    ids=["bikes-0", "bikes-43", "carphone-0", "bigbuckbunny-0", "testimg"],
)
def test_default_model_matches_onnxruntime(
    default_models: tuple[TorchYoloModel, OnnxRuntimeModel], spec: str, index: int, busy: bool
) -> None:
    """Raw outputs and final detections agree; ``busy`` frames must have several detections."""
    native, reference = default_models
    image = read_frame(spec, index)
    chw, lb = letterbox(image, 640)
    batch = chw[None]
    got, ref = native(batch), reference(batch)
    assert_close(got, ref)
    assert_close(native(torch.from_numpy(batch)), ref)

    h, w = lb.source_hw
    mask = np.ones(len(native.info.names), np.bool_)
    decoded = [
        yolo.postprocess_v8(
            raw[0], 0.25, 0.7, mask, False, False, 300, yolo.MAX_NMS, lb.scale, lb.pad_x, lb.pad_y, w, h
        )
        for raw in (got, ref)
    ]
    (boxes, scores, classes), (ref_boxes, ref_scores, ref_classes) = decoded
    assert len(boxes) == len(ref_boxes)
    if busy:
        assert len(ref_boxes) >= 3
    if len(ref_boxes) == 0:
        return
    iou = box_iou(ref_boxes, boxes)
    iou[ref_classes[:, None] != classes[None, :]] = 0.0
    match = iou.argmax(1)
    assert len(set(match.tolist())) == len(match), "two reference boxes matched the same native box"
    assert (classes[match] == ref_classes).all()
    assert iou[np.arange(len(match)), match].min() >= 0.99
    np.testing.assert_allclose(scores[match], ref_scores, atol=1e-3)


def randomize(net: torch.nn.Module, seed: int) -> None:
    """Seeded weights that keep activations of order one through the depth of the network."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.endswith("dfl.conv.weight"):
                continue
            if param.ndim == 4:
                fan_in = param.shape[1] * param.shape[2] * param.shape[3]
                param.copy_(torch.randn(param.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            else:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)


def export(net: YoloDetectionModel, path: Path, *, size: int) -> Path:
    """Export like Ultralytics: parameter names as initializers, dynamic batch/size, its metadata."""
    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.zeros(1, 3, size, size),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["images"],
            output_names=["output0"],
            dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 2: "anchors"}},
        )
    proto = onnx.load(str(path))
    names = {i: name for i, name in enumerate(net.names)}
    onnx.helper.set_model_props(
        proto,
        {
            "author": "streamer tests",
            "stride": str(net.stride),
            "task": "detect",
            "batch": "1",
            "imgsz": str([size, size]),
            "names": str(names),
        },
    )
    onnx.save(proto, str(path))
    return path


def roundtrip(net: YoloDetectionModel, path: Path, *, size: int, seed: int) -> TorchYoloModel:
    """Export ``net``, load it back both ways, compare raw outputs on a non-square batch of two."""
    randomize(net, seed)
    export(net, path, size=size)
    initializers = {i.name for i in onnx.load(str(path)).graph.initializer}
    assert "model.0.conv.weight" in initializers
    native = TorchYoloModel(path, threads=THREADS)
    native.open()
    reference = OnnxRuntimeModel(path, threads=THREADS)
    reference.open()
    assert native.info.names == reference.info.names == net.names
    assert native.info.imgsz == (size, size)
    assert str(native.network) == str(net)
    loaded = native.network.state_dict()
    for key, value in net.state_dict().items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)
    batch = np.random.default_rng(seed).random((2, 3, size - 64, size), dtype=np.float32)
    assert_close(native(batch), reference(batch))
    return native


def count(net: torch.nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in net.modules())


@pytest.mark.parametrize(
    ("scale", "nc", "blocks"),
    [
        ("n", 80, 1 + 2 + 2 + 1 + 4 * 1),
        ((0.67, 0.125, 512), 3, 2 + 4 + 4 + 2 + 4 * 2),
    ],
    ids=["n", "custom"],
)
def test_v8_roundtrip(tmp_path: Path, scale: str | tuple[float, float, int], nc: int, blocks: int) -> None:
    names = tuple(f"class{i}" for i in range(nc))
    net = build_from_scale("v8", scale, nc=nc, names=names, imgsz=(256, 256))
    native = roundtrip(net, tmp_path / "v8.onnx", size=256, seed=8)
    loaded = native.network
    assert loaded.version == "v8"
    assert count(loaded, C2f) == 8
    assert count(loaded, Bottleneck) == blocks
    assert count(loaded, C3k2) == count(loaded, C2PSA) == 0


def test_v11_other_scale_roundtrip(tmp_path: Path) -> None:
    """Deeper than n (two blocks per C3k2 and C2PSA), C3k everywhere, one attention head."""
    names = ("a", "b", "c", "d", "e")
    net = build_from_scale("v11", (1.0, 0.25, 512), nc=len(names), names=names, c3k=True, imgsz=(256, 256))
    native = roundtrip(net, tmp_path / "v11.onnx", size=256, seed=11)
    loaded = native.network
    assert loaded.version == "v11"
    assert count(loaded, C3k2) == 8
    assert count(loaded, C3k) == 16
    psa = loaded.model[10]
    assert isinstance(psa, C2PSA)
    assert len(psa.m) == 2
    block = psa.m[0]
    assert isinstance(block, PSABlock)
    assert block.attn.heads == 1
    assert loaded.nc == 5


def write_onnx(path: Path, initializers: dict[str, np.ndarray]) -> Path:
    """A valid ONNX file (one Identity node) that carries only ``initializers``."""
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["images"], ["output0"])],
        "weights_only",
        [onnx.helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [onnx.helper.make_tensor_value_info("output0", onnx.TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [onnx.numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    onnx.save(onnx.helper.make_model(graph), str(path))
    return path


def default_weights(model_file: Path) -> dict[str, np.ndarray]:
    return {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(model_file)).graph.initializer}


def make_text(tmp_path: Path, model_file: Path) -> Path:
    path = tmp_path / "notes.onnx"
    path.write_text("this is not an ONNX model\n" * 10)
    return path


def make_missing(tmp_path: Path, model_file: Path) -> Path:
    return tmp_path / "absent.onnx"


def make_unrelated(tmp_path: Path, model_file: Path) -> Path:
    return write_onnx(tmp_path / "unrelated.onnx", {"fc.weight": np.zeros((4, 4), np.float32)})


def make_headless(tmp_path: Path, model_file: Path) -> Path:
    weights = {k: v for k, v in default_weights(model_file).items() if not k.startswith("model.23.")}
    return write_onnx(tmp_path / "headless.onnx", weights)


def make_backbone_only(tmp_path: Path, model_file: Path) -> Path:
    weights = {k: v for k, v in default_weights(model_file).items() if k.startswith(("model.0.", "model.1."))}
    return write_onnx(tmp_path / "backbone.onnx", weights)


def make_bad_shape(tmp_path: Path, model_file: Path) -> Path:
    weights = default_weights(model_file)
    weights["model.2.cv1.conv.weight"] = np.zeros((32, 24, 1, 1), np.float32)
    return write_onnx(tmp_path / "bad_shape.onnx", weights)


def make_missing_block(tmp_path: Path, model_file: Path) -> Path:
    weights = {k: v for k, v in default_weights(model_file).items() if not k.startswith("model.13.m.0.cv2.")}
    return write_onnx(tmp_path / "missing_block.onnx", weights)


def make_extra(tmp_path: Path, model_file: Path) -> Path:
    weights = default_weights(model_file)
    weights["model.23.proto.cv1.conv.weight"] = np.zeros((8, 64, 3, 3), np.float32)
    return write_onnx(tmp_path / "extra.onnx", weights)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (make_missing, "no such model file"),
        (make_text, "not a loadable ONNX model"),
        (make_unrelated, "no Ultralytics YOLO weights"),
        (make_headless, r"no Detect head weights \(model\.23\.\*\)"),
        (make_backbone_only, r"no Detect head weights \(model\.22\.\* for YOLOv8, model\.23\.\* for YOLO11\)"),
        (make_bad_shape, r"model\.2\.cv1\.conv\.weight has shape \(32, 24, 1, 1\), but .* fed 32 channels"),
        (make_missing_block, r"model\.13\.m\.0\.cv2\.conv\.weight is missing"),
        (make_extra, r"does not use \(model\.23\.proto\.cv1\.conv\.weight\)"),
    ],
    ids=["missing", "text", "unrelated", "headless", "backbone_only", "bad_shape", "missing_block", "extra"],
)
def test_bad_files_raise_model_error(
    tmp_path: Path, model_file: Path, make: Callable[[Path, Path], Path], message: str
) -> None:
    path = make(tmp_path, model_file)
    model = TorchYoloModel(path, threads=THREADS)
    with pytest.raises(ModelError, match=message) as info:
        model.open()
    text = str(info.value)
    assert str(path) in text
    assert "\n" not in text

"""TorchScript archives: tiny scripted networks with known outputs, loaded and decoded end to end.

Each detector ignores its pixels and answers with the same objects, placed as fractions of
the input size, so the known answer in source pixels survives any letterbox.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from streamer.errors import ConfigError, ModelError
from streamer.models.onnx import OnnxRuntimeModel
from streamer.models.torchscript import (
    TorchScriptModel,
    imgsz_from_metadata,
    names_from_metadata,
    parse_metadata,
    stride_from_metadata,
)
from streamer.postprocess.decode import decode_classes, decode_detections
from streamer.preprocess import letterbox_params
from streamer.types import Letterbox

THREADS = 1
NAMES = {0: "cat", 1: "dog"}
SOURCE_HW = (360, 640)
#: The objects in source pixels (xyxy), their classes and scores; the third is a weaker
#: duplicate of the first that NMS removes.
SOURCE_BOXES = np.array([[100, 60, 300, 200], [400, 100, 560, 340], [104, 62, 304, 202]], np.float32)
CLASSES = [0, 1, 0]
SCORES = [0.9, 0.8, 0.7]
OBJECTNESS = 0.95
#: Frames of SOURCE_HW go into a 320x192 input (scale 0.5, 6 px of padding above and below).
LB = letterbox_params(SOURCE_HW, 320, rect=True)


def fractions(lb: Letterbox = LB) -> torch.Tensor:
    """SOURCE_BOXES as (n, 4) xyxy fractions of the model input that ``lb`` describes."""
    h, w = lb.input_hw
    pads = np.array([lb.pad_x, lb.pad_y] * 2, np.float64)
    xyxy = SOURCE_BOXES.astype(np.float64) * lb.scale + pads
    return torch.tensor(xyxy / np.array([w, h, w, h], np.float64), dtype=torch.float32)


def class_scores(nc: int) -> torch.Tensor:
    """(nc, n) one-hot class scores of the objects."""
    out = torch.zeros(nc, len(CLASSES))
    for i, (c, s) in enumerate(zip(CLASSES, SCORES, strict=True)):
        out[c, i] = s
    return out


def scaled_boxes(frac: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(4, n) xyxy in input pixels from (n, 4) fractions; ``h``, ``w`` may be traced sizes."""
    xs = frac[:, 0::2] * w
    ys = frac[:, 1::2] * h
    return torch.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], 0)


def to_cxcywh(xyxy: torch.Tensor) -> torch.Tensor:
    """(4, n) xyxy -> (4, n) cx, cy, w, h."""
    return torch.cat([(xyxy[0:2] + xyxy[2:4]) / 2, xyxy[2:4] - xyxy[0:2]], 0)


class FixedV8(nn.Module):
    """(B, 4 + nc, A) with A = (H/8)·(W/8): the objects in the first columns, zeros elsewhere."""

    def __init__(self, nc: int = 2) -> None:
        super().__init__()
        self.nc = nc
        self.register_buffer("frac", fractions())
        self.register_buffer("cls", class_scores(nc))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        a = (h // 8) * (w // 8)
        head = torch.cat([to_cxcywh(scaled_boxes(self.frac, h, w)), self.cls], 0).to(x.dtype)
        rest = torch.zeros(4 + self.nc, a - head.shape[1], dtype=x.dtype, device=x.device)
        return torch.cat([head, rest], 1).unsqueeze(0).expand(b, -1, -1)


class FixedV5(nn.Module):
    """(B, A, 5 + nc): ``cx, cy, w, h, objectness, class scores`` per row."""

    def __init__(self, nc: int = 2) -> None:
        super().__init__()
        self.nc = nc
        self.register_buffer("frac", fractions())
        self.register_buffer("cls", class_scores(nc))
        self.register_buffer("obj", torch.full((1, len(CLASSES)), OBJECTNESS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        a = (h // 8) * (w // 8)
        head = torch.cat([to_cxcywh(scaled_boxes(self.frac, h, w)), self.obj, self.cls], 0).t().to(x.dtype)
        rest = torch.zeros(a - head.shape[0], 5 + self.nc, dtype=x.dtype, device=x.device)
        return torch.cat([head, rest], 0).unsqueeze(0).expand(b, -1, -1)


class FixedEnd2End(nn.Module):
    """(B, 300, 6): ``x1, y1, x2, y2, score, class`` rows, already suppressed."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("frac", fractions()[:2])
        self.register_buffer("tail", torch.tensor([SCORES[:2], CLASSES[:2]], dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        head = torch.cat([scaled_boxes(self.frac, h, w), self.tail], 0).t().to(x.dtype)
        rest = torch.zeros(300 - head.shape[0], 6, dtype=x.dtype, device=x.device)
        return torch.cat([head, rest], 0).unsqueeze(0).expand(b, -1, -1)


class WithExtras(nn.Module):
    """A detector whose forward returns a tuple, like Ultralytics' ``(y, feature maps)``."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = FixedV8()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.inner(x), [x]


class FixedSize(nn.Module):
    """A detector that only runs at 320x320 and batch 1, like a traced graph with baked shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = FixedV8()
        self.register_buffer("bias", torch.zeros(1, 3, 320, 320))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != 1:
            raise RuntimeError("this graph was traced for batch 1")
        return self.inner(x + self.bias)


class ColourClassifier(nn.Module):
    """Logits over (red, blue) from the mean of each RGB channel: 4·(R − B) and 4·(B − R)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[4.0, 0.0, -4.0], [-4.0, 0.0, 4.0]]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


class Identity4D(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def metadata(**changes: object) -> dict[str, object]:
    meta: dict[str, object] = {"names": NAMES, "stride": 32, "imgsz": [320, 320], "task": "detect"}
    meta.update(changes)
    return meta


def save_scripted(module: nn.Module, meta: dict[str, object] | None, path: Path) -> Path:
    extra = {"config.txt": json.dumps(meta)} if meta is not None else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(module.eval()), str(path), _extra_files=extra)
    return path


def open_model(path: Path, **kw: object) -> TorchScriptModel:
    model = TorchScriptModel(path, threads=THREADS, **kw)  # type: ignore[arg-type]
    model.open()
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("torchscript")
    made: dict[str, Callable[[], tuple[nn.Module, dict[str, object] | None]]] = {
        "v8": lambda: (FixedV8(), metadata()),
        "v5": lambda: (FixedV5(), metadata()),
        "end2end": lambda: (FixedEnd2End(), metadata()),
        "tuple": lambda: (WithExtras(), metadata(imgsz=320)),
        "fixed": lambda: (FixedSize(), metadata()),
        "classify": lambda: (ColourClassifier(), {"names": {"0": "red", "1": "blue"}, "imgsz": [64, 64],
                                                 "task": "classify", "license": "CC0"}),
        "bare_classifier": lambda: (ColourClassifier(), None),
        "half_classifier": lambda: (ColourClassifier().half(), None),
        "four_d": lambda: (Identity4D(), metadata(imgsz=[64, 96])),
        "segment": lambda: (FixedV8(), metadata(task="segment")),
    }
    return {name: save_scripted(*build(), root / f"{name}.torchscript") for name, build in made.items()}


def input_batch(lb: Letterbox = LB, batch: int = 1) -> np.ndarray:
    return np.zeros((batch, 3, *lb.input_hw), np.float32)


def assert_known_detections(raw: np.ndarray, layout: str, expected_scores: list[float]) -> None:
    dets = decode_detections(raw, layout, np.ones(2, np.bool_), LB, conf=0.25, iou=0.7)
    assert dets.class_id.tolist() == [0, 1]
    np.testing.assert_allclose(dets.xyxy, SOURCE_BOXES[:2], atol=1e-3)
    np.testing.assert_allclose(dets.confidence, expected_scores, rtol=1e-6)


# --------------------------------------------------------------------------- detectors


@pytest.mark.parametrize(
    ("name", "layout", "scores"),
    [
        ("v8", "v8", SCORES[:2]),
        ("v5", "v5", [s * OBJECTNESS for s in SCORES[:2]]),
        ("end2end", "end2end", SCORES[:2]),
        ("tuple", "v8", SCORES[:2]),
    ],
)
def test_detector_decodes_to_the_known_boxes(files: dict[str, Path], name: str, layout: str, scores: list[float]) -> None:
    model = open_model(files[name])
    info = model.info
    assert (info.backend, info.task, info.layout) == ("torchscript", "detect", layout)
    assert info.names == ("cat", "dog") and info.imgsz == (320, 320) and info.stride == 32
    assert info.dynamic and info.max_batch is None and info.device == "cpu"
    raw = model(input_batch())
    assert raw.dtype == np.float32 and raw.flags.c_contiguous
    assert_known_detections(raw[0], layout, scores)
    twice = model(input_batch(batch=2))
    assert twice.shape[0] == 2
    np.testing.assert_array_equal(twice[1], raw[0])


def test_fixed_size_model_is_not_dynamic(files: dict[str, Path]) -> None:
    model = open_model(files["fixed"])
    info = model.info
    assert info.layout == "v8" and not info.dynamic and info.max_batch == 1
    assert model(np.zeros((1, 3, 320, 320), np.float32)).shape == (1, 6, 1600)
    with pytest.raises(ModelError, match=r"fixed\.torchscript: model failed on a batch of shape \(1, 3, 192, 320\)"):
        model(input_batch())


def test_names_argument_overrides_the_metadata(files: dict[str, Path]) -> None:
    assert open_model(files["v8"], names=("tabby", "terrier")).info.names == ("tabby", "terrier")


def test_task_that_contradicts_the_output_is_refused(files: dict[str, Path]) -> None:
    with pytest.raises(ModelError, match=r"task 'classify' was asked for, but the output has shape \(1, 6, 1600\)"):
        open_model(files["v8"], task="classify")
    with pytest.raises(ModelError, match=r"task 'detect' was asked for, but the output has shape \(1, 2\)"):
        open_model(files["classify"], task="detect")


def test_unsupported_task_in_metadata(files: dict[str, Path]) -> None:
    with pytest.raises(ModelError, match=r"segment\.torchscript: task 'segment' is not supported, expecting one of"):
        open_model(files["segment"])


# --------------------------------------------------------------------------- classifier


@pytest.mark.parametrize("name", ["classify", "bare_classifier", "half_classifier"])
def test_classifier_top1(files: dict[str, Path], name: str) -> None:
    model = open_model(files[name])
    info = model.info
    assert info.task == "classify" and info.layout == "classify"
    if name == "classify":
        assert info.names == ("red", "blue") and info.imgsz == (64, 64) and info.licence == "CC0"
    else:  # no metadata: numbered classes, the default size
        assert info.names == ("0", "1") and info.imgsz == (640, 640)
    batch = np.zeros((2, 3, 48, 80), np.float32)
    batch[0, 0] = 1.0  # red
    batch[1, 2] = 1.0  # blue
    raw = model(batch)
    assert raw.shape == (2, 2)
    p = 1.0 / (1.0 + np.exp(-8.0))
    for image, want in ((0, 0), (1, 1)):
        top = decode_classes(raw[image], 1)
        assert top.class_id.tolist() == [want]
        assert top.probability[0] == pytest.approx(p, rel=1e-6)


# --------------------------------------------------------------------------- bad files and outputs


def test_not_a_torchscript_archive(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.torchscript"
    garbage.write_bytes(b"\x89PNG not a model at all")
    with pytest.raises(ModelError) as info:
        open_model(garbage)
    text = str(info.value)
    assert text.startswith(f"{garbage}: not a TorchScript archive (") and "\n" not in text
    state = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, state)
    with pytest.raises(ModelError, match=r"weights\.pt: not a TorchScript archive"):
        open_model(state)
    with pytest.raises(ModelError, match="no such model file"):
        open_model(tmp_path / "missing.torchscript")


def test_unsupported_output_names_the_shape(files: dict[str, Path]) -> None:
    with pytest.raises(ModelError, match=r"four_d\.torchscript: unsupported output layout: got shape \(1, 3, 64, 96\)"):
        open_model(files["four_d"])


def test_bad_arguments(files: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"invalid task 'segment', expecting one of \['auto', 'detect', 'classify'\]"):
        TorchScriptModel(files["v8"], task="segment")
    with pytest.raises(ModelError, match="unsupported device 'xla', expecting one of"):
        open_model(files["v8"], device="xla")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="device 'cuda' needs a CUDA build of PyTorch"):
            open_model(files["v8"], device="cuda")
    model = open_model(files["v8"])
    with pytest.raises(ValueError, match=r"batch must be \(B, 3, H, W\), but got shape \(3, 320, 320\)"):
        model(np.zeros((3, 320, 320), np.float32))


def test_half_on_cpu_runs_fp32(files: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        model = open_model(files["v8"], half=True)
    assert "half precision needs a CUDA device" in caplog.text
    assert model(input_batch()).dtype == np.float32


# --------------------------------------------------------------------------- metadata


def test_parse_metadata() -> None:
    assert parse_metadata(b"") == {}
    assert parse_metadata(json.dumps(metadata()).encode()) == {
        "names": {"0": "cat", "1": "dog"}, "stride": 32, "imgsz": [320, 320], "task": "detect"}
    assert parse_metadata("{'names': {0: 'cat'}, 'stride': 16}") == {"names": {0: "cat"}, "stride": 16}
    assert parse_metadata("__import__('os').system('false')") == {}
    assert parse_metadata(b"[1, 2]") == {}
    assert parse_metadata(b"\xff\xfe{") == {}


@pytest.mark.parametrize(
    ("value", "names"),
    [
        (None, ()),
        ({}, ()),
        ({"0": "cat", "1": "dog"}, ("cat", "dog")),
        ({0: "cat", 2: "bird"}, ("cat", "1", "bird")),
        (["cat", "dog"], ("cat", "dog")),
        ("{0: 'cat', 1: 'dog'}", ("cat", "dog")),
        ({"x": "cat"}, ()),
        ({"-1": "cat"}, ()),
        ({"99999999": "cat"}, ()),
        ({True: "cat"}, ()),
        (42, ()),
    ],
)
def test_names_from_metadata(value: object, names: tuple[str, ...]) -> None:
    assert names_from_metadata(value) == names


@pytest.mark.parametrize(
    ("value", "imgsz"),
    [
        (None, (640, 640)),
        (320, (320, 320)),
        ([320], (320, 320)),
        ([288, 512], (288, 512)),
        ("[288, 512]", (288, 512)),
        ([0, 512], (640, 640)),
        ([1, 2, 3], (640, 640)),
        (True, (640, 640)),
        ("big", (640, 640)),
    ],
)
def test_imgsz_from_metadata(value: object, imgsz: tuple[int, int]) -> None:
    assert imgsz_from_metadata(value) == imgsz


@pytest.mark.parametrize(("value", "stride"), [(None, 32), (64, 64), ("16", 16), ([8, 16, 32], 32), (0, 32), (True, 32)])
def test_stride_from_metadata(value: object, stride: int) -> None:
    assert stride_from_metadata(value) == stride


# --------------------------------------------------------------------------- same layouts through ONNX


def export_onnx(module: nn.Module, path: Path, meta: dict[str, object]) -> Path:
    """Export with the TorchScript-based exporter, dynamic batch and size, Ultralytics-style metadata."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (torch.zeros(1, 3, 320, 320),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["images"],
            output_names=["output0"],
            dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 1: "rows"}},
        )
    proto = onnx.load(str(path))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize(
    ("module", "layout", "scores"),
    [
        (FixedV5, "v5", [s * OBJECTNESS for s in SCORES[:2]]),
        (FixedEnd2End, "end2end", SCORES[:2]),
    ],
    ids=["v5", "end2end"],
)
def test_onnx_export_is_recognised_the_same_way(
    files: dict[str, Path], tmp_path: Path, module: type[nn.Module], layout: str, scores: list[float]
) -> None:
    scripted = open_model(files[layout])
    exported = OnnxRuntimeModel(export_onnx(module(), tmp_path / f"{layout}.onnx", metadata()), threads=THREADS)
    exported.open()
    for field in ("task", "layout", "names", "imgsz", "stride", "dynamic", "max_batch"):
        assert getattr(exported.info, field) == getattr(scripted.info, field), field
    raw = exported(input_batch())
    np.testing.assert_allclose(raw, scripted(input_batch()), rtol=1e-6, atol=1e-4)
    assert_known_detections(raw[0], layout, scores)

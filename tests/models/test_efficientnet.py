"""EfficientNet-Lite0: the shipped weights load strictly, the preprocessing is the one they
were trained with, ONNX Runtime and PyTorch agree, and the export cache survives damage."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from streamer import assets
from streamer.errors import ConfigError, ModelError
from streamer.models import describe_builtin_models, load_model
from streamer.models.efficientnet import (
    CROP_FRACTION,
    INPUT_SIZE,
    MEAN_RGB,
    STD_RGB,
    EfficientNetLite0,
    cache_folder,
    center_crop,
    imagenet_names,
    to_input,
)
from streamer.models.efficientnet_arch import EfficientNetLite0 as Network
from streamer.models.efficientnet_arch import build_lite0
from tests import lite0


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return torch.load(str(lite0.weights()), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def network(state: dict[str, torch.Tensor]) -> Network:
    return build_lite0(state)


def test_class_names_are_imagenet_1k() -> None:
    names = imagenet_names()
    assert len(names) == 1000
    known = {0: "tench", 207: "golden retriever", 281: "tabby", 444: "bicycle-built-for-two", 671: "mountain bike",
             999: "toilet tissue"}
    assert {i: names[i] for i in known} == known
    lines = (Path(__file__).parents[2] / "streamer" / "labels" / "imagenet1k.txt").read_text().splitlines()
    assert len(lines) == 1000 and all(line == line.strip() and line for line in lines)


def test_weights_load_strictly(state: dict[str, torch.Tensor], network: Network) -> None:
    assert set(network.state_dict()) == set(state)
    assert sum(p.numel() for p in network.parameters()) == 4_652_008  # the published 4.65 M parameters


@pytest.mark.parametrize(
    "change",
    [
        lambda s: {},
        lambda s: {k: v for k, v in s.items() if k != "_fc.bias"},
        lambda s: {**s, "_blocks.16._bn1.weight": torch.zeros(3)},
        lambda s: {**s, "_fc.weight": torch.zeros(10, 1280)},
    ],
    ids=["empty", "missing key", "extra key", "wrong shape"],
)
def test_weights_that_do_not_fit_are_refused(state: dict[str, torch.Tensor], change) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RuntimeError):
        build_lite0(change(state))


def test_same_padding_is_tensorflows() -> None:
    # A stride-2 3x3 convolution on an even input pads 0 before and 1 after (TensorFlow SAME),
    # so output pixel (0, 0) sums input rows and columns 0..2 (9 ones here); PyTorch's
    # symmetric padding would centre it on (0, 0) and sum only 4 of them.
    net = Network()
    conv = net._conv_stem
    x = torch.zeros(1, 3, 8, 8)
    x[0, 0, :3, :3] = 1.0
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = 1.0
        y = conv(x)
    assert y.shape == (1, 32, 4, 4)
    assert float(y[0, 0, 0, 0]) == 9.0 and float(y[0, 0, 0, 1]) == 3.0  # window (0, 1) shares column 2


def test_normalisation_matches_the_checkpoints_statistics(network: Network) -> None:
    # With the input normalisation used in training, the stem's output on natural pictures has
    # about the mean and variance its batch norm recorded then (running_mean, running_var).
    # 127/128 must be closest in mean on every clip, and in variance over all the pictures
    # (one picture's contrast says little about the variance; 25 of them do).
    candidates = {
        "inception 127/128": (MEAN_RGB, STD_RGB),
        "ImageNet mean/std": (np.array([0.485, 0.456, 0.406]) * 255, np.array([0.229, 0.224, 0.225]) * 255),
        "[0, 1]": (0.0, 255.0),
    }
    sets = {
        "bikes": lite0.clip_frames("sample:bikes", 12, step=20),
        "carphone": lite0.clip_frames("sample:carphone", 12, step=10),
        "testimg": [lite0.testimg()],
    }
    sets["all"] = [frame for frames in sets.values() for frame in frames]
    bn = network._bn0
    for set_name, frames in sets.items():
        pictures = [cv2.resize(center_crop(f), (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA) for f in frames]
        rgb = np.stack(pictures)[..., ::-1].astype(np.float32)
        variance_error, mean_error = {}, {}
        for name, (mean, std) in candidates.items():
            x = torch.from_numpy(((rgb - mean) / std).astype(np.float32).transpose(0, 3, 1, 2).copy())
            with torch.inference_mode():
                y = network._conv_stem(x)
            variance_error[name] = abs(float(torch.log(y.var(dim=(0, 2, 3)).sum() / bn.running_var.sum())))
            mean_error[name] = float((y.mean(dim=(0, 2, 3)) - bn.running_mean).abs().mean())
        assert min(mean_error, key=mean_error.__getitem__) == "inception 127/128", (set_name, mean_error)
        if set_name == "all":
            assert min(variance_error, key=variance_error.__getitem__) == "inception 127/128", variance_error
    assert (MEAN_RGB, STD_RGB) == (127.0, 128.0)


def test_to_input_layout() -> None:
    assert to_input([]).shape == (0, 3, INPUT_SIZE, INPUT_SIZE)
    picture = np.zeros((10, 30, 3), np.uint8)
    picture[..., 0] = 255  # blue in BGR
    x = to_input([picture])
    assert x.shape == (1, 3, INPUT_SIZE, INPUT_SIZE) and x.dtype == np.float32
    assert np.allclose(x[0, 2], (255 - 127) / 128) and np.allclose(x[0, 0], -127 / 128)  # RGB order
    with pytest.raises(ValueError, match="uint8"):
        to_input([np.zeros((4, 4), np.uint8)])


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((256, 256), (224, 224)), ((100, 300), (87, 87)), ((1, 1), (1, 1))],
)
def test_center_crop(shape: tuple[int, int], expected: tuple[int, int]) -> None:
    image = np.arange(shape[0] * shape[1] * 3, dtype=np.uint32).reshape(*shape, 3)
    out = center_crop(image)
    assert out.shape[:2] == expected
    assert CROP_FRACTION == 224 / 256


def test_onnxruntime_and_torch_agree_on_real_crops() -> None:
    image = lite0.testimg()
    crops = [lite0.crop(image, lite0.TESTIMG_DOG), lite0.crop(image, lite0.TESTIMG_BICYCLE), image,
             lite0.clip_frames("sample:bikes", 1)[0]]
    ort_model = EfficientNetLite0(lite0.weights(), cache_dir=lite0.cache_home() / "streamer", threads=2)
    torch_model = EfficientNetLite0(lite0.weights(), backend="torch", threads=2)
    ort_model.open()
    torch_model.open()
    batch = ort_model.classify_input(crops)
    a, b = ort_model(batch), torch_model(batch)
    pa, pb = (np.exp(v - v.max(1, keepdims=True)) for v in (a, b))
    pa, pb = pa / pa.sum(1, keepdims=True), pb / pb.sum(1, keepdims=True)
    for row in range(len(crops)):
        top_a, top_b = np.argsort(-pa[row])[:5], np.argsort(-pb[row])[:5]
        assert top_a.tolist() == top_b.tolist()
        assert np.abs(pa[row, top_a] - pb[row, top_a]).max() < 1e-4
    assert ort_model.info.backend == "onnxruntime" and torch_model.info.backend == "torch"
    assert ort_model.info.task == "classify" and ort_model.info.names == imagenet_names()


def test_export_is_reused_and_rebuilt_when_damaged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "streamer"
    folder.mkdir()
    source = next((lite0.cache_home() / "streamer").glob("efficientnet-lite0-*.onnx"))
    cached = folder / source.name
    # Partial (truncated) file, as a crash mid-copy would leave it.
    cached.write_bytes(source.read_bytes()[:100_000])
    model = EfficientNetLite0(lite0.weights(), cache_dir=folder, threads=1)
    with caplog.at_level(logging.WARNING):
        model.open()
    assert model.exported and "rebuilding" in caplog.text
    assert cached.stat().st_size == source.stat().st_size
    assert not list(folder.glob("*.part"))
    again = EfficientNetLite0(lite0.weights(), cache_dir=folder, threads=1)
    again.open()
    assert not again.exported and again.onnx_path == cached


def test_cache_folder_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_folder() == tmp_path / "streamer"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_folder() == Path.home() / ".cache" / "streamer"


def test_builtin_name_loads_and_is_listed() -> None:
    model = load_model("efficientnet-lite0", device="cpu")
    assert isinstance(model, EfficientNetLite0) and model.backend == "onnxruntime"
    assert load_model("efficientnet-lite0", backend="torch", device="cpu").backend == "torch"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="not a TorchScript file"):
        load_model("efficientnet-lite0", backend="torchscript")
    rows = {row["name"]: row for row in describe_builtin_models()}
    row = rows["efficientnet-lite0"]
    assert (row["task"], row["classes"], row["input"], row["licence"]) == ("classify", "1000", "224x224", "Apache-2.0")
    assert assets.MODELS["efficientnet-lite0"].task == "classify"


def test_missing_weights_file_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such weights file"):
        EfficientNetLite0(tmp_path / "none.pth").open()
    bad = tmp_path / "bad.pth"
    bad.write_bytes(os.urandom(64))
    with pytest.raises(ModelError, match="not a loadable state dict"):
        EfficientNetLite0(bad, backend="torch").open()


def test_unwritable_cache_is_a_model_error_naming_the_folder(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    with pytest.raises(ModelError, match="cannot write the ONNX export cache.*XDG_CACHE_HOME"):
        EfficientNetLite0(lite0.weights(), cache_dir=blocked / "streamer").open()

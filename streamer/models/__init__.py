"""Model loading: a built-in name or a file path, and a backend that runs it."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from streamer import assets
from streamer.errors import ConfigError, ModelError, interrupted
from streamer.models.base import Model, ModelInfo, default_threads

if TYPE_CHECKING:
    from streamer.config import ClassifyConfig, ModelConfig

__all__ = ["BACKENDS", "InferencePlan", "Model", "ModelInfo", "PlannedModels", "inference_plan", "load_labels",
           "load_model", "model_for", "planned_models", "resolve_device", "resolve_model_path"]

BACKENDS = ("auto", "onnxruntime", "torch", "torchscript")
TORCHSCRIPT_SUFFIXES = (".torchscript", ".ts", ".jit", ".pt")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def resolve_model_path(model: str) -> tuple[Path, str]:
    """Return (file, licence) for a built-in model name or a path."""
    if model in assets.MODELS:
        return assets.model_path(model), assets.MODELS[model].licence
    path = Path(model)
    if path.suffix or path.exists() or "/" in model:
        if not path.exists():
            raise ModelError(f"{model}: no such model file")
        if not path.is_file():
            raise ModelError(f"{model}: not a model file (it is a directory)")
        return path, ""
    raise ModelError(f"unknown model '{model}', expecting one of {sorted(assets.MODELS)} or a model file path")


def _cuda_driver_present() -> bool:
    """Whether an NVIDIA driver is installed, found without importing PyTorch (which costs ~1 s).

    On Linux the loaded driver shows as device files and a /proc entry (also inside
    containers given a GPU), WSL as /dev/dxg; elsewhere the driver library is looked up.
    """
    if any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/dxg")):
        return True
    if sys.platform.startswith("linux"):
        return False
    import ctypes.util

    return any(ctypes.util.find_library(name) for name in ("cuda", "nvcuda"))


def _torch_build_has_accelerator() -> bool:
    """False when the installed PyTorch is a CPU-only build (read from its version, no import)."""
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return False
    return "+cpu" not in version


def resolve_device(device: str) -> str:
    """Turn ``auto`` into the best available device; validate the others.

    PyTorch is imported only when an accelerator may be there (an NVIDIA driver, or Apple
    silicon for MPS) and the installed PyTorch is not a CPU-only build: everywhere else
    ``auto`` is the CPU, and a CPU run on ONNX Runtime never loads PyTorch.
    """
    if not _DEVICE.match(device):
        raise ConfigError(f"invalid device '{device}', expecting one of ['auto', 'cpu', 'cuda', 'cuda:N', 'mps']")
    if device != "auto":
        return device
    apple_silicon = sys.platform == "darwin" and platform.machine() == "arm64"
    if not (apple_silicon or _cuda_driver_present()) or not _torch_build_has_accelerator():
        return "cpu"
    try:
        import torch
    except ImportError as exc:
        if interrupted(exc):
            raise KeyboardInterrupt from None
        return "cpu"
    if torch.cuda.is_available():
        return "cuda:0"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _has_onnxruntime() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def pick_backend(suffix: str, device: str) -> str:
    """``auto``: ONNX files run on ONNX Runtime on the CPU (about 2x faster than eager PyTorch
    for YOLO11n on 2 cores: 33-44 ms vs 65-69 ms per 640x288 frame) and natively in PyTorch
    on CUDA/MPS (fp16, channels_last, no ONNX Runtime GPU build needed)."""
    if suffix == ".onnx":
        if device == "cpu" and _has_onnxruntime():
            return "onnxruntime"
        return "torch"
    return "torchscript"


def load_model(
    model: str, *, backend: str = "auto", device: str = "auto", threads: int | None = None, half: bool = False,
    task: str = "auto", labels: str | None = None,
) -> Model:
    """Build (but do not open) the model named ``model`` on ``backend``: with ``task`` it
    insists on a detector or classifier when it opens, with ``labels`` (a file, one class
    name a line) it takes those class names instead of its own."""
    if backend not in BACKENDS:
        raise ConfigError(f"invalid backend '{backend}', expecting one of {list(BACKENDS)}")
    return _build_model(model, located=resolve_model_path(model), backend=backend, device=resolve_device(device),
                        threads=threads, half=half, task=task, names=load_labels(labels) if labels else None)


def _build_model(model: str, *, located: tuple[Path, str], backend: str, device: str, threads: int | None,
                 half: bool, task: str, names: tuple[str, ...] | None) -> Model:
    """The model class for ``model`` (found at ``located``: its file and licence) on ``device``."""
    path, licence = located
    asset = assets.MODELS.get(model)
    if asset is not None and asset.arch:
        return _load_builtin_network(asset, path, backend, device, threads, half, task, names)
    suffix = path.suffix.lower()
    if suffix not in (".onnx", *TORCHSCRIPT_SUFFIXES):
        raise ModelError(
            f"{path}: unsupported model file type '{suffix or path.name}', expecting one of "
            f"{['.onnx', *TORCHSCRIPT_SUFFIXES]}"
        )
    chosen = pick_backend(suffix, device) if backend == "auto" else backend
    if suffix in TORCHSCRIPT_SUFFIXES or chosen == "torchscript":
        if suffix not in TORCHSCRIPT_SUFFIXES:
            raise ConfigError(f"{path}: the torchscript backend needs a TorchScript file {list(TORCHSCRIPT_SUFFIXES)}")
        if backend not in ("auto", "torchscript"):
            raise ConfigError(f"{path}: a TorchScript file runs on the torchscript backend, not {backend}")
        from streamer.models.torchscript import TorchScriptModel

        # Loaded with torch.jit.load: TorchScript's own restricted format, never a Python pickle.
        return TorchScriptModel(path, device=device, threads=threads, half=half, licence=licence, expected_task=task,
                                override_names=names)
    if chosen == "onnxruntime":
        from streamer.models.onnx import OnnxRuntimeModel

        if device == "mps":
            raise ConfigError("ONNX Runtime has no MPS device here: use --backend torch or --device cpu")
        return OnnxRuntimeModel(path, device=device, threads=threads, licence=licence, expected_task=task,
                                override_names=names)
    from streamer.models.torch_yolo import TorchYoloModel

    return TorchYoloModel(path, device=device, threads=threads, half=half, licence=licence, expected_task=task,
                          override_names=names)


def _load_builtin_network(
    asset: assets.Asset, path: Path, backend: str, device: str, threads: int | None, half: bool, task: str,
    names: tuple[str, ...] | None,
) -> Model:
    """A built-in network streamer rebuilds from a state dict (see ``Asset.arch``)."""
    from streamer.models.efficientnet import EfficientNetLite0

    if backend == "torchscript":
        raise ConfigError(f"{asset.name} is a state dict, not a TorchScript file: use --backend onnxruntime or torch")
    if backend == "auto":
        # On the CPU ONNX Runtime is 3.5-8x faster for this network (see streamer.models.efficientnet).
        backend = "onnxruntime" if device == "cpu" and _has_onnxruntime() else "torch"
    if backend == "onnxruntime" and device == "mps":
        raise ConfigError("ONNX Runtime has no MPS device here: use --backend torch or --device cpu")
    return EfficientNetLite0(path, backend=backend, device=device, threads=threads, half=half, licence=asset.licence,
                             expected_task=task, override_names=names)


@dataclass(frozen=True)
class InferencePlan:
    """How a job runs its model: ``batch`` frames a call, ``workers`` calls in flight,
    ``threads`` intra-op threads each (None: the backend's default)."""

    batch: int
    workers: int
    threads: int | None


def inference_plan(device: str, cfg: ModelConfig, files: bool, cameras: int = 0) -> InferencePlan:
    """The plan for a model on ``device`` (``cpu``, ``cuda:N``, ``mps``) reading files, one
    live source or ``cameras`` cameras; the model is built with its threads.

    Files on the CPU: two model calls in flight, one thread each, frames taken one at a time.
    On shared 2-core machines one call spread over two threads loses time whenever either
    thread is descheduled; two single-thread calls do not wait for each other. Measured with
    YOLO11n on bikes, model alone, five interleaved rounds: 2 workers x 1 thread 30.9 fps
    (28.6-31.8), 1 x 2 threads 27.2 fps at batch 1, 27.2 at batch 2, 29.1 at batch 4.
    On CUDA one worker with batches of 8 keeps the GPU busy. A live source keeps one worker:
    a frame's latency is one call on all threads.

    Several cameras (``cameras`` > 0) on the CPU are planned like files: batching buys
    nothing there (YOLO11n at 640x384 with two threads, model alone: 14.1 ms an image at
    batch 1, 14.8 at 4, 19.5 at 16) and a big batch is a long wait for its first frame,
    while two single-thread calls keep the model going when the cameras' decoders take a
    core away (16 cameras of 1080p30, measured together: 49-52 results/s against 31-34 at
    batch 1 and 35-38 at batch 4 on one two-thread call). On CUDA one batched call takes the
    newest frame of every camera. ``model.batch``, ``model.workers`` and ``model.threads``
    override all of this.
    """
    on_cpu = device == "cpu"
    workers = cfg.workers or (2 if (files or cameras) and on_cpu and (os.cpu_count() or 1) >= 2 else 1)
    batch = cfg.batch or (8 if files and device.startswith("cuda") else cameras if cameras and not on_cpu else 1)
    threads = cfg.threads if cfg.threads is not None or workers == 1 else max(1, default_threads() // workers)
    return InferencePlan(batch, workers, threads)


@dataclass(frozen=True)
class PlannedModels:
    """A job's models, built (not opened): its ``model``, run as ``plan`` says, and the
    ``classifier`` of a ``classify:`` section."""

    plan: InferencePlan
    model: Model
    classifier: Model | None = None


def planned_models(cfg: ModelConfig, classify: ClassifyConfig | None = None, *, files: bool,
                   cameras: int = 0) -> PlannedModels:
    """The plan for the ``model:`` section's model (see :func:`inference_plan`) on the device
    it resolves to, the model built with that plan's threads and the ``classify:`` section's
    second model (it checks at open that it is a classifier and says which key is wrong when
    it is not)."""
    plan = inference_plan(resolve_device(cfg.device), cfg, files=files, cameras=cameras)
    sections = [(cfg, plan.threads), *([(classify.model_section, None)] if classify is not None else [])]
    model, *classifier = [model_for(section, threads) for section, threads in sections]
    return PlannedModels(plan, model, classifier[0] if classifier else None)


def model_for(cfg: ModelConfig, threads: int | None = None) -> Model:
    """The model a ``model:`` section describes, with its task check and labels (not opened
    yet), on ``threads`` intra-op threads a call (see :func:`inference_plan`) or the section's."""
    return load_model(cfg.name, backend=cfg.backend, device=cfg.device,
                      threads=threads if threads is not None else cfg.threads, half=cfg.half, task=cfg.task,
                      labels=cfg.labels)


def load_labels(path: str | Path) -> tuple[str, ...]:
    """Class names from a text file, one per line (blank lines and ``#`` comments skipped)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such labels file")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read labels: {exc}") from None
    names = tuple(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))
    if not names:
        raise ConfigError(f"{p}: the labels file has no names")
    return names


def describe_builtin_models() -> list[dict[str, str]]:
    """One row per built-in model: name, package, task, classes, input size, licence."""
    from streamer.errors import AssetError
    from streamer.models.base import parse_imgsz, parse_names

    rows = []
    for name, asset in assets.MODELS.items():
        row = {"name": name, "package": asset.distribution, "licence": asset.licence, "description": asset.description}
        try:
            path = assets.locate(asset)
        except AssetError:
            row.update(task="?", classes="?", input="?", status=f"not installed: {asset.install_command}")
            rows.append(row)
            continue
        if asset.arch:
            from streamer.models.efficientnet import INPUT_SIZE, imagenet_names

            row.update(task=asset.task, classes=str(len(imagenet_names())), input=f"{INPUT_SIZE}x{INPUT_SIZE}",
                       status=str(path))
            rows.append(row)
            continue
        meta: dict[str, str] = {}
        try:
            import onnx

            proto = onnx.load(str(path), load_external_data=False)
            meta = {p.key: p.value for p in proto.metadata_props}
        except Exception as exc:  # noqa: BLE001 - the listing still shows what is known
            if interrupted(exc):
                raise KeyboardInterrupt from None
        h, w = parse_imgsz(meta.get("imgsz"))
        row.update(task=meta.get("task", "detect"), classes=str(len(parse_names(meta.get("names")))),
                   input=f"{w}x{h} (any multiple of 32)", status=str(path))
        rows.append(row)
    return rows

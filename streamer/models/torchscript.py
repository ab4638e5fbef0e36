"""TorchScript archives run in PyTorch, such as Ultralytics' ``yolo export format=torchscript``.

A TorchScript archive is a zip of serialized graphs and tensors; loading it runs no Python code
from the file, unlike unpickling a checkpoint. Ultralytics stores its metadata beside the
graph as the extra file ``config.txt``: ``json.dumps`` of a dict with ``names`` (class id ->
name; the ids become strings in JSON), ``stride``, ``imgsz``, ``task`` and ``license``. It is
read with ``json.loads`` (or ``ast.literal_eval`` for Python-literal text), never evaluated.
"""

from __future__ import annotations

import ast
import itertools
import json
import logging
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from streamer.errors import ConfigError, ModelError
from streamer.models.base import Model, ModelInfo, default_threads, detect_layout, parse_names

log = logging.getLogger(__name__)

METADATA_FILE = "config.txt"
TASKS = ("auto", "detect", "classify")
_UNSUPPORTED_TASKS = ("segment", "pose", "obb")
_DEVICES = ["cpu", "cuda", "cuda:N", "mps"]
_DEFAULT_IMGSZ = (640, 640)
_MAX_METADATA = 1_000_000
_MAX_CLASSES = 100_000
_MAX_SIDE = 16_384
_CLASS_ID = re.compile(r"[0-9]{1,6}")


def _first_line(exc: BaseException) -> str:
    """The gist of an error: its first line, up to the first sentence end, at most 200 characters."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line.split(". ")[0][:200]


def parse_metadata(data: bytes | str) -> dict[str, object]:
    """The metadata dict of a ``config.txt`` extra file; ``{}`` when it is absent or unreadable.

    JSON first (what Ultralytics writes), then a Python literal (``str(dict)``); neither can
    run code.
    """
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else str(data)
    text = text.strip()
    if not text or len(text) > _MAX_METADATA:
        return {}
    value: object = None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        try:
            value = ast.literal_eval(text)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            value = None
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


def _class_id(key: object) -> int | None:
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return key if 0 <= key < _MAX_CLASSES else None
    if isinstance(key, str) and _CLASS_ID.fullmatch(key.strip()):
        value = int(key)
        return value if value < _MAX_CLASSES else None
    return None


def names_from_metadata(value: object) -> tuple[str, ...]:
    """Class names from a metadata ``names`` value: a dict of id -> name (ids as ints or digit
    strings, gaps filled with the id) or a list; ``()`` when it is neither."""
    if isinstance(value, str):
        return parse_names(value) if len(value) < _MAX_METADATA else ()
    if isinstance(value, dict):
        ids = {_class_id(k): v for k, v in value.items()}
        if not ids or None in ids:
            return ()
        size = max(i for i in ids if i is not None) + 1
        return tuple(str(ids.get(i, i)) for i in range(size))
    if isinstance(value, list | tuple) and len(value) < _MAX_CLASSES:
        return tuple(str(v) for v in value)
    return ()


def _side(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_SIDE:
        return value
    return None


def imgsz_from_metadata(value: object, default: tuple[int, int] = _DEFAULT_IMGSZ) -> tuple[int, int]:
    """``(height, width)`` from a metadata ``imgsz``: one side or ``[h, w]``; else ``default``."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value) if len(value) < 100 else None
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return default
    if isinstance(value, list | tuple) and len(value) == 1:
        value = value[0]
    side = _side(value)
    if side is not None:
        return side, side
    if isinstance(value, list | tuple) and len(value) == 2:
        h, w = _side(value[0]), _side(value[1])
        if h is not None and w is not None:
            return h, w
    return default


def stride_from_metadata(value: object, default: int = 32) -> int:
    """The network's largest stride from a metadata ``stride`` (a number, or a list of them)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, list | tuple) and value:
        value = max((v for v in value if isinstance(v, int | float) and not isinstance(v, bool)), default=None)
    if isinstance(value, int | float) and not isinstance(value, bool) and 1 <= value <= 1024:
        return int(value)
    return default


def _first_tensor(out: object, where: str) -> torch.Tensor:
    """The output tensor, or the first tensor of a (nested) tuple or list of outputs."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, list | tuple):
        for item in out:
            if isinstance(item, torch.Tensor):
                return item
            if isinstance(item, list | tuple):
                try:
                    return _first_tensor(item, where)
                except ModelError:
                    continue
    raise ModelError(
        f"{where}: unsupported model output: expected a tensor or a tuple of tensors, but got {type(out).__name__}"
    )


def pick_torch_device(name: str) -> torch.device:
    """A checked torch device: CUDA and MPS must exist, and any error says what to use instead."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ModelError(f"unknown device '{name}', expecting one of {_DEVICES}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(
                f"device '{name}' needs a CUDA build of PyTorch and a visible GPU, but torch {torch.__version__} "
                "sees none; use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ModelError(f"device '{name}' does not exist: {torch.cuda.device_count()} GPU(s) visible")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ModelError(f"device '{name}' is unavailable to torch {torch.__version__}; use cpu")
    elif device.type != "cpu":
        raise ModelError(f"unsupported device '{name}', expecting one of {_DEVICES}")
    return device


class TorchScriptModel(Model):
    """A TorchScript archive: a detector (v8, v5 or end-to-end output) or a classifier.

    ``device``: 'cpu', 'cuda', 'cuda:N' or 'mps'. ``half`` runs fp16 on CUDA (ignored, with
    a warning, elsewhere); an archive stored in fp16 runs fp16 on CUDA and fp32 elsewhere.
    ``threads`` sets PyTorch's process-wide intra-op pool on CPU. ``names`` overrides the class
    names of the file's metadata. ``task``: 'auto' (from the metadata, then from the output
    shape), 'detect' or 'classify' (checked against the output).

    ``open()`` warms up on a zero batch at the exported ``imgsz`` (640x640 when unknown), which
    also tells the output layout; a second run at another size decides ``info.dynamic`` and a
    batch of two decides ``info.max_batch`` (None when any batch works, else 1).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "cpu",
        threads: int | None = None,
        half: bool = False,
        names: tuple[str, ...] | None = None,
        task: str = "auto",
        licence: str = "",
        expected_task: str = "auto",
        override_names: tuple[str, ...] | None = None,
    ) -> None:
        if task not in TASKS:
            raise ConfigError(f"invalid task '{task}', expecting one of {list(TASKS)}")
        self.path = Path(path)
        self.device = device
        self.threads = threads
        self.half = half
        self.task = task
        self._names = tuple(names) if names else None
        self._licence = licence
        self.expected_task = expected_task
        self.override_names = override_names
        self._net: torch.jit.ScriptModule | None = None
        self._device = torch.device("cpu")
        self._dtype = torch.float32

    @property
    def network(self) -> torch.jit.ScriptModule:
        """The loaded module (after ``open()``)."""
        if self._net is None:
            raise RuntimeError(f"{self.path}: model is not open")
        return self._net

    def _load(self, device: torch.device) -> tuple[torch.jit.ScriptModule, dict[str, object]]:
        extra: dict[str, bytes | str] = {METADATA_FILE: ""}
        # TorchScript only maps tensors to cpu and cuda while loading; other devices move after.
        location = device if device.type in ("cpu", "cuda") else torch.device("cpu")
        try:
            with warnings.catch_warnings():
                # TorchScript is deprecated upstream and warns on every load, but Ultralytics still exports it.
                warnings.filterwarnings("ignore", message=r".*torch\.jit", category=DeprecationWarning)
                net = torch.jit.load(str(self.path), map_location=location, _extra_files=extra)
        except Exception as exc:  # noqa: BLE001 - the zip reader and the unpickler raise several unrelated types
            raise ModelError(f"{self.path}: not a TorchScript archive ({_first_line(exc)})") from None
        return net, parse_metadata(extra.get(METADATA_FILE, ""))

    def open(self) -> None:
        if not self.path.is_file():
            raise ModelError(f"{self.path}: no such model file")
        device = pick_torch_device(self.device)
        net, meta = self._load(device)
        meta_task = meta.get("task") if isinstance(meta.get("task"), str) else None
        if meta_task in _UNSUPPORTED_TASKS:
            raise ModelError(
                f"{self.path}: task '{meta_task}' is not supported, expecting one of ['detect', 'classify']"
            )
        tensors = itertools.chain(net.parameters(), net.buffers())
        first = next((t for t in tensors if t.is_floating_point()), None)
        stored_half = first is not None and first.dtype == torch.float16  # e.g. exported with half=True
        dtype = torch.float32
        if device.type == "cuda" and (self.half or stored_half):
            dtype = torch.float16
            net = net.half()
        else:
            if self.half:
                log.warning("%s: half precision needs a CUDA device; running fp32 on %s", self.path, device)
            if stored_half:
                net = net.float()
        net = net.to(device)
        if device.type == "cpu":
            torch.set_num_threads(self.threads or default_threads())
        net.eval()
        self._net, self._device, self._dtype = net, device, dtype

        names = self._names or names_from_metadata(meta.get("names"))
        imgsz = imgsz_from_metadata(meta.get("imgsz"))
        stride = stride_from_metadata(meta.get("stride"))
        where = str(self.path)
        height, width = imgsz
        try:
            shape = tuple(self._forward(torch.zeros((1, 3, height, width))).shape)
        except ModelError:
            self._net = None
            raise
        except Exception as exc:  # noqa: BLE001 - TorchScript raises torch.jit.Error, RuntimeError and others
            self._net = None
            raise ModelError(f"{where}: model failed on a {width}x{height} input: {_first_line(exc)}") from None
        try:
            layout, nc = detect_layout(shape, len(names) or None, where)
        except ModelError:
            self._net = None
            raise
        task = "classify" if layout == "classify" else "detect"
        wanted = self.task if self.task != "auto" else (meta_task if meta_task in ("detect", "classify") else task)
        if wanted != task:
            self._net = None
            kind = "a classifier's (B, K)" if task == "classify" else "a detector's"
            origin = "was asked for" if self.task != "auto" else "is named in the metadata"
            raise ModelError(f"{where}: task '{wanted}' {origin}, but the output has shape {shape}, {kind}")
        if len(names) < nc:
            if names:
                log.warning("%s: %d class names for %d classes; numbering the classes instead", where, len(names), nc)
            names = parse_names(None, nc)
        dynamic, max_batch = self._probe(shape, layout, nc, imgsz, stride)
        licence = meta.get("license", "")
        self.info = ModelInfo(
            path=where,
            backend="torchscript",
            device=str(device),
            task=task,
            layout=layout,
            names=names,
            imgsz=imgsz,
            stride=stride,
            dynamic=dynamic,
            max_batch=max_batch,
            licence=self._licence or (licence if isinstance(licence, str) else ""),
        )
        precision = str(dtype).removeprefix("torch.")
        log.info(
            "%s: TorchScript %s (%s layout, %d classes) on %s (%s)", where, task, layout, len(names), device, precision
        )

    def _probe(
        self, shape: tuple[int, ...], layout: str, nc: int, imgsz: tuple[int, int], stride: int
    ) -> tuple[bool, int | None]:
        """Whether another input size works (``dynamic``), and whether a batch of two does.

        A traced graph may have the warm-up size baked in (Ultralytics' grid of anchors is);
        such a model fails, or answers in another layout, at any other size.
        """
        side = -(-320 // stride) * stride
        if (side, side) == imgsz:
            side += stride
        dynamic = self._works((1, 3, side, side), shape[0:1], layout, nc)
        probe_hw = (side, side) if dynamic else imgsz
        max_batch = None if self._works((2, 3, *probe_hw), (2,), layout, nc) else 1
        return dynamic, max_batch

    def _works(self, size: tuple[int, ...], batch: tuple[int, ...], layout: str, nc: int) -> bool:
        try:
            shape = tuple(self._forward(torch.zeros(size)).shape)
            return shape[:1] == batch and detect_layout(shape, nc or None, str(self.path)) == (layout, nc)
        except Exception as exc:  # noqa: BLE001 - any failure means "not at this size"
            log.debug("%s: no run at %s: %s", self.path, size, _first_line(exc))
            return False

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        net = self.network
        x = batch.to(device=self._device, dtype=self._dtype, non_blocking=True)
        with torch.inference_mode():
            out = net(x)
        return _first_tensor(out, str(self.path))

    def __call__(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """Run (B, 3, H, W) float in [0, 1], RGB (NumPy, or a tensor on any device).

        Returns the first output tensor as float32 NumPy: (B, 4 + nc, A), (B, A, 5 + nc),
        (B, N, 6) or (B, K) as ``info.layout`` says.
        """
        shape = tuple(batch.shape)
        if len(shape) != 4 or shape[1] != 3:
            raise ValueError(f"batch must be (B, 3, H, W), but got shape {shape}")
        if isinstance(batch, torch.Tensor):
            x = batch
        else:
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        try:
            out = self._forward(x)
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - TorchScript raises torch.jit.Error, RuntimeError and others
            raise ModelError(f"{self.path}: model failed on a batch of shape {shape}: {_first_line(exc)}") from None
        return np.ascontiguousarray(out.detach().float().cpu().numpy(), dtype=np.float32)

    def close(self) -> None:
        self._net = None

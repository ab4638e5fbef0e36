"""The model interface and the recognition of output layouts."""

from __future__ import annotations

import ast
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from streamer.errors import ModelError
from streamer.types import Letterbox


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the pipeline needs to know about a loaded model.

    ``imgsz`` is (height, width) of the input the model was exported for; ``dynamic`` says
    whether other sizes are accepted (then frames are letterboxed in rect mode).
    ``max_batch`` is the fixed batch size of a static model, None when any batch works.
    """

    path: str
    backend: str
    device: str
    task: str
    layout: str
    names: tuple[str, ...]
    imgsz: tuple[int, int]
    stride: int = 32
    dynamic: bool = True
    max_batch: int | None = None
    licence: str = ""

    def with_(self, **changes: object) -> ModelInfo:
        return replace(self, **changes)  # type: ignore[arg-type]


class Model(ABC):
    """A loaded network: a float32 NCHW batch in, its raw output array out.

    Lifecycle: construct (cheap), ``open()`` (load weights, pick the device, warm up),
    call many times, ``close()``. ``info`` is valid after ``open()``.
    """

    info: ModelInfo
    #: Where it runs (``cpu``, ``cuda:0``, ``mps``), known when it is built.
    device: str = "cpu"
    #: Intra-op threads of one call (None: the backend's default). A job may plan them
    #: before ``open()`` (see ``streamer.models.inference_plan``), never after.
    threads: int | None = None

    @abstractmethod
    def open(self) -> None:
        """Load the model; raise :class:`~streamer.errors.ModelError` on failure."""

    @abstractmethod
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Run ``batch`` (B, 3, H, W) float32 in [0, 1], RGB; return the raw output as float32."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    #: True when the model letterboxes uint8 frames itself on its device (``prepare``):
    #: the preprocess stage then only computes the letterbox geometry.
    device_preprocess: bool = False

    def prepare(self, images: list[np.ndarray], boxes: list[Letterbox]) -> Any:
        """Build the model's input batch from uint8 BGR frames (when ``device_preprocess``).

        The batch is whatever the model's own call takes (a tensor already on its device), so
        it is typed as such here and handed to ``__call__`` as it is."""
        raise NotImplementedError

    def classify_input(self, crops: list[np.ndarray]) -> np.ndarray:
        """A classifier's input batch from uint8 BGR crops of any size: (B, 3, H, W) float32.

        This default suits classifiers that take the :meth:`__call__` contract's RGB in [0, 1]:
        each crop is resized to the model's input size. Models trained with other
        preprocessing (mean/std) override it.
        """
        import cv2

        h, w = self.info.imgsz
        out = np.empty((len(crops), 3, h, w), np.float32)
        for i, crop in enumerate(crops):
            resized = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)
            out[i] = resized[:, :, ::-1].transpose(2, 0, 1) * np.float32(1 / 255)
        return out

    #: Class names that replace the model's own (``--labels FILE``), applied at open.
    override_names: tuple[str, ...] | None = None
    #: ``detect`` or ``classify`` to insist on a task; ``auto`` accepts what the model is.
    expected_task: str = "auto"

    def ensure_open(self) -> None:
        """Open once, however many stages share this model."""
        if not getattr(self, "_is_open", False):
            self.open()
            self._is_open = True
            info = self.info
            if self.expected_task != "auto" and info.task != self.expected_task:
                self.ensure_closed()
                raise ModelError(
                    f"{info.path}: the model is a {info.task} model (output layout '{info.layout}'), "
                    f"but the task asked for is '{self.expected_task}'"
                )
            if self.override_names is not None:
                self.info = info.with_(names=self.override_names)

    def ensure_closed(self) -> None:
        if getattr(self, "_is_open", False):
            self._is_open = False
            self.close()


def default_threads() -> int:
    """Intra-op threads for inference.

    On small machines inference gets every core: it is by far the heaviest stage, and the
    others (decode, letterbox, NMS, drawing, encoding) take a few ms per frame and release
    the GIL. Measured on 2 cores with bikes.mp4: 2 threads 27.7 fps end to end, 1 thread
    17.5 fps. On larger machines two cores stay free for capture and encoding.
    """
    cores = os.cpu_count() or 1
    return cores if cores <= 4 else cores - 2


def parse_names(text: str | None, nc: int | None = None) -> tuple[str, ...]:
    """Parse Ultralytics' ``names`` metadata (``"{0: 'person', ...}"``) without evaluating code."""
    if text:
        try:
            value = ast.literal_eval(text) if len(text) < 1_000_000 else None
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            value = None
        if isinstance(value, dict) and all(isinstance(k, int) for k in value):
            size = max(value) + 1 if value else 0
            return tuple(str(value.get(i, i)) for i in range(size))
        if isinstance(value, list | tuple):
            return tuple(str(v) for v in value)
    return tuple(str(i) for i in range(nc or 0))


def parse_imgsz(text: str | None, default: tuple[int, int] = (640, 640)) -> tuple[int, int]:
    if not text:
        return default
    try:
        value = ast.literal_eval(text) if len(text) < 100 else None
    except (ValueError, SyntaxError):
        return default
    if isinstance(value, int):
        return value, value
    if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    return default


def detect_layout(shape: tuple[int, ...], nc: int | None, where: str) -> tuple[str, int]:
    """Recognise a detector's output layout from its shape; return (layout, number of classes).

    ``(B, 4+nc, A)`` → v8, ``(B, A, 5+nc)`` → v5, ``(B, N, 6)`` → end2end, ``(B, K)`` →
    classify. ``nc`` (from the model's class names) resolves ambiguous shapes when known.
    """
    if len(shape) == 2:
        return "classify", int(shape[1])
    if len(shape) != 3:
        raise ModelError(
            f"{where}: unsupported output layout: got shape {tuple(shape)}, expecting "
            "(B, 4+nc, A) for YOLOv8/11, (B, A, 5+nc) for YOLOv5, (B, N, 6) end-to-end or (B, K) classification"
        )
    _, d1, d2 = (int(v) for v in shape)
    if nc is not None and nc > 0:
        if d1 == 4 + nc and d2 != 4 + nc:
            return "v8", nc
        if d2 == 5 + nc:
            return "v5", nc
        if d2 == 6 and nc != 1:
            return "end2end", nc
        if d1 == 4 + nc:
            return "v8", nc
    else:
        if d2 == 6 and d1 > 6:
            return "end2end", 0
        if 4 < d1 < d2:
            return "v8", d1 - 4
        if 5 < d2 < d1:
            return "v5", d2 - 5
    raise ModelError(
        f"{where}: unsupported output layout: got shape {tuple(shape)}"
        + (f" with {nc} class names" if nc else "")
        + "; expecting (B, 4+nc, A) for YOLOv8/11, (B, A, 5+nc) for YOLOv5 or (B, N, 6) end-to-end"
    )

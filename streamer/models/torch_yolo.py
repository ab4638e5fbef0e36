"""YOLOv8 / YOLO11 detectors run natively in PyTorch, weights taken from an Ultralytics ONNX export.

The network is rebuilt by :mod:`streamer.models.yolo_arch` from the export's initializers,
so the same file serves ONNX Runtime and PyTorch; PyTorch brings CUDA, fp16 and
``channels_last`` without an ONNX Runtime GPU build.

On CUDA the network is replayed from CUDA graphs (:mod:`streamer.gpu.graphs`, captured at
open), and :meth:`TorchYoloModel.detect` / :meth:`TorchYoloModel.detect_frames` decode and
suppress on the device (:mod:`streamer.gpu.nms`), so only the kept rows reach the host. On the
CPU the model runs eagerly and the pipeline decodes with the Numba kernels, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from streamer.config import DetectConfig
from streamer.errors import ModelError, import_optional
from streamer.gpu.graphs import DEFAULT_BUCKETS, GraphedModel, check_buckets, plan
from streamer.gpu.nms import decode_nms_v8
from streamer.gpu.nv12 import Nv12Image
from streamer.models.base import Model, ModelInfo, default_threads
from streamer.models.torchscript import pick_torch_device
from streamer.models.yolo_arch import YoloDetectionModel, build_from_initializers
from streamer.postprocess.decode import keep_mask
from streamer.preprocess_torch import DeviceLetterbox
from streamer.types import Detections, Letterbox

log = logging.getLogger(__name__)

#: The ``detect:`` defaults (Ultralytics' conf 0.25, IoU 0.7, 300 boxes).
DEFAULT_DETECT = DetectConfig()

def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def read_onnx_weights(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Initializers (name -> array) and ``metadata_props`` (key -> value) of an ONNX file."""
    onnx = import_optional(
        "onnx", ModelError, "the torch backend reads weights from ONNX files and needs the onnx package: run `pip install onnx`"
    )
    from onnx import numpy_helper
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf and onnx raise several unrelated types for a bad file
        raise ModelError(f"{path}: not a loadable ONNX model ({_first_line(exc)})") from None
    if not proto.graph.node and not proto.graph.initializer:
        raise ModelError(f"{path}: not a loadable ONNX model (it has no graph)")
    try:
        base = str(path.parent)
        weights = {init.name: numpy_helper.to_array(init, base_dir=base) for init in proto.graph.initializer}
    except Exception as exc:  # noqa: BLE001 - missing external data files, unsupported dtypes
        raise ModelError(f"{path}: cannot read the model's weights ({_first_line(exc)})") from None
    return weights, {p.key: p.value for p in proto.metadata_props}


class TorchYoloModel(Model):
    """A YOLOv8 / YOLO11 ONNX export run as a native PyTorch module.

    ``device``: 'cpu', 'cuda', 'cuda:N' or 'mps'. ``half`` runs fp16 on CUDA (ignored, with
    a warning, elsewhere: on CPU fp16 convolutions are slower than fp32). ``threads`` sets
    PyTorch's intra-op pool on CPU, which is process-wide. Input sizes are free (multiples of
    32), any batch; the output is always float32 ``(B, 4 + nc, A)``.

    ``cuda_graphs``: replay the network from CUDA graphs, batches padded to ``graph_buckets``
    (None: on CUDA yes, elsewhere no; True off CUDA is ignored with a warning). Measured on an
    H200, YOLO11n fp16: 8.5 → 1.07 ms at batch 1, 10.9 → 2.06 ms at batch 8.
    """

    #: True on CUDA (after ``open()``): :meth:`detect` decodes and suppresses on the device.
    device_postprocess: bool = False

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "cpu",
        threads: int | None = None,
        half: bool = False,
        licence: str = "",
        expected_task: str = "auto",
        override_names: tuple[str, ...] | None = None,
        device_preprocess: bool | None = None,
        cuda_graphs: bool | None = None,
        graph_buckets: Sequence[int] = DEFAULT_BUCKETS,
    ) -> None:
        self.path = Path(path)
        self.device = device
        self.threads = threads
        self.half = half
        self.cuda_graphs = cuda_graphs
        self.graph_buckets = check_buckets(graph_buckets)
        self._graphs: GraphedModel | None = None
        # None: letterbox on the GPU when running on CUDA (uint8 upload), on the CPU otherwise.
        self._device_preprocess = device_preprocess
        self._letterbox: DeviceLetterbox | None = None
        self._licence = licence
        self.expected_task = expected_task
        self.override_names = override_names
        self._net: YoloDetectionModel | None = None
        self._device = torch.device("cpu")
        self._dtype = torch.float32

    @property
    def network(self) -> YoloDetectionModel:
        """The loaded module (after ``open()``)."""
        if self._net is None:
            raise RuntimeError(f"{self.path}: model is not open")
        return self._net

    def open(self) -> None:
        if not self.path.is_file():
            raise ModelError(f"{self.path}: no such model file")
        device = pick_torch_device(self.device)
        weights, meta = read_onnx_weights(self.path)
        net = build_from_initializers(weights, meta, where=str(self.path))
        del weights
        dtype = torch.float32
        if device.type == "cuda":
            if self.half:
                dtype = torch.float16
            net = net.to(device=device, dtype=dtype)
            net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # not in torch's stubs
        else:
            if self.half:
                log.warning("%s: half precision needs a CUDA device; running fp32 on %s", self.path, device)
            net = net.to(device)
            if device.type == "cpu":
                torch.set_num_threads(self.threads or default_threads())
        net.eval().requires_grad_(False)
        self._net, self._device, self._dtype = net, device, dtype
        on_device = self._device_preprocess if self._device_preprocess is not None else device.type == "cuda"
        self.device_preprocess = bool(on_device)
        self.device_postprocess = device.type == "cuda"
        self._letterbox = DeviceLetterbox(device, dtype)
        height, width = net.imgsz
        self._graphs = self._capture_graphs(net, device, dtype, (height, width))
        try:
            raw = self._run(torch.zeros((1, 3, height, width)))
        except RuntimeError as exc:
            self._net = None
            raise ModelError(f"{self.path}: model failed on a {width}x{height} input: {_first_line(exc)}") from None
        expected = (1, 4 + net.nc)
        if raw.shape[:2] != expected:
            self._net = None
            raise ModelError(f"{self.path}: output shape {raw.shape}, expected (1, {4 + net.nc}, A)")
        stride_text = meta.get("stride", "")
        stride = int(stride_text) if stride_text.isdigit() else net.stride
        self.info = ModelInfo(
            path=str(self.path),
            backend="torch",
            device=str(device),
            task="detect",
            layout="v8",
            names=net.names,
            imgsz=net.imgsz,
            stride=stride,
            dynamic=True,
            max_batch=None,
            licence=self._licence or meta.get("license", ""),
        )
        precision = str(dtype).removeprefix("torch.")
        log.info("%s: %s detector, %d classes, on %s (%s)", self.path, net.version, net.nc, device, precision)

    def _capture_graphs(
        self, net: YoloDetectionModel, device: torch.device, dtype: torch.dtype, hw: tuple[int, int]
    ) -> GraphedModel | None:
        """CUDA graphs of every batch bucket at the model's own size, or None (eager)."""
        wanted = self.cuda_graphs if self.cuda_graphs is not None else device.type == "cuda"
        if not wanted:
            return None
        if device.type != "cuda":
            log.warning("%s: CUDA graphs need a CUDA device; running eagerly on %s", self.path, device)
            return None
        graphs = GraphedModel(net, device=device, dtype=dtype, buckets=self.graph_buckets, channels_last=True)
        try:
            graphs.capture(hw)
        except RuntimeError as exc:  # an operation capture refuses: the eager model still works
            log.warning("%s: CUDA graph capture failed, running eagerly: %s", self.path, _first_line(exc))
            return None
        return graphs

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """The raw output (B, 4 + nc, A) on the model's device, in its dtype (fp16 with ``half``)."""
        x = batch.to(device=self._device, dtype=self._dtype, non_blocking=True)
        if self._graphs is not None:
            return self._graphs(x)  # copied into the graphs' channels_last input
        if self._device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self.network(x)

    def _run(self, batch: torch.Tensor) -> np.ndarray:
        return self.forward(batch).float().cpu().numpy()

    def __call__(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """Run (B, 3, H, W) float in [0, 1], RGB (NumPy, or a tensor on any device); H, W multiples of 32.

        Returns float32 (B, 4 + nc, A) as a NumPy array.
        """
        shape = tuple(batch.shape)
        stride = self.network.stride
        if len(shape) != 4 or shape[1] != 3 or shape[2] % stride or shape[3] % stride:
            raise ValueError(f"batch must be (B, 3, H, W) with H and W multiples of {stride}, but got shape {shape}")
        if isinstance(batch, torch.Tensor):
            return self._run(batch)
        return self._run(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))

    def prepare(self, images: Sequence[np.ndarray | Nv12Image], boxes: Sequence[Letterbox]) -> torch.Tensor:
        """Letterbox frames (uint8 BGR on the host, or NV12 on the device) on the model's
        device into one input batch."""
        if self._letterbox is None or not self.device_preprocess:
            raise RuntimeError(f"{self.path}: device preprocessing is off")
        with torch.inference_mode():
            return self._letterbox(images, boxes)

    def detect(self, batch: torch.Tensor, boxes: Sequence[Letterbox], detect: DetectConfig = DEFAULT_DETECT,
               ) -> list[Detections]:
        """Run ``batch`` (B, 3, H, W) and decode it where it ran with the ``detect:`` settings:
        one ``Detections`` per image, in source pixels through ``boxes``, the same rows the
        Numba decoder gives for the raw output (see :mod:`streamer.gpu.nms`). Only the kept
        rows are copied to the host."""
        return self._decode(self.forward(batch), boxes, detect)

    def _decode(self, raw: torch.Tensor, boxes: Sequence[Letterbox], p: DetectConfig) -> list[Detections]:
        mask = None if p.classes is None else keep_mask(p.classes, int(raw.shape[1]) - 4)
        return decode_nms_v8(raw, boxes, conf=p.conf, iou=p.iou, class_mask=mask, agnostic=p.agnostic,
                             multi_label=p.multi_label, max_det=p.max_det, max_nms=p.max_nms).to_host()

    def detect_frames(self, images: Sequence[np.ndarray | Nv12Image], boxes: Sequence[Letterbox],
                      detect: DetectConfig = DEFAULT_DETECT) -> list[Detections]:
        """Frames to detections in one call: letterbox (straight into the CUDA graph's input
        when there are graphs), run, decode and suppress on the device, copy the kept rows."""
        if len(images) != len(boxes):
            raise ValueError(f"got {len(images)} images but {len(boxes)} letterboxes")
        letterbox = self._letterbox
        if letterbox is None:
            raise RuntimeError(f"{self.path}: model is not open")
        hw = (max(lb.input_hw[0] for lb in boxes), max(lb.input_hw[1] for lb in boxes))
        out: list[Detections] = []
        for start, stop, _ in plan(len(images), self.graph_buckets):
            part, part_boxes = images[start:stop], boxes[start:stop]
            if self._graphs is not None:
                raw = self._graphs.run(stop - start, hw, lambda buffer: letterbox(part, part_boxes, buffer))
            else:
                with torch.inference_mode():
                    raw = self.forward(letterbox(part, part_boxes))
            out.extend(self._decode(raw, part_boxes, detect))
        return out

    def close(self) -> None:
        self._net = None
        self._letterbox = None
        self._graphs = None

"""ONNX models through ONNX Runtime (CPU, or the CUDA provider when asked and available)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from streamer.errors import ModelError, import_optional
from streamer.models.base import Model, ModelInfo, default_threads, detect_layout, parse_imgsz, parse_names

log = logging.getLogger(__name__)


def _import_ort():  # type: ignore[no-untyped-def]
    return import_optional(
        "onnxruntime", ModelError,
        "the onnxruntime backend needs ONNX Runtime: run `pip install onnxruntime` (or `pip install 'streamer[onnx]'`)",
    )


class OnnxRuntimeModel(Model):
    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "cpu",
        threads: int | None = None,
        names: tuple[str, ...] | None = None,
        licence: str = "",
        expected_task: str = "auto",
        override_names: tuple[str, ...] | None = None,
    ) -> None:
        self.path = Path(path)
        self.device = device
        self.threads = threads or default_threads()
        self._names = names
        self._licence = licence
        self.expected_task = expected_task
        self.override_names = override_names
        self._session = None
        self._input_name = ""
        self._output_name = ""
        #: The file's ``metadata_props`` (after ``open()``).
        self.metadata: dict[str, str] = {}

    def open(self) -> None:
        ort = _import_ort()
        if not self.path.is_file():
            raise ModelError(f"{self.path}: no such model file")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if self.device.startswith("cuda"):
            available = ort.get_available_providers()
            if "CUDAExecutionProvider" not in available:
                raise ModelError(
                    f"device '{self.device}' needs ONNX Runtime's CUDA provider, but this install has only {available}: "
                    "run `pip install onnxruntime-gpu`, or use --device cpu"
                )
            index = int(self.device.split(":")[1]) if ":" in self.device else 0
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        try:
            session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated types for a bad file
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{self.path}: not a loadable ONNX model ({first_line[:200]})") from None
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            shapes = [tuple(i.shape) for i in inputs]
            raise ModelError(f"{self.path}: expected one image input (B, 3, H, W), but got inputs {shapes}")
        self._session = session
        self._input_name = inputs[0].name
        self._output_name = outputs[0].name
        meta = session.get_modelmeta().custom_metadata_map
        self.metadata = dict(meta)
        in_shape = inputs[0].shape
        static_hw = tuple(d if isinstance(d, int) else None for d in in_shape[2:])
        dynamic = None in static_hw
        default_hw = parse_imgsz(meta.get("imgsz"))
        imgsz = default_hw if dynamic else (int(static_hw[0]), int(static_hw[1]))  # type: ignore[arg-type]
        max_batch = in_shape[0] if isinstance(in_shape[0], int) else None
        names = self._names or parse_names(meta.get("names"))
        # One warm-up run tells the output layout and pays the first-call cost up front.
        probe = np.zeros((1, 3, *imgsz), np.float32)
        try:
            raw = self._run(probe)
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"{self.path}: model failed on a {imgsz[1]}x{imgsz[0]} input: {str(exc)[:200]}") from None
        layout, nc = detect_layout(raw.shape, len(names) or None, str(self.path))
        task = "classify" if layout == "classify" else "detect"
        if meta.get("task") == "classify":
            task, layout = "classify", "classify"
        if not names or len(names) < nc:
            names = parse_names(None, nc)
        self.info = ModelInfo(
            path=str(self.path),
            backend="onnxruntime",
            device=self.device,
            task=task,
            layout=layout,
            names=names,
            imgsz=imgsz,
            stride=int(meta.get("stride", 32)) if str(meta.get("stride", "32")).isdigit() else 32,
            dynamic=dynamic,
            max_batch=max_batch,
            licence=self._licence or meta.get("license", ""),
        )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        assert self._session is not None
        (raw,) = self._session.run([self._output_name], {self._input_name: batch})
        return np.asarray(raw, dtype=np.float32)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._run(np.ascontiguousarray(batch, dtype=np.float32))

    def close(self) -> None:
        self._session = None

"""What runs inside the Ray actors of a monitor: a camera, and a node's inference.

Both are plain classes, made actors with ``ray.remote(...)`` by the driver
(:mod:`.ray_monitor`), so that importing this module never needs Ray.

:class:`CameraWorker` wraps the existing :class:`~streamer.sources.live.LiveSource` (its
capture thread, newest-frame slot, reconnect and backoff), letterboxes the newest frame,
hands it to the inference actor of its own node (the float32 input goes through that
node's shared-memory object store, never the network) and JPEG-encodes the picture while
the model runs. Only the detections and the JPEG go back to the driver.

:class:`InferenceWorker` is the in-process infer and postprocess stages behind a batcher:
each call waits for its frame's result while the batcher gathers the frames of up to
``batch`` cameras that arrive within ``batch_timeout_s`` of the first, as the in-process
monitor's infer stage does, and runs them as one model call.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from streamer.config import CaptureConfig, DetectConfig, ModelConfig
from streamer.errors import ConfigError, SourceReadError
from streamer.preprocess import letterbox_into, letterbox_params
from streamer.sources.base import TIMEOUT
from streamer.types import Detections, Frame, Letterbox, Result

log = logging.getLogger(__name__)


def node_identity() -> dict[str, Any]:
    """This process's Ray node id and IP, and its pid (a restarted actor has a new one)."""
    import ray

    ctx = ray.get_runtime_context()
    return {"node": ctx.get_node_id(), "node_ip": ray.util.get_node_ip_address(), "pid": os.getpid()}


# ----------------------------------------------------------------------------- inference


@dataclass
class _Pending:
    result: Result
    done: threading.Event = field(default_factory=threading.Event)
    batch: int = 0
    infer_ms: float = 0.0
    post_ms: float = 0.0
    error: BaseException | None = None


class InferenceWorker:
    """One model on one node (or one GPU), shared by the cameras there, batching across them."""

    def __init__(self, model_cfg: ModelConfig, detect: DetectConfig, batch: int, batch_timeout_s: float) -> None:
        from streamer.jobs import inference_plan
        from streamer.models import configure, load_model
        from streamer.runtime import configure_threads
        from streamer.stages import InferStage, PostprocessStage, PreprocessStage

        configure_threads()
        m = model_cfg
        model = configure(load_model(m.name, backend=m.backend, device=m.device, threads=m.threads, half=m.half),
                          task=m.task, labels=m.labels)
        inference_plan(model, model_cfg, files=False)
        self.model = model
        # The preprocess stage is opened only to settle the input size the model takes
        # (its own size when fixed); the cameras letterbox with those settings.
        self._pre = PreprocessStage(model, imgsz=model_cfg.imgsz, rect=model_cfg.rect)
        self._infer = InferStage(model, batch_size=batch, batch_timeout_s=batch_timeout_s)
        self._post = PostprocessStage(model, detect, anchors=model_cfg.anchors)
        if model_cfg.anchors is not None:
            self._pre.imgsz, self._pre.rect = model_cfg.anchors.input_hw, False
        for stage in (self._pre, self._infer, self._post):
            stage.open()
        self._queue: queue.Queue[_Pending] = queue.Queue()
        self._stop = threading.Event()
        self.batches = 0
        self.items = 0
        self._thread = threading.Thread(target=self._run, name="streamer-ray-batcher", daemon=True)
        self._thread.start()

    def describe(self) -> dict[str, Any]:
        """What the cameras need to letterbox, and what the driver shows about the model."""
        info = self.model.info
        return {
            "imgsz": self._pre.imgsz, "rect": self._pre.rect, "stride": info.stride,
            "device_preprocess": bool(self.model.device_preprocess), "names": tuple(info.names),
            "name": os.path.basename(str(info.path)), "backend": info.backend, "device": info.device,
            **node_identity(),
        }

    def infer(self, camera: str, model_input: np.ndarray | None, letterbox: Letterbox,
              image: np.ndarray | None, timeout_s: float) -> dict[str, Any]:
        """Detections of one camera frame (waits for its batch); raises after ``timeout_s``."""
        frame = Frame(camera, 0, image if image is not None else _NO_IMAGE, None, 0.0)
        pending = _Pending(Result(frame=frame, letterbox=letterbox, input=model_input))
        self._queue.put(pending)
        if not pending.done.wait(timeout_s):
            raise TimeoutError(f"inference of {camera} took more than {timeout_s:g} s")
        if pending.error is not None:
            raise pending.error
        det = pending.result.detections
        return {
            "detections": None if det is None else (det.xyxy, det.confidence, det.class_id),
            "batch": pending.batch, "infer_ms": pending.infer_ms, "post_ms": pending.post_ms,
        }

    def counts(self) -> dict[str, int]:
        return {"batches": self.batches, "items": self.items}

    def _next_batch(self) -> list[_Pending]:
        """Up to ``batch`` calls: the first, then whatever arrives within the batch timeout."""
        try:
            first = self._queue.get(timeout=0.1)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self._infer.batch_timeout_s
        while len(batch) < self._infer.batch_size:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._next_batch()
            if not batch:
                continue
            try:
                t0 = time.perf_counter()
                self._infer.process_batch([p.result for p in batch])
                infer_ms = (time.perf_counter() - t0) * 1000.0 / len(batch)
                for p in batch:
                    t1 = time.perf_counter()
                    self._post.process(p.result)
                    p.post_ms = (time.perf_counter() - t1) * 1000.0
                    p.infer_ms, p.batch = infer_ms, len(batch)
                self.batches += 1
                self.items += len(batch)
            except BaseException as exc:  # noqa: BLE001 - handed to every caller of this batch
                for p in batch:
                    p.error = exc
            for p in batch:
                p.done.set()


_NO_IMAGE = np.zeros((1, 1, 3), np.uint8)


# ----------------------------------------------------------------------------- cameras


class CameraWorker:
    """One camera: the existing live source (capture, reconnect, backoff) plus preprocess.

    ``step`` handles at most one frame at a time (a lock), so a camera never has more than
    one frame in flight however the driver's calls overlap (a retried call after a timeout).
    """

    def __init__(self, name: str, url: str, capture: CaptureConfig, tile_quality: int) -> None:
        from streamer.runtime import configure_threads
        from streamer.sources import make_source
        from streamer.sources.live import LiveSource

        configure_threads()
        source = make_source(url, policy=capture.policy(), transport=capture.transport, source_id=name,
                             realtime=True, loop=capture.loop)
        if not isinstance(source, LiveSource):
            raise ConfigError(f"camera '{name}': {url} is not a live source")
        self.name = name
        self.source = source
        self.tile_quality = tile_quality
        self.identity = node_identity()
        self._lock = threading.Lock()
        self._geometry: dict[str, Any] | None = None
        self._geometry_of: int | None = None
        self._letterboxes: dict[tuple[int, int], Letterbox] = {}
        self._ended = False
        source.open()

    def status(self) -> dict[str, Any]:
        s = self.source.status()
        s.update(self.identity)
        s["url"] = self.source._describe()
        s["fps_nominal"] = self.source.fps
        s["ended"] = self._ended
        s["max_reconnects_exceeded"] = bool(
            self._ended and self.source.policy.max_reconnects is not None
            and self.source.reconnects > self.source.policy.max_reconnects)
        return s

    def step(self, infer: Any, generation: int, wait_s: float, timeout_s: float) -> dict[str, Any]:
        """The newest frame through the model: detections, a JPEG and timings, with status.

        Without an inference actor (``infer`` None: the driver does not know this actor's
        node yet) or without a frame within ``wait_s``, only the status comes back.
        """
        import ray

        if not self._lock.acquire(timeout=timeout_s):
            return {"status": self.status(), "busy": True}
        try:
            out: dict[str, Any] = {"generation": generation}
            if infer is None or self._ended:
                out["status"] = self.status()
                return out
            if self._geometry is None or self._geometry_of != generation:
                try:
                    self._geometry = ray.get(infer.describe.remote(), timeout=timeout_s)
                    self._geometry_of = generation
                    self._letterboxes.clear()
                except ray.exceptions.GetTimeoutError:
                    out.update(status=self.status(), infer_wait="the inference actor is still starting")
                    return out
                except ray.exceptions.RayError as exc:
                    out.update(status=self.status(), infer_error=f"{type(exc).__name__}: {str(exc)[:200]}")
                    return out
            t0 = time.perf_counter()
            try:
                frame = self.source.read(wait_s)
            except SourceReadError as exc:
                self._ended = True
                out.update(status=self.status(), error=str(exc))
                return out
            if frame is None:
                self._ended = True
            if frame is None or frame is TIMEOUT:
                out["status"] = self.status()
                return out
            assert isinstance(frame, Frame)
            return self._through_model(frame, infer, out, timeout_s, t0)
        finally:
            self._lock.release()

    def _through_model(self, frame: Frame, infer: Any, out: dict[str, Any], timeout_s: float, t0: float) -> dict[str, Any]:
        import ray

        geometry = self._geometry
        assert geometry is not None
        t_read = time.perf_counter()
        image = frame.image
        hw = (image.shape[0], image.shape[1])
        lb = self._letterboxes.get(hw)
        if lb is None:
            lb = letterbox_params(hw, geometry["imgsz"], rect=geometry["rect"], stride=geometry["stride"])
            self._letterboxes[hw] = lb
        if geometry["device_preprocess"]:
            ref = infer.infer.remote(self.name, None, lb, image, timeout_s)
        else:
            model_input = letterbox_into(image, lb, np.empty((3, *lb.input_hw), np.float32))
            ref = infer.infer.remote(self.name, model_input, lb, None, timeout_s)
        t_pre = time.perf_counter()
        # The JPEG is made while the model runs: it costs no latency.
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.tile_quality])
        t_tile = time.perf_counter()
        try:
            detected = ray.get(ref, timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            out.update(status=self.status(), infer_wait=f"no inference result within {timeout_s:g} s")
            return out
        except ray.exceptions.RayActorError as exc:
            out.update(status=self.status(), infer_error=f"{type(exc).__name__}: {str(exc)[:200]}")
            return out
        t_done = time.perf_counter()
        out.update(
            status=self.status(), index=frame.index, age_s=time.monotonic() - frame.captured_at,
            jpeg=jpeg.tobytes() if ok else None, names=geometry["names"], shape=image.shape,
            detections=detected["detections"], batch=detected["batch"],
            timings_ms={
                "capture": (t_read - t0) * 1000.0, "preprocess": (t_pre - t_read) * 1000.0,
                "tile": (t_tile - t_pre) * 1000.0, "infer": detected["infer_ms"], "postprocess": detected["post_ms"],
                "model_wait": (t_done - t_pre) * 1000.0,
            },
        )
        return out

    def stop(self) -> None:
        self.source.close()


def detections_from(arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> Detections | None:
    """Writable Detections from the arrays an inference call returned (Ray's are read-only)."""
    if arrays is None:
        return None
    xyxy, confidence, class_id = arrays
    return Detections(np.array(xyxy, np.float32), np.array(confidence, np.float32), np.array(class_id, np.int32))

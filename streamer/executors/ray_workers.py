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

import dataclasses
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from streamer.config import PipelineConfig
from streamer.errors import ConfigError, SourceReadError
from streamer.preprocess import letterbox_into, letterbox_params
from streamer.types import Detections, Frame, Letterbox, Result

log = logging.getLogger(__name__)


def node_identity() -> dict[str, Any]:
    """This process's Ray node id and IP, and its pid (a restarted actor has a new one)."""
    import ray

    ctx = ray.get_runtime_context()
    return {"node": ctx.get_node_id(), "node_ip": ray.util.get_node_ip_address(), "pid": os.getpid()}


# ----------------------------------------------------------------------------- messages

#: Detections as they cross between actors: (xyxy (N, 4) float32 in source pixels,
#: confidence (N,) float32, class_id (N,) int32).
DetectionArrays = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class InferenceInfo:
    """An inference actor's answer to ``describe``: how its cameras letterbox (``imgsz``,
    ``rect``, ``stride``; with ``device_preprocess`` the model takes the whole frame and
    letterboxes it on its device), the model's class names, what the driver shows about
    the model, and the actor's node."""

    imgsz: int | tuple[int, int]
    rect: bool
    stride: int
    device_preprocess: bool
    names: tuple[str, ...]
    name: str
    backend: str
    device: str
    node: str
    node_ip: str
    pid: int


@dataclass(frozen=True)
class Detected:
    """An inference actor's answer for one camera frame: its detections, the size of the
    batch it ran in and its share of the model call and of the decode, in ms. ``replaced``:
    a newer frame of the same camera took its place in the batch (nothing else is set)."""

    replaced: bool = False
    detections: DetectionArrays | None = None
    batch: int = 0
    infer_ms: float = 0.0
    post_ms: float = 0.0


@dataclass(frozen=True)
class CameraResult:
    """One frame's result as a camera actor hands it to the driver: the frame's index, its JPEG when an output needs the picture, the model's class names, the
    detections and the batch they ran in, each remote stage's time in ms, and how long ago
    the frame was captured when it was collected (the clocks of two machines do not agree,
    so no capture time crosses)."""

    index: int
    jpeg: bytes | None
    names: tuple[str, ...]
    timings_ms: dict[str, float]
    detections: DetectionArrays | None
    batch: int
    age_s: float = 0.0


@dataclass(frozen=True)
class Collected:
    """A camera actor's answer to ``collect``: its source's status (with its node and pid),
    the inference generation it was asked about, its newest result not collected before
    (None: no new frame within the wait), and what went wrong: the inference actor failed
    (``infer_error``), or reading ended (``error``)."""

    status: dict[str, Any]
    generation: int
    result: CameraResult | None = None
    infer_error: str | None = None
    error: str | None = None


# ----------------------------------------------------------------------------- inference


@dataclass
class _Pending:
    result: Result
    done: threading.Event = field(default_factory=threading.Event)
    batch: int = 0
    infer_ms: float = 0.0
    post_ms: float = 0.0
    error: BaseException | None = None
    replaced: bool = False


class InferenceWorker:
    """One model on one node (or one GPU), shared by the cameras there, batching across them."""

    def __init__(self, cfg: PipelineConfig, batch: int, batch_timeout_s: float) -> None:
        from streamer.compose import model_stages
        from streamer.models import planned_models
        from streamer.runtime import configure_threads

        configure_threads()
        model = planned_models(cfg.model, files=False).model
        self.model = model
        # The same stages as in-process. The preprocess stage is opened only to settle the
        # input size the model takes (its own size when fixed); the cameras letterbox with
        # those settings.
        self._pre, self._infer, self._post = model_stages(cfg, model, batch=batch, batch_timeout_s=batch_timeout_s)
        for stage in (self._pre, self._infer, self._post):
            stage.open()
        self._queue: queue.Queue[_Pending] = queue.Queue()
        self._stop = threading.Event()
        # Cameras whose result just went back, and how long each takes to send its next
        # frame (a moving average): see _next_batch.
        self._transit_lock = threading.Lock()
        self._returned: dict[str, float] = {}
        self._gap_s: dict[str, float] = {}
        self.batches = 0
        self.items = 0
        self._thread = threading.Thread(target=self._run, name="streamer-ray-batcher", daemon=True)
        self._thread.start()

    def describe(self) -> InferenceInfo:
        """What the cameras need to letterbox, and what the driver shows about the model."""
        info = self.model.info
        assert self._pre.imgsz is not None  # settled when the stage opened
        return InferenceInfo(
            imgsz=self._pre.imgsz, rect=self._pre.rect, stride=info.stride,
            device_preprocess=bool(self.model.device_preprocess), names=tuple(info.names),
            name=os.path.basename(str(info.path)), backend=info.backend, device=info.device, **node_identity(),
        )

    def infer(self, camera: str, resized: np.ndarray, letterbox: Letterbox, whole: bool,
              timeout_s: float) -> Detected:
        """Detections of one camera frame (waits for its batch); raises after ``timeout_s``.

        ``resized``: the frame resized by the letterbox's scale, (h, w, 3) uint8 BGR, padded
        and normalized here exactly as :func:`streamer.preprocess.letterbox_into` does after
        its own resize; ``whole``: it is the frame itself, for a model that letterboxes on
        its device.
        """
        arrived = time.monotonic()
        with self._transit_lock:
            returned = self._returned.pop(camera, None)
            if returned is not None:
                gap = arrived - returned
                previous = self._gap_s.get(camera)
                self._gap_s[camera] = gap if previous is None else 0.7 * previous + 0.3 * gap
        if whole:
            frame = Frame(camera, 0, resized, None, 0.0)
            pending = _Pending(Result(frame=frame, letterbox=letterbox))
        else:
            placed = dataclasses.replace(letterbox, scale=1.0, source_hw=(resized.shape[0], resized.shape[1]))
            model_input = letterbox_into(resized, placed, np.empty((3, *letterbox.input_hw), np.float32))
            frame = Frame(camera, 0, _NO_IMAGE, None, 0.0)
            pending = _Pending(Result(frame=frame, letterbox=letterbox, input=model_input))
        self._queue.put(pending)
        if not pending.done.wait(timeout_s):
            raise TimeoutError(f"inference of {camera} took more than {timeout_s:g} s")
        if pending.error is not None:
            raise pending.error
        if pending.replaced:
            return Detected(replaced=True)
        det = pending.result.detections
        return Detected(detections=None if det is None else (det.xyxy, det.confidence, det.class_id),
                        batch=pending.batch, infer_ms=pending.infer_ms, post_ms=pending.post_ms)

    def counts(self) -> dict[str, int]:
        return {"batches": self.batches, "items": self.items}

    def _next_batch(self) -> list[_Pending]:
        """Up to ``batch`` calls: the first, then whatever arrives within the batch timeout,
        and the next frame of every camera that is on its way.

        In-process, the infer stage batches the newest frame of every camera that has one:
        they wait in its queue. Here a camera whose result has just gone back already has
        its next frame and is sending it; its call arrives a moment later (the frame's copy
        into the object store, the call itself). So the batch also waits, beyond
        ``batch_timeout_s``, for each camera returned less than twice its usual resend time
        ago (at most ``MAX_TRANSIT_S``); a camera that is gone is waited for once, that long.
        """
        try:
            first = self._queue.get(timeout=0.1)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self._infer.batch_timeout_s
        while len(batch) < self._infer.batch_size:
            now = time.monotonic()
            with self._transit_lock:
                due = [t + min(MAX_TRANSIT_S, 2.0 * self._gap_s.get(cam, MAX_TRANSIT_S / 2) + 0.002)
                       for cam, t in self._returned.items()]
            until = max([deadline, *(d for d in due if d > now)])
            remaining = until - now
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            same = next((i for i, p in enumerate(batch) if p.result.frame.source_id == item.result.frame.source_id), None)
            if same is None:
                batch.append(item)
            else:
                # One frame per camera in a model call: the newer one wins.
                batch[same].replaced = True
                batch[same].done.set()
                batch[same] = item
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
            released = time.monotonic()
            with self._transit_lock:
                for p in batch:
                    self._returned[p.result.frame.source_id] = released
                # Bounded: a camera that never comes back is forgotten after a while.
                for cam in [c for c, t in self._returned.items() if released - t > 10 * MAX_TRANSIT_S]:
                    del self._returned[cam]
            for p in batch:
                p.done.set()


_NO_IMAGE = np.zeros((1, 1, 3), np.uint8)
#: The longest a batch waits for a camera whose next frame is on its way.
MAX_TRANSIT_S = 0.05


# ----------------------------------------------------------------------------- cameras


@dataclass
class _InFlight:
    """A frame of this camera at its inference actor: the call, and what goes back with its
    result (its JPEG, the model's class names then, the local stages' times in ms)."""

    ref: Any
    frame: Frame
    jpeg: bytes | None
    names: tuple[str, ...]
    timings_ms: dict[str, float]
    sent: float


class CameraWorker:
    """One camera: the existing live source (capture, reconnect, backoff) plus preprocess.

    A loop thread sends the newest frame to the model as soon as the previous one is back
    (the capture thread meanwhile keeps only the newest frame, counting the others as
    dropped), so a camera never has more than one frame in the model. Results wait in a
    one-result outbox for the driver's ``collect``; a newer result replaces an uncollected
    one (counted), so the model never waits for the driver's round trip.
    """

    def __init__(self, cfg: PipelineConfig, name: str, tile_interval_s: float | None = 0.0) -> None:
        from streamer.compose import source_for
        from streamer.runtime import configure_threads
        from streamer.sources.live import LiveSource

        configure_threads()
        source = source_for(cfg, name, in_process=False)
        if not isinstance(source, LiveSource):
            raise ConfigError(f"camera '{name}': {(cfg.cameras or {})[name].url} is not a live source")
        self.name = name
        self.source = source
        self.tile_quality = cfg.executor.tile_quality
        #: Seconds between JPEGs for the driver: 0 every frame (recordings, event snapshots),
        #: 1 / the dashboard's max_fps when only the dashboard shows them, None never.
        self.tile_interval_s = tile_interval_s
        self._next_tile = 0.0
        self.identity = node_identity()
        self.replaced = 0  # frames taken while the inference actor was not ready
        self.uncollected = 0  # results overtaken by a newer one before the driver collected them
        self._cond = threading.Condition()
        #: The newest result not yet collected, with its frame's capture time on this machine.
        self._outbox: tuple[CameraResult, float] | None = None
        self._infer: Any = None
        self._generation = 0
        self._timeout_s = 10.0
        self._infer_error: str | None = None
        self._geometry: InferenceInfo | None = None
        self._letterboxes: dict[tuple[int, int], Letterbox] = {}
        self._ended = False
        self._read_error: str | None = None
        self._stop = threading.Event()
        source.open()
        self._thread = threading.Thread(target=self._loop, name=f"streamer-ray-camera-{name}", daemon=True)
        self._thread.start()

    def status(self) -> dict[str, Any]:
        s = self.source.status()
        s.update(self.identity)
        s["dropped"] = int(s.get("dropped") or 0) + self.replaced + self.uncollected
        s["url"] = self.source.describe()
        s["fps_nominal"] = self.source.fps
        s["ended"] = self._ended
        s["max_reconnects_exceeded"] = bool(
            self._ended and self.source.policy.max_reconnects is not None
            and self.source.reconnects > self.source.policy.max_reconnects)
        return s

    def collect(self, infer: Any, generation: int, wait_s: float, timeout_s: float) -> Collected:
        """The newest result not yet collected (waits up to ``wait_s``), with the status.

        ``infer`` is the inference actor of this camera's node (None while the driver does
        not know the node yet); a new ``generation`` replaces the one in use.
        """
        with self._cond:
            if generation != self._generation:
                self._infer, self._generation, self._geometry = infer, generation, None
                self._infer_error = None
            self._timeout_s = timeout_s
            if self._outbox is None and not self._ended:
                self._cond.wait(wait_s)
            out, self._outbox = self._outbox, None
            infer_error, self._infer_error = self._infer_error, None
        result = None
        if out is not None:
            # Clocks of different machines do not agree: the driver gets the frame's age.
            result = dataclasses.replace(out[0], age_s=time.monotonic() - out[1])
        return Collected(status=self.status(), generation=generation, result=result, infer_error=infer_error or None,
                         error=self._read_error or None)

    # ---------------------------------------------------------------- the loop

    def _loop(self) -> None:
        """Newest frame -> resize -> model -> outbox, again at once: when a result comes back
        the capture thread already holds a newer frame, so the camera's next frame reaches
        the inference actor moments later, and that actor waits for it (see
        the inference worker's batching) so batches across cameras stay full.

        (Keeping a second frame per camera waiting at the inference actor was tried: the
        model is then never idle, but on two cores it ran no faster and latency doubled.)
        """
        while not self._stop.is_set():
            try:
                infer, generation = self._current_infer()
                if infer is None or self._ended:
                    self._stop.wait(0.05)
                    continue
                frame = self.source.read(0.1)
                if frame is None:
                    self._end(None)
                    continue
                if not isinstance(frame, Frame):
                    continue
                prepared = self._prepare(frame)
                if prepared is None:
                    self.replaced += 1
                    continue
                self._deliver(self._submit(infer, generation, prepared), generation)
            except SourceReadError as exc:
                self._end(str(exc))
            except Exception as exc:  # noqa: BLE001 - one bad frame or call must not end the camera
                log.warning("camera %s: %s: %s", self.name, type(exc).__name__, exc)
                self._stop.wait(0.1)

    def _end(self, error: str | None) -> None:
        with self._cond:
            self._ended = True
            self._read_error = error
            self._cond.notify_all()

    def _current_infer(self) -> tuple[Any, int]:
        """The inference actor to use and its generation, after learning its input geometry."""
        import ray

        with self._cond:
            infer, generation, geometry = self._infer, self._generation, self._geometry
        if infer is None or geometry is not None:
            return (infer if geometry is not None else None), generation
        try:
            geometry = ray.get(infer.describe.remote(), timeout=self._timeout_s)
        except ray.exceptions.GetTimeoutError:
            return None, generation  # still starting: asked again next turn
        except ray.exceptions.RayError as exc:
            self._fail_infer(generation, exc)
            return None, generation
        with self._cond:
            if self._generation == generation:
                self._geometry = geometry
                self._letterboxes.clear()
        return None, generation  # the next turn uses it

    def _fail_infer(self, generation: int, exc: BaseException) -> None:
        with self._cond:
            if self._generation == generation:
                self._infer = None
                self._infer_error = f"{type(exc).__name__}: {str(exc)[:200]}"
                self._cond.notify_all()

    def _prepare(self, frame: Frame) -> tuple[Frame, Letterbox, np.ndarray, float] | None:
        """Letterbox geometry and the resize (the costly part for large frames); the model's
        actor pads and normalizes, so 1 byte per pixel crosses the object store, not 4."""
        geometry = self._geometry
        if geometry is None:
            return None
        t0 = time.perf_counter()
        image = frame.image
        hw = (image.shape[0], image.shape[1])
        lb = self._letterboxes.get(hw)
        if lb is None:
            lb = letterbox_params(hw, geometry.imgsz, rect=geometry.rect, stride=geometry.stride)
            self._letterboxes[hw] = lb
        if geometry.device_preprocess:
            resized = image
        else:
            size = (int(round(hw[1] * lb.scale)), int(round(hw[0] * lb.scale)))
            resized = image if size == (hw[1], hw[0]) else cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        return frame, lb, np.ascontiguousarray(resized), (time.perf_counter() - t0) * 1000.0

    def _submit(self, infer: Any, generation: int, prepared: tuple[Frame, Letterbox, np.ndarray, float]) -> _InFlight:
        frame, lb, resized, pre_ms = prepared
        geometry = self._geometry
        t0 = time.perf_counter()
        ref = infer.infer.remote(self.name, resized, lb, bool(geometry and geometry.device_preprocess), self._timeout_s)
        t1 = time.perf_counter()
        # The JPEG is made while the model runs: it costs no latency.
        jpeg = None
        now = time.monotonic()
        if self.tile_interval_s is not None and now >= self._next_tile:
            self._next_tile = max(self._next_tile + self.tile_interval_s, now - self.tile_interval_s)
            ok, buffer = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, self.tile_quality])
            jpeg = buffer.tobytes() if ok else None
        t2 = time.perf_counter()
        return _InFlight(ref, frame, jpeg, geometry.names if geometry is not None else (),
                         {"preprocess": pre_ms, "submit": (t1 - t0) * 1000.0, "tile": (t2 - t1) * 1000.0},
                         time.monotonic())

    def _deliver(self, pending: _InFlight, generation: int) -> None:
        import ray

        try:
            detected: Detected = ray.get(pending.ref, timeout=self._timeout_s)
        except ray.exceptions.GetTimeoutError:
            log.debug("no inference result within %g s", self._timeout_s)
            return
        except ray.exceptions.RayActorError as exc:
            self._fail_infer(generation, exc)
            return
        except ray.exceptions.RayError as exc:
            log.warning("camera %s: inference failed: %s", self.name, exc)
            return
        if detected.replaced:
            self.replaced += 1  # a newer frame of this camera took its place in the batch
            return
        frame = pending.frame
        timings = {**pending.timings_ms, "infer": detected.infer_ms, "postprocess": detected.post_ms,
                   "model_wait": (time.monotonic() - pending.sent) * 1000.0}
        result = CameraResult(index=frame.index, jpeg=pending.jpeg, names=pending.names,
                              timings_ms=timings, detections=detected.detections, batch=detected.batch)
        with self._cond:
            if self._outbox is not None:
                self.uncollected += 1
            self._outbox = (result, frame.captured_at)
            self._cond.notify_all()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.source.close()


def detections_from(arrays: DetectionArrays | None) -> Detections | None:
    """Writable Detections from the arrays an inference call returned (Ray's are read-only)."""
    if arrays is None:
        return None
    xyxy, confidence, class_id = arrays
    return Detections(np.array(xyxy, np.float32), np.array(confidence, np.float32), np.array(class_id, np.int32))

"""Camera monitoring on a Ray cluster.

::

    node A                                      node B
    camera actors: LiveSource (capture,         camera actors ...
      reconnect), letterbox resize, JPEG          │
        │ uint8 frame, same node                  ▼
        ▼ (shared-memory object store)          inference actor (one per node or GPU)
    inference actor: pads + normalizes, batches
      the cameras of its node within batch_timeout_ms, model, decode/NMS
        │ detections + JPEG only
        ▼
    driver: RayCameras (one collect call in flight per camera) ─▶ receive ─▶ track ─▶ render ─▶ sinks
            (CameraStats + dashboard, events, per-camera JSONL / recordings, /metrics)

The driver side is an ordinary :class:`~streamer.pipeline.Pipeline` with ``LATEST_PER_KEY``
queues, whose source is :class:`RayCameras`: it keeps one ``collect`` call in flight per
camera actor and hands each result on as a frame that already carries its detections.
Latest frame wins end to end: a camera has at most one frame in the model, one letterboxed
frame waiting for it and one result waiting for the driver, and at each of those places a
newer frame replaces an older one and the replacement is counted (``dropped`` per camera,
as in-process), so latency stays flat however slow the model is.

Faults: camera actors restart anywhere (``max_restarts=-1``; SPREAD or a soft node
preference), so a dead actor or node brings its cameras back on the nodes left, shown as
``reconnecting`` meanwhile. An inference actor that dies is replaced. Every wait on a
remote call has a timeout; the dashboard only ever reads what the driver already has.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import cv2
import numpy as np

from streamer.config import PipelineConfig
from streamer.executors import ray_cluster
from streamer.executors.ray_workers import CameraWorker, Collected, InferenceInfo, InferenceWorker, detections_from
from streamer.monitor import MonitorRun, stage_record
from streamer.pipeline import Stage
from streamer.sources.base import TIMEOUT, Source
from streamer.sources.live import CONNECTING, ENDED, RECONNECTING
from streamer.stages import RenderStage
from streamer.stats import CameraStatus, PipelineStats, Placement, StageMeter
from streamer.types import Frame, Result

log = logging.getLogger(__name__)

#: How long a camera actor waits for a new frame before answering with its status only.
FRAME_WAIT_S = 0.25
#: Pause before calling a camera actor again after it failed (Ray is restarting it).
RETRY_AFTER_S = 0.5
#: Stages timed per frame: on the camera actor (resize, handing the frame to the inference
#: actor, JPEG), on the inference actor (model call per frame of its batch, decode/NMS),
#: a frame's whole stay with the inference actor seen from the camera (batch wait, model,
#: Ray's calls) and the driver's JPEG decode.
REMOTE_STAGES = ("preprocess", "submit", "tile", "infer", "postprocess", "model_wait", "decode")


@dataclass(slots=True)
class RemoteFrame(Frame):
    """A frame decoded from a camera actor's JPEG, with what the remote stages found.

    ``image`` is None for a frame that came without a JPEG: no output needed its picture
    (only the dashboard wants pictures, and it takes at most ``max_fps`` per camera).
    """

    detections: Any = None
    names: tuple[str, ...] = ()


class TileRenderStage(RenderStage):
    """Draws on the frames that brought a picture; the others pass on undrawn."""

    def process(self, item: Result) -> Result:
        if item.frame.image is None:
            return item
        return super().process(item)


class ReceiveStage(Stage):
    """Moves the remote detections onto the result, where the local stages expect them."""

    name = "receive"

    def process(self, item: Result) -> Result:
        frame = item.frame
        if isinstance(frame, RemoteFrame):
            item.detections = frame.detections
            item.names = frame.names
        return item


@dataclass
class CameraState:
    """The driver's view of one camera actor (written by the source thread, read by stats)."""

    name: str
    handle: Any
    status: dict[str, Any] = field(default_factory=dict)
    node: str | None = None
    node_ip: str | None = None
    pid: int | None = None
    ref: Any = None
    sent_at: float = 0.0
    not_before: float = 0.0
    unreachable: str | None = None  # why the actor cannot be reached now
    restarts: int = 0  # actor restarts the driver saw (a new process, on this node or another)
    moves: int = 0  # restarts that landed on another node
    timeouts: int = 0
    ended: bool = False
    fps: float | None = None  # nominal, for the tracker's time base
    nodes_seen: set[str] = field(default_factory=set)


@dataclass
class InferenceSlot:
    handle: Any
    generation: int
    node: str
    describe_ref: Any = None
    info: InferenceInfo | None = None


class RayCameras(Source):
    """The cameras' actors as one live source: one call in flight per camera, results as frames."""

    live = True

    def __init__(self, ray: ModuleType, cfg: PipelineConfig, names: list[str]) -> None:
        self.ray = ray
        self.cfg = cfg
        self.names = names
        self.source_id = "cameras"
        self.cameras: dict[str, CameraState] = {}
        self.inference: dict[str, list[InferenceSlot]] = {}
        self._generation = 0
        self.meters = {name: StageMeter(name) for name in REMOTE_STAGES}
        self.batches = 0.0  # sum over items of 1 / batch size = model calls
        self.items = 0
        self.inference_replaced = 0
        self.model_info: InferenceInfo | None = None
        self.nodes_used: set[str] = set()
        ex = cfg.executor
        self.call_timeout_s = ex.call_timeout_s
        self._step_deadline_s = FRAME_WAIT_S + ex.call_timeout_s + 2.0
        self._actor_cls = ray.remote(CameraWorker)
        self._infer_cls = ray.remote(InferenceWorker)
        self._next = 0

    @property
    def kind(self) -> str:
        return "cameras"

    @property
    def streams(self) -> int:
        return len(self.names)

    # ---------------------------------------------------------------- lifecycle

    def open(self) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ex = self.cfg.executor
        for name in self.names:
            cam = self.cfg.cameras[name]  # type: ignore[index]
            options: dict[str, Any] = {
                "num_cpus": ex.camera_cpus, "max_restarts": -1, "max_task_retries": 0, "max_concurrency": 4,
                "scheduling_strategy": "SPREAD",
            }
            if cam.node:
                node_id = ray_cluster.resolve_node(self.ray, cam.node, f"cameras.{name}.node")
                # Soft: when that node is gone the camera moves to another rather than stopping.
                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=True)
            if cam.resources:
                options["resources"] = dict(cam.resources)
            handle = self._actor_cls.options(**options).remote(self.cfg, name, self.tile_interval_s(cam))
            self.cameras[name] = CameraState(name, handle)

    def tile_interval_s(self, cam: Any) -> float | None:
        """Every frame's picture when a recording or the events need it; the dashboard's
        rate when only it shows them; none otherwise (detections and counts only)."""
        cfg = self.cfg
        if cam.record or cfg.events.enabled():
            return 0.0
        if cfg.dashboard.enabled:
            return 1.0 / cfg.dashboard.max_fps
        return None

    def close(self) -> None:
        for state in self.cameras.values():
            try:
                self.ray.kill(state.handle, no_restart=True)
            except Exception as exc:  # noqa: BLE001 - best effort at shutdown
                log.debug("stopping camera %s: %s", state.name, exc)
        for slots in self.inference.values():
            for slot in slots:
                try:
                    self.ray.kill(slot.handle, no_restart=True)
                except Exception as exc:  # noqa: BLE001
                    log.debug("stopping inference on %s: %s", slot.node, exc)

    # ---------------------------------------------------------------- inference actors

    def _gpus_on(self, node: str) -> int:
        for entry in ray_cluster.alive_nodes(self.ray):
            if entry["NodeID"] == node:
                return int(entry.get("Resources", {}).get("GPU", 0))
        return 0

    def _inference_for(self, state: CameraState) -> InferenceSlot | None:
        node = state.node
        if node is None:
            return None
        slots = self.inference.get(node)
        if not slots:
            slots = self.inference[node] = self._start_inference(node)
        # One actor per GPU: the node's cameras are shared among them by their order.
        return slots[self.names.index(state.name) % len(slots)]

    def _start_inference(self, node: str) -> list[InferenceSlot]:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        cfg = self.cfg
        gpus = self._gpus_on(node)
        batch = cfg.model.batch or len(self.names)
        slots = []
        for _ in range(max(1, gpus)):
            self._generation += 1
            options: dict[str, Any] = {
                "num_cpus": cfg.executor.inference_cpus, "max_restarts": 0, "max_concurrency": 2 * len(self.names) + 4,
                "scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False),
            }
            if gpus:
                options["num_gpus"] = 1
            handle = self._infer_cls.options(**options).remote(cfg, batch, cfg.model.batch_timeout_ms / 1000.0)
            slot = InferenceSlot(handle, self._generation, node)
            slot.describe_ref = handle.describe.remote()
            slots.append(slot)
        log.info("inference on node %s: %d actor(s)", node[:12], len(slots))
        return slots

    def _replace_inference(self, node: str | None, generation: int, reason: str) -> None:
        slots = self.inference.get(node or "")
        if not slots or not any(s.generation == generation for s in slots):
            return  # already replaced after another camera's report
        log.warning("inference actor on node %s failed (%s): replacing it", (node or "?")[:12], reason)
        self.inference_replaced += 1
        for slot in slots:
            try:
                self.ray.kill(slot.handle, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        del self.inference[node or ""]

    def _poll_model_info(self) -> None:
        for slots in self.inference.values():
            for slot in slots:
                if slot.info is None and slot.describe_ref is not None:
                    ready, _ = self.ray.wait([slot.describe_ref], timeout=0)
                    if ready:
                        try:
                            slot.info = self.ray.get(slot.describe_ref, timeout=1.0)
                            self.model_info = self.model_info or slot.info
                        except Exception as exc:  # noqa: BLE001 - the step calls report it as well
                            log.debug("inference actor describe failed: %s", exc)
                        slot.describe_ref = None

    # ---------------------------------------------------------------- the loop

    def _send(self, now: float) -> None:
        for state in self.cameras.values():
            if state.ref is not None or state.ended or now < state.not_before:
                continue
            slot = self._inference_for(state)
            handle = slot.handle if slot is not None else None
            generation = slot.generation if slot is not None else 0
            state.ref = state.handle.collect.remote(handle, generation, FRAME_WAIT_S, self.call_timeout_s)
            state.sent_at = now

    def read(self, timeout: float) -> Frame | None | object:
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            self._send(now)
            self._poll_model_info()
            self._expire(now)
            waiting = {s.ref: s for s in self.cameras.values() if s.ref is not None}
            if not waiting and all(s.ended for s in self.cameras.values()):
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return TIMEOUT
            if not waiting:
                time.sleep(min(remaining, 0.05))
                continue
            # Rotate the order so that one fast camera cannot always win ray.wait.
            refs = list(waiting)
            self._next = (self._next + 1) % len(refs)
            refs = refs[self._next:] + refs[: self._next]
            ready, _ = self.ray.wait(refs, num_returns=1, timeout=min(remaining, 0.1))
            if not ready:
                continue
            state = waiting[ready[0]]
            frame = self._receive(state, ready[0])
            if frame is not None:
                return frame

    def _expire(self, now: float) -> None:
        """A call that has not come back in time is given up: the camera shows reconnecting."""
        for state in self.cameras.values():
            if state.ref is not None and now - state.sent_at > self._step_deadline_s:
                state.timeouts += 1
                state.unreachable = f"no answer for {now - state.sent_at:.0f} s"
                log.warning("camera %s: actor did not answer for %.0f s", state.name, now - state.sent_at)
                try:
                    self.ray.cancel(state.ref)
                except Exception:  # noqa: BLE001 - cancelling is best effort
                    pass
                state.ref = None

    def _receive(self, state: CameraState, ref: Any) -> RemoteFrame | None:
        ray = self.ray
        state.ref = None
        received = time.monotonic()
        try:
            out: Collected = ray.get(ref, timeout=self.call_timeout_s)
        except ray.exceptions.RayActorError as exc:
            self._lost(state, f"actor died: {type(exc).__name__}")
            return None
        except ray.exceptions.RayError as exc:
            self._lost(state, f"{type(exc).__name__}: {str(exc)[:200]}")
            return None
        self._update(state, out.status or {})
        if out.infer_error:
            self._replace_inference(state.node, out.generation, out.infer_error)
            return None
        if out.error:
            log.error("camera %s: %s", state.name, out.error)
        result = out.result
        if result is None:
            return None  # status only: no new frame within the wait
        image = None
        if result.jpeg is not None:
            t0 = time.perf_counter()
            image = cv2.imdecode(np.frombuffer(result.jpeg, np.uint8), cv2.IMREAD_COLOR)
            self.meters["decode"].record((time.perf_counter() - t0) * 1000.0)
        for stage in REMOTE_STAGES:
            if stage in result.timings_ms:
                self.meters[stage].record(float(result.timings_ms[stage]))
        batch = result.batch or 1
        self.items += 1
        self.batches += 1.0 / max(batch, 1)
        captured_at = received - result.age_s
        return RemoteFrame(state.name, result.index, image, None, captured_at,  # type: ignore[arg-type]
                           detections=detections_from(result.detections), names=tuple(result.names))

    def _update(self, state: CameraState, status: dict[str, Any]) -> None:
        pid, node = status.get("pid"), status.get("node")
        if state.pid is not None and pid is not None and pid != state.pid:
            state.restarts += 1
            if node != state.node:
                state.moves += 1
                log.warning("camera %s: restarted on node %s (was %s)", state.name, str(node)[:12],
                            str(state.node)[:12])
        state.pid = pid if pid is not None else state.pid
        if node is not None:
            state.node, state.node_ip = str(node), status.get("node_ip")
            state.nodes_seen.add(str(node))
            self.nodes_used.add(str(node))
        state.status = status
        state.unreachable = None
        state.fps = status.get("fps_nominal") or state.fps
        if status.get("ended"):
            state.ended = True

    def _lost(self, state: CameraState, reason: str) -> None:
        if state.unreachable is None:
            log.warning("camera %s: %s; Ray restarts it", state.name, reason)
        state.unreachable = reason
        state.not_before = time.monotonic() + RETRY_AFTER_S
        state.node = None  # ask again where it runs before choosing its inference actor

    # ---------------------------------------------------------------- stats

    def camera_state(self, name: str) -> str:
        state = self.cameras[name]
        if state.unreachable is not None:
            return RECONNECTING
        if state.status.get("max_reconnects_exceeded"):
            return "down"
        return str(state.status.get("state") or (ENDED if state.ended else CONNECTING))

    def fps_of(self, source_id: str) -> float | None:
        state = self.cameras.get(source_id)
        return state.fps or None if state is not None else None

    @property
    def dropped(self) -> int:
        return sum(int(s.status.get("dropped") or 0) for s in self.cameras.values())

    def status(self) -> dict[str, object]:
        return {name: dict(s.status) for name, s in self.cameras.items()}

    def summary(self) -> str | None:
        parts = []
        for name, s in self.cameras.items():
            st = s.status
            parts.append(f"{name}: {st.get('frames', 0)} frames captured, {st.get('dropped', 0)} dropped at the source, "
                         f"{st.get('reconnects', 0)} reconnects, {s.restarts} actor restarts ({s.moves} to another node)")
        return "; ".join(parts) or None


@dataclass(kw_only=True, eq=False)
class RayMonitor(MonitorRun):
    """The monitor's driver on Ray: the same sinks, stats and dashboard as in-process."""

    source: RayCameras

    # ------------------------------------------------------------------ stats

    def camera_status(self, name: str, pipeline: PipelineStats, now: float) -> CameraStatus:
        """Camera ``name`` from what its actor last reported; it never waits on a remote call."""
        src = self.source
        state = src.cameras.get(name)
        st = state.status if state is not None else {}
        return CameraStatus(
            state=src.camera_state(name) if state is not None else CONNECTING,
            dropped=int(st.get("dropped") or 0) + int(pipeline.dropped_by_source.get(name, 0)),
            reconnects=int(st.get("reconnects") or 0) + (state.restarts if state is not None else 0),
            url=st.get("url") or name,
            last_error=(state.unreachable if state is not None and state.unreachable else st.get("last_error")),
            size=st.get("size"),
            placement=Placement(
                node=state.node if state is not None else None,
                node_ip=state.node_ip if state is not None else None,
                actor_restarts=state.restarts if state is not None else 0,
            ),
            **self.measured(name),
        )

    def stats(self) -> dict[str, Any]:
        """The dashboard's stats (schema in ``streamer.sinks.dashboard``), plus each camera's node.

        Reads only what the driver already holds: it never waits on a remote call.
        """
        src = self.source
        pipeline_stats = self.pipeline.stats()
        cameras = {name: status.record() for name, status in self.camera_statuses(pipeline_stats).items()}
        stages: dict[str, Any] = {}
        for name in REMOTE_STAGES:
            s = src.meters[name].snapshot()
            stages[name] = {"processed": s.processed, "dropped": 0, "p50_ms": s.p50_ms, "p95_ms": s.p95_ms,
                            "fps": s.fps, "queue_depth": 0}
        stages["preprocess"]["dropped"] = src.dropped
        for s in list(pipeline_stats)[1:]:
            stages[s.name] = stage_record(s)
        info = src.model_info
        batches = round(src.batches)
        return {
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "executor": "ray",
            "nodes": len(src.nodes_used),
            "model": {
                "name": info.name if info is not None else self.model_cfg.name,
                "backend": info.backend if info is not None else self.model_cfg.backend,
                "device": info.device if info is not None else self.model_cfg.device,
                "batch_size_mean": round(src.items / src.batches, 3) if src.batches else 0.0,
                "batches": batches,
                "inference_actors": sum(len(v) for v in src.inference.values()),
                "inference_replaced": src.inference_replaced,
            },
            "cameras": cameras,
            "stages": stages,
            "events": self.events.recent(20) if self.events is not None else [],
        }

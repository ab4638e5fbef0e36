"""Camera monitoring: many live cameras in one process, the model fed on demand.

::

    camera threads (one per camera, newest-frame slot each, decode level set by the
            │       fair-share controller)
            │  MultiSource: the least recently served camera with a frame
            ▼
    preprocess ─▶ infer ─▶ postprocess ─▶ [track] ─▶ render
            ▼
    sinks: per-camera stats + dashboard frames, events, MQTT, per-camera JSONL / recordings

The parts are built by :func:`streamer.compose.monitor` (the sinks by
:func:`streamer.compose.monitor_sinks`, as :class:`MonitorSinks`) and given to
:class:`Monitor`; :func:`streamer.executors.local.drive` runs it. The edges up to the model hold
one frame, then one batch (see ``QueueConfig.feed``), so what a camera hands over is what the
model takes and a camera that is down or slow never delays the others.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamer.config import ModelConfig
from streamer.executors.local import STOP_GRACE_S
from streamer.models import Model
from streamer.pipeline import Pipeline
from streamer.sinks.base import Sink
from streamer.sinks.cameras import CameraStats
from streamer.sources.base import Source
from streamer.sources.live import ENDED, LiveSource
from streamer.sources.multi import MultiSource
from streamer.stats import CameraStatus, PipelineStats, Shedding, StageStats

if TYPE_CHECKING:
    from streamer.sinks.dashboard import DashboardHub, DashboardServer
    from streamer.sinks.events import EventSink
    from streamer.sinks.mqtt import MqttSink

log = logging.getLogger(__name__)


def stage_record(s: StageStats) -> dict[str, Any]:
    """One stage's entry under ``stages`` in a monitor's stats."""
    return {"processed": s.processed, "dropped": s.dropped, "p50_ms": s.p50_ms, "p95_ms": s.p95_ms,
            "fps": s.fps, "queue_depth": s.queue_depth}


@dataclass
class MonitorSinks:
    """A monitor's sinks, built from its output sections by :func:`streamer.compose.monitor_sinks`."""

    camera_stats: CameraStats
    #: Each camera's own JSONL and drawn recording, for the summary's "wrote" lines.
    camera_outputs: list[Sink]
    hub: DashboardHub | None = None
    server: DashboardServer | None = None
    mqtt: MqttSink | None = None
    events: EventSink | None = None

    @property
    def all(self) -> list[Sink]:
        """In the pipeline's order: MQTT before the events, so it closes after them and their ends get out."""
        return [self.camera_stats, *self.camera_outputs, *(s for s in (self.mqtt, self.events) if s is not None)]


@dataclass(kw_only=True, eq=False)
class MonitorRun:
    """What the in-process and the Ray monitor share: the parts :mod:`streamer.compose` built
    for them, the stats they add per camera, the status lines, and start and stop (the
    pipeline, then the dashboard).

    A subclass gives ``camera_status()`` and ``stats()``. Stopping is graceful for
    ``STOP_GRACE_S``; a stage stuck past it is given up on and the outputs that can be
    finalized are.
    """

    names: list[str]
    #: The cameras as one source, and the pipeline that reads it.
    source: Source
    pipeline: Pipeline
    sinks: MonitorSinks
    #: The ``model:`` section, for the stats until the model says what it is.
    model_cfg: ModelConfig
    #: Whether the pipeline tracks (its cameras' stats then count the tracks in view).
    tracking: bool
    started_at: float = field(default_factory=time.monotonic)

    @property
    def camera_stats(self) -> CameraStats:
        return self.sinks.camera_stats

    @property
    def camera_outputs(self) -> list[Sink]:
        return self.sinks.camera_outputs

    @property
    def events(self) -> EventSink | None:
        return self.sinks.events

    @property
    def mqtt(self) -> MqttSink | None:
        return self.sinks.mqtt

    @property
    def hub(self) -> DashboardHub | None:
        return self.sinks.hub

    @property
    def server(self) -> DashboardServer | None:
        return self.sinks.server

    def stats(self) -> dict[str, Any]:
        raise NotImplementedError

    def camera_status(self, name: str, pipeline: PipelineStats, now: float) -> CameraStatus:
        """Camera ``name`` as this executor sees it (``pipeline``: its pipeline's stats now)."""
        raise NotImplementedError

    def camera_statuses(self, pipeline: PipelineStats | None = None) -> dict[str, CameraStatus]:
        """Every camera's status, in the config's order (``pipeline``: its stats, if taken already)."""
        p = self.pipeline.stats() if pipeline is None else pipeline
        now = time.monotonic()
        return {name: self.camera_status(name, p, now) for name in self.names}

    def measured(self, name: str) -> dict[str, Any]:
        """The fields of camera ``name``'s status that its results give, whatever the executor:
        fps, latency, frames, and its tracks and counts."""
        meter = self.camera_stats.meters[name]
        p50, p95 = meter.percentiles()
        return {"fps": round(meter.fps(), 2), "latency_ms_p50": round(p50, 1), "latency_ms_p95": round(p95, 1),
                "latency_histogram": self.camera_stats.latency[name].snapshot(), "frames": meter.processed,
                "extras": self.camera_extras(name)}

    def camera_extras(self, name: str) -> dict[str, Any]:
        """Tracks in view and line and zone counts for camera ``name``'s stats."""
        extras: dict[str, Any] = {}
        if self.tracking:
            extras["tracks_in_view"] = self.camera_stats.in_view.get(name, 0)
        analytics = self.camera_stats.analytics.get(name)
        if analytics is not None:
            extras.update(analytics.to_record(self.camera_stats.names))
        return extras

    def status_lines(self) -> list[str]:
        """One console line per camera (with its node on Ray), then the model's."""
        lines = []
        for name, c in self.camera_statuses().items():
            where = f" on node {str(c.placement.node)[:12]}" if c.placement is not None else ""
            shed = ""
            if c.shedding is not None:
                d, age = c.shedding, c.shedding.result_age_s
                shed = (f" | decode {d.decode_level}: {d.decoded_fps:.1f} decoded, {d.skipped_fps:.1f} "
                        f"skipped fps | newest result {'-' if age is None else f'{age:.1f} s'} old")
            lines.append(
                f"{name}: {c.state}{where} | {c.fps:.1f} fps | latency p50 {c.latency_ms_p50:.0f} ms "
                f"p95 {c.latency_ms_p95:.0f} ms | dropped {c.dropped} | reconnects {c.reconnects}{shed}"
            )
        stats = self.stats()
        m = stats["model"]
        line = f"model: {m['batches']} batches, mean batch {m['batch_size_mean']:.2f}"
        if "inference_actors" in m:
            line += f", {m['inference_actors']} inference actor(s) on {stats['nodes']} node(s)"
        lines.append(line)
        return lines

    def start(self) -> None:
        self.pipeline.open()
        if self.server is not None:
            try:
                self.server.start()
            except BaseException:
                self.pipeline.close()
                raise
        self.started_at = time.monotonic()
        self.pipeline.start()

    def stop(self) -> None:
        self.pipeline.stop()
        stopped = self.pipeline.join(timeout=STOP_GRACE_S)
        self.pipeline.close(timeout_s=10.0 if stopped else 2.0)
        if self.server is not None:
            self.server.stop()
        if self.hub is not None:
            self.hub.close()


@dataclass(kw_only=True, eq=False)
class Monitor(MonitorRun):
    """The in-process monitor: its cameras read on demand by one model; exposes their stats."""

    cameras: dict[str, LiveSource]
    model: Model
    source: MultiSource

    # ------------------------------------------------------------------ stats

    def shedding(self, name: str, now: float) -> Shedding:
        """What camera ``name`` decodes and what the model takes of it (see :class:`Shedding`)."""
        camera = self.cameras[name]
        window = self.source.shed.windows[name]
        inferred = self.camera_stats.meters[name].fps(now)
        newest = self.camera_stats.newest.get(name)
        return Shedding(
            decode_level=camera.decode.level,
            decoded_fps=round(window.decoded_fps, 2),
            inferred_fps=round(inferred, 2),
            skipped_fps=round(max(0.0, window.packet_fps - inferred), 2),
            max_fps=camera.max_fps,
            result_age_s=None if newest is None else round(now - newest, 3),
        )

    def camera_state(self, name: str) -> str:
        camera = self.cameras[name]
        state = camera.state
        if state == ENDED and camera.policy.max_reconnects is not None and camera.reconnects > camera.policy.max_reconnects:
            return "down"
        return state

    def camera_status(self, name: str, pipeline: PipelineStats, now: float) -> CameraStatus:
        camera = self.cameras[name]
        size = camera.status().get("size")
        return CameraStatus(
            state=self.camera_state(name),
            dropped=int(camera.dropped + pipeline.dropped_by_source.get(name, 0)),
            reconnects=camera.reconnects,
            url=camera.describe(),
            last_error=camera.last_error,
            size=None if size is None else str(size),
            shedding=self.shedding(name, now),
            **self.measured(name),
        )

    def stats(self) -> dict[str, Any]:
        """The dashboard's stats (schema in ``streamer.sinks.dashboard``)."""
        p = self.pipeline.stats()
        infer = p.stage("infer")
        info = getattr(self.model, "info", None)
        cameras = {name: status.record() for name, status in self.camera_statuses(p).items()}
        stages = {s.name: stage_record(s) for s in p}
        return {
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "model": {
                "name": Path(info.path).name if info else self.model_cfg.name,
                "backend": info.backend if info else self.model_cfg.backend,
                "device": info.device if info else self.model_cfg.device,
                "batch_size_mean": round(infer.mean_batch, 3) if infer is not None else 0.0,
                "batches": infer.batches if infer is not None else 0,
            },
            "cameras": cameras,
            "stages": stages,
            "events": self.events.recent(20) if self.events is not None else [],
            **({"mqtt": self.mqtt.stats()} if self.mqtt is not None else {}),
        }

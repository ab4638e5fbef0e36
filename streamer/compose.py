"""The composition root: a validated pipeline configuration turned into a job's parts.

Below the CLI, a :class:`~streamer.config.PipelineConfig` is read here and nowhere else. A job
entry (:mod:`streamer.jobs`) asks for its whole job in one call (:func:`annotate`,
:func:`watch`, :func:`monitor`, :func:`ray_monitor`) and hands it to an executor
(:mod:`streamer.executors.local`) that only runs it. Each part is built from its own section
by one function here (:func:`source_for`, :func:`model_for`, :func:`outputs_for`,
:func:`events_for`, :func:`mqtt_for`, :func:`build_from_config`) and finished by its
constructor, so a setting added to a section is threaded through one function, not through
every job. The Ray workers build their halves with the same functions.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from streamer.config import ClassifyConfig, DashboardConfig, ModelConfig, OutputConfig, PipelineConfig
from streamer.defaults import queue_for
from streamer.errors import ConfigError
from streamer.executors.local import Live, Recorded
from streamer.models import Model, load_model, resolve_device
from streamer.models.base import default_threads
from streamer.monitor import CameraStats, Monitor
from streamer.paths import same_file
from streamer.pipeline import Pipeline, Stage
from streamer.queues import Policy
from streamer.runtime import configure_threads
from streamer.sinks.base import ForSource, Sink
from streamer.sinks.counting import CountingSink
from streamer.sinks.images import ConsoleSink, ImageFolderSink
from streamer.sinks.jsonl import JsonlSink
from streamer.sinks.video import VideoSink
from streamer.sinks.window import OverlayWindow, check_display
from streamer.sources import make_source, source_path
from streamer.sources.base import Source
from streamer.sources.file import ImageSource
from streamer.sources.live import LiveSource
from streamer.sources.multi import MultiSource
from streamer.stages import (
    ClassifyStage,
    InferStage,
    PostprocessStage,
    PreprocessStage,
    RenderStage,
    SinkStage,
    TrackStage,
)

if TYPE_CHECKING:
    from streamer.executors.ray_monitor import RayMonitor
    from streamer.sinks.dashboard import DashboardHub, DashboardServer
    from streamer.sinks.events import EventSink
    from streamer.sinks.mqtt import MqttSink
    from streamer.stages import Geometry


def source_for(cfg: PipelineConfig, camera: str | None = None, *, live: bool = False,
               in_process: bool = True) -> Source:
    """The source ``cfg`` reads (not opened yet): its ``source``, or with ``camera`` that one
    of its ``cameras``, connecting as its ``capture`` section says.

    A recorded job (annotate) reads a file as it is, every frame and unpaced; ``live`` (watch)
    and the cameras read as it happens: a video file is replayed at its own rate. A webcam is
    asked for the capture section's size, fps and fourcc by its constructor, which checks them.

    A camera of the in-process monitor also gets its detect fps (the monitor's fair-share
    controller holds it to that) and, for a recording without boxes, copies its own packets
    into it. A Ray camera actor (``in_process=False``) has no such controller, and its
    recordings are drawn on the driver, so it gets neither.
    """
    cap = cfg.capture
    if cap.decode == "nvdec":
        # NvdecCapture exists and is tested, but no source hands its GPU frames on yet:
        # asked for by name, it must not quietly decode on the CPU instead.
        raise ConfigError("capture.decode: 'nvdec' is not used by the pipeline yet (sources decode on the CPU); "
                          "use 'auto' or 'cpu'")
    policy = cap.policy()
    cam = None
    if camera is not None:
        if not cfg.cameras or camera not in cfg.cameras:
            raise KeyError(f"no camera {camera!r}, expecting one of {sorted(cfg.cameras or {})}")
        cam = cfg.cameras[camera]
    live = live or cam is not None
    max_fps = record = None
    if cam is not None and in_process:
        max_fps = cam.fps if cam.fps is not None else cfg.detect.fps
        record = cam.record if cam.record and not cam.record_boxes else None
    return make_source(
        cam.url if cam is not None else cfg.source, policy=policy, transport=cap.transport,
        backend=cap.backend, source_id=camera, realtime=live, loop=cap.loop, max_fps=max_fps,
        shed=cap.shed, record=record, width=cap.width, height=cap.height, fps=cap.fps, fourcc=cap.fourcc,
    )


def model_for(cfg: ModelConfig, threads: int | None = None) -> Model:
    """The model a ``model:`` section describes, with its task check and labels (not opened
    yet), on ``threads`` intra-op threads a call (see :func:`inference_plan`) or the section's."""
    return load_model(cfg.name, backend=cfg.backend, device=cfg.device,
                      threads=threads if threads is not None else cfg.threads, half=cfg.half, task=cfg.task,
                      labels=cfg.labels)


def classifier_for(cfg: ClassifyConfig) -> Model:
    """The second model a ``classify:`` section names (not opened yet; the classify stage
    checks at open that it is a classifier and says which key is wrong when it is not)."""
    return model_for(ModelConfig(name=cfg.model, backend=cfg.backend, device=cfg.device))


def outputs_for(cfg: PipelineConfig, names: Sequence[str], *, copies: bool = False) -> list[Sink]:
    """Each camera's own JSONL and drawn recording, as its ``cameras:`` entry names them. With
    ``copies`` a recording without ``record_boxes`` is the camera's own (made by its source,
    see :func:`source_for`), not a sink."""
    outputs: list[Sink] = []
    for name in names:
        cam = (cfg.cameras or {})[name]
        if cam.jsonl:
            outputs.append(ForSource(JsonlSink(cam.jsonl), name))
        if cam.record and (cam.record_boxes or not copies):
            outputs.append(ForSource(VideoSink(cam.record, fps=None, measure_fps=True, **cfg.output.video_options()),
                                     name))
    return outputs


def events_for(cfg: PipelineConfig, mqtt: MqttSink | None = None) -> EventSink | None:
    """The per-object event sink the ``events:`` section asks for (a file, a webhook, or
    ``mqtt`` told of every event as it happens), or None."""
    ev = cfg.events
    if not ev.enabled(mqtt=mqtt is not None):
        return None
    from streamer.sinks.events import EventSink

    return EventSink(
        ev.path, ev.snapshots, ev.track, min_confidence=ev.min_confidence, min_frames=ev.min_frames,
        gone_after_s=ev.gone_after_s, zones=ev.zones, loiter_s=ev.loiter_s, webhook=ev.webhook,
        webhook_retries=ev.webhook_retries, webhook_timeout_s=ev.webhook_timeout_s,
        listeners=[mqtt.on_event] if mqtt is not None else (),
    )


def mqtt_for(cfg: PipelineConfig, source_ids: Sequence[str],
             states: Callable[[], Mapping[str, str]] | None = None) -> MqttSink | None:
    """The MQTT sink the ``mqtt:`` section asks for, or None.

    A monitor's cameras keep their names in topics; the one source of ``watch`` is called
    ``mqtt.camera``. Put the sink before the event sink in the sink list: sinks close last
    first, so the events' ends reach the queue before it is drained.
    """
    if cfg.mqtt is None:
        return None
    from streamer import __version__
    from streamer.sinks.mqtt import CameraTopics, MqttSink  # loads paho: only when asked for

    cameras: dict[str, CameraTopics] = {}
    for source_id in source_ids:
        if cfg.cameras is not None and source_id in cfg.cameras:
            cam = cfg.cameras[source_id]
            cameras[source_id] = CameraTopics(source_id, tuple(s.name for s in cam.lines), tuple(s.name for s in cam.zones))
        else:
            cameras[source_id] = CameraTopics(cfg.mqtt.camera, tuple(s.name for s in cfg.lines),
                                              tuple(s.name for s in cfg.zones))
    return MqttSink(cfg.mqtt, cameras, cfg.events.track, min_confidence=cfg.events.min_confidence, states=states,
                    version=__version__)


def watch_outputs_for(cfg: PipelineConfig, source: LiveSource) -> list[Sink]:
    """``watch``'s MQTT sink and the event sink that feeds it (the events as a monitor makes
    them, from the ``events:`` section); nothing without ``mqtt:``."""
    mqtt = mqtt_for(cfg, [source.source_id], lambda: {source.source_id: source.state})
    if mqtt is None:
        return []
    events = events_for(cfg, mqtt)
    return [mqtt, events] if events is not None else [mqtt]


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


def plan_for(cfg: ModelConfig, source: Source) -> InferencePlan:
    """The inference plan of the ``model:`` section for what ``source`` is (see
    :func:`inference_plan`), before the model is built."""
    kind = source.kind
    return inference_plan(resolve_device(cfg.device), cfg, files=kind == "file",
                          cameras=source.streams if kind == "cameras" else 0)


def model_stages(cfg: PipelineConfig, model: Model, *, batch: int, batch_timeout_s: float,
                 workers: int = 1) -> tuple[PreprocessStage, InferStage, PostprocessStage]:
    """The preprocess, infer and postprocess stages of ``model`` from the ``model:`` and
    ``detect:`` sections: what the in-process pipeline runs, and the Ray inference actor too.

    An ``anchors:`` head sits on a fixed input size, so it letterboxes to exactly that size.
    """
    m = cfg.model
    imgsz, rect = (m.anchors.input_hw, False) if m.anchors is not None else (m.imgsz, m.rect)
    return (
        PreprocessStage(model, imgsz=imgsz, rect=rect),
        InferStage(model, batch_size=batch, batch_timeout_s=batch_timeout_s, workers=workers),
        PostprocessStage(model, cfg.detect, anchors=m.anchors),
    )


def geometry_for(cfg: PipelineConfig) -> Geometry:
    """The counting lines and zones of each enabled camera, or of the one source (key None)."""
    if cfg.cameras is not None:
        return {name: (cam.lines, cam.zones) for name, cam in cfg.cameras.items() if cam.enabled}
    return {None: (cfg.lines, cfg.zones)}


def build_from_config(
    cfg: PipelineConfig,
    source: Source,
    model: Model,
    *,
    sinks: Sequence[Sink] = (),
    render: bool | None = None,
    render_copy: bool = False,
    render_status: bool = False,
    extra_status: Callable[[], list[str]] | None = None,
    output: bool = False,
    plan: InferencePlan | None = None,
) -> Pipeline:
    """The pipeline ``cfg`` describes, reading ``source`` with ``model`` into ``sinks``:
    source → preprocess → infer → postprocess → [track] → [classify] → [render] → [sinks].

    The source's kind decides what a config means for it: a file (``"file"``) gets the
    throughput plan of :func:`inference_plan` and lossless queues; a live source one model
    call per frame; several cameras (``"cameras"``) the model fed on demand (two single-frame
    calls on the CPU, one batch over the newest frame of each camera on a GPU, waiting
    ``model.batch_timeout_ms`` for it to fill) and their own lines and zones. The rest is the
    job's own: ``sinks``, ``render`` (None: when a sink needs the drawn picture; with
    ``render_copy`` on a copy, leaving the frame clean), the status overlay
    (``render_status``, ``extra_status``) and whether the caller reads the results
    (``output``). ``plan`` is the one ``model`` was built with (:func:`plan_for`); without
    it the plan is made for the model's device, and a model built elsewhere keeps its own
    threads. Nothing is opened here.
    """
    kind = source.kind
    if plan is None:
        plan = inference_plan(str(model.device), cfg.model, files=kind == "file",
                              cameras=source.streams if kind == "cameras" else 0)
    batch, workers = plan.batch, plan.workers
    # Several cameras wait for a batch to fill; a file may wait 50 ms (nothing is lost,
    # throughput wins); a live source takes only the frames already waiting.
    batch_timeout_s = cfg.model.batch_timeout_ms / 1000.0 if kind == "cameras" else 0.0 if source.live else 0.05
    geometry = geometry_for(cfg)
    classifier = classifier_for(cfg.classify) if cfg.classify is not None else None
    track = cfg.tracking
    configure_threads()
    stages: list[Stage] = [*model_stages(cfg, model, batch=batch, batch_timeout_s=batch_timeout_s, workers=workers)]
    if track is not None:
        stages.append(TrackStage(track, source, live=source.live, geometry=geometry))
    if cfg.classify is not None and classifier is not None:
        stages.append(ClassifyStage(cfg.classify, model, classifier, source, live=source.live))
    if render is None:
        render = any(s.needs_render for s in sinks)
    if render:
        stages.append(RenderStage(copy=render_copy, status=render_status, extra_status=extra_status, geometry=geometry))
    if sinks:
        stages.append(SinkStage(sinks))
    queue = queue_for(kind, batch=batch, cameras=source.streams, size=cfg.queue.size, policy=cfg.queue.policy,
                      workers=workers)
    return Pipeline(source, stages, queue=queue, output=output, stage_timeout_s=cfg.stage_timeout_s)


def build_remote_from_config(cfg: PipelineConfig, source: Source, receive: Stage, *, sinks: Sequence[Sink],
                             render: type[RenderStage] = RenderStage) -> Pipeline:
    """The driver's pipeline of a monitor whose model runs elsewhere (the Ray executor): the
    frames come with their detections, which ``receive`` puts on the results, then the same
    track, ``render`` and sink stages as :func:`build_from_config`, with the cameras' row of
    the queue table but never fed on demand: the model is not on these edges, and the newest
    frame of each camera wins on every one of them."""
    geometry = geometry_for(cfg)
    stages: list[Stage] = [receive]
    track = cfg.tracking
    if track is not None:
        stages.append(TrackStage(track, source, live=True, geometry=geometry))
    stages += [render(geometry=geometry), SinkStage(sinks)]
    queue = queue_for("cameras", cameras=len(geometry), policy=Policy.LATEST_PER_KEY)
    return Pipeline(source, stages, queue=queue, stage_timeout_s=cfg.stage_timeout_s)


# ---------------------------------------------------------------------------- jobs


def annotate(cfg: PipelineConfig) -> Recorded:
    """annotate's job: every frame of the recorded ``source`` into the ``output:`` files
    (a video with the input's sound, or drawn images for a folder of images, and JSONL)."""
    check_outputs(cfg)
    source = source_for(cfg)
    plan = plan_for(cfg.model, source)
    model = model_for(cfg.model, plan.threads)
    outputs = recorded_outputs(cfg.output, source, audio=source_path(cfg.source))
    counter = CountingSink()
    images = isinstance(source, ImageSource)
    # One line per image says what it is; a progress bar would only repeat that.
    console: list[Sink] = [ConsoleSink(like=source)] if images else []
    pipeline = build_from_config(cfg, source, model, sinks=[*outputs, counter, *console], plan=plan)
    return Recorded(pipeline, model, counter, outputs, progress=not images)


def watch(cfg: PipelineConfig) -> Live:
    """watch's job: the newest frames of the live ``source`` into the overlay window and the
    ``output:`` recording and JSONL, with MQTT and its events when ``mqtt:`` is set."""
    check_outputs(cfg)
    window = OverlayWindow(title=f"streamer - {cfg.source}", snapshot_dir=cfg.output.snapshots) if cfg.output.window else None
    if window is not None:
        check_display()  # before loading anything: say it at once
    source = source_for(cfg, live=True)
    if not isinstance(source, LiveSource):
        raise ConfigError(f"{cfg.source}: watch needs a live source (a webcam index, a URL, synthetic or a video file)")
    plan = plan_for(cfg.model, source)
    model = model_for(cfg.model, plan.threads)
    outputs = live_outputs(cfg.output)
    counter = CountingSink()
    announced = watch_outputs_for(cfg, source)

    def dropped_line() -> list[str]:  # drawn on each frame, once ``pipeline`` below exists
        return [f"dropped {pipeline.dropped + source.dropped}"]

    pipeline = build_from_config(cfg, source, model, sinks=[*outputs, counter, *announced],
                                 render=window is not None or bool(cfg.output.video), render_status=True,
                                 extra_status=dropped_line, output=window is not None, plan=plan)
    return Live(pipeline, model, counter, [*outputs, *announced], window, cfg.output.status_interval_s)


def monitor(cfg: PipelineConfig) -> Monitor:
    """The in-process monitor: every enabled camera read on demand by one model, each
    camera's own outputs, the dashboard, MQTT and the events the config asks for."""
    cameras = cameras_for(cfg)
    names = list(cameras)
    source = MultiSource(cameras)
    plan = plan_for(cfg.model, source)
    model = model_for(cfg.model, plan.threads)
    camera_outputs = outputs_for(cfg, names, copies=True)
    # The dashboard and MQTT ask the monitor built last for its stats and camera states.
    hub, server = dashboard_for(cfg.dashboard, names, lambda: run.stats())
    camera_stats = CameraStats(names, hub.publish if hub is not None else None)
    mqtt = mqtt_for(cfg, names, lambda: {name: run.camera_state(name) for name in names})
    events = events_for(cfg, mqtt)
    # MQTT before the events: closed after them, so their ends get out.
    sinks = [camera_stats, *camera_outputs, *(s for s in (mqtt, events) if s is not None)]
    pipeline = build_from_config(cfg, source, model, sinks=sinks, render=True, plan=plan)
    run = Monitor(cameras, model, names=names, source=source, pipeline=pipeline, camera_stats=camera_stats,
                  camera_outputs=camera_outputs, events=events, mqtt=mqtt, hub=hub, server=server, model_cfg=cfg.model,
                  tracking=cfg.tracking is not None)
    return run


def ray_monitor(cfg: PipelineConfig, ray: ModuleType) -> RayMonitor:
    """The monitor's driver on a Ray cluster: the cameras and the model run as actors
    (:mod:`streamer.executors.ray_workers`, built there by the functions above); here, the
    same outputs, dashboard, events and track and render stages as in-process."""
    # Imported when a Ray monitor is built: the Ray executor is an optional extra.
    from streamer.executors.ray_monitor import RayCameras, RayMonitor, ReceiveStage, TileRenderStage, publish_pictures

    names = enabled_cameras(cfg)
    configure_threads()
    source = RayCameras(ray, cfg, names)
    camera_outputs = outputs_for(cfg, names)
    hub, server = dashboard_for(cfg.dashboard, names, lambda: run.stats())
    camera_stats = CameraStats(names, publish_pictures(hub) if hub is not None else None)
    events = events_for(cfg)
    sinks = [camera_stats, *camera_outputs, *([events] if events is not None else [])]
    pipeline = build_remote_from_config(cfg, source, ReceiveStage(), sinks=sinks, render=TileRenderStage)
    run = RayMonitor(ray, names=names, source=source, pipeline=pipeline, camera_stats=camera_stats,
                     camera_outputs=camera_outputs, events=events, hub=hub, server=server, model_cfg=cfg.model,
                     tracking=cfg.tracking is not None)
    return run


# ---------------------------------------------------------------------------- parts of jobs


def check_outputs(cfg: PipelineConfig) -> None:
    """Refuse outputs that would overwrite the input, or each other."""
    src = source_path(cfg.source)
    outputs = [p for p in (cfg.output.video, cfg.output.jsonl) if p]
    if src is not None:
        for out in outputs:
            if same_file(Path(out), src):
                raise ConfigError(f"{out}: output path is the same as the input {cfg.source}; choose another output")
    if cfg.output.video and cfg.output.jsonl and same_file(Path(cfg.output.video), Path(cfg.output.jsonl)):
        raise ConfigError(f"{cfg.output.video}: the video and JSONL outputs must be different files")


def recorded_outputs(cfg: OutputConfig, source: Source, audio: Path | None) -> list[Sink]:
    """annotate's files: the drawn video (at the source's rate and shape, with the sound of
    ``audio`` when it is a file) or, for a folder of images, drawn images; and the JSONL."""
    images = isinstance(source, ImageSource)
    outputs: list[Sink] = []
    if cfg.video and not images:
        outputs.append(VideoSink(cfg.video, like=source, audio_from=str(audio) if audio is not None and audio.is_file()
                                 else None, **cfg.video_options()))
    if images and cfg.images:
        outputs.append(ImageFolderSink(cfg.images))
    if cfg.jsonl:
        outputs.append(JsonlSink(cfg.jsonl))
    return outputs


def live_outputs(cfg: OutputConfig) -> list[Sink]:
    """watch's files: the recording (at the rate the frames arrive) and the JSONL."""
    outputs: list[Sink] = []
    if cfg.video:
        outputs.append(VideoSink(cfg.video, fps=None, measure_fps=True, **cfg.video_options()))
    if cfg.jsonl:
        outputs.append(JsonlSink(cfg.jsonl))
    return outputs


def enabled_cameras(cfg: PipelineConfig) -> list[str]:
    """The names of the cameras a monitor reads, in the config's order."""
    if not cfg.cameras:
        raise ConfigError("a monitor pipeline needs cameras")
    names = [name for name, cam in cfg.cameras.items() if cam.enabled]
    if not names:
        raise ConfigError("every camera is disabled")
    return names


def cameras_for(cfg: PipelineConfig) -> dict[str, LiveSource]:
    """Each enabled camera's source, by name (not opened yet)."""
    cameras: dict[str, LiveSource] = {}
    for name in enabled_cameras(cfg):
        source = source_for(cfg, name)
        if not isinstance(source, LiveSource):
            raise ConfigError(f"camera '{name}': {(cfg.cameras or {})[name].url} is not a live source (a URL, a webcam "
                              "index, synthetic, or a video file)")
        cameras[name] = source
    return cameras


def dashboard_for(cfg: DashboardConfig, names: Sequence[str],
                  stats: Callable[[], Mapping[str, Any]]) -> tuple[DashboardHub | None, DashboardServer | None]:
    """The dashboard's hub and web server when the ``dashboard:`` section enables it."""
    if not cfg.enabled:
        return None, None
    from streamer.sinks.dashboard import DashboardHub, DashboardServer  # the web server: only when asked for

    hub = DashboardHub(list(names), stats, max_fps=cfg.max_fps)
    return hub, DashboardServer(hub, host=cfg.host, port=cfg.port, token=cfg.token)

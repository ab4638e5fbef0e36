"""The composition root: a validated pipeline configuration turned into a job's parts.

Below the CLI, a :class:`~streamer.config.PipelineConfig` is taken apart here. A job entry
(:mod:`streamer.jobs`) asks for its whole job in one call (:func:`annotate`, :func:`watch`,
:func:`monitor`, :func:`ray_monitor`) and hands it to an executor
(:mod:`streamer.executors.local`) that only runs it. Each job is four steps, each handing one
part its own sections once:

1. the source: :func:`source_for` (the one ``make_source`` call; ``source`` or each camera,
   with the ``capture:`` section);
2. the models: :func:`models_for`, :func:`streamer.models.planned_models` (``model:`` and ``classify:``: how the
   model runs on the device it resolves to, and the models built for that);
3. the sinks: one function per job (:func:`recorded_sinks`, :func:`live_sinks`,
   :func:`monitor_sinks`) builds every output of the ``output:``, ``cameras:``,
   ``dashboard:``, ``mqtt:`` and ``events:`` sections;
4. the pipeline: :func:`build_from_config` (the stages from ``detect:``, ``track:``,
   ``classify:``, ``lines``/``zones``; the queues from ``queue:``).

Every part is finished by its constructor, so a setting added to a section is threaded through
one function, not through every job. The Ray workers build their halves with the same
functions (:func:`source_for`, :func:`streamer.models.model_for`, :func:`model_stages`).
Checks that need no part built (outputs that would overwrite the input) are the config's own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from streamer.config import OutputConfig, PipelineConfig
from streamer.errors import ConfigError
from streamer.executors.local import Live, Recorded
from streamer.models import Model, PlannedModels, inference_plan, planned_models
from streamer.monitor import Monitor, MonitorSinks
from streamer.pipeline import Pipeline, Stage
from streamer.queues import Policy
from streamer.runtime import configure_threads
from streamer.sinks.base import ForSource, Sink
from streamer.sinks.cameras import CameraStats
from streamer.sinks.counting import CountingSink
from streamer.sinks.events import events_from
from streamer.sinks.images import ConsoleSink, ImageFolderSink
from streamer.sinks.jsonl import JsonlSink
from streamer.sinks.video import VideoSink
from streamer.sinks.window import OverlayWindow, check_display
from streamer.sources import make_source
from streamer.sources.base import Source
from streamer.sources.file import ImageSource, VideoFileSource
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
    models: PlannedModels,
    *,
    sinks: Sequence[Sink] = (),
    render: bool | None = None,
    render_copy: bool = False,
    render_status: bool = False,
    extra_status: Callable[[], list[str]] | None = None,
    output: bool = False,
) -> Pipeline:
    """The pipeline ``cfg`` describes, reading ``source`` with ``models`` (the model run as
    their plan says, see :func:`models_for`) into ``sinks``:
    source → preprocess → infer → postprocess → [track] → [classify] → [render] → [sinks].

    The source's kind decides what a config means for it: a file (``"file"``) gets the
    throughput plan of :func:`~streamer.models.inference_plan` and lossless queues; a live
    source one model call per frame; several cameras (``"cameras"``) the model fed on demand
    (two single-frame calls on the CPU, one batch over the newest frame of each camera on a
    GPU, waiting ``model.batch_timeout_ms`` for it to fill) and their own lines and zones.
    The rest is the job's own: ``sinks``, ``render`` (None: when a sink needs the drawn
    picture; with ``render_copy`` on a copy, leaving the frame clean), the status overlay
    (``render_status``, ``extra_status``) and whether the caller reads the results
    (``output``). Nothing is opened here.
    """
    kind = source.kind
    # Several cameras wait for a batch to fill; a file may wait 50 ms (nothing is lost,
    # throughput wins); a live source takes only the frames already waiting.
    batch_timeout_s = cfg.model.batch_timeout_ms / 1000.0 if kind == "cameras" else 0.0 if source.live else 0.05
    geometry = geometry_for(cfg)
    track = cfg.tracking
    if render is None:
        render = any(s.needs_render for s in sinks)
    plan, model = models.plan, models.model
    stages: list[Stage] = [*model_stages(cfg, model, batch=plan.batch, batch_timeout_s=batch_timeout_s,
                                         workers=plan.workers)]
    if track is not None:
        stages.append(TrackStage(track, source, live=source.live, geometry=geometry))
    if cfg.classify is not None:
        if models.classifier is None:
            raise ValueError("classify: needs its classifier among the models (see planned_models)")
        stages.append(ClassifyStage(cfg.classify, model, models.classifier, source, live=source.live))
    if render:
        stages.append(RenderStage(copy=render_copy, status=render_status, extra_status=extra_status, geometry=geometry))
    if sinks:
        stages.append(SinkStage(sinks))
    configure_threads()
    return Pipeline(source, stages, queue_size=cfg.queue.size, queue_policy=cfg.queue.policy, batch=plan.batch,
                    workers=plan.workers, output=output, stage_timeout_s=cfg.stage_timeout_s)


def models_for(cfg: PipelineConfig, source: Source, model: Model | None = None) -> PlannedModels:
    """The job's models for what ``source`` is: the ``model:`` section's model, built with the
    threads of its plan, and the ``classify:`` section's classifier (see
    :func:`streamer.models.planned_models`); or ``model``, built elsewhere (it keeps its own
    threads), with the plan for its device."""
    kind = source.kind
    files, cameras = kind == "file", source.streams if kind == "cameras" else 0
    if model is not None:
        return PlannedModels(inference_plan(str(model.device), cfg.model, files=files, cameras=cameras), model)
    return planned_models(cfg.model, cfg.classify, files=files, cameras=cameras)


def build_remote_from_config(cfg: PipelineConfig, source: Source, receive: Stage, *, sinks: Sequence[Sink],
                             render: type[RenderStage] = RenderStage) -> Pipeline:
    """The driver's pipeline of a monitor whose model runs elsewhere (the Ray executor): the
    frames come with their detections, which ``receive`` puts on the results, then the same
    track, ``render`` and sink stages as :func:`build_from_config`, with the cameras' row of
    the queue table (the source is of kind ``cameras``) but never fed on demand: the model is not on these edges, and the newest
    frame of each camera wins on every one of them."""
    geometry = geometry_for(cfg)
    stages: list[Stage] = [receive]
    track = cfg.tracking
    if track is not None:
        stages.append(TrackStage(track, source, live=True, geometry=geometry))
    stages += [render(geometry=geometry), SinkStage(sinks)]
    return Pipeline(source, stages, queue_policy=Policy.LATEST_PER_KEY, stage_timeout_s=cfg.stage_timeout_s)


# ---------------------------------------------------------------------------- jobs


def annotate(cfg: PipelineConfig) -> Recorded:
    """annotate's job: every frame of the recorded ``source`` into the ``output:`` files
    (a video with the input's sound, or drawn images for a folder of images, and JSONL)."""
    source = source_for(cfg)
    models = models_for(cfg, source)
    sinks = recorded_sinks(cfg.output, source)
    pipeline = build_from_config(cfg, source, models, sinks=sinks.all)
    return Recorded(pipeline, models.model, sinks.counter, sinks.outputs, progress=not sinks.console)


def watch(cfg: PipelineConfig) -> Live:
    """watch's job: the newest frames of the live ``source`` into the overlay window and the
    ``output:`` recording and JSONL, with MQTT and its events when ``mqtt:`` is set."""
    if cfg.output.window:
        check_display()  # before loading anything: say it at once
    source = source_for(cfg, live=True)
    if not isinstance(source, LiveSource):
        raise ConfigError(f"{cfg.source}: watch needs a live source (a webcam index, a URL, synthetic or a video file)")
    models = models_for(cfg, source)
    sinks = live_sinks(cfg, source)

    def dropped_line() -> list[str]:  # drawn on each frame, once ``pipeline`` below exists
        return [f"dropped {pipeline.dropped + source.dropped}"]

    pipeline = build_from_config(cfg, source, models, sinks=sinks.all,
                                 render=sinks.window is not None or bool(cfg.output.video), render_status=True,
                                 extra_status=dropped_line, output=sinks.window is not None)
    return Live(pipeline, models.model, sinks.counter, sinks.reported, sinks.window, cfg.output.status_interval_s)


def monitor(cfg: PipelineConfig) -> Monitor:
    """The in-process monitor: every enabled camera read on demand by one model, each
    camera's own outputs, the dashboard, MQTT and the events the config asks for."""
    cameras = cameras_for(cfg)
    names = list(cameras)
    source = MultiSource(cameras)
    models = models_for(cfg, source)
    # The dashboard and MQTT ask the monitor built last for its stats and camera states.
    sinks = monitor_sinks(cfg, names, lambda: run.stats(), lambda: {name: run.camera_state(name) for name in names},
                          copies=True)
    pipeline = build_from_config(cfg, source, models, sinks=sinks.all, render=True)
    run = Monitor(cameras=cameras, model=models.model, names=names, source=source, pipeline=pipeline, sinks=sinks,
                  model_cfg=cfg.model, tracking=cfg.tracking is not None)
    return run


def ray_monitor(cfg: PipelineConfig, ray: ModuleType) -> RayMonitor:
    """The monitor's driver on a Ray cluster: the cameras and the model run as actors
    (:mod:`streamer.executors.ray_workers`, built there by the functions above); here, the
    same outputs, dashboard, events and track and render stages as in-process."""
    # Imported when a Ray monitor is built: the Ray executor is an optional extra.
    from streamer.executors.ray_monitor import RayCameras, RayMonitor, ReceiveStage, TileRenderStage

    names = enabled_cameras(cfg)
    configure_threads()
    source = RayCameras(ray, cfg, names)
    sinks = monitor_sinks(cfg, names, lambda: run.stats())
    pipeline = build_remote_from_config(cfg, source, ReceiveStage(), sinks=sinks.all, render=TileRenderStage)
    run = RayMonitor(names=names, source=source, pipeline=pipeline, sinks=sinks, model_cfg=cfg.model,
                     tracking=cfg.tracking is not None)
    return run


# ---------------------------------------------------------------------------- the jobs' sinks
#
# Each job's sinks are built by one function, from the output sections, in one pass: the
# MQTT sink first (the event sink tells it of every event), then each sink from its section.


@dataclass
class RecordedSinks:
    """annotate's sinks: the files it writes, what counts its results, and a line per image."""

    outputs: list[Sink]
    counter: CountingSink
    console: list[Sink]

    @property
    def all(self) -> list[Sink]:
        return [*self.outputs, self.counter, *self.console]


def recorded_sinks(cfg: OutputConfig, source: Source) -> RecordedSinks:
    """annotate's files: the drawn video (at the source's rate and shape, with the sound of
    the file it reads) or, for a folder of images, drawn images (with a line per image, which
    a progress bar would only repeat); and the JSONL."""
    images = isinstance(source, ImageSource)
    outputs: list[Sink] = []
    if cfg.video and not images:
        audio = source.path if isinstance(source, VideoFileSource) else None
        outputs.append(VideoSink(cfg.video, like=source, audio_from=str(audio) if audio is not None else None,
                                 **cfg.video_options))
    if images and cfg.images:
        outputs.append(ImageFolderSink(cfg.images))
    if cfg.jsonl:
        outputs.append(JsonlSink(cfg.jsonl))
    return RecordedSinks(outputs, CountingSink(), [ConsoleSink(like=source)] if images else [])


@dataclass
class LiveSinks:
    """watch's sinks: its window, its files, what counts its results, and MQTT with its events."""

    window: OverlayWindow | None
    outputs: list[Sink]
    counter: CountingSink
    #: The MQTT sink and the event sink that feeds it, in that order (sinks close last first,
    #: so the events' ends reach the MQTT queue before it is drained).
    announced: list[Sink]

    @property
    def all(self) -> list[Sink]:
        return [*self.outputs, self.counter, *self.announced]

    @property
    def reported(self) -> list[Sink]:
        """The sinks whose "wrote ..." lines end the summary."""
        return [*self.outputs, *self.announced]


def live_sinks(cfg: PipelineConfig, source: LiveSource) -> LiveSinks:
    """watch's window, its recording (at the rate the frames arrive) and JSONL, and with
    ``mqtt:`` the MQTT sink and the events as a monitor makes them (``events:``)."""
    mqtt = mqtt_for(cfg, [source.source_id], lambda: {source.source_id: source.state})
    out = cfg.output
    window = OverlayWindow(title=f"streamer - {cfg.source}", snapshot_dir=out.snapshots) if out.window else None
    outputs: list[Sink] = []
    if out.video:
        outputs.append(VideoSink(out.video, fps=None, measure_fps=True, **out.video_options))
    if out.jsonl:
        outputs.append(JsonlSink(out.jsonl))
    announced: list[Sink] = []
    if mqtt is not None:
        announced.append(mqtt)
        if cfg.events_on:
            announced.append(events_from(cfg.events, mqtt))
    return LiveSinks(window, outputs, CountingSink(), announced)


def monitor_sinks(cfg: PipelineConfig, names: Sequence[str], stats: Callable[[], Mapping[str, Any]],
                  states: Callable[[], Mapping[str, str]] | None = None, *, copies: bool = False) -> MonitorSinks:
    """A monitor's sinks: each camera's stats (and its frames to the dashboard, when the
    ``dashboard:`` section enables it, serving ``stats``), its own JSONL and drawn recording
    as its ``cameras:`` entry names them, MQTT (with ``states``: each camera's state) and the
    events. With ``copies`` a recording without ``record_boxes`` is the camera's own (made by
    its source, see :func:`source_for`), not a sink."""
    mqtt = mqtt_for(cfg, names, states)
    hub = server = None
    if cfg.dashboard.enabled:
        from streamer.sinks.dashboard import DashboardHub, DashboardServer  # the web server: only when asked for

        d = cfg.dashboard
        hub = DashboardHub(list(names), stats, max_fps=d.max_fps)
        server = DashboardServer(hub, host=d.host, port=d.port, token=d.token)
    camera_stats = CameraStats(list(names), hub.publish if hub is not None else None)
    camera_outputs: list[Sink] = []
    for name in names:
        cam = (cfg.cameras or {})[name]
        if cam.jsonl:
            camera_outputs.append(ForSource(JsonlSink(cam.jsonl), name))
        if cam.record and (cam.record_boxes or not copies):
            camera_outputs.append(ForSource(VideoSink(cam.record, fps=None, measure_fps=True,
                                                      **cfg.output.video_options), name))
    events = events_from(cfg.events, mqtt) if cfg.events_on else None
    return MonitorSinks(camera_stats, camera_outputs, hub=hub, server=server, mqtt=mqtt, events=events)


# ---------------------------------------------------------------------------- parts of jobs


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

"""Building pipelines from parts, and the ``stream()`` generator for embedding streamer."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from streamer.config import ClassifyConfig, DetectConfig, TrackConfig
from streamer.defaults import queue_for
from streamer.models import Model, load_model
from streamer.pipeline import Pipeline, QueueConfig
from streamer.postprocess.anchors import AnchorConfig
from streamer.runtime import configure_threads
from streamer.sinks.base import Sink
from streamer.sources import Source, make_source
from streamer.stages import ClassifyStage, InferStage, PostprocessStage, PreprocessStage, RenderStage, SinkStage, TrackStage
from streamer.types import Result


def build_pipeline(
    source: Source | str,
    model: Model | str = "yolo11n",
    *,
    params: DetectConfig | None = None,
    imgsz: int | None = None,
    rect: bool = True,
    batch: int = 1,
    batch_timeout_s: float | None = None,
    workers: int = 1,
    sinks: Sequence[Sink] = (),
    render: bool | None = None,
    render_copy: bool = False,
    render_status: bool = False,
    extra_status: Callable[[], list[str]] | None = None,
    output: bool = False,
    queue: QueueConfig | None = None,
    stage_timeout_s: float | None = 30.0,
    anchors: AnchorConfig | None = None,
    track: TrackConfig | None = None,
    geometry: dict[str | None, tuple[Sequence[Any], Sequence[Any]]] | None = None,
    classify: ClassifyConfig | None = None,
) -> Pipeline:
    """Compose source → preprocess → infer → postprocess → [track] → [render] → [sinks].

    ``queue=None`` takes the queues from :data:`streamer.defaults.QUEUES` for the source's
    kind. ``render=None`` renders only when a sink needs the drawn picture. ``track`` turns on
    tracking, and ``geometry`` maps a source id (None: every source) to its counting lines and
    zones. Nothing is opened until the pipeline starts (or ``Pipeline.open()`` is called).
    """
    src = make_source(source) if isinstance(source, str) else source
    if isinstance(model, str):
        model = load_model(model)
    configure_threads()
    if anchors is not None:
        # Anchors sit on a fixed input size: letterbox to exactly that size.
        imgsz, rect = anchors.input_hw, False  # type: ignore[assignment]
    stages = [
        PreprocessStage(model, imgsz=imgsz, rect=rect),
        # Files: a batch waits up to 50 ms to fill (nothing is lost, throughput wins). Live:
        # only frames already waiting join a batch unless a timeout is given (monitoring).
        InferStage(model, batch_size=batch,
                   batch_timeout_s=batch_timeout_s if batch_timeout_s is not None else (0.0 if src.live else 0.05),
                   workers=workers),
        PostprocessStage(model, params or DetectConfig(), anchors=anchors),
    ]
    if track is not None:
        stages.append(TrackStage(track, src, live=src.live, geometry=geometry))
    if classify is not None:
        stages.append(ClassifyStage(classify, model, src, live=src.live))
    if render is None:
        render = any(s.needs_render for s in sinks)
    if render:
        stages.append(RenderStage(copy=render_copy, status=render_status, extra_status=extra_status, geometry=geometry))
    if sinks:
        stages.append(SinkStage(sinks))
    if queue is None:
        queue = queue_for(src.kind, batch=batch, cameras=src.streams)
    return Pipeline(src, stages, queue=queue, output=output, stage_timeout_s=stage_timeout_s)


def stream(
    source: Source | str,
    model: Model | str = "yolo11n",
    *,
    conf: float = 0.25,
    iou: float = 0.7,
    classes: Sequence[int] | None = None,
    imgsz: int | None = None,
    rect: bool = True,
    batch: int = 1,
    backend: str = "auto",
    device: str = "auto",
    render: bool = False,
    max_det: int = 300,
    track: bool | TrackConfig = False,
    lines: Any = None,
    zones: Any = None,
) -> Iterator[Result]:
    """Yield one :class:`~streamer.types.Result` per processed frame, as they come.

    Results are never accumulated: a file yields every frame in order; a live source yields
    the newest frames the pipeline could handle. With ``render=True`` each result also
    carries ``annotated``, a drawn copy of the frame. With ``track`` (True for Ultralytics'
    ByteTrack defaults, or a :class:`~streamer.config.TrackConfig`) detections carry
    ``tracker_id`` (-1 until a track is confirmed); ``lines`` and ``zones`` (as in a pipeline
    file) add ``result.analytics``. Leaving the loop early stops the pipeline and releases the
    source and model.
    """
    from streamer.config import parse_geometry

    line_specs, zone_specs = parse_geometry(lines, zones, "")
    settings = (track if isinstance(track, TrackConfig) else TrackConfig()) if track or line_specs or zone_specs else None
    params = DetectConfig(conf=conf, iou=iou, classes=tuple(classes) if classes else None, max_det=max_det)
    if isinstance(model, str):
        model = load_model(model, backend=backend, device=device)
    pipeline = build_pipeline(
        source, model, params=params, imgsz=imgsz, rect=rect, batch=batch, render=render, render_copy=True, output=True,
        track=settings, geometry={None: (line_specs, zone_specs)},
    )
    with pipeline:
        yield from pipeline

"""Pipelines for embedding streamer: ``build_pipeline()`` from parts, and the ``stream()`` generator.

Both describe what they were asked for as a :class:`~streamer.config.PipelineConfig` and take
the jobs' own path, :func:`streamer.compose.build_from_config`: a setting means the same thing
here as in a pipeline file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from streamer.compose import build_from_config, models_for, source_for
from streamer.config import DetectConfig, ModelConfig, PipelineConfig, QueueSettings, TrackConfig
from streamer.models import Model
from streamer.pipeline import Pipeline, QueueConfig
from streamer.sinks.base import Sink
from streamer.sources import Source
from streamer.types import Result


def _config(source: Source | str, **sections: Any) -> PipelineConfig:
    """A pipeline config for ``source``: its own spec, or the id of a source already built."""
    return PipelineConfig(source=source if isinstance(source, str) else source.source_id or "source", **sections)


def _name(model: Model | str) -> str:
    """The ``model.name`` of a config for ``model``: a model already built keeps its own."""
    return model if isinstance(model, str) else ModelConfig.name


def build_pipeline(
    source: Source | str,
    model: Model | str = "yolo11n",
    *,
    sinks: Sequence[Sink] = (),
    imgsz: int | None = None,
    batch: int = 1,
    workers: int = 1,
    queue: QueueConfig | None = None,
) -> Pipeline:
    """Compose source → preprocess → infer → postprocess → [render] → [sinks].

    ``batch`` frames share a model call and ``workers`` calls run at once, as given (a job
    plans them itself, see :func:`streamer.models.inference_plan`). ``queue=None`` takes the
    queues from :data:`streamer.defaults.QUEUES` for the source's kind. The picture is drawn
    only when a sink needs it. Nothing is opened until the pipeline starts (or
    ``Pipeline.open()`` is called).
    """
    model_cfg = ModelConfig(name=_name(model), imgsz=imgsz, batch=batch, workers=workers)
    queue_cfg = QueueSettings() if queue is None else QueueSettings(size=queue.size, policy=queue.policy.value)
    cfg = _config(source, model=model_cfg, queue=queue_cfg)
    src = source_for(cfg) if isinstance(source, str) else source
    return build_from_config(cfg, src, models_for(cfg, src, None if isinstance(model, str) else model), sinks=sinks)


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
    # One model call in flight and ``batch`` as given: a job's throughput plan (two calls on a
    # file on the CPU) is the CLI's; an embedding program sets its own threads.
    model_cfg = ModelConfig(name=_name(model), backend=backend, device=device, imgsz=imgsz, rect=rect, batch=batch,
                            workers=1)
    cfg = _config(
        source, model=model_cfg,
        detect=DetectConfig(conf=conf, iou=iou, classes=tuple(classes) if classes else None, max_det=max_det),
        track=track if isinstance(track, TrackConfig) else (TrackConfig() if track else None),
        lines=lines, zones=zones,
    )
    src = source_for(cfg) if isinstance(source, str) else source
    pipeline = build_from_config(cfg, src, models_for(cfg, src, None if isinstance(model, str) else model),
                                 render=render, render_copy=True, output=True)
    with pipeline:
        yield from pipeline

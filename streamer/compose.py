"""A validated pipeline configuration turned into a pipeline: the one place jobs compose.

Every job (annotate, watch, monitor, and any other executor) makes its source, its model and
its own sinks, then calls :func:`build_from_config`; everything the pipeline file says about
the pipeline itself (detection settings, input size, batching, workers, queues, stage
timeout, anchors, tracking, lines and zones) is read here and nowhere else.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from streamer.api import build_pipeline
from streamer.config import ModelConfig, PipelineConfig, tracking
from streamer.defaults import queue_for
from streamer.models import Model, configure, load_model
from streamer.models.base import default_threads
from streamer.pipeline import Pipeline
from streamer.sinks.base import Sink
from streamer.sources.base import Source


def model_for(cfg: PipelineConfig) -> Model:
    """The model a pipeline file describes, with its task check and labels (not opened yet)."""
    m = cfg.model
    model = load_model(m.name, backend=m.backend, device=m.device, threads=m.threads, half=m.half)
    return configure(model, task=m.task, labels=m.labels)


def inference_plan(model: Model, cfg: ModelConfig, files: bool, cameras: int = 0) -> tuple[int, int]:
    """(batch, workers) for ``model``, and its intra-op threads set to match (before it opens).

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
    device = str(getattr(model, "device", "cpu"))
    on_cpu = device == "cpu"
    workers = cfg.workers or (2 if (files or cameras) and on_cpu and (os.cpu_count() or 1) >= 2 else 1)
    batch = cfg.batch or (8 if files and device.startswith("cuda") else cameras if cameras and not on_cpu else 1)
    if workers > 1 and cfg.threads is None and hasattr(model, "threads"):
        model.threads = max(1, default_threads() // workers)  # type: ignore[attr-defined]
    return batch, workers


def build_from_config(
    cfg: PipelineConfig,
    source: Source,
    model: Model,
    *,
    sinks: Sequence[Sink] = (),
    render: bool | None = None,
    render_status: bool = False,
    extra_status: Callable[[], list[str]] | None = None,
    output: bool = False,
) -> Pipeline:
    """The pipeline ``cfg`` describes, reading ``source`` with ``model`` into ``sinks``.

    The source's kind decides what a config means for it: a file (``"file"``) gets the
    throughput plan of :func:`inference_plan` and lossless queues; a live source one model
    call per frame; several cameras (``"cameras"``) the model fed on demand (two single-frame
    calls on the CPU, one batch over the newest frame of each camera on a GPU, waiting
    ``model.batch_timeout_ms`` for it to fill) and their own lines and zones. The rest is the job's own: ``sinks``, ``render`` (None: when a
    sink needs the drawn picture), the status overlay (``render_status``, ``extra_status``)
    and whether the caller reads the results (``output``). Nothing is opened here.
    """
    kind = source.kind
    batch, workers = inference_plan(model, cfg.model, files=kind == "file",
                                    cameras=source.streams if kind == "cameras" else 0)
    batch_timeout_s: float | None = None
    geometry: dict[str | None, tuple[Sequence[Any], Sequence[Any]]]
    if kind == "cameras":
        batch_timeout_s = cfg.model.batch_timeout_ms / 1000.0
        geometry = {name: (cam.lines, cam.zones) for name, cam in (cfg.cameras or {}).items() if cam.enabled}
    else:
        geometry = {None: (cfg.lines, cfg.zones)}
    return build_pipeline(
        source, model, params=cfg.detect, imgsz=cfg.model.imgsz, rect=cfg.model.rect,
        batch=batch, batch_timeout_s=batch_timeout_s, workers=workers,
        sinks=sinks, render=render, render_status=render_status, extra_status=extra_status, output=output,
        queue=queue_for(kind, batch=batch, cameras=source.streams, size=cfg.queue.size, policy=cfg.queue.policy,
                        workers=workers),
        stage_timeout_s=cfg.stage_timeout_s, anchors=cfg.model.anchors,
        track=tracking(cfg), geometry=geometry, classify=cfg.classify,
    )

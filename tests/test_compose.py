"""One function turns a validated config into a pipeline; the jobs only add their own parts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from streamer.compose import build_from_config, models_for
from streamer.config import from_dict
from streamer.models import inference_plan
from streamer.sinks.jsonl import JsonlSink
from streamer.sources import make_source
from streamer.sources.base import Source
from streamer.sources.live import LiveSource
from streamer.sources.multi import MultiSource
from streamer.stages import InferStage, RenderStage, TrackStage
from tests.fakes import DelayModel

PACKAGE = Path(__file__).resolve().parent.parent / "streamer"
LINE = {"door": {"start": [0, 100], "end": [640, 100]}}


def test_no_job_calls_build_pipeline() -> None:
    calls = {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if re.search(r"\bbuild_pipeline\(", path.read_text())
    }
    # api.py defines it for embedding; every job, stream() and build_pipeline() itself come
    # through compose.build_from_config.
    assert calls == {"api.py"}


def _source(data: dict[str, Any]) -> Source:
    if "cameras" in data:
        cameras = {n: make_source(c["url"], source_id=n, realtime=True) for n, c in data["cameras"].items()}
        assert all(isinstance(c, LiveSource) for c in cameras.values())
        return MultiSource(cameras)  # type: ignore[arg-type]
    return make_source(data["source"], realtime=data["source"].startswith("synthetic"))


@pytest.mark.parametrize(("data", "stages", "batch_timeout_s", "geometry"), [
    ({"source": "sample:bikes"}, ["preprocess", "infer", "postprocess", "sinks"], 0.05, None),
    ({"source": "sample:bikes", "lines": LINE, "stage_timeout_s": 7},
     ["preprocess", "infer", "postprocess", "track", "sinks"], 0.05, [None]),  # JSONL needs no drawing
    ({"source": "synthetic:64x48"}, ["preprocess", "infer", "postprocess", "render", "sinks"], 0.0, None),
    ({"cameras": {"a": {"url": "synthetic:64x48", "lines": LINE}, "b": {"url": "synthetic:64x48"}},
      "model": {"batch_timeout_ms": 20}},
     ["preprocess", "infer", "postprocess", "track", "render", "sinks"], 0.02, ["a", "b"]),
])
def test_a_config_becomes_the_pipeline_it_describes(tmp_path: Path, data: dict[str, Any], stages: list[str],
                                                     batch_timeout_s: float, geometry: list[str | None] | None) -> None:
    cfg = from_dict(data)
    source = _source(data)
    live = source.live
    model = DelayModel(0.0)
    p = build_from_config(cfg, source, models_for(cfg, source, model), sinks=[JsonlSink(tmp_path / "o.jsonl")],
                          render=True if live else None)
    assert [s.name for s in p.stages] == stages
    assert p.source is source and p.stage_timeout_s == cfg.stage_timeout_s
    infer = next(s for s in p.stages if isinstance(s, InferStage))
    plan = inference_plan(str(model.device), cfg.model, files=not live, cameras=len(cfg.cameras or {}))
    assert (infer.batch_size, infer.workers, infer.batch_timeout_s) == (plan.batch, plan.workers, batch_timeout_s)
    track = next((s for s in p.stages if isinstance(s, TrackStage)), None)
    render = next((s for s in p.stages if isinstance(s, RenderStage)), None)
    if geometry is None:
        assert track is None
    else:
        assert track is not None and sorted(track.geometry, key=str) == geometry
        assert render is None or render.geometry == track.geometry
        lines = track.geometry[geometry[0]][0]
        assert [getattr(line, "name", None) for line in lines] == ["door"]


def test_the_job_adds_its_own_parts(tmp_path: Path) -> None:
    cfg = from_dict({"source": "synthetic:64x48"})
    source = _source({"source": "synthetic:64x48"})
    p = build_from_config(cfg, source, models_for(cfg, source, DelayModel(0.0)), sinks=[],
                          render=True, render_status=True, extra_status=lambda: ["x"], output=True)
    render = next(s for s in p.stages if isinstance(s, RenderStage))
    assert render.status and render.extra_status is not None and render.extra_status() == ["x"]
    assert p.output is not None and [s.name for s in p.stages][-1] == "render"


def test_nvdec_asked_for_by_name_is_refused_not_ignored() -> None:
    from streamer.compose import source_for
    from streamer.errors import ConfigError

    cfg = from_dict({"source": "sample:bikes", "capture": {"decode": "nvdec"}})
    with pytest.raises(ConfigError, match="capture.decode: 'nvdec' is not used by the pipeline yet"):
        source_for(cfg)
    assert source_for(from_dict({"source": "sample:bikes", "capture": {"decode": "auto"}})).kind == "file"


def test_watch_reports_what_mqtt_and_the_events_wrote(tmp_path: Path) -> None:
    """The summary's "wrote ..." lines cover every output of watch: its files, and with
    ``mqtt:`` the MQTT sink and the events that feed it."""
    from streamer import compose

    cfg = from_dict({"source": "synthetic:64x48", "job": "watch",
                     "output": {"window": False, "jsonl": str(tmp_path / "o.jsonl")},
                     "events": {"path": str(tmp_path / "events.jsonl"), "snapshots": str(tmp_path / "snaps")},
                     "mqtt": {"host": "127.0.0.1", "port": 1}})
    job = compose.watch(cfg)
    assert [s.name for s in job.outputs] == ["jsonl", "mqtt", "events"]
    sinks = next(s for s in job.pipeline.stages if s.name == "sinks")
    assert [s.name for s in sinks.sinks if s.name in ("mqtt", "events")] == ["mqtt", "events"]  # MQTT closes last


@pytest.mark.parametrize(("source", "workers"), [("sample:bikes", 2), ("synthetic:64x48", 1)])
def test_annotate_plans_for_what_it_reads(source: str, workers: int, monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    """A file gets the throughput plan (two calls on a CPU); a live source given to annotate
    keeps one call, as for watch."""
    from streamer import compose

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    cfg = from_dict({"source": source, "job": "annotate", "model": {"device": "cpu"},
                     "output": {"video": None, "jsonl": str(tmp_path / "o.jsonl")}})
    infer = next(s for s in compose.annotate(cfg).pipeline.stages if isinstance(s, InferStage))
    assert infer.workers == workers


def test_build_pipeline_builds_its_model_with_the_threads_of_its_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model named to ``build_pipeline`` is built for the calls it runs, as the jobs' are:
    two calls at once on a 2-core CPU take one thread each, not every core each."""
    from streamer.api import build_pipeline

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    p = build_pipeline("sample:bikes", "yolo11n", workers=2)
    infer = next(s for s in p.stages if isinstance(s, InferStage))
    assert (infer.workers, infer.model.threads) == (2, 1)

"""One queue table: every job's pipeline queues by it, and the docs quote it word for word."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streamer import compose
from streamer.config import from_dict
from streamer.defaults import queue_for, queue_table
from streamer.jobs import run_annotate, run_watch
from streamer.models import inference_plan, model_for
from streamer.pipeline import Pipeline
from streamer.queues import Policy
from tests.test_pipeline import CountingSource, Slow

ROOT = Path(__file__).resolve().parent.parent


class _Started(Exception):
    """Raised instead of starting: the pipeline is built and opened, nothing runs."""


def _edges(p: Pipeline) -> set[tuple[int, Policy]]:
    """(size, policy) of every real queue of ``p``: the configured value must be what was built."""
    c = p.queue_config
    assert [(q.maxsize, q.policy) for q in p.queues] == c.edges([s.name for s in p.stages])
    if c.feed is not None:  # the model is fed on demand and nothing after it is dropped
        model_at = [s.name for s in p.stages].index("infer")
        assert [(q.maxsize, q.policy) for q in p.queues] == [
            *([(1, Policy.BLOCK)] * model_at), (c.feed, Policy.BLOCK),
            *([(c.size, Policy.BLOCK)] * (len(p.queues) - model_at - 1))]
        return {(c.size, c.policy)}
    queues = [*p.queues, *([p.output] if p.output is not None else [])]
    built = {(q.maxsize, q.policy) for q in queues}
    assert built == {(c.size, c.policy)}
    return built


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Pipeline]:
    """Pipelines that a job tried to start (the job then stops at once)."""
    seen: list[Pipeline] = []

    def start(self: Pipeline) -> Pipeline:
        seen.append(self)
        raise _Started

    monkeypatch.setattr(Pipeline, "start", start)
    return seen


@pytest.mark.parametrize(("kind", "batch", "cameras", "size", "policy", "expected"), [
    ("file", 1, 1, None, None, (4, Policy.BLOCK)),
    ("file", 8, 1, None, None, (16, Policy.BLOCK)),
    ("file", 8, 1, 3, None, (3, Policy.BLOCK)),
    ("live", 8, 1, None, None, (1, Policy.DROP_OLDEST)),
    ("live", 1, 1, 2, "block", (2, Policy.BLOCK)),
    ("cameras", 1, 3, None, None, (3, Policy.LATEST_PER_KEY)),
])
def test_queue_for_reads_the_table(kind: str, batch: int, cameras: int, size: int | None, policy: str | None,
                                   expected: tuple[int, Policy]) -> None:
    q = queue_for(kind, batch=batch, cameras=cameras, size=size, policy=policy)
    assert (q.size, q.policy) == expected


def test_unknown_kind_lists_the_kinds() -> None:
    with pytest.raises(ValueError, match=r"unknown source kind 'rtsp', expecting one of \['file', 'live', 'cameras'\]"):
        queue_for("rtsp")


@pytest.mark.parametrize("doc", ["docs/architecture.md", "README.md"])
def test_the_docs_quote_the_table(doc: str) -> None:
    text = (ROOT / doc).read_text()
    assert queue_table() in text
    # Sizes said in prose elsewhere must not contradict it: only the table names sizes.
    assert "size 2" not in text and "holds one frame" not in text


@pytest.mark.parametrize(("live", "kind"), [(False, "file"), (True, "live")])
def test_a_bare_pipeline_queues_by_the_table(live: bool, kind: str) -> None:
    p = Pipeline(CountingSource(0, live=live), [Slow("a")])
    q = queue_for(kind)
    assert _edges(p) == {(q.size, q.policy)}


@pytest.mark.parametrize(("queue", "expected"), [
    ({}, None),
    ({"size": 3}, (3, Policy.BLOCK)),
])
def test_annotate_queues_by_the_table(captured: list[Pipeline], tmp_path: Path, queue: dict[str, Any],
                                      expected: tuple[int, Policy] | None) -> None:
    cfg = from_dict({"source": "sample:bikes", "queue": queue, "output": {"jsonl": str(tmp_path / "a.jsonl")}})
    with pytest.raises(_Started):
        run_annotate(cfg, show_progress=False)
    (p,) = captured
    if expected is None:
        plan = inference_plan(str(model_for(cfg.model).device), cfg.model, files=True)
        q = queue_for("file", batch=plan.batch)
        expected = (q.size, q.policy)
    assert _edges(p) == {expected}


def test_watch_queues_by_the_table(captured: list[Pipeline]) -> None:
    cfg = from_dict({"source": "synthetic:64x48", "output": {"window": False}})
    with pytest.raises(_Started):
        run_watch(cfg)
    (p,) = captured
    q = queue_for("live")
    assert _edges(p) == {(q.size, q.policy)}


def test_monitor_queues_by_the_table() -> None:
    cfg = from_dict({"cameras": {"a": {"url": "synthetic:64x48"}, "b": {"url": "synthetic:64x48"}},
                     "dashboard": {"enabled": False}, "events": {"path": None}})
    monitor = compose.monitor(cfg)
    q = queue_for("cameras", cameras=2)
    assert _edges(monitor.pipeline) == {(q.size, q.policy)} == {(2, Policy.LATEST_PER_KEY)}

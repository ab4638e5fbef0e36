"""How a job decides batch size, model calls in flight and threads per call."""

from __future__ import annotations

import pytest

from streamer.config import ModelConfig
from streamer.models import inference_plan, model_for
from streamer.models.base import default_threads


def _planned(device: str, cfg: ModelConfig, files: bool, cameras: int = 0) -> tuple[tuple[int, int], int | None]:
    """(batch, workers) of the plan, and the threads of a model built with it on ``device``."""
    plan = inference_plan(device, cfg, files=files, cameras=cameras)
    threads = model_for(cfg, plan.threads).threads if device == "cpu" else plan.threads
    return (plan.batch, plan.workers), threads


def test_files_on_a_cpu_get_two_single_thread_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    plan, threads = _planned("cpu", ModelConfig(device="cpu"), files=True)
    assert plan == (1, 2)
    assert threads == 1


def test_live_sources_keep_one_call_on_every_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    plan, threads = _planned("cpu", ModelConfig(device="cpu"), files=False)
    assert plan == (1, 1)
    assert threads == default_threads()


def test_cameras_on_a_cpu_get_two_single_frame_calls_and_on_cuda_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    plan, threads = _planned("cpu", ModelConfig(device="cpu"), files=False, cameras=16)
    assert plan == (1, 2)
    assert threads == 1
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    plan, _ = _planned("cuda:0", ModelConfig(), files=False, cameras=16)
    assert plan == (16, 1)


def test_one_core_and_cuda_get_one_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert _planned("cpu", ModelConfig(device="cpu"), files=True)[0] == (1, 1)
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert _planned("cuda:0", ModelConfig(), files=True)[0] == (8, 1)


def test_the_pipeline_file_overrides_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    plan, threads = _planned("cpu", ModelConfig(device="cpu", batch=4, workers=3, threads=3), files=True)
    assert plan == (4, 3)
    assert threads == 3
    plan, threads = _planned("cpu", ModelConfig(device="cpu"), files=True)
    assert plan == (1, 2)
    assert threads == default_threads() // 2 == 3

"""How a job decides batch size, model calls in flight and threads per call."""

from __future__ import annotations

import pytest

from streamer.config import ModelConfig
from streamer.compose import inference_plan
from streamer.models import load_model
from streamer.models.base import default_threads


class _CudaModel:
    device = "cuda:0"
    threads = None


def test_files_on_a_cpu_get_two_single_thread_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    model = load_model("yolo11n", device="cpu")
    assert inference_plan(model, ModelConfig(), files=True) == (1, 2)
    assert model.threads == 1  # type: ignore[attr-defined]


def test_live_sources_keep_one_call_on_every_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    model = load_model("yolo11n", device="cpu")
    assert inference_plan(model, ModelConfig(), files=False) == (1, 1)
    assert model.threads == default_threads()  # type: ignore[attr-defined]


def test_cameras_on_a_cpu_get_two_single_frame_calls_and_on_cuda_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    model = load_model("yolo11n", device="cpu")
    assert inference_plan(model, ModelConfig(), files=False, cameras=16) == (1, 2)
    assert model.threads == 1  # type: ignore[attr-defined]
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert inference_plan(_CudaModel(), ModelConfig(), files=False, cameras=16) == (16, 1)  # type: ignore[arg-type]


def test_one_core_and_cuda_get_one_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert inference_plan(load_model("yolo11n", device="cpu"), ModelConfig(), files=True) == (1, 1)
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert inference_plan(_CudaModel(), ModelConfig(), files=True) == (8, 1)  # type: ignore[arg-type]


def test_the_pipeline_file_overrides_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    model = load_model("yolo11n", device="cpu", threads=3)
    assert inference_plan(model, ModelConfig(batch=4, workers=3, threads=3), files=True) == (4, 3)
    assert model.threads == 3  # type: ignore[attr-defined]
    big = load_model("yolo11n", device="cpu")
    assert inference_plan(big, ModelConfig(), files=True) == (1, 2)
    assert big.threads == default_threads() // 2 == 3  # type: ignore[attr-defined]

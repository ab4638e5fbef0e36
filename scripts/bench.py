#!/usr/bin/env python3
"""streamer's benchmark: every figure in one run, on one machine, as a table and JSON.

    .venv/bin/python scripts/bench.py [--quick] [--json out/bench.json]
                                      [--ultralytics-python /path/to/python-with-ultralytics]
                                      [--no-live] [--no-monitor]

Sections (ratios are only meaningful within one run on one machine):

* model only: the model in a tight loop on 64 prepared bikes frames, per backend and per
  configuration (batch; calls in flight x threads each), including annotate's default;
* end to end: ``annotate`` on the sample clips (decode → encode), per-stage medians; on bikes
  also without the video file (JSONL only), to show what H.264 encoding costs;
* naive loop: one thread doing read, letterbox, infer, decode, draw, write on the same clip;
* Ultralytics ``predict(stream=True)`` on the same model file and clip (when a Python with
  ultralytics is given);
* postprocess (decode + NMS) at conf 0.25 and 0.001 and at 1k/10k/30k candidates; letterbox
  at 720p and 1080p, fused kernel vs the chain of full-size temporaries;
* live: a 30 fps RTSP stream from a loopback server through streamer and through a naive
  read-infer loop, latency over time (needs GStreamer's RTSP server, as in the tests);
* monitor: four RTSP cameras in one process vs four separate single-camera processes;
* memory: RSS over a 20 000-frame synthetic run; peak RSS;
* GPU rows (fp32/fp16, batch 1 and 8) when CUDA is present, else "skipped";
* tracking: the tracker's update at 10 / 50 / 200 boxes against Ultralytics' BYTETracker on
  the same inputs (``scripts/bench_track.py``; Ultralytics' side when a Python with it is
  given), and ``annotate --track`` against ``annotate`` on bikes, interleaved in rounds.

* video: encode time per frame, H.264 (PyAV) against OpenCV's mp4v; with the model section,
  the CPU per frame writing video may cost for end to end / model only to reach 0.9, and
  the ratio H.264's measured cost predicts;
* startup: launch to first result for annotate and watch, the Numba cache, the classifier's
  ms per crop and the cost of classifying detected objects with and without per-track caching.

``--only track`` (or any section name: model, live, monitor, memory, track, video, startup)
runs just those.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from streamer import assets  # noqa: E402
from streamer.config import from_dict  # noqa: E402
from streamer.jobs import run_annotate  # noqa: E402
from streamer.models import load_model  # noqa: E402
from streamer.models.base import default_threads  # noqa: E402
from streamer.postprocess import yolo  # noqa: E402
from streamer.preprocess import letterbox, letterbox_into, letterbox_params, letterbox_reference  # noqa: E402
from streamer.render import draw_detections  # noqa: E402
from streamer.types import Detections  # noqa: E402


def median_ms(fn, repeat: int, warmup: int = 2) -> float:  # type: ignore[no-untyped-def]
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def first_frame(clip: str) -> np.ndarray:
    cap = cv2.VideoCapture(str(assets.sample_path(clip)))
    ok, image = cap.read()
    cap.release()
    assert ok
    return image


# ----------------------------------------------------------------------------- sections


def prepared_inputs(clip: str, n: int = 64) -> np.ndarray:
    """The first ``n`` frames of ``clip`` (``sample:NAME`` or a path), letterboxed: distinct real
    inputs, prepared up front."""
    cap = cv2.VideoCapture(str(assets.sample_path(clip) if clip.startswith("sample:") else clip))
    frames = []
    while len(frames) < n:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(letterbox(image, 640)[0])
    cap.release()
    return np.stack(frames)


def model_only_fps(model, x: np.ndarray, batch: int, workers: int, passes: int = 2) -> float:  # type: ignore[no-untyped-def]
    """Frames per second of ``model`` alone over the prepared inputs ``x`` (``passes`` times),
    ``batch`` frames per call and ``workers`` calls in flight, as the infer stage runs it."""
    calls = [slice(i, i + batch) for i in range(0, len(x) - batch + 1, batch)] * passes

    def loop(mine: list[slice]) -> None:
        for sl in mine:
            model(x[sl])

    model(x[:batch])
    t0 = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(calls[w::workers],)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(calls) * batch / (time.perf_counter() - t0)


def model_only_configs() -> dict[str, tuple[str, int, int, int]]:
    """name -> (backend, batch, workers, threads): one call on every inference thread at batch 1
    and 2, and what ``annotate`` runs by default on this machine (``models.inference_plan``)."""
    from streamer.config import ModelConfig
    from streamer.models import planned_models

    models = planned_models(ModelConfig(device="cpu"), files=True)
    plan, planned = models.plan, models.model.threads  # the backend's default when the plan leaves it
    threads = default_threads()
    configs = {
        f"onnxruntime, 1 call x {threads} threads, batch 1": ("onnxruntime", 1, 1, threads),
        f"onnxruntime, 1 call x {threads} threads, batch 2": ("onnxruntime", 2, 1, threads),
    }
    name = f"onnxruntime, {plan.workers} calls x {planned} threads, batch {plan.batch}"
    configs[name] = ("onnxruntime", plan.batch, plan.workers, planned)
    return configs


def bench_model_only(configs: dict[str, tuple[str, int, int, int]], x: np.ndarray) -> dict[str, Any]:
    """The model alone in a tight loop over 64 prepared bikes frames, per configuration."""
    out: dict[str, Any] = {}
    for name, (backend, batch, workers, threads) in configs.items():
        try:
            model = load_model("yolo11n", backend=backend, device="cpu", threads=threads)
            model.ensure_open()
        except Exception as exc:  # noqa: BLE001 - a backend that is not installed is reported, not fatal
            out[name] = {"error": str(exc)}
            continue
        fps = model_only_fps(model, x, batch, workers)
        out[name] = {"ms": round(1000.0 / fps, 2), "fps": round(fps, 2), "input": [batch, *x.shape[1:]],
                     "workers": workers, "threads": threads}
        model.ensure_closed()
    return out


def bench_annotate(clip: str, backend: str, tmp: Path, video: bool = True) -> dict[str, Any]:
    output = {"jsonl": str(tmp / f"{clip[7:]}.jsonl")}
    if video:
        output["video"] = str(tmp / f"{clip[7:]}.mp4")
    cfg = from_dict({"job": "annotate", "source": clip, "model": {"backend": backend}, "output": output})
    summary = run_annotate(cfg, err=io.StringIO(), show_progress=False)
    stages = next((line for line in summary.lines if line.startswith("stage times")), "")
    return {"frames": summary.frames, "seconds": round(summary.seconds, 3), "fps": round(summary.fps, 2),
            "stage_medians_ms": stages.split(": ", 1)[-1]}


def bench_naive(clip: str, tmp: Path, streamer_kernels: bool) -> dict[str, Any]:
    """One thread doing read, letterbox, infer, decode, draw and write, frame after frame.

    ``streamer_kernels=False`` is the loop users write: NumPy/OpenCV letterbox (a chain of
    full-size temporaries), an ONNX Runtime session with default options, NumPy decode and
    NMS. ``True`` uses streamer's own kernels and session settings, to separate what the
    threads bring from what the kernels bring.
    """
    from streamer.postprocess import reference

    if streamer_kernels:
        model = load_model("yolo11n", backend="onnxruntime", device="cpu")
        model.ensure_open()
        run = model
    else:
        import onnxruntime as ort

        session = ort.InferenceSession(str(assets.model_path("yolo11n")), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run(x: np.ndarray) -> np.ndarray:
            return session.run(None, {name: x})[0]

    names = tuple(str(i) for i in range(80))
    mask = np.ones(80, np.bool_)
    cap = cv2.VideoCapture(str(assets.sample_path(clip)))
    fps = cap.get(cv2.CAP_PROP_FPS)
    writer = None
    frames = 0
    t0 = time.perf_counter()
    while True:
        ok, image = cap.read()
        if not ok:
            break
        lb = letterbox_params(image.shape[:2], 640)
        h, w = lb.source_hw
        if streamer_kernels:
            x = letterbox_into(image, lb, np.empty((3, *lb.input_hw), np.float32))
            raw = run(x[None])[0]
            boxes, scores, cls = yolo.postprocess_v8(raw, 0.25, 0.7, mask, False, False, 300, 30000,
                                                     lb.scale, lb.pad_x, lb.pad_y, w, h)
        else:
            x = letterbox_reference(image, lb)
            raw = run(x[None])[0]
            boxes, scores, cls = reference.postprocess("v8", raw, 0.25, 0.7, mask, False, False, 300, 30000,
                                                       lb.scale, lb.pad_x, lb.pad_y, w, h)
        draw_detections(image, Detections(boxes, scores, cls), names)
        if writer is None:
            writer = cv2.VideoWriter(str(tmp / "naive.mp4"), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"mp4v"),
                                     fps, (image.shape[1], image.shape[0]))
        writer.write(image)
        frames += 1
    elapsed = time.perf_counter() - t0
    cap.release()
    if writer is not None:
        writer.release()
    return {"frames": frames, "seconds": round(elapsed, 3), "fps": round(frames / elapsed, 2)}


_ULTRALYTICS_SNIPPET = r"""
import json, sys, time
from ultralytics import YOLO
model_path, clip = sys.argv[1], sys.argv[2]
model = YOLO(model_path, task="detect")
t0 = time.perf_counter(); n = 0
for r in model.predict(source=clip, stream=True, conf=0.25, iou=0.7, imgsz=640, verbose=False):
    n += 1
print(json.dumps({"frames": n, "seconds": time.perf_counter() - t0}))
"""


def bench_ultralytics(python: str) -> dict[str, Any]:
    proc = subprocess.run(
        [python, "-c", _ULTRALYTICS_SNIPPET, str(assets.model_path("yolo11n")), str(assets.sample_path("sample:bikes"))],
        capture_output=True, text=True, timeout=900, env=dict(os.environ, YOLO_OFFLINE="1"),
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"frames": result["frames"], "seconds": round(result["seconds"], 3),
            "fps": round(result["frames"] / result["seconds"], 2)}


def bench_postprocess(backend: str, repeat: int) -> dict[str, Any]:
    model = load_model("yolo11n", backend=backend, device="cpu")
    model.ensure_open()
    cap = cv2.VideoCapture(str(assets.sample_path("sample:bikes")))
    for _ in range(44):  # frame 43: a busy street scene (cars, people, bicycles)
        ok, image = cap.read()
    cap.release()
    x, lb = letterbox(image, 640)
    raw = np.ascontiguousarray(model(x[None])[0])
    model.ensure_closed()
    mask = np.ones(80, np.bool_)
    h, w = lb.source_hw
    out: dict[str, Any] = {}
    for conf in (0.25, 0.001):
        best = raw[4:].max(axis=0)
        candidates = int((best > conf).sum())
        ms = median_ms(lambda conf=conf: yolo.postprocess_v8(raw, conf, 0.7, mask, False, False, 300, 30000,
                                                             lb.scale, lb.pad_x, lb.pad_y, w, h), repeat)
        out[f"real conf {conf}"] = {"candidates": candidates, "ms": round(ms, 3)}
    rng = np.random.default_rng(0)
    for n in (1_000, 10_000, 30_000):
        synth = np.zeros((84, n), np.float32)
        centres = rng.uniform(0, 640, (n // 20 + 1, 2))
        c = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 8, (n, 2))
        synth[0], synth[1] = c[:, 0], c[:, 1]
        synth[2:4] = rng.uniform(8, 120, (2, n))
        synth[4 + rng.integers(0, 80, n), np.arange(n)] = rng.uniform(0.3, 1.0, n)
        ms = median_ms(lambda synth=synth: yolo.postprocess_v8(synth, 0.25, 0.7, mask, False, False, 300, 30000,
                                                               1.0, 0.0, 0.0, 640, 640), max(5, repeat // 4))
        out[f"{n} candidates"] = {"candidates": n, "ms": round(ms, 3)}
    return out


def bench_letterbox(repeat: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    for name, (h, w) in {"720p": (720, 1280), "1080p": (1080, 1920)}.items():
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        lb = letterbox_params((h, w), 640)
        buf = np.empty((3, *lb.input_hw), np.float32)
        fused = median_ms(lambda image=image, lb=lb, buf=buf: letterbox_into(image, lb, buf), repeat)
        chain = median_ms(lambda image=image, lb=lb: letterbox_reference(image, lb), repeat)
        out[name] = {"fused_ms": round(fused, 3), "temporaries_ms": round(chain, 3)}
    return out


def bench_memory(frames: int) -> dict[str, Any]:
    """RSS over a lossless synthetic run: every frame through every stage (small imgsz)."""
    import psutil

    from streamer.api import build_pipeline
    from streamer.pipeline import QueueConfig
    from streamer.queues import Policy
    from streamer.sinks.jsonl import JsonlSink
    from streamer.sources.live import SyntheticSource

    proc = psutil.Process()
    with tempfile.TemporaryDirectory() as tmp:
        source = SyntheticSource(width=320, height=240, paced=False, limit=frames)
        pipeline = build_pipeline(source, "yolo11n", imgsz=96, sinks=[JsonlSink(Path(tmp) / "m.jsonl")],
                                  queue=QueueConfig(4, Policy.BLOCK))
        pipeline.start()
        baseline = None
        peak = 0
        t0 = time.perf_counter()
        while pipeline.alive():
            time.sleep(0.25)
            rss = proc.memory_info().rss
            peak = max(peak, rss)
            if baseline is None and source.produced >= min(2000, frames // 10):
                gc.collect()
                baseline = proc.memory_info().rss
        pipeline.run()
        gc.collect()
        end = proc.memory_info().rss
        return {"frames": source.produced, "seconds": round(time.perf_counter() - t0, 1),
                "rss_start_mb": round((baseline or end) / 2**20, 1), "rss_end_mb": round(end / 2**20, 1),
                "growth_mb": round((end - (baseline or end)) / 2**20, 1)}


def bench_gpu() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"status": "skipped: torch not installed"}
    if not torch.cuda.is_available():
        return {"status": "skipped: no CUDA device"}
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(0)}
    for half in (False, True):
        for batch in (1, 8):
            try:
                model = load_model("yolo11n", backend="torch", device="cuda")
                if half:
                    model.half = True  # type: ignore[attr-defined]
                model.ensure_open()
                x = np.random.rand(batch, 3, 640, 640).astype(np.float32)
                ms = median_ms(lambda x=x: model(x), 30, warmup=5)
                out[f"{'fp16' if half else 'fp32'} batch {batch}"] = {"ms": round(ms, 3), "fps": round(batch * 1000 / ms, 1)}
                model.ensure_closed()
            except Exception as exc:  # noqa: BLE001
                out[f"{'fp16' if half else 'fp32'} batch {batch}"] = {"error": str(exc)[:200]}
    return out


# ----------------------------------------------------------------------------- live + monitor


def _rtsp_server(mounts: dict[str, str], fps: int | None = None):  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(ROOT))
    from tests.rtsp import RtspServer

    return RtspServer(mounts=mounts, fps=fps)


def bench_live(seconds: float, imgsz: int) -> dict[str, Any]:
    """A 30 fps RTSP stream, a model slower than the frame period: streamer vs a naive loop.

    Latency is measured on the stream's own clock: frame k left the server about k/fps after
    frame 0 arrived, so latency(k) = when its result is ready − (arrival of frame 0 + k/fps).
    """
    from streamer.api import build_pipeline
    from streamer.sinks.base import Sink
    from streamer.sources.live import StreamSource

    clip = str(assets.sample_path("sample:bikes"))
    fps = 30.0
    results: dict[str, Any] = {"stream_fps": fps, "imgsz": imgsz, "seconds": seconds}
    with _rtsp_server({"cam": clip}, fps=int(fps)) as server:
        url = server.url("cam")

        class Recorder(Sink):
            def __init__(self) -> None:
                self.rows: list[tuple[int, float, float]] = []

            def write(self, result) -> None:  # type: ignore[no-untyped-def]
                self.rows.append((result.frame.index, result.frame.captured_at, time.monotonic()))

        model = load_model("yolo11n")
        rec = Recorder()
        pipeline = build_pipeline(StreamSource(url), model, imgsz=imgsz, sinks=[rec])
        pipeline.start()
        time.sleep(seconds)
        pipeline.stop()
        pipeline.join(10)
        pipeline.close()
        k0, cap0, _ = rec.rows[0]
        t_first = cap0 - k0 / fps
        ours = [(done - (t_first + k / fps)) * 1000 for k, _, done in rec.rows]
        done_t = [done - rec.rows[0][2] for _, _, done in rec.rows]
        results["streamer"] = _latency_summary(ours, done_t, seconds, pipeline.dropped + getattr(pipeline.source, "dropped", 0))

        model = load_model("yolo11n")
        model.ensure_open()
        cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
        mask = np.ones(80, np.bool_)
        rows: list[tuple[int, float]] = []
        t_start = time.monotonic()
        t_first = None
        k = 0
        while time.monotonic() - t_start < seconds:
            ok, image = cap.read()
            if not ok:
                break
            if t_first is None:
                t_first = time.monotonic()
            x, lb = letterbox(image, imgsz)
            raw = model(x[None])[0]
            h, w = lb.source_hw
            yolo.postprocess_v8(raw, 0.25, 0.7, mask, False, False, 300, 30000, lb.scale, lb.pad_x, lb.pad_y, w, h)
            rows.append((k, time.monotonic()))
            k += 1
        cap.release()
        model.ensure_closed()
        assert t_first is not None
        naive = [(done - (t_first + k / fps)) * 1000 for k, done in rows]
        results["naive"] = _latency_summary(naive, [d - rows[0][1] for _, d in rows], seconds, 0)
    return results


def _latency_summary(lat_ms: list[float], t: list[float], seconds: float, dropped: int) -> dict[str, Any]:
    arr, tt = np.array(lat_ms), np.array(t)
    first = arr[tt <= 10]
    last = arr[tt >= tt[-1] - 10]
    return {"frames": len(arr), "dropped": int(dropped), "p50_ms": round(float(np.median(arr)), 1),
            "p95_ms": round(float(np.percentile(arr, 95)), 1),
            "first_10s_median_ms": round(float(np.median(first)), 1),
            "last_10s_median_ms": round(float(np.median(last)), 1)}


def _count_lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def bench_monitor(seconds: float) -> dict[str, Any]:
    """Four cameras: one monitor process (batched) vs four separate watch processes."""
    clip = str(assets.sample_path("sample:bikes"))
    names = ["cam1", "cam2", "cam3", "cam4"]
    out: dict[str, Any] = {"seconds": seconds}
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with _rtsp_server({n: clip for n in names}) as server, tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        cfg = {"cameras": {n: {"url": server.url(n), "jsonl": str(t / f"m-{n}.jsonl")} for n in names},
               "dashboard": {"enabled": False}, "events": {"path": None}, "output": {"status_interval_s": 1000}}
        (t / "mon.yaml").write_text(json.dumps(cfg))
        proc = subprocess.Popen([sys.executable, "-m", "streamer", "monitor", str(t / "mon.yaml")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp)
        _measure_window(lambda: sum(_count_lines(t / f"m-{n}.jsonl") for n in names), seconds, out, "one_process")
        proc.send_signal(2)
        stdout, _ = proc.communicate(timeout=60)
        batch = [line for line in stdout.splitlines() if line.startswith("model:")]
        out["one_process"]["batch_line"] = batch[-1] if batch else None
        procs = [
            subprocess.Popen([sys.executable, "-m", "streamer", "watch", server.url(n), "--no-window",
                              "--jsonl", str(t / f"s-{n}.jsonl"), "--status-interval", "1000"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=tmp)
            for n in names
        ]
        _measure_window(lambda: sum(_count_lines(t / f"s-{n}.jsonl") for n in names), seconds, out, "four_processes")
        for p in procs:
            p.send_signal(2)
        for p in procs:
            p.communicate(timeout=60)
    out["ratio"] = round(out["one_process"]["fps"] / max(out["four_processes"]["fps"], 1e-9), 2)
    return out


def _measure_window(count, seconds: float, out: dict[str, Any], key: str) -> None:  # type: ignore[no-untyped-def]
    # Skip start-up (model load, connect): measure from the first processed frames on.
    deadline = time.monotonic() + 120
    while count() < 8 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2.0)  # JSONL flushes once a second
    c0, t0 = count(), time.monotonic()
    time.sleep(seconds)
    c1, t1 = count(), time.monotonic()
    out[key] = {"frames": c1 - c0, "fps": round((c1 - c0) / (t1 - t0), 2)}


# ----------------------------------------------------------------------------- report


def bench_model_sections(report: dict[str, Any], rounds: int, repeat: int, ultralytics_python: str | None) -> None:
    """Model only, end to end, naive loop and Ultralytics, interleaved in rounds; then
    postprocess, letterbox and GPU rows."""
    runs: dict[str, list[dict[str, Any]]] = {}
    ratios: dict[str, list[float]] = {}

    def keep(name: str, value: dict[str, Any]) -> None:
        runs.setdefault(name, []).append(value)

    configs = model_only_configs()
    default_config = list(configs)[-1]
    x = prepared_inputs("sample:bikes")
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            round_configs = dict(configs)
            if r == 0:
                round_configs["torch, 1 call, batch 1"] = ("torch", 1, 1, default_threads())
            # Each round brackets the end-to-end run: the model alone and the naive loop run
            # right before and right after it, and its ratios are taken against their mean.
            model_only = bench_model_only(round_configs, x)
            for key, value in model_only.items():
                keep(f"model_only/{key}", value)
            naive_before = bench_naive("sample:bikes", Path(tmp), streamer_kernels=False)
            e2e = bench_annotate("sample:bikes", "auto", Path(tmp))
            keep("annotate/sample:bikes", e2e)
            # The same run without the H.264 file (JSONL only): what writing video costs.
            e2e_jsonl = bench_annotate("sample:bikes", "auto", Path(tmp), video=False)
            keep("annotate/sample:bikes, JSONL only", e2e_jsonl)
            after = bench_model_only({default_config: configs[default_config]}, x)[default_config]
            naive_after = bench_naive("sample:bikes", Path(tmp), streamer_kernels=False)
            keep("naive", naive_before)
            keep("naive", naive_after)
            naive_k = bench_naive("sample:bikes", Path(tmp), streamer_kernels=True)
            keep("naive_streamer_kernels", naive_k)
            model_fps = (model_only[default_config]["fps"] + after["fps"]) / 2
            naive_fps = (naive_before["fps"] + naive_after["fps"]) / 2
            best_model = max(max(v["fps"] for k, v in model_only.items() if "fps" in v and k.startswith("onnxruntime")),
                             model_fps)
            ratios.setdefault("e2e_over_model_only_same_config", []).append(e2e["fps"] / model_fps)
            ratios.setdefault("e2e_without_video_over_model_only_same_config", []).append(e2e_jsonl["fps"] / model_fps)
            ratios.setdefault("e2e_over_fastest_model_only", []).append(e2e["fps"] / best_model)
            ratios.setdefault("e2e_over_naive", []).append(e2e["fps"] / naive_fps)
            ratios.setdefault("e2e_over_naive_with_streamer_kernels", []).append(e2e["fps"] / naive_k["fps"])
            # What e2e/naive would be if everything but the model were hidden completely: an
            # end-to-end pipeline cannot run faster than its model alone.
            ratios.setdefault("bound_fastest_model_only_over_naive", []).append(best_model / naive_fps)
            if ultralytics_python:
                ul = bench_ultralytics(ultralytics_python)
                keep("ultralytics", ul)
                if "fps" in ul:
                    ratios.setdefault("e2e_over_ultralytics", []).append(e2e["fps"] / ul["fps"])
        for clip in ("sample:carphone", "sample:bigbuckbunny"):
            keep(f"annotate/{clip}", bench_annotate(clip, "auto", Path(tmp)))

    def median_run(values: list[dict[str, Any]]) -> dict[str, Any]:
        ok = [v for v in values if "fps" in v]
        if not ok:
            return values[0]
        chosen = dict(sorted(ok, key=lambda v: v["fps"])[len(ok) // 2])
        chosen["all_fps"] = [v["fps"] for v in ok]
        return chosen

    report["rounds"] = rounds
    report["model_only"] = {k.split("/", 1)[1]: median_run(v) for k, v in runs.items() if k.startswith("model_only/")}
    report["annotate_default_model_config"] = default_config
    report["annotate"] = {k.split("/", 1)[1]: median_run(v) for k, v in runs.items() if k.startswith("annotate/")}
    report["naive"] = median_run(runs["naive"])
    report["naive_streamer_kernels"] = median_run(runs["naive_streamer_kernels"])
    if "ultralytics" in runs:
        report["ultralytics"] = median_run(runs["ultralytics"])
    # The CPU backend to use: the faster of the two at one call on every thread, batch 1.
    fps_of = {k: v.get("fps", 0.0) for k, v in report["model_only"].items()}
    torch_fps = fps_of.get("torch, 1 call, batch 1", 0.0)
    report["best_cpu_backend"] = "onnxruntime" if fps_of[list(configs)[0]] >= torch_fps else "torch"
    report["ratios"] = {k: {"median": round(statistics.median(v), 3), "rounds": [round(a, 3) for a in v]}
                        for k, v in ratios.items()}
    report["postprocess"] = bench_postprocess("onnxruntime", repeat * 5)
    report["letterbox"] = bench_letterbox(repeat)
    report["gpu"] = bench_gpu()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, shorter live runs")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", default="out/bench.json")
    parser.add_argument("--ultralytics-python", default=None, help="a Python with ultralytics installed")
    parser.add_argument("--no-live", action="store_true")
    parser.add_argument("--no-monitor", action="store_true")
    parser.add_argument("--memory-frames", type=int, default=20_000)
    parser.add_argument("--only", nargs="+", default=None, metavar="SECTION",
                        choices=["model", "live", "monitor", "memory", "track", "video", "startup"],
                        help="run only these sections (model: model only, end to end, naive, Ultralytics, "
                             "postprocess, letterbox, GPU)")
    args = parser.parse_args()
    sections = set(args.only or ["model", "live", "monitor", "memory", "track", "video", "startup"])
    repeat = 10 if args.quick else 40
    report: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "processor": platform.processor() or platform.machine()},
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    t_all = time.perf_counter()
    # This machine's speed drifts by +-20 % within minutes (shared hardware). The figures that
    # are compared with each other run interleaved, in rounds; each ratio is taken within a
    # round, and the report gives the median over rounds (and every round's value).
    rounds = 1 if args.quick else 7
    if "model" in sections:
        bench_model_sections(report, rounds, repeat, args.ultralytics_python)
    if "track" in sections:
        with tempfile.TemporaryDirectory() as tmp:
            report["tracking"] = bench_tracking(rounds if rounds > 1 else 1, args.ultralytics_python, Path(tmp),
                                                updates=150 if args.quick else 600)
    if "video" in sections:
        with tempfile.TemporaryDirectory() as tmp:
            report["video"] = bench_video(50 if args.quick else 100, 1 if args.quick else 3, Path(tmp))
        budget = video_budget(report)
        if budget:
            report["video_budget"] = budget
    if "startup" in sections:
        report["startup"] = bench_startup(1 if args.quick else 3)
    if "live" in sections and not args.no_live:
        try:
            report["live"] = bench_live(20.0 if args.quick else 60.0, imgsz=960)
        except Exception as exc:  # noqa: BLE001 - needs GStreamer; reported, not fatal
            report["live"] = {"error": str(exc)[:300]}
    if "monitor" in sections and not args.no_monitor:
        try:
            report["monitor"] = bench_monitor(15.0 if args.quick else 30.0)
        except Exception as exc:  # noqa: BLE001
            report["monitor"] = {"error": str(exc)[:300]}
    if "memory" in sections and not args.no_memory:
        report["memory"] = bench_memory(args.memory_frames)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report["bench_seconds"] = round(time.perf_counter() - t_all, 1)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print_table(report)
    print(f"\nJSON: {args.json}")
    return 0


def bench_tracking(rounds: int, ultralytics_python: str | None, tmp: Path, updates: int) -> dict[str, Any]:
    """Tracker update time per size (ours vs Ultralytics' BYTETracker on the same inputs), and
    the cost of tracking end to end: annotate bikes with and without it, interleaved."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench_track

    bench_track.time_ours(bench_track.make_frames(20, 40, seed=99))  # kernels compiled or loaded first
    sizes = []
    for n in bench_track.SIZES:
        frames = bench_track.make_frames(n, updates + bench_track.WARMUP)
        times, ids = bench_track.time_ours(frames)
        row: dict[str, Any] = {"boxes": n, "ours_ms": round(bench_track.median_ms(times), 4)}
        if ultralytics_python:
            try:
                u_times, u_ids = bench_track.time_ultralytics(ultralytics_python, frames)
            except Exception as exc:  # noqa: BLE001 - the peer's install is not ours to fail on
                row["ultralytics_error"] = str(exc)[:200]
            else:
                row["ultralytics_ms"] = round(bench_track.median_ms(u_times), 4)
                row["ratio"] = round(row["ours_ms"] / row["ultralytics_ms"], 4)
                row.update({k: round(v, 4) for k, v in bench_track.id_agreement(frames, ids, u_ids).items()})
        sizes.append(row)
    plain, tracked, ratios = [], [], []
    for r in range(rounds):
        # Alternate which goes first, so a drift of the machine's speed favours neither.
        order = (False, True) if r % 2 == 0 else (True, False)
        got = {}
        for track in order:
            cfg = from_dict({
                "job": "annotate", "source": "sample:bikes", "track": track,
                "output": {"video": str(tmp / f"track-{track}.mp4"), "jsonl": str(tmp / f"track-{track}.jsonl")},
            })
            got[track] = run_annotate(cfg, err=io.StringIO(), show_progress=False).fps
        plain.append(round(got[False], 2))
        tracked.append(round(got[True], 2))
        ratios.append(round(got[True] / got[False], 4))
    return {"update": sizes, "annotate_fps": plain, "annotate_track_fps": tracked,
            "track_over_plain": {"median": round(statistics.median(ratios), 4), "rounds": ratios}}


def bench_video(frames: int, rounds: int, tmp: Path) -> dict[str, Any]:
    """Encode cost per frame: the H.264 default (PyAV, libx264 superfast, one thread) against
    OpenCV's mp4v, on the same pictures, interleaved; CPU ms is the steadier figure here."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench_video

    from streamer.runtime import configure_threads

    configure_threads()  # OpenCV's pool as annotate runs it (as the model section leaves it)
    out: dict[str, Any] = {}
    for w, h in bench_video.SIZES:
        images = bench_video.pictures(frames, (w, h))
        cases = {"h264 superfast (default)": bench_video.encode_sink(images, tmp / "h264.mp4", "superfast", 1),
                 "mp4v (OpenCV)": bench_video.encode_mp4v(images, tmp / "mp4v.mp4")}
        got: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
        for _ in range(rounds):
            for name, fn in cases.items():
                got[name].append(bench_video.timed(fn))
        out[f"{w}x{h}"] = {name: {"wall_ms": round(statistics.median(x for x, _ in v) / frames * 1000, 2),
                                  "cpu_ms": round(statistics.median(c for _, c in v) / frames * 1000, 2)}
                           for name, v in got.items()}
    return out


def video_budget(report: dict[str, Any], target: float = 0.9) -> dict[str, Any] | None:
    """The most CPU per frame that writing the video may cost for end to end / model only to
    reach ``target``, against what H.264 costs at bikes' size (640x272).

    The model alone keeps its ``workers x threads`` cores busy, so its CPU per frame is
    ``cores / fps``. The run without video reaches ``r0`` of it; writing video adds ``E`` ms of
    CPU per frame on the same cores, which gives ``1 / (1 / r0 + E / model_ms)``. Needs the
    model and video sections."""
    if "model_only" not in report or "video" not in report:
        return None
    model = report["model_only"][report["annotate_default_model_config"]]
    model_ms = model["workers"] * model["threads"] * 1000.0 / model["fps"]
    r0 = report["ratios"]["e2e_without_video_over_model_only_same_config"]["median"]
    h264_ms = report["video"]["640x272"]["h264 superfast (default)"]["cpu_ms"]
    mp4v_ms = report["video"]["640x272"]["mp4v (OpenCV)"]["cpu_ms"]

    def predicted(encode_ms: float) -> float:
        return round(1 / (1 / r0 + encode_ms / model_ms), 3)

    return {"target": target, "model_cpu_ms": round(model_ms, 2), "without_video": r0,
            "budget_ms": round((1 / target - 1 / r0) * model_ms, 2),
            "h264_cpu_ms": h264_ms, "h264_predicted": predicted(h264_ms),
            "mp4v_cpu_ms": mp4v_ms, "mp4v_predicted": predicted(mp4v_ms),
            "measured": report["ratios"]["e2e_over_model_only_same_config"]["median"]}


def bench_startup(rounds: int) -> dict[str, Any]:
    """Launch to first result for annotate and watch (whole processes), the Numba cache on a
    second run, and the classifier's cost per crop and per frame on detected objects."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench_startup as startup

    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        work, cache_home = Path(tmp), Path(tmp) / "cache"
        return {"startup": startup.startup(ROOT, rounds, work, cache_home),
                "classifier": startup.classifier_figures(rounds, cache_home)}


def print_table(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(f"machine: {m['processor']}, {m['cpus']} cores, {m['platform']}, Python {m['python']}  ({r['time']})")
    print("\n| what | figure |\n|---|---|")
    if "model_only" in r:
        for backend, v in r["model_only"].items():
            print(f"| model only, yolo11n 640x288, {backend} | "
                  + (f"{v['ms']} ms/frame ({v['fps']} fps; runs {v.get('all_fps')})" if "fps" in v else v["error"]) + " |")
        print(f"| fastest CPU backend | {r['best_cpu_backend']} |")
        for clip, v in r["annotate"].items():
            print(f"| annotate {clip}: end to end | {v['fps']} fps ({v['frames']} frames; runs {v.get('all_fps')}) |")
            print(f"| annotate {clip}: stage medians (ms) | {v['stage_medians_ms']} |")
        print(f"| annotate's default model configuration on this machine | {r['annotate_default_model_config']} |")
        print(f"| naive single-thread loop, bikes (NumPy/OpenCV, default ORT session) | {r['naive']['fps']} fps "
              f"(runs {r['naive'].get('all_fps')}) |")
        print(f"| naive single-thread loop, bikes, with streamer's kernels and session | "
              f"{r['naive_streamer_kernels']['fps']} fps (runs {r['naive_streamer_kernels'].get('all_fps')}) |")
        if "ultralytics" in r:
            u = r["ultralytics"]
            print("| Ultralytics predict(stream=True), bikes | "
                  + (f"{u['fps']} fps (runs {u.get('all_fps')})" if "fps" in u else u["error"]) + " |")
        for k, v in r["ratios"].items():
            print(f"| ratio {k.replace('_', ' ')} (median of rounds) | **{v['median']}** (rounds {v['rounds']}) |")
        for k, v in r["postprocess"].items():
            print(f"| decode + NMS, {k} ({v['candidates']} candidates) | {v['ms']} ms |")
        for k, v in r["letterbox"].items():
            print(f"| letterbox {k}: fused / temporaries | {v['fused_ms']} / {v['temporaries_ms']} ms |")
        g = r["gpu"]
        if "status" in g:
            print(f"| GPU fp32/fp16 at batch 1 and 8 | {g['status']} |")
        else:
            for k, v in g.items():
                if k != "device":
                    print(f"| GPU {g['device']} {k} | " + (f"{v['ms']} ms ({v['fps']} img/s)" if "ms" in v else v["error"]) + " |")
    if "tracking" in r:
        t = r["tracking"]
        for row in t["update"]:
            peer = (f"; Ultralytics BYTETracker {row['ultralytics_ms']} ms, ratio **{row['ratio']}**, "
                    f"IDF1 ours vs theirs {row.get('idf1_vs_ultralytics')}") if "ultralytics_ms" in row else ""
            print(f"| tracker update, {row['boxes']} boxes (median) | **{row['ours_ms']} ms**{peer} |")
        ratio = t["track_over_plain"]
        print(f"| annotate bikes with --track / without (end to end) | **{ratio['median']}** "
              f"(rounds {ratio['rounds']}; fps {t['annotate_track_fps']} vs {t['annotate_fps']}) |")
    if "video" in r:
        for size, cases in r["video"].items():
            h, m = cases["h264 superfast (default)"], cases["mp4v (OpenCV)"]
            print(f"| encode {size}, ms per frame (wall / CPU): H.264 superfast vs mp4v | "
                  f"{h['wall_ms']} / {h['cpu_ms']} vs {m['wall_ms']} / {m['cpu_ms']} |")
    if "video_budget" in r:
        b = r["video_budget"]
        print(f"| writing video's CPU budget for end to end / model only >= {b['target']} (bikes) | "
              f"<= {b['budget_ms']} ms per frame (model {b['model_cpu_ms']} CPU ms per frame, without video "
              f"{b['without_video']}); H.264 superfast costs {b['h264_cpu_ms']} ms, which predicts "
              f"{b['h264_predicted']} (measured {b['measured']}); mp4v {b['mp4v_cpu_ms']} ms predicts "
              f"{b['mp4v_predicted']} |")
    if "startup" in r:
        for name, row in r["startup"]["startup"].items():
            if "kernels loaded" in row:
                print(f"| {name} | {row['kernels loaded']} kernels loaded, {row['kernels compiled']} compiled |")
            else:
                print(f"| launch to first result: {name} | **{row['first_result_s']:.2f} s** (runs {row['first_result_all_s']}; "
                      f"torch imported: {row['torch_imported']}) |")
        c = r["startup"]["classifier"]
        for name, row in c["ms_per_crop"].items():
            print(f"| EfficientNet-Lite0 ms per crop, {name} | " + ", ".join(f"{k} {v:.1f}" for k, v in row.items()) + " |")
        for name, row in c["secondary"].items():
            if isinstance(row, dict):
                print(f"| classify detected objects, bikes, {name} | {row['ms_per_frame']:.1f} ms per frame, "
                      f"{row['model_calls']} calls, {row['crops']} crops |")
    if "live" in r:
        lv = r["live"]
        if "error" in lv:
            print(f"| live RTSP | {lv['error']} |")
        else:
            for who in ("streamer", "naive"):
                v = lv[who]
                print(f"| live RTSP 30 fps, imgsz {lv['imgsz']}, {who}: latency p50/p95, first 10 s -> last 10 s | "
                      f"{v['p50_ms']} / {v['p95_ms']} ms, {v['first_10s_median_ms']} -> {v['last_10s_median_ms']} ms, "
                      f"{v['frames']} frames, {v['dropped']} dropped |")
    if "monitor" in r:
        mo = r["monitor"]
        if "error" in mo:
            print(f"| monitor 4 cameras | {mo['error']} |")
        else:
            print(f"| 4 RTSP cameras, one process (batched) | {mo['one_process']['fps']} fps in total; "
                  f"{mo['one_process'].get('batch_line')} |")
            print(f"| 4 RTSP cameras, four processes | {mo['four_processes']['fps']} fps in total |")
            print(f"| ratio one process / four | {mo['ratio']} |")
    if "memory" in r:
        me = r["memory"]
        print(f"| RSS over {me['frames']} synthetic frames, every frame through every stage | "
              f"{me['rss_start_mb']} -> {me['rss_end_mb']} MB ({me['growth_mb']:+} MB) |")
    print(f"| peak RSS | {r['peak_rss_mb']} MB |")


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Start-up and classifier figures: how long from launch to the first result, and what the
built-in classifier costs per crop and per frame.

    .venv/bin/python scripts/bench_startup.py [--rounds 3] [--root OTHER_CHECKOUT] [--json out.json]
                                              [--no-classifier]

* start-up: ``streamer annotate`` of a 10-frame clip (the first frames of sample:carphone),
  ``streamer watch`` of that file and of ``synthetic:320x240@30``, each in a fresh process:
  seconds from launch to the first result reaching the sinks, and the process's whole wall
  time for annotate; whether PyTorch was imported. ``--root`` runs another checkout's
  ``streamer`` package (say, the commit before a change) with the same clip and harness.
* classifier: EfficientNet-Lite0 model-only ms per crop at batch 1 and 16, ONNX Runtime and
  PyTorch; secondary classification on the detector's boxes of sample:bikes frames with and
  without per-track caching (ms per frame and model calls).

Timings swing by tens of percent on a shared 2-core machine: each figure is the median of
``--rounds`` runs, interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# Runs inside the measured process: notes the time the first result reaches the sinks.
CHILD = r"""
import os, sys, time
launched = float(os.environ["BENCH_LAUNCHED"])
from streamer.sinks.counting import CountingSink
_write = CountingSink.write
def write(self, result):
    if self.frames == 0:
        sys.stderr.write(f"BENCH first_result_s={time.time() - launched:.3f}\n")
        sys.stderr.flush()
        if os.environ.get("BENCH_EXIT_AT_FIRST"):
            sys.stderr.write(f"BENCH torch={'torch' in sys.modules}\n")
            sys.stderr.flush()
            os._exit(0)
    _write(self, result)
CountingSink.write = write
from streamer.cli import main
code = main(sys.argv[1:])
sys.stderr.write(f"BENCH torch={'torch' in sys.modules}\n")
sys.exit(code)
"""


def make_clip(path: Path, frames: int = 10) -> Path:
    import cv2

    sys.path.insert(0, str(ROOT))
    from streamer import assets

    cap = cv2.VideoCapture(str(assets.sample_path("sample:carphone")))
    images = []
    while len(images) < frames:
        ok, image = cap.read()
        if not ok:
            break
        images.append(image)
    h, w = images[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (w, h))
    for image in images:
        writer.write(image)
    writer.release()
    return path


def launch(root: Path, args: list[str], cwd: Path, exit_at_first: bool = False, env_extra: dict[str, str] | None = None) -> dict[str, Any]:
    """One fresh process of ``streamer ARGS`` from ``root``; its first-result time and wall time."""
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONUNBUFFERED="1", **(env_extra or {}))
    env["BENCH_LAUNCHED"] = repr(time.time())
    if exit_at_first:
        env["BENCH_EXIT_AT_FIRST"] = "1"
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)
    wall = time.monotonic() - started
    notes = dict(line.removeprefix("BENCH ").split("=", 1) for line in proc.stderr.splitlines() if line.startswith("BENCH "))
    if "first_result_s" not in notes:
        raise RuntimeError(f"no result from {args} (exit {proc.returncode}): {proc.stderr[-800:]}")
    return {"first_result_s": float(notes["first_result_s"]), "wall_s": wall, "torch": notes.get("torch") == "True"}


def startup(root: Path, rounds: int, work: Path, cache_home: Path) -> dict[str, Any]:
    clip = make_clip(work / "ten.mp4")
    env = {"XDG_CACHE_HOME": str(cache_home)}
    cases = {
        "annotate yolo11n (10-frame clip)": (["annotate", str(clip), "--no-video", "--jsonl", "a.jsonl", "--no-progress"], False),
        "annotate efficientnet-lite0 (10-frame clip)": (
            ["annotate", str(clip), "--model", "efficientnet-lite0", "--no-video", "--jsonl", "b.jsonl", "--no-progress"], False),
        "watch file (10-frame clip)": (["watch", str(clip), "--no-window"], True),
        "watch synthetic:320x240@30": (["watch", "synthetic:320x240@30", "--no-window"], True),
    }
    if "efficientnet-lite0" not in subprocess.run(
        [sys.executable, "-m", "streamer", "models"], capture_output=True, text=True, cwd=work,
        env=dict(os.environ, PYTHONPATH=str(root)),
    ).stdout:
        cases.pop("annotate efficientnet-lite0 (10-frame clip)")
    else:
        # The one-off ONNX export is not start-up: make it before measuring.
        launch(root, cases["annotate efficientnet-lite0 (10-frame clip)"][0], work, env_extra=env)
    # Numba compiles into its cache on a checkout's first run: not start-up either.
    launch(root, cases["annotate yolo11n (10-frame clip)"][0], work, env_extra=env)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (args, exit_at_first) in cases.items():
            runs[name].append(launch(root, args, work, exit_at_first, env_extra=env))
    # Numba says what it did with its cache: a second run must load every kernel, compile none.
    proc = subprocess.run(
        [sys.executable, "-m", "streamer", *cases["annotate yolo11n (10-frame clip)"][0]], capture_output=True,
        text=True, cwd=work, env=dict(os.environ, PYTHONPATH=str(root), NUMBA_DEBUG_CACHE="1", **env), timeout=300,
    )
    debug = proc.stdout + proc.stderr
    out: dict[str, Any] = {"numba cache (annotate, after a first run)": {
        "kernels loaded": debug.count("[cache] data loaded"), "kernels compiled": debug.count("[cache] data saved"),
    }}
    for name, rows in runs.items():
        out[name] = {
            "first_result_s": statistics.median(r["first_result_s"] for r in rows),
            "first_result_all_s": [round(r["first_result_s"], 2) for r in rows],
            "wall_s": statistics.median(r["wall_s"] for r in rows),
            "torch_imported": any(r["torch"] for r in rows),
        }
    return out


def classifier_figures(rounds: int, cache_home: Path) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    import numpy as np

    import streamer
    from streamer import assets
    from streamer.classify import ObjectClassifier
    from streamer.models.efficientnet import EfficientNetLite0
    from streamer.types import Detections

    weights = assets.model_path("efficientnet-lite0")
    threads = min(2, os.cpu_count() or 1)
    models = {
        "onnxruntime": EfficientNetLite0(weights, cache_dir=cache_home / "streamer", threads=threads),
        "torch": EfficientNetLite0(weights, backend="torch", threads=threads),
    }
    for model in models.values():
        model.ensure_open()
    rng = np.random.default_rng(0)
    per_crop: dict[str, dict[str, float]] = {}
    inputs = {batch: rng.standard_normal((batch, 3, 224, 224)).astype(np.float32) for batch in (1, 16)}
    times: dict[tuple[str, int], list[float]] = {(name, batch): [] for name in models for batch in inputs}
    for _ in range(rounds):  # backends and batch sizes interleaved, so a busy moment hits all of them
        for batch, x in inputs.items():
            calls = 16 // batch + 1
            for name, model in models.items():
                model(x)
                started = time.perf_counter()
                for _ in range(calls):
                    model(x)
                times[name, batch].append((time.perf_counter() - started) * 1000 / (calls * batch))
    for (name, batch), values in times.items():
        per_crop.setdefault(name, {})[f"batch {batch}"] = statistics.median(values)

    # Secondary classification on real detections: bikes frames, every box classified.
    frames = []
    for i, result in enumerate(streamer.stream("sample:bikes")):
        if i >= 50:
            break
        frames.append((result.frame.image, result.detections))
    boxes = [len(d) for _, d in frames]
    model = models["onnxruntime"]
    secondary: dict[str, Any] = {}
    cases = {"no tracks: every box, every frame": False, "tracks: once per track": True}
    values: dict[str, list[float]] = {label: [] for label in cases}
    for _ in range(rounds):
        for label, tracked in cases.items():
            oc = ObjectClassifier(model, None, top_k=5, min_box=16)
            started = time.perf_counter()
            for index, (image, det) in enumerate(frames):
                # Stand-in tracks: the k-th box of a frame keeps id k (bikes shows the same few
                # vehicles for seconds), enough to show the cost of the cache hit path.
                tid = np.arange(len(det), dtype=np.int64) if tracked else None
                fresh = Detections(det.xyxy, det.confidence, det.class_id, tid)
                oc.classify(image, fresh, index / 25)
            values[label].append((time.perf_counter() - started) * 1000 / len(frames))
            secondary[label] = {"model_calls": oc.calls, "crops": oc.crops}
    for label in cases:
        secondary[label]["ms_per_frame"] = statistics.median(values[label])
    secondary["boxes per frame"] = statistics.mean(boxes)
    return {"ms_per_crop": per_crop, "secondary": secondary, "threads": threads}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout whose streamer package to start (default: this one)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--no-classifier", action="store_true", help="start-up figures only")
    args = parser.parse_args()
    report: dict[str, Any] = {"root": str(args.root.resolve()), "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        work, cache_home = Path(tmp), Path(tmp) / "cache"
        report["startup"] = startup(args.root.resolve(), args.rounds, work, cache_home)
        print("start-up, median of", args.rounds, "(seconds from launch):")
        for name, row in report["startup"].items():
            if "kernels loaded" in row:
                print(f"  {name}: {row['kernels loaded']} kernels loaded, {row['kernels compiled']} compiled")
                continue
            print(f"  {name:46s} first result {row['first_result_s']:.2f} s {row['first_result_all_s']}, "
                  f"whole run {row['wall_s']:.2f} s, torch imported: {row['torch_imported']}")
        if not args.no_classifier:
            report["classifier"] = classifier_figures(args.rounds, cache_home)
            c = report["classifier"]
            print(f"EfficientNet-Lite0, {c['threads']} threads, ms per crop (model only):")
            for name, row in c["ms_per_crop"].items():
                print(f"  {name:12s} " + ", ".join(f"{k} {v:.1f}" for k, v in row.items()))
            print(f"secondary classification on 50 bikes frames ({c['secondary']['boxes per frame']:.1f} boxes per frame):")
            for name, row in c["secondary"].items():
                if isinstance(row, dict):
                    print(f"  {name:36s} {row['ms_per_frame']:.1f} ms per frame, {row['model_calls']} model calls, "
                          f"{row['crops']} crops")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

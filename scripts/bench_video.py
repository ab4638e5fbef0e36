#!/usr/bin/env python
"""Video encode cost: the H.264 sink (presets, thread counts) against OpenCV's old mp4v writer.

Two measurements:

* ``encode``: milliseconds per frame to write N pictures of bikes (scaled to each size) through
  ``VideoSink`` (BGR -> yuv420p conversion, H.264 encode, mux) and through
  ``cv2.VideoWriter`` with ``mp4v``, wall and CPU time, best of ``--rounds``;
* ``--e2e``: the whole annotate pipeline (the default model, two infer workers, the CPU plan
  of ``streamer annotate``) on bikes with each encoder setting, frames per second.

Usage::

    python scripts/bench_video.py                       # encode costs, 640x272 and 1280x720
    python scripts/bench_video.py --e2e --rounds 3      # plus end-to-end annotate fps
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamer import assets
from streamer.sinks.video import VideoSink
from streamer.types import Frame, Result

SIZES = ((640, 272), (1280, 720))
SETTINGS = (  # (label, preset, threads)
    ("x264 ultrafast t1", "ultrafast", 1),
    ("x264 superfast t1", "superfast", 1),
    ("x264 veryfast t1", "veryfast", 1),
    ("x264 veryfast t2", "veryfast", 2),
    ("x264 veryfast auto", "veryfast", 0),
    ("x264 faster t1", "faster", 1),
)


def pictures(count: int, size: tuple[int, int]) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(assets.sample_path("sample:bikes")))
    images = []
    while len(images) < count:
        ok, image = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        images.append(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR) if image.shape[1::-1] != size else image)
    cap.release()
    return images


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def encode_sink(images: list[np.ndarray], path: Path, preset: str, threads: int) -> Callable[[], None]:
    def run() -> None:
        sink = VideoSink(path, fps=25, preset=preset, threads=threads)
        sink.open()
        for i, image in enumerate(images):
            sink.write(Result(frame=Frame("bench", i, image, i / 25, 0.0)))
        sink.close()
    return run


def encode_mp4v(images: list[np.ndarray], path: Path) -> Callable[[], None]:
    def run() -> None:
        h, w = images[0].shape[:2]
        writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (w, h))
        for image in images:
            writer.write(image)
        writer.release()
    return run


def bench_encode(frames: int, rounds: int, tmp: Path) -> None:
    print(f"encode, {frames} frames, best of {rounds} rounds (ms per frame: wall / CPU; file size)")
    for size in SIZES:
        images = pictures(frames, size)
        cases: list[tuple[str, Callable[[], None], Path]] = [("mp4v (OpenCV, old)", encode_mp4v(images, tmp / "old.mp4"), tmp / "old.mp4")]
        for label, preset, threads in SETTINGS:
            path = tmp / f"{preset}-{threads}.mp4"
            cases.append((label, encode_sink(images, path, preset, threads), path))
        results: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in cases}
        for _ in range(rounds):  # interleaved, so a busy moment on the machine hits every case
            for label, fn, _ in cases:
                results[label].append(timed(fn))
        print(f"  {size[0]}x{size[1]}")
        for label, _, path in cases:
            wall = min(w for w, _ in results[label]) / frames * 1000
            cpu = min(c for _, c in results[label]) / frames * 1000
            print(f"    {label:22s} {wall:6.2f} / {cpu:6.2f} ms   {path.stat().st_size / 1024:7.0f} KiB")


def bench_e2e(rounds: int, tmp: Path) -> None:
    from streamer.api import build_pipeline
    from streamer.config import ModelConfig
    from streamer.jobs import inference_plan
    from streamer.models import load_model
    from streamer.sources.file import VideoFileSource

    clip = assets.sample_path("sample:bikes")
    settings = [("no video", None, 0)] + [s for s in SETTINGS if s[1] in ("superfast", "veryfast") and s[2] == 1]
    fps: dict[str, list[float]] = {label: [] for label, _, _ in settings}
    cpu_ms: dict[str, list[float]] = {label: [] for label, _, _ in settings}
    for _ in range(rounds):
        for label, preset, threads in settings:
            model = load_model("yolo11n")
            batch, workers = inference_plan(model, ModelConfig(), files=True)
            sinks = [VideoSink(tmp / "e2e.mp4", fps=25, preset=preset, threads=threads)] if preset else []
            pipeline = build_pipeline(VideoFileSource(clip), model, batch=batch, workers=workers, sinks=sinks,
                                      render=True)
            started, cpu = time.perf_counter(), time.process_time()
            pipeline.run()
            fps[label].append(pipeline.frames_read / (time.perf_counter() - started))
            cpu_ms[label].append((time.process_time() - cpu) / pipeline.frames_read * 1000)
    # CPU ms per frame (all threads) is the steadier figure on a machine shared with others.
    print(f"annotate bikes end to end (yolo11n; median of {rounds} interleaved rounds: fps (range), CPU ms per frame)")
    for label, values in fps.items():
        print(f"    {label:22s} {statistics.median(values):5.1f} fps ({min(values):.1f}-{max(values):.1f}), "
              f"{statistics.median(cpu_ms[label]):5.1f} CPU ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--e2e", action="store_true", help="also time the whole annotate pipeline per setting")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; {cv2.__version__=}")
    with tempfile.TemporaryDirectory() as tmp:
        bench_encode(args.frames, args.rounds, Path(tmp))
        if args.e2e:
            bench_e2e(args.rounds, Path(tmp))


if __name__ == "__main__":
    main()

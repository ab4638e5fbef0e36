#!/usr/bin/env python
"""Video encode cost: the H.264 sink (presets, thread counts) against OpenCV's old mp4v writer.

Two measurements:

* ``encode``: milliseconds per frame to write N pictures of bikes (scaled to each size) through
  ``VideoSink`` (BGR -> yuv420p conversion, H.264 encode, mux) and through
  ``cv2.VideoWriter`` with ``mp4v``, wall and CPU time, best of ``--rounds``;
* ``--e2e``: the whole annotate pipeline (the default model, the CPU plan of ``streamer
  annotate``, JSONL) on bikes (or ``--clip``) writing no video, mp4v and H.264 at three presets:
  frames per second, end to end / model only (the model alone in the same configuration
  right before and after each run), and the CPU per frame of each thread.

Usage::

    python scripts/bench_video.py                       # encode costs, 640x272 and 1280x720
    python scripts/bench_video.py --e2e --rounds 3      # plus end to end, and where the CPU goes
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from streamer import assets
from streamer.runtime import configure_threads
from streamer.sinks.base import Sink
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


class Mp4vSink(Sink):
    """The old output, for comparison: OpenCV's MPEG-4 Part 2 writer (browsers refuse it)."""

    name = "video"
    needs_render = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: cv2.VideoWriter | None = None

    def write(self, result: Result) -> None:
        if self._writer is None:
            h, w = result.image.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (w, h))
        self._writer.write(result.image)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


class ThreadCpu:
    """CPU seconds per thread name while it runs (Linux ``/proc``), sampled every 20 ms.

    Pipeline threads end before the run returns, so their counters are read while they live;
    what a thread spends in its last 20 ms is lost. Threads that Python did not start keep
    the name the kernel has for them (FFmpeg's decoder threads name themselves).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last: dict[int, tuple[str, float]] = {}
        self._start: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._tick = os.sysconf("SC_CLK_TCK")

    def _read(self) -> None:
        names = {t.native_id: t.name for t in threading.enumerate()}
        for tid in os.listdir("/proc/self/task"):
            try:
                stat = Path(f"/proc/self/task/{tid}/stat").read_text()
            except OSError:
                continue  # ended between the listing and the read
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            cpu = (int(fields[11]) + int(fields[12])) / self._tick
            key = int(tid)
            self._start.setdefault(key, cpu)
            self._last[key] = (names.get(key, self._last.get(key, (comm, 0.0))[0]), cpu)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self._read()

    def __enter__(self) -> ThreadCpu:
        self._read()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._read()
        for key, (name, cpu) in self._last.items():
            if name != "bench-sampler":
                self.seconds[name] = self.seconds.get(name, 0.0) + cpu - self._start[key]


def bench_e2e(rounds: int, tmp: Path, clip: Path) -> None:
    """``annotate``'s pipeline on ``clip`` writing no video, mp4v and H.264, against the model
    alone in the same configuration, interleaved; and where each frame's CPU goes."""
    from bench import model_only_fps, prepared_inputs

    from streamer.api import build_pipeline
    from streamer.config import ModelConfig
    from streamer.models import load_model, planned_models
    from streamer.sinks.jsonl import JsonlSink
    from streamer.sources.file import VideoFileSource

    models = planned_models(ModelConfig(), files=True)
    batch, workers = models.plan.batch, models.plan.workers
    threads = models.model.threads  # the backend's default when the plan leaves it
    x = prepared_inputs(str(clip))

    def model_alone() -> float:
        alone = load_model("yolo11n", threads=threads)
        alone.ensure_open()
        try:
            return model_only_fps(alone, x, batch, workers)
        finally:
            alone.ensure_closed()

    settings: list[tuple[str, Callable[[], list[Sink]]]] = [
        ("no video (JSONL only)", lambda: []),
        ("mp4v (OpenCV, old)", lambda: [Mp4vSink(tmp / "e2e-mp4v.mp4")]),
    ] + [(label, lambda preset=preset, n=n: [VideoSink(tmp / "e2e.mp4", fps=25, preset=preset, threads=n)])
         for label, preset, n in SETTINGS if preset in ("ultrafast", "superfast", "veryfast") and n == 1]
    fps: dict[str, list[float]] = {label: [] for label, _ in settings}
    ratio: dict[str, list[float]] = {label: [] for label, _ in settings}
    per_thread: dict[str, list[dict[str, float]]] = {label: [] for label, _ in settings}
    for _ in range(rounds):
        for label, sinks in settings:
            before = model_alone()
            model = load_model("yolo11n", threads=threads)
            pipeline = build_pipeline(VideoFileSource(clip), model, batch=batch, workers=workers,
                                      sinks=[*sinks(), JsonlSink(tmp / "e2e.jsonl")])
            pipeline.open()
            with ThreadCpu() as cpu:
                started = time.perf_counter()
                pipeline.run()
                seconds = time.perf_counter() - started
            frames = pipeline.frames_read
            after = model_alone()
            fps[label].append(frames / seconds)
            ratio[label].append(frames / seconds / ((before + after) / 2))
            per_thread[label].append({name: cpu_s / frames * 1000 for name, cpu_s in cpu.seconds.items()})
    print(f"annotate {clip.name} end to end against the model alone ({workers} calls x {threads} thread(s), "
          f"batch {batch}, right before and after), median of {rounds} interleaved rounds")
    for label in fps:
        print(f"    {label:22s} {statistics.median(fps[label]):5.1f} fps ({min(fps[label]):.1f}-{max(fps[label]):.1f}), "
              f"end to end / model only {statistics.median(ratio[label]):.3f} "
              f"({min(ratio[label]):.3f}-{max(ratio[label]):.3f})")
    print("  CPU ms per frame by thread (median over rounds; threads under 0.05 ms left out)")
    for label, rows in per_thread.items():
        names = sorted({name for row in rows for name in row})
        medians = {name: statistics.median(row.get(name, 0.0) for row in rows) for name in names}
        shown = ", ".join(f"{name} {ms:.2f}" for name, ms in sorted(medians.items(), key=lambda kv: -kv[1]) if ms >= 0.05)
        print(f"    {label:22s} total {sum(medians.values()):5.1f}: {shown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--e2e", action="store_true", help="also time the whole annotate pipeline per setting")
    parser.add_argument("--clip", default="sample:bikes", help="the clip for --e2e (a path or sample:NAME)")
    args = parser.parse_args()
    # OpenCV's pool as streamer runs it (one thread on small machines): left at every core, its
    # workers spin after each colour conversion and add about 0.5 ms of CPU to every frame.
    configure_threads()
    print(f"{os.cpu_count()} CPUs; {cv2.__version__=}")
    with tempfile.TemporaryDirectory() as tmp:
        bench_encode(args.frames, args.rounds, Path(tmp))
        if args.e2e:
            clip = Path(args.clip) if not args.clip.startswith("sample:") else assets.sample_path(args.clip)
            bench_e2e(args.rounds, Path(tmp), clip)


if __name__ == "__main__":
    main()

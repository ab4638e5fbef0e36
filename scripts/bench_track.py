#!/usr/bin/env python3
"""Tracker speed: streamer's ByteTrack update at 10 / 50 / 200 boxes per frame, and
Ultralytics' ``BYTETracker`` on the very same detections when a Python with ultralytics is
given (it runs in a subprocess of this run, on the same machine).

    .venv/bin/python scripts/bench_track.py [--frames 600] [--json out/track.json]
                                            [--ultralytics-python /path/to/python]

The scene: N objects that keep moving through a picture sized so that crowding is the same
at every N, with box jitter, 3 % misses and 10 % of boxes in ByteTrack's low-score band;
median milliseconds per update after a warm-up (Numba kernels are compiled, or loaded from
their cache, before any timing). With Ultralytics, the ids both trackers give are also
compared (IDF1 of ours against theirs over the same rows).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lap  # type: ignore[import-untyped]  # noqa: E402
import numpy as np  # noqa: E402

from streamer.track import Tracker  # noqa: E402
from streamer.types import Detections  # noqa: E402

SIZES = (10, 50, 200)
WARMUP = 30
FPS = 30.0

# Runs inside the Python that has ultralytics: reads the frames, times BYTETracker.update per
# frame with bytetrack.yaml's defaults, and writes the times and the id of every row.
ULTRALYTICS_RUNNER = r"""
import json, sys, time
from types import SimpleNamespace
import numpy as np
from ultralytics.trackers.byte_tracker import BYTETracker

class Boxes:
    # The part of ultralytics' Boxes that the tracker reads: conf, cls, xywh, xyxy, masks.
    def __init__(self, xyxy, conf, cls):
        self.xyxy, self.conf, self.cls = xyxy, conf, cls
        self.xywh = np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    def __len__(self):
        return len(self.conf)
    def __getitem__(self, mask):
        return Boxes(self.xyxy[mask], self.conf[mask], self.cls[mask])

data = np.load(sys.argv[1])
offsets = data["offsets"]
args = SimpleNamespace(tracker_type="bytetrack", track_high_thresh=0.25, track_low_thresh=0.1,
                       new_track_thresh=0.25, track_buffer=30, match_thresh=0.8, fuse_score=True)
tracker = BYTETracker(args)
times, ids = [], []
for f in range(len(offsets) - 1):
    a, b = offsets[f], offsets[f + 1]
    boxes = Boxes(data["xyxy"][a:b], data["conf"][a:b], data["cls"][a:b])
    t0 = time.perf_counter()
    out = tracker.update(boxes)
    times.append(time.perf_counter() - t0)
    row_ids = np.full(b - a, -1, np.int64)
    if len(out):
        row_ids[out[:, -1].astype(int)] = out[:, 4].astype(int)
    ids.append(row_ids.tolist())
json.dump({"times": times, "ids": ids}, open(sys.argv[2], "w"))
"""


def make_frames(n: int, frames: int, seed: int = 0) -> list[Detections]:
    """N objects always in view, moving at 1-5 px per frame with gentle turns."""
    rng = np.random.default_rng(seed)
    scale = np.sqrt(n / 10.0)
    width, height = 1280.0 * scale, 720.0 * scale
    h = rng.uniform(40, 160, n)
    w = h * rng.uniform(0.35, 0.9, n)
    pos = rng.uniform(0, 1, (n, 2)) * [width, height]
    vel = rng.normal(0, 2.5, (n, 2))
    out = []
    for _ in range(frames):
        vel += rng.normal(0, 0.1, vel.shape)
        pos += vel
        for axis, limit in ((0, width), (1, height)):
            hit = (pos[:, axis] < 0) | (pos[:, axis] > limit)
            vel[hit, axis] *= -1
            pos[:, axis] = np.clip(pos[:, axis], 0, limit)
        seen = rng.random(n) >= 0.03
        boxes = np.stack([pos[:, 0] - w / 2, pos[:, 1] - h / 2, pos[:, 0] + w / 2, pos[:, 1] + h / 2], axis=1)[seen]
        boxes += rng.normal(0, 0.03, boxes.shape) * np.repeat(boxes[:, 2:] - boxes[:, :2], 2, axis=1)
        conf = np.where(rng.random(len(boxes)) < 0.1, rng.uniform(0.11, 0.25, len(boxes)), rng.uniform(0.3, 0.95, len(boxes)))
        order = rng.permutation(len(boxes))
        out.append(Detections(boxes[order].astype(np.float32), conf[order].astype(np.float32), np.zeros(len(boxes), np.int32)))
    return out


def time_ours(frames: list[Detections]) -> tuple[list[float], list[np.ndarray]]:
    tracker = Tracker(frame_rate=FPS)
    times, ids = [], []
    for f, det in enumerate(frames):
        t0 = time.perf_counter()
        out = tracker.update(det, f / FPS)
        times.append(time.perf_counter() - t0)
        assert out.tracker_id is not None
        ids.append(out.tracker_id)
    return times, ids


def time_ultralytics(python: str, frames: list[Detections]) -> tuple[list[float], list[np.ndarray]]:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "frames.npz"
        dst = Path(tmp) / "out.json"
        offsets = np.cumsum([0] + [len(d) for d in frames])
        np.savez(
            src,
            offsets=offsets,
            xyxy=np.concatenate([d.xyxy for d in frames]),
            conf=np.concatenate([d.confidence for d in frames]),
            cls=np.concatenate([d.class_id for d in frames]).astype(np.float32),
        )
        subprocess.run([python, "-c", ULTRALYTICS_RUNNER, str(src), str(dst)], check=True, capture_output=True, text=True)
        result = json.loads(dst.read_text())
    return result["times"], [np.asarray(i, np.int64) for i in result["ids"]]


def id_agreement(frames: list[Detections], ours: list[np.ndarray], theirs: list[np.ndarray]) -> dict[str, float]:
    """Same rows tracked, and IDF1 of our ids against theirs over the rows both track."""
    same_rows = sum(int(np.sum((a >= 0) == (b >= 0))) for a, b in zip(ours, theirs))
    total = sum(len(a) for a in ours)
    pairs = np.concatenate([np.stack([a, b], axis=1) for a, b in zip(ours, theirs)] + [np.empty((0, 2), np.int64)])
    a_ids, a_inv = np.unique(pairs[:, 0], return_inverse=True)
    b_ids, b_inv = np.unique(pairs[:, 1], return_inverse=True)
    hits = np.zeros((a_ids.size, b_ids.size), np.int64)
    both = (pairs[:, 0] >= 0) & (pairs[:, 1] >= 0)
    np.add.at(hits, (a_inv[both], b_inv[both]), 1)
    _, x, _ = lap.lapjv(-hits.astype(np.float64), extend_cost=True)
    rows = np.flatnonzero(x >= 0)
    n_a = int(np.sum(pairs[:, 0] >= 0))
    n_b = int(np.sum(pairs[:, 1] >= 0))
    idf1 = 2.0 * hits[rows, x[rows]].sum() / max(n_a + n_b, 1)
    return {"same_rows_tracked": same_rows / max(total, 1), "idf1_vs_ultralytics": float(idf1)}


def median_ms(times: list[float]) -> float:
    return statistics.median(times[WARMUP:]) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=600, help="updates per size (default 600)")
    parser.add_argument("--ultralytics-python", help="a Python that has ultralytics, to time its BYTETracker too")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    # Compile (or load from the cache) every kernel on a short run before timing.
    time_ours(make_frames(20, 40, seed=99))

    rows: list[dict[str, Any]] = []
    for n in SIZES:
        frames = make_frames(n, args.frames + WARMUP)
        times, ids = time_ours(frames)
        row: dict[str, Any] = {"boxes": n, "ours_ms": median_ms(times)}
        if args.ultralytics_python:
            u_times, u_ids = time_ultralytics(args.ultralytics_python, frames)
            row["ultralytics_ms"] = median_ms(u_times)
            row["ratio"] = row["ours_ms"] / row["ultralytics_ms"]
            row.update(id_agreement(frames, ids, u_ids))
        rows.append(row)

    print(f"tracker update, median of {args.frames} updates after {WARMUP} warm-up")
    header = f"{'boxes':>6} {'streamer ms':>12}"
    if args.ultralytics_python:
        header += f" {'ultralytics ms':>15} {'ratio':>7} {'same rows':>10} {'IDF1 vs ul':>11}"
    print(header)
    for row in rows:
        line = f"{row['boxes']:>6} {row['ours_ms']:>12.4f}"
        if "ultralytics_ms" in row:
            line += (
                f" {row['ultralytics_ms']:>15.3f} {row['ratio']:>7.3f}"
                f" {row['same_rows_tracked']:>10.4f} {row['idf1_vs_ultralytics']:>11.4f}"
            )
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"track": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

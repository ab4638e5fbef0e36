#!/usr/bin/env python3
"""Four cameras in-process against the same four on a one-node Ray executor.

    .venv/bin/python scripts/bench_ray.py [--rounds 3] [--seconds 20] [--warmup 10]
                                          [--clip sample:bikes] [--json out/ray.json]

Each camera replays the clip in real time, looping, like a 25 fps camera; the model is the
default YOLO11n on the CPU; the dashboard is off in both (its JPEGs would cost the same in
both). Rounds alternate in-process / Ray so that other load on the machine hits both alike;
each round starts its monitor afresh (Ray: a fresh local Ray instance), waits ``--warmup``
seconds, then counts frames through the sinks for ``--seconds``. Reported: total fps
(median, min-max over rounds), the ratio Ray / in-process, the added cost per frame
(1000 / fps_ray - 1000 / fps_local: what the Ray path costs at the bottleneck), and the
Ray path's own per-frame times (median ms) from its stats.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from streamer import assets  # noqa: E402
from streamer.config import from_dict  # noqa: E402

CAMERAS = ("cam1", "cam2", "cam3", "cam4")


def config(clip: str, kind: str) -> Any:
    path = str(assets.sample_path(clip)) if clip.startswith("sample:") else clip
    return from_dict({
        "cameras": {name: {"url": path} for name in CAMERAS},
        "capture": {"loop": True},
        "dashboard": {"enabled": False},
        "events": {"path": None},
        "executor": {"kind": kind},
    })


def measure(monitor: Any, warmup_s: float, seconds: float) -> tuple[float, dict[str, Any]]:
    monitor.start()
    try:
        time.sleep(warmup_s)
        f0, t0 = monitor.camera_stats.frames, time.monotonic()
        time.sleep(seconds)
        f1, t1 = monitor.camera_stats.frames, time.monotonic()
        stats = monitor.stats()
    finally:
        monitor.stop()
    return (f1 - f0) / (t1 - t0), stats


def local_round(clip: str, warmup_s: float, seconds: float) -> tuple[float, dict[str, Any]]:
    from streamer.compose import monitor

    return measure(monitor(config(clip, "local")), warmup_s, seconds)


def ray_round(clip: str, warmup_s: float, seconds: float) -> tuple[float, dict[str, Any]]:
    from streamer.compose import ray_monitor
    from streamer.executors import ray_cluster

    cfg = config(clip, "ray")
    with ray_cluster.connected(cfg.executor) as ray:
        return measure(ray_monitor(cfg, ray), warmup_s, seconds)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--clip", default="sample:bikes")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    local: list[float] = []
    remote: list[float] = []
    ray_stats: list[dict[str, Any]] = []
    local_stats: list[dict[str, Any]] = []
    for i in range(args.rounds):
        order = [("local", local_round), ("ray", ray_round)] if i % 2 == 0 else [("ray", ray_round), ("local", local_round)]
        for kind, run in order:
            fps, stats = run(args.clip, args.warmup, args.seconds)
            (local if kind == "local" else remote).append(fps)
            (local_stats if kind == "local" else ray_stats).append(stats)
            print(f"round {i + 1} {kind:5s}: {fps:5.1f} fps total "
                  f"(mean batch {stats['model']['batch_size_mean']:.2f})", flush=True)
    ratios = [r / l for r, l in zip(remote, local, strict=True)]
    added = [1000.0 / r - 1000.0 / l for r, l in zip(remote, local, strict=True)]
    stage_names = ("preprocess", "submit", "tile", "infer", "postprocess", "model_wait", "decode", "receive", "render", "sinks")
    per_stage = {name: statistics.median(s["stages"][name]["p50_ms"] for s in ray_stats if name in s["stages"])
                 for name in stage_names}
    local_stages = {name: statistics.median(s["stages"][name]["p50_ms"] for s in local_stats)
                    for name in local_stats[0]["stages"]}
    latency = {
        "local": statistics.median(statistics.median(c["latency_ms_p50"] for c in s["cameras"].values()) for s in local_stats),
        "ray": statistics.median(statistics.median(c["latency_ms_p50"] for c in s["cameras"].values()) for s in ray_stats),
    }
    print(f"\nfour cameras, {args.clip} at its own rate, {os.cpu_count()} cores, {args.rounds} interleaved rounds of "
          f"{args.seconds:g} s")
    print(f"in-process   : {spread(local)} fps")
    print(f"ray, 1 node  : {spread(remote)} fps")
    print(f"ratio        : {spread([100 * r for r in ratios])} % of in-process")
    print(f"added cost   : {spread(added)} ms per frame at the bottleneck")
    print(f"latency p50  : in-process {latency['local']:.0f} ms, ray {latency['ray']:.0f} ms (median over cameras)")
    print("ray per-frame medians (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in per_stage.items()))
    print("in-process per-frame medians (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in local_stages.items()))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "local_fps": local, "ray_fps": remote, "ratios": ratios, "added_ms": added, "ray_stages_ms": per_stage,
            "local_stages_ms": local_stages, "latency_p50_ms": latency,
        }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Many cameras on one machine: ``monitor`` at 1 to 32 cameras, shedding load before decoding
against decoding everything.

Each camera replays a 1080p30 H.264 clip with one keyframe a second and no B-frames (what
IP cameras send), made here with ffmpeg from the bigbuckbunny sample, as a live source
(``capture.loop: true``), with the default model and no dashboard. Every measurement is a
child process of its own: ``--warmup`` seconds to settle, then ``--seconds`` measured.
Rounds interleave the two ways of running (the order flips each round):

* ``shed``: today's monitor (decode levels per camera, the model fed on demand, least
  recently served camera first, frames converted only when taken);
* ``all``: the monitor as it was before load shedding, every setting of it that can still
  be chosen: every frame decoded and converted (``capture.shed: false``, ``capture.backend:
  opencv`` for the replays), one batch over the newest frame of every camera on one call
  with every thread (``model.batch: N``, ``model.workers: 1``), frames dropped between
  stages (``queue.policy: latest_per_key``).

Per camera count and way, the median over rounds of: results/s of all cameras; the
per-camera results/s, minimum and median; latency p50/p95 (capture to result, every result
in the window); the oldest newest result of any camera (sampled every 0.25 s); the process's
CPU (cores busy); the model's ms per image (infer stage, per item, median). The targets of
the shedding design are checked at the end.

With ``--rtsp`` the cameras are RTSP streams from the loopback test server instead, which
serves the clip's own packets (``copy:`` passthrough mounts: no decode, no encode, so the
server costs little).

Usage::

    python scripts/bench_cameras.py                         # 1 2 4 8 16 32 cameras, 2 rounds
    python scripts/bench_cameras.py --cameras 16 --rtsp --ways shed
    python scripts/bench_cameras.py --rounds 3 --json out/bench_cameras.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WAYS = ("shed", "all")
CLIP_NAME = "cam1080p30-gop30.mp4"


def make_clip(folder: Path) -> Path:
    """The 1080p30 GOP-1 s clip without B-frames (made once, kept in ``folder``)."""
    from tests.clips import make_camera_clip

    return make_camera_clip(folder / CLIP_NAME)


def config(way: str, urls: list[str]) -> dict[str, Any]:
    cams = {f"cam{i:02d}": {"url": url} for i, url in enumerate(urls)}
    data: dict[str, Any] = {"cameras": cams, "capture": {"loop": True}, "dashboard": {"enabled": False},
                            "events": {"path": None}}
    if way == "all":
        data["capture"].update({"shed": False})
        data["queue"] = {"policy": "latest_per_key"}
        data["model"] = {"batch": len(urls), "workers": 1}
        if not urls[0].startswith("rtsp://"):
            data["capture"]["backend"] = "opencv"
    return data


def measure(way: str, urls: list[str], warmup_s: float, seconds: float) -> dict[str, Any]:
    """One child's run: the monitor built from ``config``, measured after the warm-up."""
    from streamer.compose import monitor as build_monitor
    from streamer.config import from_dict

    monitor = build_monitor(from_dict(config(way, urls)))
    stats = monitor.camera_stats
    latencies: list[float] = []
    counts = dict.fromkeys(monitor.cameras, 0)
    window = {"on": False}
    write = stats.write

    def counting_write(result: Any) -> None:
        write(result)
        if window["on"]:
            counts[result.frame.source_id] += 1
            latencies.append(time.monotonic() - result.frame.captured_at)

    stats.write = counting_write  # type: ignore[method-assign]
    monitor.start()
    try:
        time.sleep(warmup_s)
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        started = time.monotonic()
        window["on"] = True
        oldest = 0.0
        infer_ms: list[float] = []
        while (now := time.monotonic()) < started + seconds:
            for camera in monitor.cameras:
                newest = stats.newest.get(camera)
                oldest = max(oldest, now - newest if newest is not None else now - started + warmup_s)
            time.sleep(0.25)
            infer = monitor.pipeline.stats().stage("infer")
            if infer is not None and infer.p50_ms:
                infer_ms.append(infer.p50_ms)
        window["on"] = False
        elapsed = time.monotonic() - started
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        levels = {name: cam.decode.level for name, cam in monitor.cameras.items()}
    finally:
        monitor.stop()
    cpu = (usage1.ru_utime + usage1.ru_stime - usage0.ru_utime - usage0.ru_stime) / elapsed
    per_camera = sorted(n / elapsed for n in counts.values())
    lat = sorted(latencies)

    def pct(q: float) -> float | None:
        return 1000 * lat[min(len(lat) - 1, int(q * len(lat)))] if lat else None

    return {
        "way": way, "cameras": len(urls), "results_per_s": sum(counts.values()) / elapsed,
        "per_camera_min": per_camera[0], "per_camera_median": statistics.median(per_camera),
        "latency_p50_ms": pct(0.5), "latency_p95_ms": pct(0.95), "oldest_result_s": oldest,
        "cpu_cores": cpu, "model_ms_per_image": statistics.median(infer_ms) if infer_ms else None,
        "levels": sorted(levels.values()),
    }


def child(args: argparse.Namespace) -> None:
    result = measure(args.way, args.url, args.warmup, args.seconds)
    print("RESULT " + json.dumps(result), flush=True)


def run_round(way: str, urls: list[str], args: argparse.Namespace) -> dict[str, Any] | None:
    command = [sys.executable, __file__, "--child", "--way", way, "--warmup", str(args.warmup),
               "--seconds", str(args.seconds)]
    for url in urls:
        command += ["--url", url]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=args.warmup + args.seconds + 120)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT "):]))
    print(f"  {way} x{len(urls)} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}", file=sys.stderr)
    return None


def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def _range(rows: list[dict[str, Any]], key: str, fmt: str) -> str:
    values = [r[key] for r in rows if r.get(key) is not None]
    if not values:
        return "-"
    text = format(statistics.median(values), fmt)
    return text if len(values) < 2 else f"{text} [{format(min(values), fmt)}-{format(max(values), fmt)}]"


def table(results: dict[tuple[str, int], list[dict[str, Any]]]) -> str:
    lines = ["| way | cameras | results/s, all | per camera min / median | latency p50 / p95 ms | oldest result s "
             "| CPU cores | model ms/image |", "|---|---|---|---|---|---|---|---|"]
    for (way, n), rows in sorted(results.items(), key=lambda kv: (WAYS.index(kv[0][0]), kv[0][1])):
        lines.append(
            f"| {way} | {n} | {_range(rows, 'results_per_s', '.1f')} | {_range(rows, 'per_camera_min', '.1f')} / "
            f"{_range(rows, 'per_camera_median', '.1f')} | {_range(rows, 'latency_p50_ms', '.0f')} / "
            f"{_range(rows, 'latency_p95_ms', '.0f')} | {_range(rows, 'oldest_result_s', '.2f')} | "
            f"{_range(rows, 'cpu_cores', '.2f')} | {_range(rows, 'model_ms_per_image', '.1f')} |")
    return "\n".join(lines)


def targets(results: dict[tuple[str, int], list[dict[str, Any]]], counts: list[int]) -> list[str]:
    """The shedding design's targets, each with the figure it was checked on."""
    def med(n: int, key: str) -> float | None:
        rows = results.get(("shed", n))
        return _median(rows, key) if rows else None

    lines = []
    two, one_model = med(2, "results_per_s"), med(1, "model_ms_per_image")
    for n in counts:
        if n < 2 or med(n, "results_per_s") is None:
            continue
        rate, low, mid = med(n, "results_per_s"), med(n, "per_camera_min"), med(n, "per_camera_median")
        p95, oldest, model = med(n, "latency_p95_ms"), med(n, "oldest_result_s"), med(n, "model_ms_per_image")
        checks = []
        if n >= 8 and two:
            checks.append(("results/s >= 0.6 x at 2 cameras", rate is not None and rate >= 0.6 * two,
                           f"{rate:.1f} vs {0.6 * two:.1f}"))
        checks.append(("per-camera min >= median / 2", low is not None and mid is not None and low >= mid / 2,
                       f"{low:.2f} vs {mid:.2f}"))
        checks.append(("latency p95 < 500 ms", p95 is not None and p95 < 500, f"{p95:.0f} ms"))
        checks.append(("every newest result < 2 s old", oldest is not None and oldest < 2, f"{oldest:.2f} s"))
        if n == 16 and one_model and model:
            checks.append(("model ms/image within 1.3 x one camera's", model <= 1.3 * one_model,
                           f"{model:.1f} vs {one_model:.1f} ms"))
        for what, ok, figure in checks:
            lines.append(f"{n:>2} cameras: {'met   ' if ok else 'MISSED'} {what} ({figure})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds before measuring")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds measured")
    parser.add_argument("--rtsp", action="store_true", help="cameras from the loopback RTSP server (passthrough)")
    parser.add_argument("--clips", type=Path, default=ROOT / "out" / "bench", help="where the clip is made")
    parser.add_argument("--json", type=Path, help="write every round's figures here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)
    parser.add_argument("--url", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    clip = make_clip(args.clips)
    server = None
    if args.rtsp:
        from tests.rtsp import RtspServer, rtsp_unavailable_reason

        reason = rtsp_unavailable_reason()
        if reason:
            raise SystemExit(f"bench_cameras: --rtsp needs the loopback RTSP server: {reason}")
        server = RtspServer({f"cam{i:02d}": f"copy:{clip}" for i in range(max(args.cameras))}).start()
    print(f"{os.cpu_count()} cores; clip {clip}; {'RTSP passthrough' if server else 'replayed file'} cameras; "
          f"{args.rounds} rounds of {args.warmup:g} s warm-up + {args.seconds:g} s", flush=True)
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        for r in range(args.rounds):
            ways = list(args.ways) if r % 2 == 0 else list(reversed(args.ways))
            for n in args.cameras:
                urls = [server.url(f"cam{i:02d}") for i in range(n)] if server else [str(clip)] * n
                for way in ways:
                    row = run_round(way, urls, args)
                    if row is None:
                        continue
                    results.setdefault((way, n), []).append(row)
                    print(f"  round {r + 1}: {way:4s} x{n:<2d} {row['results_per_s']:6.1f} results/s, "
                          f"p95 {row['latency_p95_ms'] or 0:6.0f} ms, oldest {row['oldest_result_s']:.2f} s, "
                          f"cpu {row['cpu_cores']:.2f}, model {row['model_ms_per_image'] or 0:.1f} ms/img",
                          flush=True)
    finally:
        if server is not None:
            server.stop()
    print()
    print(table(results))
    print()
    print("\n".join(targets(results, args.cameras)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({f"{w}:{n}": rows for (w, n), rows in results.items()}, indent=1))


if __name__ == "__main__":
    main()

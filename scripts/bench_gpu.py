#!/usr/bin/env python3
"""The GPU path in one run and one table: model, file annotation, many cameras, agreement.

    python3 scripts/bench_gpu.py [--clip cam1080p30.mp4] [--cameras 16,32,48,64,96]
        [--seconds 20] [--only model annotate monitor agreement] [--out DIR]
    python3 scripts/bench_gpu.py --only agreement --device cpu --precision fp32 --samples carphone

Rows (targets in the last column):

* **model**: YOLO11n 640×640 alone, eager PyTorch vs CUDA graphs, batch 1 / 8 / 32 / 64,
  fp16 and fp32: ms per batch (median of timed repeats after a warm-up) and images/s;
* **annotate**: a 1080p30 file through the GPU path (decode → letterbox into the graph's input
  → graph → decode + NMS on the device → kept rows on the host), batches of 8, with NVDEC
  (NV12 kept on the GPU) and without (PyAV on a CPU thread → BGR uploaded): frames/s;
* **monitor**: N cameras, each the clip looped and paced at its frame rate by its own decoder
  thread (a newest-frame slot per camera, as live sources keep), one inference loop taking the
  newest frame of every camera (batches up to 64): results/s, the slowest camera's fps,
  latency p50/p95 (decoded → detections on the host), CPU cores busy, GPU memory. A camera
  whose decoder falls more than a second behind its clock decodes keyframes only until it is
  back (the cheapest decode level), so past what NVDEC can decode nothing should collapse;
* **agreement**: the sample clips through the GPU path, F1 against Ultralytics' detections
  (tests/data) and against the CPU path (``streamer.stream`` on the CPU), IoU ≥ 0.5.

Needs CUDA for everything but ``--only agreement --device cpu`` (which checks the path's
semantics on the CPU: NV12 letterbox, batched decode + NMS). ``--out`` (default ``$OUT`` when
set) gets ``bench_gpu.json`` and ``bench_gpu.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECTIONS = ("model", "annotate", "monitor", "agreement")
SAMPLES = ("bikes", "carphone", "bigbuckbunny")


@dataclass(slots=True)
class Row:
    """One line of the table: what was measured, under which setting, the figure, the target."""

    what: str
    setting: str
    figure: str
    target: str = ""
    values: dict[str, float] = field(default_factory=dict)


def table(rows: Sequence[Row]) -> str:
    """The rows as one Markdown table."""
    lines = ["| what | setting | figure | target |", "| --- | --- | --- | --- |"]
    lines += [f"| {r.what} | {r.setting} | {r.figure} | {r.target} |" for r in rows]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, default=ROOT / ".gpu" / "data" / "cam1080p30.mp4",
                        help="a 1080p30 camera-like clip (see shared GPU notes)")
    parser.add_argument("--cameras", default="16,32,48,64,96", help="camera counts for the monitor rows")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each monitor run")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (agreement only)")
    parser.add_argument("--precision", choices=("fp16", "fp32"), default="fp16", help="agreement rows")
    parser.add_argument("--samples", default=",".join(SAMPLES), help="agreement clips")
    parser.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    args = parser.parse_args(argv)
    try:
        args.cameras = [int(c) for c in args.cameras.split(",") if c]
    except ValueError:
        parser.error(f"--cameras must be comma-separated integers, but got {args.cameras!r}")
    args.samples = [s for s in args.samples.split(",") if s]
    unknown = [s for s in args.samples if s not in SAMPLES]
    if unknown:
        parser.error(f"unknown sample {unknown[0]!r}, expecting some of {list(SAMPLES)}")
    return args


def needs_cuda(args: argparse.Namespace) -> str | None:
    """Why this run cannot go ahead on this machine, or None."""
    import torch

    wants_cuda = args.device.startswith("cuda") or bool(set(args.only) - {"agreement"})
    if wants_cuda and not torch.cuda.is_available():
        return ("bench_gpu.py: needs a CUDA device (torch.cuda.is_available() is False); "
                "only `--only agreement --device cpu` runs without one")
    return None


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


# ----------------------------------------------------------------------------- model alone


def bench_model(device: str) -> list[Row]:
    import torch

    from streamer import assets
    from streamer.gpu.graphs import GraphedModel
    from streamer.models.torch_yolo import TorchYoloModel

    rows = []
    for precision in ("fp16", "fp32"):
        model = TorchYoloModel(assets.model_path("yolo11n"), device=device, half=precision == "fp16", cuda_graphs=False)
        model.open()
        net, dtype = model.network, (torch.float16 if precision == "fp16" else torch.float32)
        graphed = GraphedModel(net, device=device, dtype=dtype, buckets=(1, 8, 32, 64), channels_last=True)
        graphed.capture((640, 640))
        for batch in (1, 8, 32, 64):
            x = torch.rand((batch, 3, 640, 640), device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
            figures = {}
            for name, run in (("eager", lambda x=x: net(x)), ("graphs", lambda x=x: graphed(x))):
                figures[name] = time_cuda(run, repeats=30 if batch <= 8 else 10)
            rows.append(Row(
                "YOLO11n 640x640 alone", f"{precision}, batch {batch}",
                f"eager {figures['eager']:.2f} ms ({batch / figures['eager'] * 1000:.0f} img/s), "
                f"graphs {figures['graphs']:.2f} ms ({batch / figures['graphs'] * 1000:.0f} img/s)",
                values={"eager_ms": figures["eager"], "graphs_ms": figures["graphs"]},
            ))
        model.close()
    return rows


def time_cuda(run: Callable[[], object], repeats: int) -> float:
    """Median ms of ``run`` after three untimed calls, each call synchronised."""
    import torch

    with torch.inference_mode():
        for _ in range(3):
            run()
        torch.cuda.synchronize()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            torch.cuda.synchronize()
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


# ----------------------------------------------------------------------------- annotate a file


def bench_annotate(clip: Path, device: str) -> list[Row]:
    from streamer import assets
    from streamer.models.torch_yolo import TorchYoloModel

    model = TorchYoloModel(assets.model_path("yolo11n"), device=device, half=True)
    model.open()
    rows = []
    for nvdec in (True, False):
        frames, seconds, decoder = run_file(model, clip, nvdec=nvdec, batch=8)
        rows.append(Row("annotate 1080p30 file, fp16, no video", f"{'NVDEC' if nvdec else 'CPU decode'} ({decoder})",
                        f"{frames / seconds:.0f} fps ({frames} frames)", "≥ 500 fps" if nvdec else "",
                        {"fps": frames / seconds}))
    model.close()
    return rows


def run_file(model: object, clip: Path, *, nvdec: bool, batch: int) -> tuple[int, float, str]:
    """Frames and seconds of the GPU path over ``clip``: a decoder thread feeds a bounded
    queue, the main thread runs batches through ``detect_frames``."""
    from streamer.preprocess import letterbox_params

    frames: queue.Queue[object] = queue.Queue(maxsize=4 * batch)
    decoder = ["?"]

    def decode() -> None:
        if nvdec:
            from streamer.sources.nvdec import NvdecCapture

            capture = NvdecCapture(str(clip), device=model.device, fallback=False)  # type: ignore[attr-defined]
            decoder[0] = capture.decoder
            while True:
                ok, image = capture.read()
                if not ok:
                    break
                frames.put(image)
            capture.release()
        else:
            import av

            decoder[0] = "pyav, 1 thread, bgr24"
            with av.open(str(clip)) as container:
                for frame in container.decode(video=0):
                    frames.put(frame.to_ndarray(format="bgr24"))
        frames.put(None)

    thread = threading.Thread(target=decode, daemon=True)
    start = time.perf_counter()
    thread.start()
    count, done = 0, False
    while not done:
        images = []
        while len(images) < batch:
            item = frames.get()
            if item is None:
                done = True
                break
            images.append(item)
        if images:
            shape = images[0].shape[:2]  # type: ignore[attr-defined]
            boxes = [letterbox_params(tuple(shape), 640)] * len(images)
            model.detect_frames(images, boxes)  # type: ignore[attr-defined]
            count += len(images)
    seconds = time.perf_counter() - start
    thread.join(5)
    return count, seconds, decoder[0]


# ----------------------------------------------------------------------------- many cameras


class Camera(threading.Thread):
    """The clip looped as a camera: decoded at its frame rate into a newest-frame slot."""

    def __init__(self, name: str, clip: Path, device: str, stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self.clip, self.device, self.stop = clip, device, stop
        self.slot: tuple[float, object] | None = None
        self.lock = threading.Lock()
        self.decoded = 0
        self.shed_s = 0.0

    def run(self) -> None:
        from streamer.sources.nvdec import NvdecCapture

        while not self.stop.is_set():
            capture = NvdecCapture(str(self.clip), device=self.device)
            fps = capture.fps or 30.0
            began = time.perf_counter()
            n = 0
            while not self.stop.is_set():
                behind = time.perf_counter() - (began + n / fps)
                capture.keyframes_only = behind > 1.0  # shed: only keyframes until back on time
                ok, image = capture.read()
                if not ok:
                    break
                n = int((time.perf_counter() - began) * fps) if capture.keyframes_only else n + 1
                if capture.keyframes_only:
                    self.shed_s += 1 / fps
                self.decoded += 1
                with self.lock:
                    self.slot = (time.perf_counter(), image)
                wait = began + n / fps - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            capture.release()

    def take(self) -> tuple[float, object] | None:
        with self.lock:
            item, self.slot = self.slot, None
            return item


def bench_monitor(clip: Path, device: str, counts: Sequence[int], seconds: float) -> list[Row]:
    import torch

    from streamer import assets
    from streamer.models.torch_yolo import TorchYoloModel
    from streamer.preprocess import letterbox_params

    model = TorchYoloModel(assets.model_path("yolo11n"), device=device, half=True)
    model.open()
    rows = []
    for n in counts:
        stop = threading.Event()
        cameras = [Camera(f"cam{i}", clip, device, stop) for i in range(n)]
        for cam in cameras:
            cam.start()
        time.sleep(2.0)  # decoders open
        torch.cuda.reset_peak_memory_stats()
        results = {cam.name: 0 for cam in cameras}
        latencies: list[float] = []
        cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        while time.perf_counter() - wall0 < seconds:
            taken = [(cam.name, item) for cam in cameras if (item := cam.take()) is not None]
            if not taken:
                time.sleep(0.002)
                continue
            for start in range(0, len(taken), 64):
                part = taken[start : start + 64]
                images = [item[1] for _, item in part]
                boxes = [letterbox_params(im.shape, 640) for im in images]  # type: ignore[attr-defined]
                model.detect_frames(images, boxes)
                now = time.perf_counter()
                for name, (captured, _) in part:
                    results[name] += 1
                    latencies.append((now - captured) * 1000)
        wall = time.perf_counter() - wall0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        stop.set()
        for cam in cameras:
            cam.join(5)
        busy = (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / wall
        total = sum(results.values()) / wall
        slowest = min(results.values()) / wall
        memory = torch.cuda.max_memory_allocated() / 2**30
        shed = sum(cam.shed_s for cam in cameras)
        rows.append(Row(
            "monitor, 1080p30 cameras, fp16", f"{n} cameras",
            f"{total:.0f} results/s, slowest camera {slowest:.1f} fps, latency p50 {percentile(latencies, 50):.0f} / "
            f"p95 {percentile(latencies, 95):.0f} ms, {busy:.1f} CPU cores, GPU {memory:.1f} GiB, "
            f"shed {shed:.0f} camera-s",
            "each ≥ 29 fps, p95 ≤ 150 ms" if n == 64 else ("no collapse" if n > 64 else ""),
            {"results_per_s": total, "slowest_fps": slowest, "p50_ms": percentile(latencies, 50),
             "p95_ms": percentile(latencies, 95), "cpu_cores": busy, "gpu_gib": memory},
        ))
    model.close()
    return rows


# ----------------------------------------------------------------------------- agreement


Frames = list[list[tuple[list[float], float, int]]]


def gpu_path_detections(sample: str, device: str, precision: str) -> Frames:
    """Every frame of a sample clip through the GPU path: NVDEC (or its CPU fallback) → NV12
    letterbox → model → batched decode + NMS, one frame per call as a live camera goes."""
    from streamer import assets
    from streamer.models.torch_yolo import TorchYoloModel
    from streamer.preprocess import letterbox_params
    from streamer.sources.nvdec import NvdecCapture

    model = TorchYoloModel(assets.model_path("yolo11n"), device=device, half=precision == "fp16")
    model.open()
    capture = NvdecCapture(str(assets.sample_path(sample)), device=device)
    out: Frames = []
    while True:
        ok, image = capture.read()
        if not ok or image is None:
            break
        (d,) = model.detect_frames([image], [letterbox_params(image.shape, 640)])
        out.append([(box.tolist(), float(c), int(k)) for box, c, k in zip(d.xyxy, d.confidence, d.class_id, strict=True)])
    capture.release()
    model.close()
    return out


def cpu_path_detections(sample: str) -> Frames:
    import streamer

    out: Frames = []
    for result in streamer.stream(f"sample:{sample}", device="cpu"):
        d = result.detections
        assert d is not None
        out.append([(box.tolist(), float(c), int(k)) for box, c, k in zip(d.xyxy, d.confidence, d.class_id, strict=True)])
    return out


def bench_agreement(samples: Sequence[str], device: str, precision: str) -> list[Row]:
    from tests.agreement import f1_score, from_reference

    rows = []
    for sample in samples:
        got = gpu_path_detections(sample, device, precision)
        reference = json.loads((ROOT / "tests" / "data" / f"ultralytics_{sample}.json").read_text())
        ultra = f1_score(got, from_reference(reference["frames"]))
        cpu = f1_score(got, cpu_path_detections(sample))
        rows.append(Row(
            "agreement (F1, IoU ≥ 0.5)", f"{sample}, {precision} on {device}",
            f"vs Ultralytics {ultra[0]:.4f} (TP {ultra[1]}, FP {ultra[2]}, FN {ultra[3]}); vs CPU path {cpu[0]:.4f}",
            "≥ 0.98", {"f1_ultralytics": ultra[0], "f1_cpu": cpu[0]},
        ))
    return rows


# ----------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    why = needs_cuda(args)
    if why is not None:
        print(why, file=sys.stderr)
        return 2
    import torch

    card = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else platform.processor() or "CPU"
    print(f"# bench_gpu on {card}, {os.cpu_count()} CPU cores, torch {torch.__version__}", flush=True)
    rows: list[Row] = []
    needs_clip = {"annotate", "monitor"} & set(args.only)
    if needs_clip and not args.clip.is_file():
        print(f"bench_gpu.py: {args.clip}: no such clip (needed by {sorted(needs_clip)}; see --clip)", file=sys.stderr)
        return 2
    steps: list[tuple[str, Callable[[], list[Row]]]] = [
        ("model", lambda: bench_model(args.device)),
        ("annotate", lambda: bench_annotate(args.clip, args.device)),
        ("monitor", lambda: bench_monitor(args.clip, args.device, args.cameras, args.seconds)),
        ("agreement", lambda: bench_agreement(args.samples, args.device, args.precision)),
    ]
    for name, step in steps:
        if name in args.only:
            started = time.perf_counter()
            new = step()
            rows.extend(new)
            print(f"{name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
            for row in new:
                print(f"  {row.setting}: {row.figure}", file=sys.stderr, flush=True)
    text = f"{card}, {os.cpu_count()} CPU cores\n\n{table(rows)}\n"
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_gpu.md").write_text(text)
        (args.out / "bench_gpu.json").write_text(json.dumps(
            {"card": card, "rows": [{"what": r.what, "setting": r.setting, "figure": r.figure, "target": r.target,
                                     "values": r.values} for r in rows]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

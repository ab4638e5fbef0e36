"""The ``streamer`` command.

Every error streamer raises on purpose (:class:`~streamer.errors.StreamerError`) becomes one
line on stderr and exit code 2; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import sysconfig
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from streamer import __version__
from streamer.errors import ConfigError, StageError, StreamerError, interrupted

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"streamer: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="yolo11n", help="built-in model name or model file (default: yolo11n)")
    p.add_argument("--backend", default="auto", help="auto, onnxruntime, torch or torchscript (default: auto: ONNX Runtime on CPU, torch on GPU)")
    p.add_argument("--half", action="store_true", help="fp16 inference on CUDA (torch backend)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--conf", type=float, default=0.25, help="confidence threshold (default: 0.25)")
    p.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold (default: 0.7)")
    p.add_argument("--imgsz", type=int, default=None, help="model input size, a multiple of 32 (default: the model's)")
    p.add_argument("--square", action="store_true", help="letterbox to imgsz x imgsz instead of the minimal rect")
    p.add_argument("--classes", type=int, nargs="+", default=None, metavar="ID", help="keep only these class ids")
    p.add_argument("--agnostic-nms", action="store_true", help="suppress overlapping boxes across classes")
    p.add_argument("--max-det", type=int, default=300, help="maximum detections per frame (default: 300)")
    p.add_argument("--batch", type=int, default=None, help="frames per model call (default: 1; 8 for files on CUDA)")
    p.add_argument("--threads", type=int, default=None,
                   help="inference threads per model call (default: all cores up to 4, shared by the workers)")
    p.add_argument("--workers", type=int, default=None,
                   help="model calls in flight at once when annotating (default: 2 on a CPU with 2+ cores, else 1)")
    p.add_argument("--task", default="auto", choices=["auto", "detect", "classify"],
                   help="insist on a task (default: what the model's output says)")
    p.add_argument("--labels", default=None, metavar="FILE", help="class names, one per line (replaces the model's)")
    p.add_argument("--track", action="store_true",
                   help="follow objects over time (ByteTrack, Ultralytics' bytetrack.yaml defaults): ids in labels and JSONL")


def _add_executor_args(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument("--executor", default=default, choices=["local", "ray"],
                   help="run in this process (local, the default) or on a Ray cluster (ray; pip install 'streamer[ray]')")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="join this Ray cluster (auto: the one started here with 'ray start --head'; HOST:PORT: "
                        "its head node); default: start a Ray instance on this machine. Implies --executor ray")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="streamer", description="Real-time video stream processing with object detection.")
    parser.add_argument("--version", action="version", version=f"streamer {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    ann = sub.add_parser("annotate", help="annotate recorded videos or images: every frame, in order")
    ann.add_argument("source", nargs="+",
                     help="video file, image, folder of images, or sample:NAME (bikes, carphone, bigbuckbunny); "
                          "several files or a folder of videos write OUTDIR/<name>.mp4 and .jsonl each")
    ann.add_argument("-o", "--output", default=None,
                     help="annotated video file (default: out/<name>.mp4); with several inputs, the output folder "
                          "(default: out)")
    ann.add_argument("--jsonl", default=None,
                     help="JSONL detections file (default: the video's name with .jsonl, out/<name>.jsonl without -o; "
                          "one input only)")
    _add_executor_args(ann, default="local")
    ann.add_argument("--no-video", action="store_true", help="write no annotated video")
    ann.add_argument("--no-progress", action="store_true", help="print no progress line")
    _add_model_args(ann)

    watch = sub.add_parser("watch", help="live view of a webcam, a stream URL, a video file or a test pattern")
    watch.add_argument("source", help="webcam index (0), rtsp:// or http(s):// URL, video file (played in real time), "
                                      "or synthetic[:WxH][@FPS]")
    watch.add_argument("--no-window", action="store_true", help="show no window (status lines only)")
    watch.add_argument("--record", default=None, metavar="OUT.mp4", help="record the annotated stream as shown")
    watch.add_argument("--jsonl", default=None, help="JSONL detections file")
    watch.add_argument("--transport", default="tcp", choices=["tcp", "udp"], help="RTSP transport (default: tcp)")
    watch.add_argument("--capture-backend", default="auto", choices=["auto", "pyav", "opencv"],
                       help="how stream URLs are read (default: auto, see capture.backend)")
    watch.add_argument("--stall-timeout", type=float, default=5.0, help="reconnect after this many seconds without a frame")
    watch.add_argument("--max-reconnects", type=int, default=None, help="give up after this many reconnects (default: never)")
    watch.add_argument("--loop", action="store_true", help="replay a video file forever")
    watch.add_argument("--status-interval", type=float, default=5.0, help="seconds between status lines (default: 5)")
    _add_model_args(watch)

    mon = sub.add_parser("monitor", help="monitor the cameras of a pipeline file, with a web dashboard")
    mon.add_argument("pipeline", help="pipeline YAML file with a cameras: section")
    mon.add_argument("--host", default=None, help="dashboard address (default: 127.0.0.1)")
    mon.add_argument("--port", type=int, default=None, help="dashboard port (default: 8080; 0 picks a free one)")
    mon.add_argument("--token", default=None, help="require this bearer token for the dashboard")
    mon.add_argument("--no-dashboard", action="store_true", help="serve no dashboard")
    mon.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a key of the file (repeatable)")
    _add_executor_args(mon, default=None)

    sub.add_parser("models", help="list the built-in models")

    run = sub.add_parser("run", help="run a pipeline file")
    run.add_argument("pipeline", help="pipeline YAML file")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a key of the file, e.g. --set detect.conf=0.4 (repeatable)")
    run.add_argument("--no-progress", action="store_true", help="print no progress line")
    return parser


def _model_sections(args: argparse.Namespace) -> dict[str, Any]:
    """The model: and detect: sections of a pipeline, from the shared model options."""
    return {
        "model": {
            "name": args.model, "backend": args.backend, "device": args.device, "imgsz": args.imgsz,
            "rect": not args.square, "batch": args.batch, "threads": args.threads,
            "workers": args.workers, "half": args.half,
            "task": args.task, "labels": args.labels,
        },
        "detect": {
            "conf": args.conf, "iou": args.iou, "classes": args.classes, "agnostic": args.agnostic_nms,
            "max_det": args.max_det,
        },
        **({"track": True} if args.track else {}),
    }


def _executor_section(args: argparse.Namespace) -> dict[str, Any]:
    kind = "ray" if args.ray_address else args.executor
    if kind is None:
        return {}
    return {"executor": {"kind": kind, **({"address": args.ray_address} if args.ray_address else {})}}


def _annotate_config(args: argparse.Namespace, source: str | None = None, many: bool = False) -> Any:
    from streamer.config import from_dict
    from streamer.executors.files import VIDEO_SUFFIXES
    from streamer.sources.file import IMAGE_SUFFIXES

    source = source if source is not None else args.source[0]
    name = Path(source.removeprefix("sample:")).stem or "output"
    path = Path(source)
    images = not source.startswith("sample:") and (path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES)
    output = args.output
    folder = None  # -o FOLDER for one video: FOLDER/<name>.mp4 and .jsonl, as with several inputs
    # A folder: named with a trailing slash, or an existing one whose name is not a video's
    # (``-o out.mp4`` that is a folder stays an error: it looks like a file name).
    if output and not images and (output.endswith(("/", os.sep))
                                  or (Path(output).is_dir() and Path(output).suffix.lower() not in VIDEO_SUFFIXES)):
        folder = Path(output)
        output = str(folder / f"{name}.mp4")
    video = None if args.no_video or images else (output or f"out/{name}.mp4")
    image_dir = (output or f"out/{name}_annotated") if images and not args.no_video else None
    # The detections go next to the video the user named (same name, .jsonl), else to out/.
    named = output is not None and folder is None and not images
    jsonl = args.jsonl or str(Path(output).with_suffix(".jsonl") if named else (folder or Path("out")) / f"{name}.jsonl")
    if many:  # each file's outputs are planned with it (executors.files.plan)
        video = jsonl = image_dir = None
    data = {
        "job": "annotate",
        "source": source,
        **_model_sections(args),
        "output": {"video": video, "jsonl": jsonl, "images": image_dir},
        **_executor_section(args),
    }
    return from_dict(data)


def _annotate(args: argparse.Namespace) -> int:
    """One input in-process: the single-file run as always. Several inputs, a folder of
    videos or the Ray executor: one run per file into OUTDIR/<name>.mp4 and .jsonl."""
    from streamer.executors import files

    many = len(args.source) > 1 or any(_holds_videos(s) for s in args.source)
    cfg = _annotate_config(args, many=many)
    if not many and cfg.executor.kind == "local":
        return _run_job(cfg, not args.no_progress)
    if many and args.jsonl:
        raise ConfigError("--jsonl names one file; with several inputs every JSONL goes to the -o folder")
    if cfg.executor.kind == "ray":
        from streamer.executors.ray_cluster import require_ray

        require_ray()  # say so before any folder is made
    out = args.output
    if not many and (out is None or Path(out).suffix.lower() in files.VIDEO_SUFFIXES):
        # One file on Ray: -o and --jsonl mean what they mean in-process.
        jobs = [files.FileJob(args.source[0], files.output_name(args.source[0]), cfg.output.video, cfg.output.jsonl)]
    else:
        jobs = files.plan(list(args.source), out or "out", video=not args.no_video)
    for job in jobs:
        for final in (job.video, job.jsonl):
            if final is not None:
                Path(final).parent.mkdir(parents=True, exist_ok=True)
    if cfg.executor.kind == "ray":
        from streamer.executors.ray_annotate import run_annotate_ray

        summary = run_annotate_ray(cfg, jobs, show_progress=not args.no_progress)
    else:
        summary = files.run_annotate_local(cfg, jobs, show_progress=not args.no_progress)
    for line in summary.lines:
        print(line)
    if summary.interrupted:
        return 130
    return 1 if summary.failed else 0


def _holds_videos(spec: str) -> bool:
    from streamer.executors.files import videos_in
    from streamer.sources import source_path

    path = source_path(spec)
    return path is not None and path.is_dir() and bool(videos_in(path))


def _watch_config(args: argparse.Namespace) -> Any:
    from streamer.config import from_dict

    data = {
        "job": "watch",
        "source": args.source,
        **_model_sections(args),
        "output": {"video": args.record, "jsonl": args.jsonl, "window": not args.no_window,
                   "status_interval_s": args.status_interval},
        "capture": {"transport": args.transport, "backend": args.capture_backend, "stall_timeout_s": args.stall_timeout,
                    "max_reconnects": args.max_reconnects, "loop": args.loop},
    }
    return from_dict(data)


def _run_job(cfg: Any, show_progress: bool = True) -> int:
    from streamer.jobs import run_annotate, run_monitor, run_monitor_ray, run_watch

    if cfg.job == "watch":
        summary = run_watch(cfg)
    elif cfg.job == "monitor" and cfg.executor.kind == "ray":
        summary = run_monitor_ray(cfg)
    elif cfg.job == "monitor":
        summary = run_monitor(cfg)
    elif cfg.executor.kind == "ray":
        from streamer.executors.files import FileJob, output_name
        from streamer.executors.ray_annotate import run_annotate_ray

        job = FileJob(cfg.source, output_name(cfg.source), cfg.output.video, cfg.output.jsonl)
        batch = run_annotate_ray(cfg, [job], show_progress=show_progress)
        for line in batch.lines:
            print(line)
        return 130 if batch.interrupted else (1 if batch.failed else 0)
    else:
        summary = run_annotate(cfg, show_progress=show_progress)
    for line in summary.lines:
        print(line)
    if summary.interrupted:
        return 128 + (summary.signum or 2)
    return 1 if summary.sink_failures else 0


def main(argv: list[str] | None = None) -> int:
    with _interrupts_wait_for_imports():
        try:
            return _main(argv)
        except BaseException as exc:
            if not interrupted(exc):
                raise
    # Ctrl+C before a job had its own handler (while the model opens): nothing is written yet.
    sys.stderr.write("streamer: interrupted\n")
    return 130


#: How soon a Ctrl+C that came during an import is tried again.
IMPORT_RETRY_S = 0.02


def _importing(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


_OWN_CODE = os.path.dirname(os.path.abspath(__file__))
_PACKAGES = tuple({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})


def _in_a_library(frame: FrameType | None) -> bool:
    """Whether the innermost code running, the standard library left aside, is an installed
    package's rather than streamer's own."""
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(_OWN_CODE):
            return False
        if name.startswith(_PACKAGES):
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def _interrupts_wait_for_imports() -> Iterator[None]:
    """A Ctrl+C that comes while a module is being imported is delivered again once it is done.

    Startup is mostly imports, so that is where an early Ctrl+C lands. Raised inside an
    extension module's set-up, a KeyboardInterrupt becomes an ImportError (pybind11: ONNX
    Runtime, PyTorch), is swallowed by a library's ``except ImportError`` (and the job then
    runs to its end), or leaves CPython set to kill itself with SIGINT at exit. Raised inside
    a library's own code (Numba's compiler loading its cache), it can leave a half-built
    object whose finalizer fails later, so it also waits until the library returns. One
    raised in a Python function that C code calls back (a ctypes callback) is printed and
    dropped there, so it is delivered again too. Delivered again, it goes to whichever
    handler is in place by then: a job's own makes it a stop."""
    usual = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer") or not usual:
        yield  # another thread, Windows, or Ctrl+C ignored (started in the background): as it is
        return

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        if not _importing(frame) and not _in_a_library(frame):
            raise KeyboardInterrupt
        signal.setitimer(signal.ITIMER_REAL, IMPORT_RETRY_S)

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        signal.raise_signal(signal.SIGINT)

    previous_hook = sys.unraisablehook

    def on_unraisable(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            signal.setitimer(signal.ITIMER_REAL, IMPORT_RETRY_S)  # dropped where it was raised
            return
        previous_hook(unraisable)

    previous_alarm = signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGINT, on_sigint)
    sys.unraisablehook = on_unraisable
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGALRM, previous_alarm)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        if args.command == "annotate":
            return _annotate(args)
        if args.command == "watch":
            return _run_job(_watch_config(args))
        if args.command == "models":
            from streamer.models import describe_builtin_models

            for row in describe_builtin_models():
                print(f"{row['name']}: {row['description']}")
                print(f"  task {row['task']}, {row['classes']} classes, input {row['input']}")
                print(f"  package {row['package']}, licence {row['licence']}")
                print(f"  file {row['status']}")
            return 0
        if args.command == "monitor":
            from streamer.config import load

            overrides = list(args.overrides)
            for key, value in (("host", args.host), ("port", args.port), ("token", args.token)):
                if value is not None:
                    overrides.append(f"dashboard.{key}={json.dumps(value)}")
            if args.no_dashboard:
                overrides.append("dashboard.enabled=false")
            for key, value in _executor_section(args).get("executor", {}).items():
                overrides.append(f"executor.{key}={json.dumps(value)}")
            cfg = load(args.pipeline, overrides)
            if cfg.job != "monitor":
                raise ConfigError(f"{args.pipeline}: monitor needs a pipeline file with a cameras: section")
            return _run_job(cfg)
        if args.command == "run":
            from streamer.config import load

            return _run_job(load(args.pipeline, args.overrides), not args.no_progress)
    except StageError as exc:
        cause = exc.cause
        if isinstance(cause, StreamerError):
            sys.stderr.write(f"streamer: {cause}\n")
            return EXIT_USAGE
        raise
    except StreamerError as exc:
        sys.stderr.write(f"streamer: {exc}\n")
        return EXIT_USAGE
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE

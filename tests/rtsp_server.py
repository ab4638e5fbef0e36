#!/usr/bin/python3
"""A loopback RTSP server for streamer's tests, run by Debian's ``/usr/bin/python3``.

Why a separate program: the project's venv Python has no ``gi`` (PyGObject), while
Debian's Python has it together with the GStreamer RTSP server bindings. The test
helper ``tests/rtsp.py`` starts this file as a subprocess and waits for the single
``READY rtsp://127.0.0.1:PORT`` line on stdout.

What it serves (see /work/shared/RTSP.md for the recipe and measured behaviour):

* ``--mount NAME=/path/clip.mp4``: the clip is decoded *once* at start-up into raw
  I420 frames; every media pipeline then feeds them from ``appsrc`` in a loop (frame
  ``i mod N``, continuous timestamps at the clip's fps), so the stream never ends and
  tests never depend on file EOS behaviour or decoder speed.
* ``--mount NAME=testsrc`` (or ``testsrc:PATTERN``): ``videotestsrc is-live=true``,
  a synthetic camera that needs no file.
* ``--mount NAME=copy:/path/clip.mp4``: a passthrough mount. The clip's own H.264 access
  units are parsed once at start-up and served from ``appsrc`` in a loop (continuous
  timestamps) straight into the payloader: no decode, no encode, so many cameras cost the
  server little and the stream has exactly the clip's GOP (a load test then measures the
  client, not the server's encoders). The clip must be H.264 with no B-frames.
* ``--silent-mount NAME``: accepts the RTSP connection but never delivers media. Its
  pipeline is an ``appsrc`` that is never fed, so the media never prerolls and the
  server never answers DESCRIBE: the client's *open* hangs until its own timeout.
  Every client connection gets its own server thread (``max-threads=-1``), so a hung
  DESCRIBE blocks only that client, never the other mounts.
* ``--shared``: one pipeline per mount shared by all clients, like a real camera
  (late joiners start decoding at the next keyframe, at most one second later).
* ``--user U --password P``: HTTP Basic authentication on every mount.
* ``--fps F``: serve clips (and test patterns) at F frames per second.
* ``--cache-dir DIR``: keep the decoded frames there, so a restart skips decoding.

Every stream is encoded with ``x264enc tune=zerolatency speed-preset=ultrafast
key-int-max=<fps>`` as constrained-baseline H.264 and payloaded by ``rtph264pay
config-interval=1`` (``-1`` makes FFmpeg decode a duplicate frame per keyframe).

SIGTERM and SIGINT quit the main loop; the process then exits with status 0. With
``--watch-stdin`` it also quits when its stdin reaches EOF, so a server outlives no
test run, even one that was killed before its teardown.
``--check`` only verifies that every GStreamer piece is installed (exit 0) or says
what is missing on stderr (exit 1); the test helper uses it to skip or fail.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

# Elements the served pipelines need, with the Debian package that holds each.
REQUIRED_ELEMENTS: dict[str, str] = {
    "appsrc": "gstreamer1.0-plugins-base",
    "appsink": "gstreamer1.0-plugins-base",
    "decodebin": "gstreamer1.0-plugins-base",
    "videoconvert": "gstreamer1.0-plugins-base",
    "videotestsrc": "gstreamer1.0-plugins-base",
    "qtdemux": "gstreamer1.0-plugins-good",
    "rtph264pay": "gstreamer1.0-plugins-good",
    "h264parse": "gstreamer1.0-plugins-bad",
    "x264enc": "gstreamer1.0-plugins-ugly",
    "avdec_h264": "gstreamer1.0-libav",
}

# UDP ports handed to clients that ask for RTP over UDP (the tests use TCP, which
# needs none); restricted to loopback so nothing is ever sent off the machine.
UDP_PORT_RANGE = (41000, 48999)


def _import_gi() -> tuple[Any, Any, Any, Any]:
    """Import GStreamer lazily so ``--help`` works and import errors read clearly."""
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstApp", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    # GstApp must be loaded for appsink's try_pull_sample() and is_eos() methods.
    from gi.repository import GLib, Gst, GstApp, GstRtspServer

    Gst.init(None)
    return GLib, Gst, GstRtspServer, GstApp


# Bound by main(); module-level so the helpers below read like ordinary PyGObject code.
GLib: Any = None
Gst: Any = None
GstRtspServer: Any = None
GstApp: Any = None


def log(message: str) -> None:
    """Diagnostics go to stderr: stdout carries only the READY line the helper parses."""
    print(f"rtsp_server[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- clips


@dataclass
class Clip:
    """A clip decoded once into raw I420 frames, kept as ``GLib.Bytes``.

    ``GLib.Bytes`` lets every pushed ``Gst.Buffer`` wrap the same memory without a copy,
    so serving several clients costs encoder time only.
    """

    path: str
    caps: Any  # Gst.Caps: video/x-raw,format=I420,width,height,framerate
    width: int
    height: int
    fps: Fraction
    frames: list[Any] = field(default_factory=list)  # list[GLib.Bytes]


def pull_samples(launch: str, path: str, what: str, timeout_s: float) -> tuple[Any, list[Any]]:
    """Run ``launch`` (``filesrc name=file ! ... ! appsink name=sink``) over ``path`` as fast as
    it goes (no clock sync); the first sample's caps and every buffer, in order."""
    if not os.path.isfile(path):
        raise RuntimeError(f"no such clip: {path}")
    pipeline = Gst.parse_launch(launch)
    pipeline.get_by_name("file").set_property("location", path)
    sink = pipeline.get_by_name("sink")
    bus = pipeline.get_bus()
    if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
        raise RuntimeError(f"cannot start {what} {path}")
    buffers: list[Any] = []
    caps = None
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            message = bus.pop_filtered(Gst.MessageType.ERROR)
            if message is not None:
                error, debug = message.parse_error()
                raise RuntimeError(f"{what} {path} failed: {error.message} ({debug})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} {path} took more than {timeout_s} s")
            sample = sink.try_pull_sample(100 * Gst.MSECOND)
            if sample is None:
                if sink.is_eos():
                    break
                continue
            if caps is None:
                caps = sample.get_caps()
            buffers.append(sample.get_buffer())
    finally:
        pipeline.set_state(Gst.State.NULL)
    return caps, buffers


def decode_clip(path: str, timeout_s: float = 60.0) -> Clip:
    """Decode every frame of ``path`` to I420 as fast as possible (no clock sync).

    Decoding up front keeps the served stream independent of file demuxing and EOS:
    the appsrc simply loops over the list.
    """
    caps, buffers = pull_samples(
        "filesrc name=file ! decodebin ! videoconvert ! video/x-raw,format=I420 "
        "! appsink name=sink sync=false max-buffers=0 drop=false", path, "decoding", timeout_s)
    frames = [GLib.Bytes.new(b.extract_dup(0, b.get_size())) for b in buffers]
    if caps is None or not frames:
        raise RuntimeError(f"{path} decoded to no frames")
    return _clip_from(path, caps, frames)


def _clip_from(path: str, caps: Any, frames: list[Any]) -> Clip:
    """A Clip from decoded caps and frames: size and frame rate read from the caps."""
    structure = caps.get_structure(0)
    ok_num, num, den = structure.get_fraction("framerate")
    fps = Fraction(num, den) if ok_num and num > 0 and den > 0 else Fraction(25)
    _, width = structure.get_int("width")
    _, height = structure.get_int("height")
    return Clip(path=path, caps=caps, width=width, height=height, fps=fps, frames=frames)


def _cache_paths(path: str, cache_dir: str) -> tuple[str, str]:
    """Cache file names keyed by the clip's real path, size and mtime (stale-proof)."""
    stat = os.stat(path)
    key = hashlib.sha1(f"{os.path.realpath(path)}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:20]
    return os.path.join(cache_dir, f"{key}.json"), os.path.join(cache_dir, f"{key}.i420")


def load_clip(path: str, cache_dir: str | None) -> tuple[Clip, str]:
    """Decode ``path``, or read its raw frames from ``cache_dir`` when a previous run left them.

    Why a cache: decoding takes 0.5–1.5 s on a small busy machine, which is most of a
    restart; reading 65 MB of raw frames back takes a few tens of milliseconds, so
    ``RtspServer.restart()`` brings the "camera" back almost at once. Files are written
    under a temporary name and renamed, so concurrent servers never read half a file.
    """
    if not os.path.isfile(path):
        raise RuntimeError(f"no such clip: {path}")
    if cache_dir is None:
        return decode_clip(path), "decoded"
    meta_path, raw_path = _cache_paths(path, cache_dir)
    try:
        with open(meta_path, encoding="utf-8") as meta_file:
            meta = json.load(meta_file)
        with open(raw_path, "rb") as raw_file:
            data = raw_file.read()
        size, count = int(meta["frame_size"]), int(meta["count"])
        if len(data) == size * count and count > 0:
            caps = Gst.Caps.from_string(meta["caps"])
            frames = [GLib.Bytes.new(data[i * size : (i + 1) * size]) for i in range(count)]
            return _clip_from(path, caps, frames), "loaded cached"
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent or unreadable: decode and rewrite it
    clip = decode_clip(path)
    suffix = f".{os.getpid()}.tmp"
    try:
        os.makedirs(cache_dir, exist_ok=True)
        with open(raw_path + suffix, "wb") as raw_file:
            for frame in clip.frames:
                raw_file.write(frame.get_data())
        os.replace(raw_path + suffix, raw_path)
        meta = {"caps": clip.caps.to_string(), "frame_size": clip.frames[0].get_size(), "count": len(clip.frames)}
        with open(meta_path + suffix, "w", encoding="utf-8") as meta_file:
            json.dump(meta, meta_file)
        os.replace(meta_path + suffix, meta_path)  # last: the metadata marks the raw file complete
    except OSError as error:  # a cache is an optimisation: serve anyway
        log(f"cannot cache decoded frames in {cache_dir}: {error}")
        return clip, "decoded (not cached)"
    return clip, "decoded (and cached)"


@dataclass
class CodedClip:
    """A clip's H.264 access units (byte-stream, SPS/PPS before each keyframe), parsed once."""

    path: str
    caps: Any  # Gst.Caps: video/x-h264,stream-format=byte-stream,alignment=au,...
    fps: Fraction
    units: list[tuple[Any, bool]] = field(default_factory=list)  # (GLib.Bytes, is a keyframe)


def parse_coded_clip(path: str, timeout_s: float = 60.0) -> CodedClip:
    """Split ``path``'s H.264 into access units without decoding them."""
    caps, buffers = pull_samples(
        "filesrc name=file ! qtdemux ! h264parse config-interval=-1 "
        "! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=sink sync=false max-buffers=0",
        path, "parsing", timeout_s)
    units = [(GLib.Bytes.new(b.extract_dup(0, b.get_size())), not b.has_flags(Gst.BufferFlags.DELTA_UNIT))
             for b in buffers]
    if caps is None or not units:
        raise RuntimeError(f"{path} has no H.264 access units")
    if not units[0][1]:
        raise RuntimeError(f"{path} does not start with a keyframe")
    structure = caps.get_structure(0)
    ok, num, den = structure.get_fraction("framerate")
    fps = Fraction(num, den) if ok and num > 0 and den > 0 else Fraction(25)
    return CodedClip(path=path, caps=caps, fps=fps, units=units)


class CodedFeeder:
    """Feeds one media's appsrc with a coded clip's access units in an endless loop."""

    def __init__(self, clip: CodedClip, fps: Fraction) -> None:
        self.clip = clip
        self.fps = fps
        self.index = 0

    def on_need_data(self, appsrc: Any, _length: int) -> None:
        data, key = self.clip.units[self.index % len(self.clip.units)]
        buffer = Gst.Buffer.new_wrapped_bytes(data)
        step = Gst.SECOND * self.fps.denominator
        buffer.pts = self.index * step // self.fps.numerator
        buffer.dts = buffer.pts
        buffer.duration = (self.index + 1) * step // self.fps.numerator - buffer.pts
        if not key:
            buffer.set_flags(Gst.BufferFlags.DELTA_UNIT)
        self.index += 1
        appsrc.emit("push-buffer", buffer)


def make_copy_factory(clip: CodedClip, fps: Fraction) -> Any:
    """A factory serving a coded clip as it is (see ``--mount NAME=copy:PATH``)."""
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        "( appsrc name=src format=time is-live=false do-timestamp=false "
        "! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )

    def on_media_configure(_factory: Any, media: Any) -> None:
        appsrc = media.get_element().get_by_name_recurse_up("src")
        appsrc.set_property("caps", clip.caps)
        appsrc.connect("need-data", CodedFeeder(clip, fps).on_need_data)

    factory.connect("media-configure", on_media_configure)
    return factory


def raw_caps(clip: Clip, fps: Fraction) -> Any:
    """The appsrc caps: the decoded caps with the served frame rate."""
    # Rewritten as text: caps from a sample are immutable, and PyGObject cannot build
    # a GstFraction GValue for Structure.set_value().
    rate = f"framerate=(fraction){fps.numerator}/{fps.denominator}"
    text, count = re.subn(r"framerate=\(fraction\)[0-9]+/[0-9]+", rate, clip.caps.to_string())
    return Gst.Caps.from_string(text if count else f"{text}, {rate}")


def encoder_tail(fps: Fraction) -> str:
    """Encoder and payloader, the part every mount shares (see the module docstring)."""
    key_int = max(1, round(float(fps)))
    return (
        f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={key_int} "
        "! video/x-h264,profile=constrained-baseline "
        "! rtph264pay name=pay0 pt=96 config-interval=1"
    )


# ------------------------------------------------------------------------ factories


class ClipFeeder:
    """Feeds one media pipeline's appsrc with a clip's frames in an endless loop.

    One feeder per media (i.e. per client unless ``--shared``), so each unshared
    client starts at frame 0 with timestamp 0: deterministic streams for tests.
    """

    def __init__(self, clip: Clip, fps: Fraction) -> None:
        self.clip = clip
        self.fps = fps
        self.index = 0

    def timestamp(self, index: int) -> int:
        """Exact nanoseconds of frame ``index`` (no drift from a rounded frame duration)."""
        return index * Gst.SECOND * self.fps.denominator // self.fps.numerator

    def on_need_data(self, appsrc: Any, _length: int) -> None:
        """Push exactly one frame; the RTSP sinks' clock sync paces the stream."""
        frames = self.clip.frames
        buffer = Gst.Buffer.new_wrapped_bytes(frames[self.index % len(frames)])
        buffer.pts = self.timestamp(self.index)
        buffer.dts = buffer.pts
        buffer.duration = self.timestamp(self.index + 1) - buffer.pts
        self.index += 1
        appsrc.emit("push-buffer", buffer)


def make_clip_factory(clip: Clip, fps: Fraction) -> Any:
    """A factory serving ``clip`` from appsrc; the feeder is wired in media-configure."""
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f"( appsrc name=src format=time is-live=false do-timestamp=false ! {encoder_tail(fps)} )")
    caps = raw_caps(clip, fps)

    def on_media_configure(_factory: Any, media: Any) -> None:
        appsrc = media.get_element().get_by_name_recurse_up("src")
        appsrc.set_property("caps", caps)
        feeder = ClipFeeder(clip, fps)
        # Keep the feeder alive exactly as long as the media: it is referenced by the
        # signal closure, which the appsrc owns.
        appsrc.connect("need-data", feeder.on_need_data)

    factory.connect("media-configure", on_media_configure)
    return factory


def make_pattern_factory(pattern: str, fps: Fraction | None) -> Any:
    """A factory serving ``videotestsrc`` (a synthetic live camera, no file needed)."""
    rate = fps or Fraction(25)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( videotestsrc is-live=true pattern={pattern} "
        f"! video/x-raw,format=I420,width=320,height=240,framerate={rate.numerator}/{rate.denominator} "
        f"! {encoder_tail(rate)} )"
    )
    return factory


def make_silent_factory() -> Any:
    """A factory whose media never prerolls, so DESCRIBE is never answered.

    The appsrc has caps but is never fed. GstRTSPMedia waits for preroll before it
    can write the SDP, so the client sees an accepted TCP connection, its DESCRIBE
    request sent, and then silence: exactly a camera that stopped answering. Unlike
    SIGSTOP on the whole server, the other mounts keep working.
    """
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        "( appsrc name=src format=time is-live=false "
        "caps=video/x-raw,format=I420,width=320,height=240,framerate=25/1 "
        f"! {encoder_tail(Fraction(25))} )"
    )
    return factory


# --------------------------------------------------------------------------- server


def parse_mount(text: str) -> tuple[str, str]:
    """``NAME=SOURCE`` → (``/NAME``, SOURCE); a malformed value is an argparse usage error."""
    name, sep, source = text.partition("=")
    name = name.strip().strip("/")
    if not sep or not name or not source:
        raise argparse.ArgumentTypeError(f"expected NAME=SOURCE, got {text!r}")
    return "/" + name, source


def build_server(args: argparse.Namespace) -> Any:
    """Create (but do not attach) the server with every mount, auth and address pool."""
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    # One thread per client connection: a DESCRIBE blocked on a silent mount must not
    # hold up the other clients (the default pool of one thread would).
    server.get_thread_pool().set_max_threads(-1)

    pool = GstRtspServer.RTSPAddressPool()
    pool.add_range("127.0.0.1", "127.0.0.1", UDP_PORT_RANGE[0], UDP_PORT_RANGE[1], 0)

    permissions = None
    if args.user is not None:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        # set_string, not writable_structure().set_value(): PyGObject returns a *copy*
        # of that boxed structure, so the role would silently never reach the token.
        token.set_string("media.factory.role", args.user)
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role(args.user, "media.factory.access", True)
        permissions.add_permission_for_role(args.user, "media.factory.construct", True)

    clips: dict[str, Clip] = {}  # one decode per distinct file, however many mounts use it
    coded: dict[str, CodedClip] = {}
    factories: dict[str, Any] = {}
    for path, source in args.mount:
        if source == "testsrc" or source.startswith("testsrc:"):
            pattern = source.partition(":")[2] or "ball"
            factories[path] = make_pattern_factory(pattern, args.fps)
            continue
        if source.startswith("copy:"):
            file = source.removeprefix("copy:")
            if file not in coded:
                started = time.monotonic()
                coded[file] = parse_coded_clip(file)
                log(f"parsed {file}: {len(coded[file].units)} access units in {time.monotonic() - started:.2f} s")
            factories[path] = make_copy_factory(coded[file], args.fps or coded[file].fps)
            continue
        if source not in clips:
            started = time.monotonic()
            clips[source], how = load_clip(source, args.cache_dir)
            clip = clips[source]
            log(
                f"{how} {source}: {len(clip.frames)} frames {clip.width}x{clip.height} "
                f"@ {float(clip.fps):g} fps in {time.monotonic() - started:.2f} s"
            )
        clip = clips[source]
        factories[path] = make_clip_factory(clip, args.fps or clip.fps)
    for name in args.silent_mount:
        factories["/" + name.strip("/")] = make_silent_factory()

    mounts = server.get_mount_points()
    for path, factory in factories.items():
        factory.set_shared(args.shared)
        factory.set_address_pool(pool)
        if permissions is not None:
            factory.set_permissions(permissions)
        mounts.add_factory(path, factory)
    return server


def attach_with_retry(args: argparse.Namespace, retry_s: float) -> tuple[Any, int]:
    """Build and attach the server, retrying while the port is still taken.

    A restart right after a kill normally binds at once (GIO sets SO_REUSEADDR); the
    retry only covers a previous process that has not quite exited yet.
    """
    deadline = time.monotonic() + retry_s
    server = build_server(args)  # built once: decoding clips is the slow part
    attempts = 1
    while server.attach(None) == 0:
        if time.monotonic() >= deadline:
            raise RuntimeError(f"cannot bind 127.0.0.1:{args.port} ({attempts} attempts)")
        time.sleep(0.05)
        attempts += 1
    if attempts > 1:
        log(f"bound 127.0.0.1:{server.get_bound_port()} after {attempts} attempts")
    return server, server.get_bound_port()


def check_installation() -> int:
    """``--check``: 0 when every element exists, else 1 with the missing packages named."""
    missing = [
        f"{element} ({package})"
        for element, package in REQUIRED_ELEMENTS.items()
        if Gst.ElementFactory.find(element) is None
    ]
    if missing:
        print("missing GStreamer elements: " + ", ".join(missing), file=sys.stderr)
        return 1
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line; see the module docstring for what each option is for."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port)")
    parser.add_argument(
        "--mount",
        type=parse_mount,
        action="append",
        default=[],
        metavar="NAME=SOURCE",
        help="serve SOURCE (a video file, 'testsrc' or 'testsrc:PATTERN') at rtsp://.../NAME",
    )
    parser.add_argument(
        "--silent-mount",
        action="append",
        default=[],
        metavar="NAME",
        help="a mount that accepts the connection but never answers DESCRIBE",
    )
    parser.add_argument("--shared", action="store_true", help="one pipeline per mount for all clients")
    parser.add_argument("--user", help="require HTTP Basic authentication with this user")
    parser.add_argument("--password", help="the password for --user")
    parser.add_argument("--fps", type=Fraction, help="serve at this frame rate instead of the clip's")
    parser.add_argument("--bind-retry", type=float, default=2.0, metavar="S", help="retry binding for S seconds")
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="keep decoded frames here, so a restart skips decoding",
    )
    parser.add_argument(
        "--watch-stdin",
        action="store_true",
        help="quit when stdin reaches EOF (the parent died or closed the pipe)",
    )
    parser.add_argument("--check", action="store_true", help="only check the GStreamer installation")
    args = parser.parse_args(argv)
    if args.check:
        return args
    if not args.mount and not args.silent_mount:
        parser.error("give at least one --mount or --silent-mount")
    if (args.user is None) != (args.password is None):
        parser.error("--user and --password go together")
    if args.fps is not None and args.fps <= 0:
        parser.error("--fps must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; print ``READY rtsp://127.0.0.1:PORT`` once bound."""
    global GLib, Gst, GstRtspServer, GstApp
    args = parse_args(argv)
    try:
        GLib, Gst, GstRtspServer, GstApp = _import_gi()
    except (ImportError, ValueError) as error:
        print(f"GStreamer RTSP server bindings unavailable: {error}", file=sys.stderr)
        return 1
    if args.check:
        return check_installation()

    loop = GLib.MainLoop()

    def quit_loop() -> bool:
        log("signal received, quitting")
        loop.quit()
        return GLib.SOURCE_REMOVE

    # GLib's own signal sources: Python-level handlers would only run when the
    # interpreter regains control, which the C main loop may not give it.
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, quit_loop)

    if args.watch_stdin:
        # The test helper holds the write end of our stdin: if pytest dies without
        # teardown (even SIGKILL), the pipe closes and we exit instead of lingering.
        def on_stdin(_channel: Any, _condition: Any) -> bool:
            try:
                data = os.read(0, 4096)
            except OSError:
                data = b""
            if data:
                return GLib.SOURCE_CONTINUE
            log("stdin closed, quitting")
            loop.quit()
            return GLib.SOURCE_REMOVE

        GLib.io_add_watch(
            GLib.IOChannel.unix_new(0),
            GLib.PRIORITY_DEFAULT,
            GLib.IOCondition.IN | GLib.IOCondition.HUP | GLib.IOCondition.ERR,
            on_stdin,
        )

    try:
        _server, port = attach_with_retry(args, args.bind_retry)
    except RuntimeError as error:
        log(str(error))
        return 2
    print(f"READY rtsp://127.0.0.1:{port}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    try:
        status = main()
    except SystemExit as exit_:  # argparse usage errors and --help
        status = exit_.code if isinstance(exit_.code, int) else 2
    except BaseException:  # noqa: BLE001  (report, then exit without finalisation)
        import traceback

        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter finalisation: GStreamer threads (e.g. a client blocked on a
    # silent mount) may still be running and could call back into a dying interpreter.
    os._exit(status)

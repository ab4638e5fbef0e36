"""Run a real loopback RTSP server (``tests/rtsp_server.py``) from pytest.

Why: the product reads cameras with ``cv2.VideoCapture(url, cv2.CAP_FFMPEG, ...)``; the
only honest test of reconnects, timeouts and authentication is a real RTSP server
that can be killed, restarted on the same port, frozen and resumed. The server needs
PyGObject and the GStreamer RTSP server, which only Debian's ``/usr/bin/python3`` has,
so it runs as a subprocess and this module drives it from the venv's Python.

Usage::

    from tests.rtsp import RtspServer, require_rtsp

    require_rtsp()  # skip (or fail under CI=true) when GStreamer is missing
    with RtspServer({"cam": "sample:bikes", "pattern": "testsrc"}, silent_mounts=["dead"]) as server:
        url = server.url("cam")          # rtsp://127.0.0.1:PORT/cam
        server.kill()                    # the camera vanishes (SIGKILL)
        server.restart()                 # back on the same port with the same mounts
        server.pause(); server.resume()  # a hung camera (SIGSTOP / SIGCONT)

Every server runs in its own process group, watches its stdin (EOF → exit) and is
killed at interpreter exit, so no server outlives the test run.
"""

from __future__ import annotations

import atexit
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import quote

import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
HOST = "127.0.0.1"
READY_PREFIX = "READY rtsp://"

# Debian packages the server needs, for the skip/fail message.
PACKAGES = (
    "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
    "gstreamer1.0-plugins-ugly gstreamer1.0-libav"
)

class RtspServerError(RuntimeError):
    """The server could not start (or restart); the message carries its stderr."""


def in_ci() -> bool:
    """The same rule as tests/conftest.py: under CI a missing tool is a failure, not a skip."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@lru_cache(maxsize=1)
def rtsp_unavailable_reason() -> str | None:
    """Why the RTSP server cannot run here, or None when it can (checked once per run).

    First the exact import the server needs, then ``rtsp_server.py --check``, which
    also looks for every GStreamer element (x264enc lives in plugins-ugly, the H.264
    decoder in libav) so a half-installed system reports what is missing.
    """
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not found (the RTSP test server needs Debian's Python with gi)"
    probe = "import gi; gi.require_version('GstRtspServer','1.0'); gi.require_version('GstApp','1.0')"
    for command in ([SYSTEM_PYTHON, "-c", probe], [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--check"]):
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"cannot run {command[:2]}: {error}"
        if result.returncode != 0:
            detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
            return f"GStreamer RTSP server unavailable ({detail}); install: {PACKAGES}"
    return None


def require_rtsp() -> None:
    """Skip the calling test when the RTSP server cannot run; fail instead under CI.

    CI must prove the RTSP paths, so there a missing package is a broken setup, not a
    reason to silently skip.
    """
    reason = rtsp_unavailable_reason()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the CI image must provide it)")
    pytest.skip(reason)


def resolve_source(source: str | os.PathLike[str]) -> str:
    """``sample:NAME`` → the sample clip's path; ``testsrc[:PATTERN]`` and paths unchanged;
    ``copy:SOURCE`` (a passthrough mount: the file's own H.264 served without re-encoding)
    keeps its prefix in front of the resolved file."""
    text = os.fspath(source)
    if text.startswith("copy:"):
        return "copy:" + resolve_source(text.removeprefix("copy:"))
    if text.startswith("sample:"):
        from streamer.assets import sample_path

        return str(sample_path(text))
    if text == "testsrc" or text.startswith("testsrc:"):
        return text
    path = Path(text)
    if not path.is_file():
        raise FileNotFoundError(f"RTSP mount source not found: {text}")
    return str(path.resolve())


# Servers still running, killed at interpreter exit: a safety net for tests that
# forget ``stop()``; the stdin watch covers a pytest process that is itself killed.
_LIVE: weakref.WeakSet[RtspServer] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    """Kill every server this process started and did not stop."""
    for server in list(_LIVE):
        server.kill()


class RtspServer:
    """One ``rtsp_server.py`` process serving ``rtsp://127.0.0.1:PORT/<mount>``.

    ``mounts`` maps a mount name to a source: ``"sample:bikes"``, a video file path, or
    ``"testsrc"`` / ``"testsrc:PATTERN"``. ``silent_mounts`` accept connections but never
    answer DESCRIBE (an open that hangs until the client's timeout). With ``port=None``
    the server binds port 0, so the kernel picks a free port with no race; ``restart()``
    then reuses that port. ``shared``, ``user``/``password`` and ``fps`` map to the
    server's options of the same names.
    """

    def __init__(
        self,
        mounts: Mapping[str, str | os.PathLike[str]] | None = None,
        *,
        silent_mounts: Iterable[str] = (),
        port: int | None = None,
        shared: bool = False,
        user: str | None = None,
        password: str | None = None,
        fps: float | str | None = None,
        ready_timeout: float = 30.0,
        python: str = SYSTEM_PYTHON,
    ) -> None:
        self.mounts: dict[str, str] = {name.strip("/"): resolve_source(src) for name, src in (mounts or {}).items()}
        self.silent_mounts: list[str] = [name.strip("/") for name in silent_mounts]
        if not self.mounts and not self.silent_mounts:
            raise ValueError("RtspServer needs at least one mount or silent mount")
        if (user is None) != (password is None):
            raise ValueError("user and password go together")
        self.port: int | None = port
        self.shared = shared
        self.user = user
        self.password = password
        self.fps = fps
        self.ready_timeout = ready_timeout
        self.python = python
        self.paused = False
        self.ready_seconds: float | None = None  # spawn → READY of the last start
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        # Decoded frames survive a kill here, so restart() skips decoding the clips.
        self._cache_dir: str | None = None
        self._cache_cleanup: weakref.finalize | None = None

    # ------------------------------------------------------------------ lifecycle

    def command(self) -> list[str]:
        """The server's command line for the current port (0 until the first start)."""
        command = [self.python, str(SERVER_SCRIPT), "--port", str(self.port or 0), "--watch-stdin"]
        for name, source in self.mounts.items():
            command += ["--mount", f"{name}={source}"]
        for name in self.silent_mounts:
            command += ["--silent-mount", name]
        if self.shared:
            command.append("--shared")
        if self.user is not None and self.password is not None:
            command += ["--user", self.user, "--password", self.password]
        if self.fps is not None:
            command += ["--fps", str(self.fps)]
        if self._cache_dir is not None:
            command += ["--cache-dir", self._cache_dir]
        return command

    def start(self) -> RtspServer:
        """Spawn the server and wait for its READY line; raise RtspServerError on failure."""
        if self.running:
            raise RtspServerError("RTSP server already running")
        self._close_stderr()
        if self._cache_dir is None and any(not src.startswith("testsrc") for src in self.mounts.values()):
            self._cache_dir = tempfile.mkdtemp(prefix="rtsp-frames-")
            # Removed by stop(), or when this object is collected, or at interpreter exit.
            self._cache_cleanup = weakref.finalize(self, shutil.rmtree, self._cache_dir, ignore_errors=True)
        # stderr goes to a file, never a pipe: GStreamer warnings must not fill a pipe
        # nobody reads and block the server.
        self._stderr = tempfile.TemporaryFile(prefix="rtsp_server-", suffix=".log")
        started = time.monotonic()
        self._process = subprocess.Popen(
            self.command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            start_new_session=True,  # its own process group: kill() reaches every child
        )
        self.paused = False
        _LIVE.add(self)
        try:
            port = self._wait_ready(self._process, started + self.ready_timeout)
        except BaseException:
            self.kill()
            raise
        self.ready_seconds = time.monotonic() - started
        if self.port and port != self.port:
            self.kill()
            raise RtspServerError(f"server bound port {port}, expected {self.port}")
        self.port = port
        return self

    def _wait_ready(self, process: subprocess.Popen[bytes], deadline: float) -> int:
        """Read stdout until ``READY rtsp://127.0.0.1:PORT``; return PORT.

        Raw ``os.read`` with a selector so the timeout holds even when the server
        prints a partial line or nothing at all.
        """
        assert process.stdout is not None
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RtspServerError(f"no READY line within {self.ready_timeout} s\n{self.stderr_text()}")
                if not selector.select(timeout=remaining):
                    continue
                chunk = os.read(process.stdout.fileno(), 4096)
                if not chunk:
                    process.wait(timeout=5)
                    raise RtspServerError(
                        f"RTSP server exited with status {process.returncode} before READY\n{self.stderr_text()}"
                    )
                buffer += chunk
        process.stdout.close()  # nothing else is ever printed there
        line = buffer.split(b"\n", 1)[0].decode(errors="replace").strip()
        if not line.startswith(READY_PREFIX):
            raise RtspServerError(f"unexpected first line {line!r}\n{self.stderr_text()}")
        return int(line.rsplit(":", 1)[1])

    def kill(self) -> None:
        """SIGKILL the server's process group: the camera vanishes, connections reset."""
        self._signal(signal.SIGKILL)
        self._reap(timeout=5.0)

    def terminate(self, timeout: float = 5.0) -> None:
        """SIGTERM (graceful: the main loop quits), then SIGKILL after ``timeout``."""
        if not self.running:
            self._reap(timeout=0)
            return
        self._signal(signal.SIGTERM)
        self._signal(signal.SIGCONT)  # a paused server only acts on SIGTERM once continued
        self.paused = False
        try:
            assert self._process is not None
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
        self._reap(timeout=5.0)

    def restart(self) -> RtspServer:
        """Kill the server if it still runs, then start it again on the same port and mounts."""
        if self.port is None:
            raise RtspServerError("restart() before the first start()")
        if self.running:
            self.kill()
        return self.start()

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing, like a hung camera."""
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after ``pause()``."""
        self._signal(signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        """Stop for good (graceful, then forced); safe to call any number of times."""
        try:
            self.terminate()
        finally:
            self._close_stderr()
            self._remove_cache()

    def __enter__(self) -> RtspServer:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- inspection

    @property
    def running(self) -> bool:
        """Whether the server process exists and has not exited (paused counts as running)."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's pid (also its process group id), or None before start."""
        return self._process.pid if self._process is not None else None

    @property
    def base_url(self) -> str:
        """``rtsp://127.0.0.1:PORT``."""
        if self.port is None:
            raise RtspServerError("the server has not been started")
        return f"rtsp://{HOST}:{self.port}"

    def url(self, mount: str, user: str | None = None, password: str | None = None) -> str:
        """The URL of ``mount``, with ``user:password@`` credentials when given.

        Credentials are percent-encoded, so test passwords may contain ``@`` or ``:``.
        The mount need not exist: a wrong mount is a useful 404 test.
        """
        base = self.base_url
        if user is not None:
            userinfo = quote(user, safe="") + (":" + quote(password, safe="") if password is not None else "")
            base = base.replace("rtsp://", f"rtsp://{userinfo}@", 1)
        return f"{base}/{mount.strip('/')}"

    def stderr_text(self) -> str:
        """The server's stderr so far (GStreamer warnings, our log lines), for messages."""
        if self._stderr is None or self._stderr.closed:
            return ""
        self._stderr.flush()
        position = self._stderr.tell()
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace")
        self._stderr.seek(position)
        return text

    # ------------------------------------------------------------------ internals

    def _signal(self, signum: int) -> None:
        """Send ``signum`` to the whole process group, ignoring a group already gone."""
        if self._process is None or self._process.returncode is not None:
            return
        try:
            os.killpg(self._process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def _reap(self, timeout: float) -> None:
        """Collect the exit status and close our end of its stdin (no zombie, no fd leak)."""
        process = self._process
        if process is None:
            return
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return
        if process.stdin is not None and not process.stdin.closed:
            try:
                process.stdin.close()
            except OSError:
                pass
        if process.stdout is not None and not process.stdout.closed:
            process.stdout.close()
        self.paused = False
        _LIVE.discard(self)

    def _remove_cache(self) -> None:
        """Delete the decoded-frame cache (tens of MB per clip) once the server is gone."""
        if self._cache_cleanup is not None:
            self._cache_cleanup()
        self._cache_dir = None
        self._cache_cleanup = None

    def _close_stderr(self) -> None:
        if self._stderr is not None and not self._stderr.closed:
            self._stderr.close()
        self._stderr = None

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.running else "stopped"
        return f"RtspServer({self.base_url if self.port else 'unbound'}, mounts={sorted(self.mounts)}, {state})"


def rtsp_server_fixture(
    mounts: Mapping[str, str | os.PathLike[str]] | None = None,
    *,
    scope: str = "module",
    name: str | None = None,
    **options: Any,
) -> Callable[..., Iterator[RtspServer]]:
    """Build a pytest fixture yielding a started ``RtspServer`` (skips via ``require_rtsp``).

    ``cam = rtsp_server_fixture({"cam": "sample:bikes"})`` in a test module or conftest
    defines a fixture ``cam``; ``options`` go to ``RtspServer``. The server is stopped at
    the end of ``scope`` even when the test fails.
    """

    @pytest.fixture(scope=scope, name=name)  # type: ignore[call-overload, misc]
    def _rtsp_server() -> Iterator[RtspServer]:
        require_rtsp()
        server = RtspServer(mounts, **options)
        try:
            yield server.start()
        finally:
            server.stop()

    return _rtsp_server

"""Drive headless Chromium from tests: load a page, wait for a condition, screenshot it.

Why not ``chromium --screenshot`` / ``--dump-dom``: those wait for the page to finish
loading under a virtual clock, and a page with an MJPEG ``<img>`` whose stream sends
nothing yet (a camera that is down) never finishes; Chromium then hangs until killed.
So this module speaks the DevTools protocol over its websocket (stdlib only: a minimal
RFC 6455 client) and waits on the real clock for a JavaScript condition instead.

Usage::

    from tests.browser import Chromium, dump_dom, screenshot

    png = screenshot(url, tmp_path / "page.png", wait_for="document.body.dataset.ready === '1'")
    html = dump_dom(url, wait_for="...")
    with Chromium(size=(1280, 900)) as browser:   # several steps in one browser
        browser.goto(url)
        browser.wait_for("document.images.length > 0", timeout=10)
        state = browser.evaluate("document.querySelector('.tile').dataset.state")
        browser.screenshot(tmp_path / "a.png")

Chromium missing: skip, or fail under ``CI=true`` (the rule of ``tests/conftest.py``).
Every browser runs in its own process group with a throwaway profile and is killed
(SIGKILL to the group) on close, on timeout and at interpreter exit.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
import weakref
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from tests.conftest import require_tool

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)

_LIVE: weakref.WeakSet[Chromium] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for browser in list(_LIVE):
        browser.kill()


class BrowserError(RuntimeError):
    """Chromium did not start, crashed, or a DevTools command failed; carries its log tail."""


class _WebSocket:
    """Just enough of RFC 6455 for DevTools: masked text frames out, unmasked frames in."""

    def __init__(self, url: str, timeout: float) -> None:
        rest = url.removeprefix("ws://")
        hostport, _, path = rest.partition("/")
        host, _, port = hostport.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        self._buffer = b""
        head = self._read_until(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise BrowserError(f"DevTools websocket handshake failed: {head[:200]!r}")

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buffer:
            self._fill()
        head, _, self._buffer = self._buffer.partition(marker)
        return head

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise BrowserError("DevTools websocket closed by Chromium")
        self._buffer += chunk

    def _read_exact(self, count: int) -> bytes:
        while len(self._buffer) < count:
            self._fill()
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def send_text(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        mask = os.urandom(4)
        key = int.from_bytes((mask * (length // 4 + 1))[:length], "big") if length else 0
        masked = (int.from_bytes(payload, "big") ^ key).to_bytes(length, "big") if length else b""
        self.sock.sendall(header + mask + masked)

    def recv_text(self) -> str:
        parts: list[bytes] = []
        while True:
            first, second = self._read_exact(2)
            opcode, final = first & 0x0F, bool(first & 0x80)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self._read_exact(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", self._read_exact(8))
            mask = self._read_exact(4) if second & 0x80 else b""
            payload = self._read_exact(length)
            if mask:
                payload = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
            if opcode == 0x8:
                raise BrowserError("DevTools websocket closed by Chromium")
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode in (0x0, 0x1, 0x2):
                parts.append(payload)
                if final:
                    return b"".join(parts).decode()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Chromium:
    """One headless Chromium with one page, driven over the DevTools protocol.

    ``timeout`` bounds each protocol command and the start; a command that takes longer
    kills the browser and raises :class:`BrowserError`.
    """

    def __init__(self, size: tuple[int, int] = (1280, 900), timeout: float = 30.0) -> None:
        self.binary = require_tool("chromium")
        self.size = size
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self._log: IO[bytes] = tempfile.TemporaryFile(prefix="chromium-", suffix=".log")
        self._process: subprocess.Popen[bytes] | None = None
        self._ws: _WebSocket | None = None
        self._next_id = 0

    def start(self) -> Chromium:
        width, height = self.size
        command = [
            self.binary, *FLAGS, f"--user-data-dir={self._profile}", f"--window-size={width},{height}", "about:blank",
        ]
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, start_new_session=True
        )
        _LIVE.add(self)
        try:
            port = self._wait_for_port()
            self._ws = _WebSocket(self._page_websocket(port), self.timeout)
            self.call("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_for_port(self) -> int:
        """The DevTools port, from the ``DevToolsActivePort`` file Chromium writes when ready."""
        marker = Path(self._profile, "DevToolsActivePort")
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise BrowserError(f"Chromium exited with status {self._process.returncode}:\n{self.log_tail()}")
            try:
                lines = marker.read_text().split()
            except OSError:
                lines = []
            if lines and lines[0].isdigit():
                return int(lines[0])
            time.sleep(0.05)
        raise BrowserError(f"Chromium did not open its DevTools port within {self.timeout:.0f} s:\n{self.log_tail()}")

    def _page_websocket(self, port: int) -> str:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=self.timeout) as response:
                targets = json.load(response)
            for target in targets:
                if target.get("type") == "page" and "webSocketDebuggerUrl" in target:
                    return str(target["webSocketDebuggerUrl"])
            time.sleep(0.05)
        raise BrowserError("Chromium opened no page target")

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one DevTools command and return its result (events in between are ignored)."""
        if self._ws is None:
            raise BrowserError("Chromium is not running")
        self._next_id += 1
        ident = self._next_id
        self._ws.sock.settimeout(self.timeout)
        try:
            self._ws.send_text(json.dumps({"id": ident, "method": method, "params": params or {}}))
            while True:
                message = json.loads(self._ws.recv_text())
                if message.get("id") == ident:
                    break
        except (OSError, BrowserError) as exc:
            self.kill()
            raise BrowserError(f"DevTools {method} failed ({exc}):\n{self.log_tail()}") from None
        if "error" in message:
            raise BrowserError(f"DevTools {method} failed: {message['error']}")
        return dict(message.get("result", {}))

    def goto(self, url: str) -> None:
        """Navigate and return once the response is committed (not after ``load``: a page
        with endless MJPEG streams may never fire it)."""
        result = self.call("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"cannot load {url}: {result['errorText']}")

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression (promises are awaited)."""
        result = self.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"JavaScript failed: {result['exceptionDetails'].get('text')} in {expression!r}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 20.0, interval: float = 0.1) -> Any:
        """Poll ``expression`` until it is truthy and return its value; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        value: Any = None
        while True:
            try:
                value = self.evaluate(expression)
            except BrowserError as exc:
                if self._ws is None:
                    raise
                value = f"<{exc}>"
            else:
                if value:
                    return value
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"page never satisfied {expression!r} within {timeout:.0f} s (last value {value!r});\n"
                    f"DOM: {self.dom()[:3000]}"
                )
            time.sleep(interval)

    def dom(self) -> str:
        """The live DOM serialized (attributes as the page's script left them)."""
        return str(self.evaluate("document.documentElement.outerHTML"))

    def screenshot(self, path: str | os.PathLike[str]) -> Path:
        """A PNG of the viewport, written to ``path``."""
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        target = Path(path)
        target.write_bytes(base64.b64decode(data))
        return target

    def log_tail(self, limit: int = 3000) -> str:
        """The end of Chromium's stdout and stderr, for error messages."""
        try:
            self._log.seek(0)
            return self._log.read().decode(errors="replace")[-limit:]
        except (OSError, ValueError):
            return ""

    def kill(self) -> None:
        """SIGKILL the whole process group and remove the profile; safe to call twice."""
        if self._ws is not None:
            self._ws.close()
            self._ws = None
        process = self._process
        if process is not None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self._process = None
        _LIVE.discard(self)
        shutil.rmtree(self._profile, ignore_errors=True)

    def close(self) -> None:
        self.kill()
        self._log.close()

    def __enter__(self) -> Chromium:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _load(browser: Chromium, url: str, wait_s: float, wait_for: str | None) -> None:
    browser.goto(url)
    if wait_for is None:
        time.sleep(wait_s)
    else:
        browser.wait_for(wait_for, timeout=wait_s)


def screenshot(
    url: str,
    path: str | os.PathLike[str],
    size: tuple[int, int] = (1280, 900),
    wait_s: float = 20.0,
    wait_for: str | None = None,
) -> Path:
    """Load ``url`` in a fresh browser and save a PNG of the viewport to ``path``.

    With ``wait_for`` (a JavaScript expression) the shot is taken as soon as it is truthy,
    failing after ``wait_s``; without it, after ``wait_s`` seconds.
    """
    with Chromium(size=size) as browser:
        _load(browser, url, wait_s, wait_for)
        return browser.screenshot(path)


def dump_dom(url: str, wait_s: float = 20.0, wait_for: str | None = None, size: tuple[int, int] = (1280, 900)) -> str:
    """Load ``url`` in a fresh browser and return the live DOM (``wait_s``/``wait_for`` as in
    :func:`screenshot`)."""
    with Chromium(size=size) as browser:
        _load(browser, url, wait_s, wait_for)
        return browser.dom()


def video_state(video: str | os.PathLike[str]) -> dict[str, Any]:
    """What a ``<video>`` element in headless Chromium makes of ``video``, served on loopback:
    ``{"error": code}`` when it refuses it, else its size and duration once the first picture
    is decoded (readyState 2)."""
    import http.server
    import socketserver
    import threading

    video = Path(video)
    page = video.parent / "index.html"
    page.write_text(f'<video id="v" src="{video.name}" muted preload="auto"></video>')
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(video.parent))  # noqa: E731
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with Chromium() as browser:
                browser.goto(f"http://127.0.0.1:{server.server_address[1]}/index.html")
                return dict(browser.wait_for(
                    "(() => { const v = document.getElementById('v');"
                    " return v && (v.error ? {error: v.error.code} : v.readyState >= 2 &&"
                    " {w: v.videoWidth, h: v.videoHeight, duration: v.duration}); })()",
                    timeout=30,
                ))
        finally:
            server.shutdown()

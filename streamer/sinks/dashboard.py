"""The monitoring web dashboard: live MJPEG tiles, JSON stats and Prometheus metrics.

Standard library only (``http.server``), so a monitoring box needs nothing beyond the
pipeline's own dependencies, and nothing is ever served from disk: every route is an exact
match and the page is a string constant, which rules out path traversal by construction.

Two halves:

* :class:`DashboardHub` sits between the pipeline and the web server. Pipeline threads call
  :meth:`DashboardHub.publish` with every rendered frame; the hub JPEG-encodes at most
  ``max_fps`` frames per camera (the rest return at once, so the pipeline never pays for
  frames nobody can watch) and keeps only the newest JPEG. Web threads block in
  :meth:`DashboardHub.wait_frame` until a newer one exists.
* :class:`DashboardServer` serves it on a ``ThreadingHTTPServer`` in a daemon thread.

Routes (GET and HEAD; any other method is 405; anything else is 404):

==========================  ===============================================================
``/``                       the page (one tile per camera, status polled every second)
``/stream/NAME.mjpg``       ``multipart/x-mixed-replace`` MJPEG of camera NAME (URL-encoded)
``/snapshot/NAME.jpg``      the newest JPEG; 503 with ``Retry-After: 1`` until the first
                            frame exists (404 is kept for unknown cameras)
``/api/stats``              ``hub.stats()`` as JSON (NaN and infinities become ``null``)
``/metrics``                Prometheus text exposition format 0.0.4
``/favicon.ico``            204
==========================  ===============================================================

With a token every route needs ``Authorization: Bearer TOKEN`` or the cookie that
``/?token=TOKEN`` sets (then 303 to ``/``). The cookie holds an HMAC of the token, not the
token itself. Without either: 401 with ``WWW-Authenticate: Bearer``.

Browsers open at most six HTTP/1.1 connections per host and port, and an MJPEG stream holds
one for good; so the page streams the first :data:`MJPEG_TILES` cameras and refreshes the
others from ``/snapshot`` (a few frames per second), which leaves connections for the stats
poll. For the same reason a second tab of the dashboard in the same browser may stall.

The stats dict, produced by the pipeline's provider callable (keys may be missing; numbers
may be ``None``; both are skipped in the metrics)::

    {"uptime_s": float,
     "model": {"name": str, "backend": str, "device": str,
               "batch_size_mean": float, "batches": int},
     "cameras": {NAME: {"state": "connecting|streaming|stalled|reconnecting|down|ended",
                        "fps": float, "latency_ms_p50": float, "latency_ms_p95": float,
                        "dropped": int, "reconnects": int, "frames": int,
                        "url": str (already password-masked), "last_error": str | None,
                        "size": str | None}},
     "stages": {STAGE: {"processed": int, "dropped": int, "p50_ms": float, "p95_ms": float,
                        "fps": float, "queue_depth": int}}}

The provider is called from web server threads (once per ``/api/stats`` or ``/metrics``
request), so it must be thread-safe and cheap.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import math
import re
import secrets
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, unquote

import cv2
import numpy as np

from streamer.errors import ConfigError, SinkError

log = logging.getLogger(__name__)

CAMERA_STATES = ("connecting", "streaming", "stalled", "reconnecting", "down", "ended")
MJPEG_TILES = 4
COOKIE_NAME = "streamer_token"
BOUNDARY = "streamerframe"

_POLL_S = 0.2  # how often streaming handlers and serve_forever look at the stop flag
_SOCKET_TIMEOUT_S = 30.0  # idle request reads and stuck MJPEG writes give up after this
_TOKEN_IN_TEXT = re.compile(r"(token=)[^&\s\"']*", re.IGNORECASE)
_STREAM_PATH = re.compile(r"/stream/([^/]+)\.mjpg")
_SNAPSHOT_PATH = re.compile(r"/snapshot/([^/]+)\.jpg")

StatsProvider = Callable[[], Mapping[str, Any]]


class _Slot:
    """The newest JPEG of one camera and the encode schedule that throttles it."""

    __slots__ = ("seq", "jpeg", "next_due", "busy", "encoded", "skipped")

    def __init__(self) -> None:
        self.seq = 0
        self.jpeg: bytes | None = None
        self.next_due = 0.0
        self.busy = False
        self.encoded = 0
        self.skipped = 0


class DashboardHub:
    """Thread-safe store of each camera's newest JPEG plus the stats provider.

    ``max_fps`` caps JPEG encodes per camera: a browser cannot use more, and encoding costs
    milliseconds per frame on the pipeline thread that calls :meth:`publish`. ``max_width``
    optionally downscales wider frames before encoding (for 4K cameras on a small screen).
    """

    def __init__(
        self,
        cameras: list[str],
        stats: StatsProvider,
        max_fps: float = 15,
        quality: int = 80,
        max_width: int | None = None,
    ) -> None:
        if len(set(cameras)) != len(cameras):
            raise ConfigError(f"dashboard camera names must be unique, but got {list(cameras)}")
        if not max_fps > 0:
            raise ConfigError(f"dashboard max_fps must be > 0, but got {max_fps}")
        if not 1 <= quality <= 100:
            raise ConfigError(f"dashboard JPEG quality must be between 1 and 100, but got {quality}")
        if max_width is not None and max_width < 16:
            raise ConfigError(f"dashboard max_width must be at least 16, but got {max_width}")
        self._cameras = list(cameras)
        self._stats = stats
        self.max_fps = float(max_fps)
        self.quality = int(quality)
        self.max_width = max_width
        self._interval = 1.0 / self.max_fps
        self._slots = {name: _Slot() for name in self._cameras}
        self._cond = threading.Condition()
        self._warned_unknown: set[str] = set()

    @property
    def cameras(self) -> list[str]:
        """Camera names in display order (a copy)."""
        return list(self._cameras)

    def publish(self, camera: str, image_bgr: np.ndarray) -> bool:
        """Offer a rendered frame; return whether it was encoded (False when throttled).

        The encode runs outside the lock so other cameras and waiting web threads are not
        held up; a frame offered while the same camera's previous one is still encoding is
        skipped rather than queued.
        """
        slot = self._slots.get(camera)
        if slot is None:
            if camera not in self._warned_unknown:
                self._warned_unknown.add(camera)
                log.warning("dashboard: frames of unknown camera %r are ignored", camera)
            return False
        now = time.monotonic()
        with self._cond:
            if slot.busy or now < slot.next_due:
                slot.skipped += 1
                return False
            slot.busy = True
            late = now - slot.next_due
            slot.next_due = slot.next_due + self._interval if late < self._interval else now + self._interval
        jpeg: bytes | None = None
        try:
            jpeg = self._encode(image_bgr)
        finally:
            with self._cond:
                slot.busy = False
                if jpeg is not None:
                    slot.jpeg = jpeg
                    slot.seq += 1
                    slot.encoded += 1
                    self._cond.notify_all()
        return jpeg is not None

    def _encode(self, image: np.ndarray) -> bytes | None:
        if self.max_width is not None and image.ndim >= 2 and image.shape[1] > self.max_width:
            height = max(1, round(image.shape[0] * self.max_width / image.shape[1]))
            image = cv2.resize(image, (self.max_width, height), interpolation=cv2.INTER_AREA)
        try:
            ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        except cv2.error as exc:
            log.debug("dashboard: cannot encode a frame of shape %s: %s", getattr(image, "shape", "?"), exc)
            return None
        return buffer.tobytes() if ok else None

    def latest(self, camera: str) -> tuple[int, bytes] | None:
        """The newest ``(seq, jpeg)`` of ``camera``, or None before its first frame.

        Raises ``KeyError`` for a camera the hub does not know.
        """
        slot = self._slots[camera]
        with self._cond:
            return (slot.seq, slot.jpeg) if slot.jpeg is not None else None

    def wait_frame(self, camera: str, after_seq: int, timeout: float) -> tuple[int, bytes] | None:
        """Block until ``camera`` has a JPEG newer than ``after_seq``; None after ``timeout`` s.

        Raises ``KeyError`` for a camera the hub does not know.
        """
        slot = self._slots[camera]
        with self._cond:
            self._cond.wait_for(lambda: slot.seq > after_seq and slot.jpeg is not None, timeout)
            if slot.seq > after_seq and slot.jpeg is not None:
                return slot.seq, slot.jpeg
            return None

    def encoded(self, camera: str) -> int:
        """How many JPEGs were encoded for ``camera`` (to check throttling)."""
        with self._cond:
            return self._slots[camera].encoded

    def stats(self) -> dict[str, Any]:
        """The provider's stats dict (see the module docstring for its schema)."""
        return dict(self._stats())

    def metrics_text(self) -> str:
        """``stats()`` in the Prometheus text exposition format (version 0.0.4)."""
        return render_metrics(self.stats(), {name: self.encoded(name) for name in self._cameras})


class _Family:
    """One metric family: HELP and TYPE once, then its samples."""

    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name = name
        self.kind = kind
        self.help_text = help_text
        self.samples: list[str] = []

    def add(self, labels: Mapping[str, object], value: object) -> None:
        number = _number(value)
        if number is None:
            return
        if labels:
            text = ",".join(f'{key}="{_escape_label(str(val))}"' for key, val in labels.items())
            self.samples.append(f"{self.name}{{{text}}} {number}")
        else:
            self.samples.append(f"{self.name} {number}")

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {_escape_help(self.help_text)}"
        yield f"# TYPE {self.name} {self.kind}"
        yield from self.samples


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: object) -> str | None:
    """Prometheus spelling of a number; None for anything that is not one."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if math.isnan(number):
            return "NaN"
        if math.isinf(number):
            return "+Inf" if number > 0 else "-Inf"
        return repr(number)
    return None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def render_metrics(stats: Mapping[str, Any], encoded: Mapping[str, int] | None = None) -> str:
    """Render a stats dict (schema in the module docstring) as Prometheus text.

    Counters carry the ``_total`` suffix; percentiles are gauges with a ``quantile`` label
    because the pipeline keeps no running sum and count that a summary would need.
    """
    families: dict[str, _Family] = {}

    def family(name: str, kind: str, help_text: str) -> _Family:
        return families.setdefault(name, _Family(name, kind, help_text))

    up = family("streamer_camera_up", "gauge", "1 while the camera is streaming, else 0.")
    state_f = family("streamer_camera_state", "gauge", "1 for the camera's current connection state, 0 for the others.")
    fps = family("streamer_camera_fps", "gauge", "Frames per second read from the camera.")
    latency = family("streamer_camera_latency_ms", "gauge", "Capture-to-output latency percentiles in milliseconds.")
    dropped = family("streamer_camera_dropped_frames_total", "counter", "Frames of the camera dropped by the pipeline.")
    reconnects = family("streamer_camera_reconnects_total", "counter", "Reconnections to the camera.")
    frames = family("streamer_camera_frames_total", "counter", "Frames read from the camera.")
    for name, cam in _mapping(stats.get("cameras")).items():
        cam = _mapping(cam)
        labels = {"camera": name}
        current = cam.get("state")
        up.add(labels, 1 if current == "streaming" else 0)
        states = list(CAMERA_STATES)
        if isinstance(current, str) and current not in states:
            states.append(current)
        for state in states:
            state_f.add({"camera": name, "state": state}, 1 if state == current else 0)
        fps.add(labels, cam.get("fps"))
        latency.add({"camera": name, "quantile": "0.5"}, cam.get("latency_ms_p50"))
        latency.add({"camera": name, "quantile": "0.95"}, cam.get("latency_ms_p95"))
        dropped.add(labels, cam.get("dropped"))
        reconnects.add(labels, cam.get("reconnects"))
        frames.add(labels, cam.get("frames"))

    stage_time = family(
        "streamer_stage_time_ms", "gauge", "Per-item processing time percentiles of the stage in milliseconds."
    )
    stage_fps = family("streamer_stage_fps", "gauge", "Items per second processed by the stage.")
    processed = family("streamer_stage_processed_total", "counter", "Items processed by the stage.")
    stage_dropped = family("streamer_stage_dropped_total", "counter", "Items dropped in front of the stage.")
    depth = family("streamer_stage_queue_depth", "gauge", "Items waiting in the stage's input queue.")
    for name, stage in _mapping(stats.get("stages")).items():
        stage = _mapping(stage)
        labels = {"stage": name}
        stage_time.add({"stage": name, "quantile": "0.5"}, stage.get("p50_ms"))
        stage_time.add({"stage": name, "quantile": "0.95"}, stage.get("p95_ms"))
        stage_fps.add(labels, stage.get("fps"))
        processed.add(labels, stage.get("processed"))
        stage_dropped.add(labels, stage.get("dropped"))
        depth.add(labels, stage.get("queue_depth"))

    model = _mapping(stats.get("model"))
    info = family("streamer_model_info", "gauge", "The model in use (always 1; the labels carry the information).")
    if model:
        info.add({key: str(model.get(key) or "") for key in ("name", "backend", "device")}, 1)
    batch_mean = family("streamer_model_batch_size_mean", "gauge", "Mean inference batch size.")
    batch_mean.add({}, model.get("batch_size_mean"))
    family("streamer_model_batches_total", "counter", "Inference batches run.").add({}, model.get("batches"))
    family("streamer_uptime_seconds", "gauge", "Seconds since the pipeline started.").add({}, stats.get("uptime_s"))

    jpegs = family("streamer_dashboard_jpeg_frames_total", "counter", "Frames JPEG-encoded for the dashboard.")
    for name, count in (encoded or {}).items():
        jpegs.add({"camera": name}, count)

    lines = [line for fam in families.values() for line in fam.lines()]
    return "\n".join(lines) + "\n"


def _json_safe(value: Any) -> Any:
    """Replace NaN and infinities by None, which JSON (and the page's JSON.parse) accepts."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(key): _json_safe(val) for key, val in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(val) for val in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def mask_token(text: str) -> str:
    """``/?token=secret&x=1`` → ``/?token=***&x=1``, for logs."""
    return _TOKEN_IN_TEXT.sub(r"\1***", text)


class _Server(ThreadingHTTPServer):
    """The HTTP server with what the handlers need and the sockets ``stop`` must cut."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], hub: DashboardHub, token: str | None, family: int) -> None:
        self.address_family = family
        self.hub = hub
        self.token = token
        self.cookie_value = _cookie_value(token) if token is not None else None
        self.stopping = threading.Event()
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Bind without ``HTTPServer``'s reverse DNS lookup, which stalls on offline machines."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("dashboard: request from %s failed", client_address, exc_info=True)

    def cut_connections(self) -> None:
        """Shut down every open client socket so handlers blocked in a write return."""
        with self.connections_lock:
            connections = list(self.connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _cookie_value(token: str) -> str:
    """What the cookie holds: an HMAC of the token, so the cookie jar never has the token."""
    return hmac.new(token.encode(), b"streamer-dashboard-cookie", hashlib.sha256).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "streamer-dashboard"
    timeout = _SOCKET_TIMEOUT_S

    def version_string(self) -> str:
        """No Python version in the Server header."""
        return self.server_version

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("dashboard %s: %s", self.address_string(), mask_token(format % args))

    def __getattr__(self, name: str) -> Any:
        """Answer every method other than GET and HEAD with 405 (the base class says 501)."""
        if name.startswith("do_"):
            return self._method_not_allowed
        raise AttributeError(name)

    def _method_not_allowed(self) -> None:
        """405; a small request body is read first so closing the socket does not reset it
        (a reset can make the client lose the response)."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if 0 < length <= 1 << 16:
            self.rfile.read(length)
        self._send_text(HTTPStatus.METHOD_NOT_ALLOWED, "405 method not allowed\n", {"Allow": "GET, HEAD"})

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        self._dispatch(head=False)

    def do_HEAD(self) -> None:  # noqa: N802 - the base class's name
        self._dispatch(head=True)

    def _dispatch(self, head: bool) -> None:
        path, _, query = self.path.partition("?")
        path = path.partition("#")[0]
        hub = self.server.hub
        if self.server.token is not None:
            params = parse_qs(query, keep_blank_values=True)
            if path == "/" and "token" in params:
                self._accept_query_token(params["token"][0])
                return
            if not self._authorized():
                self._unauthorized()
                return
        if path == "/":
            self._send_body(HTTPStatus.OK, "text/html; charset=utf-8", *render_page(hub.cameras), head=head)
            return
        if path == "/api/stats":
            stats = self._stats_or_500()
            if stats is not None:
                body = json.dumps(_json_safe(stats), allow_nan=False, default=str).encode()
                self._send_body(HTTPStatus.OK, "application/json", body, head=head, no_store=True)
            return
        if path == "/metrics":
            stats = self._stats_or_500()
            if stats is not None:
                text = render_metrics(stats, {name: hub.encoded(name) for name in hub.cameras})
                content_type = "text/plain; version=0.0.4; charset=utf-8"
                self._send_body(HTTPStatus.OK, content_type, text.encode(), head=head, no_store=True)
            return
        if path == "/favicon.ico":
            self.send_response(HTTPStatus.NO_CONTENT)
            self._common_headers()
            self.end_headers()
            return
        match = _STREAM_PATH.fullmatch(path)
        if match and unquote(match.group(1)) in hub.cameras:
            self._stream(unquote(match.group(1)), head)
            return
        match = _SNAPSHOT_PATH.fullmatch(path)
        if match and unquote(match.group(1)) in hub.cameras:
            latest = hub.latest(unquote(match.group(1)))
            if latest is None:
                self._send_text(HTTPStatus.SERVICE_UNAVAILABLE, "503 no frame yet\n", {"Retry-After": "1"}, head=head)
            else:
                self._send_body(HTTPStatus.OK, "image/jpeg", latest[1], head=head, no_store=True)
            return
        self._send_text(HTTPStatus.NOT_FOUND, "404 not found\n", head=head)

    def _authorized(self) -> bool:
        expected = self.server.token
        assert expected is not None and self.server.cookie_value is not None
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode()):
            return True
        for raw in self.headers.get_all("Cookie", []):
            try:
                cookie = SimpleCookie(raw)
            except CookieError:
                continue
            morsel = cookie.get(COOKIE_NAME)
            if morsel is not None and hmac.compare_digest(morsel.value.encode(), self.server.cookie_value.encode()):
                return True
        return False

    def _accept_query_token(self, given: str) -> None:
        expected = self.server.token
        assert expected is not None and self.server.cookie_value is not None
        if not hmac.compare_digest(given.encode(), expected.encode()):
            self._unauthorized()
            return
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Location", "/")
        self.send_header("Set-Cookie", f"{COOKIE_NAME}={self.server.cookie_value}; Path=/; HttpOnly; SameSite=Strict")
        self.send_header("Content-Length", "0")
        self._common_headers(no_store=True)
        self.end_headers()

    def _unauthorized(self) -> None:
        self._send_text(
            HTTPStatus.UNAUTHORIZED,
            "401 unauthorized: open /?token=TOKEN once, or send the header 'Authorization: Bearer TOKEN'\n",
            {"WWW-Authenticate": 'Bearer realm="streamer"'},
            head=self.command == "HEAD",
        )

    def _stats_or_500(self) -> Mapping[str, Any] | None:
        try:
            return self.server.hub.stats()
        except Exception:
            log.warning("dashboard: the stats provider failed", exc_info=True)
            self._send_text(HTTPStatus.INTERNAL_SERVER_ERROR, "500 stats unavailable\n", head=self.command == "HEAD")
            return None

    def _stream(self, camera: str, head: bool) -> None:
        """MJPEG: each part is followed at once by the next boundary, because browsers only
        paint a part when they see the boundary after it (else every frame shows one late)."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self._common_headers(no_store=True)
        self.send_header("Connection", "close")
        self.end_headers()
        if head:
            return
        hub = self.server.hub
        seq = 0
        try:
            self.wfile.write(f"--{BOUNDARY}\r\n".encode())
            self.wfile.flush()
            while not self.server.stopping.is_set():
                got = hub.wait_frame(camera, seq, _POLL_S)
                if got is None:
                    continue
                seq, jpeg = got
                header = f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                self.wfile.write(header + jpeg + f"\r\n--{BOUNDARY}\r\n".encode())
                self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True

    def _common_headers(self, no_store: bool = False) -> None:
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        if no_store:
            self.send_header("Cache-Control", "no-store")

    def _send_body(
        self, status: HTTPStatus, content_type: str, body: bytes, nonce: str | None = None,
        head: bool = False, no_store: bool = False,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if nonce is not None:
            self.send_header(
                "Content-Security-Policy",
                f"default-src 'none'; img-src 'self'; connect-src 'self'; script-src 'nonce-{nonce}'; "
                f"style-src 'nonce-{nonce}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            )
            no_store = True
        self._common_headers(no_store=no_store)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _send_text(
        self, status: HTTPStatus, text: str, headers: Mapping[str, str] | None = None, head: bool = False
    ) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self._common_headers(no_store=True)
        self.end_headers()
        if not head:
            self.wfile.write(body)


class DashboardServer:
    """Serves a :class:`DashboardHub` over HTTP from a daemon thread.

    ``port=0`` picks a free port (see :attr:`bound_port`). ``stop()`` returns promptly even
    with MJPEG clients connected: it cuts their sockets, and their handlers check the stop
    flag every 0.2 s.
    """

    def __init__(self, hub: DashboardHub, host: str = "127.0.0.1", port: int = 8080, token: str | None = None) -> None:
        if token is not None and not token:
            raise ConfigError("dashboard token must not be empty (use None for no token)")
        if not 0 <= port <= 65535:
            raise ConfigError(f"dashboard port must be between 0 and 65535, but got {port}")
        self.hub = hub
        self.host = host
        self.port = port
        self.token = token
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve; raise ``SinkError`` when the address cannot be bound."""
        if self._server is not None:
            raise RuntimeError("the dashboard server is already running")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            server = _Server((self.host, self.port), self.hub, self.token, family)
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            if isinstance(exc, socket.gaierror):
                reason = f"unknown host ({reason})"
            raise SinkError(f"dashboard cannot listen on {self._display_host()}:{self.port}: {reason}") from None
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": _POLL_S}, name="dashboard-http", daemon=True
        )
        self._thread.start()
        log.info("dashboard on %s", self.url)

    def stop(self) -> None:
        """Stop serving and close every connection; safe to call twice or before ``start``."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.stopping.set()
        server.shutdown()
        server.server_close()
        server.cut_connections()
        if thread is not None:
            thread.join(timeout=2)

    @property
    def bound_port(self) -> int:
        """The port actually bound (differs from ``port`` when that was 0)."""
        if self._server is None:
            raise RuntimeError("the dashboard server is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://HOST:PORT/`` of the running server."""
        return f"http://{self._display_host()}:{self.bound_port}/"

    def _display_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def __enter__(self) -> DashboardServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def render_page(cameras: list[str]) -> tuple[bytes, str]:
    """The page for ``cameras`` and the CSP nonce its script and style carry.

    Names go into markup only through ``html.escape`` and into URLs only percent-encoded;
    the script reads them back from ``data-camera`` attributes, never from generated code.
    """
    nonce = secrets.token_urlsafe(16)
    tiles = []
    for index, name in enumerate(cameras):
        mode = "mjpeg" if index < MJPEG_TILES else "snapshot"
        encoded = quote(name, safe="")
        src = f"/stream/{encoded}.mjpg" if mode == "mjpeg" else f"/snapshot/{encoded}.jpg"
        tiles.append(
            _TILE.format(
                name=html.escape(name, quote=True), src=html.escape(src, quote=True), mode=mode,
            )
        )
    columns = max(1, math.ceil(math.sqrt(len(cameras))))
    page = (
        _PAGE.replace("{nonce}", nonce)
        .replace("{columns}", str(columns))
        .replace("{tiles}", "\n".join(tiles) or '<p class="empty">no cameras</p>')
    )
    return page.encode(), nonce


_TILE = """<div class="tile" data-camera="{name}" data-state="unknown" data-mode="{mode}">
<div class="view"><img alt="{name}" src="{src}" data-src="{src}"><div class="overlay">WAITING</div></div>
<div class="bar"><span class="badge">unknown</span><span class="name">{name}</span><span class="size"></span></div>
<div class="status">waiting for stats</div><div class="error"></div>
</div>"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>streamer</title>
<style nonce="{nonce}">
*{box-sizing:border-box}
body{margin:0;background:#111;color:#ddd;font:14px/1.4 system-ui,sans-serif}
header{display:flex;gap:1.5em;align-items:baseline;padding:.5em 1em;background:#1c1c1c;border-bottom:1px solid #333}
header h1{font-size:1.1em;margin:0;color:#fff}
#conn{margin-left:auto}
body[data-connected="0"] #conn{color:#f55;font-weight:bold}
.grid{display:grid;grid-template-columns:repeat({columns},minmax(0,1fr));gap:8px;padding:8px}
.tile{background:#1c1c1c;border:1px solid #333;border-radius:4px;overflow:hidden}
.view{position:relative;aspect-ratio:16/9;background:#000}
.view img{position:absolute;inset:0;width:100%;height:100%;object-fit:contain}
.overlay{position:absolute;inset:0;display:none;align-items:center;justify-content:center;
 background:rgba(0,0,0,.45);color:#fff;font-size:2em;font-weight:bold;letter-spacing:.1em}
.tile:not([data-state="streaming"]) .overlay{display:flex}
.bar{display:flex;gap:.6em;align-items:center;padding:.3em .6em}
.name{font-weight:bold;color:#fff;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.size{margin-left:auto;color:#888}
.badge{padding:0 .5em;border-radius:3px;background:#555;color:#fff;font-size:.85em;text-transform:uppercase}
.tile[data-state="streaming"] .badge{background:#1a7f37}
.tile[data-state="connecting"] .badge,.tile[data-state="reconnecting"] .badge,
.tile[data-state="stalled"] .badge{background:#b7791f}
.tile[data-state="down"] .badge,.tile[data-state="ended"] .badge{background:#c53030}
.tile[data-state="connecting"] .overlay,.tile[data-state="reconnecting"] .overlay,
.tile[data-state="stalled"] .overlay{color:#f6c453}
.tile[data-state="down"] .overlay,.tile[data-state="ended"] .overlay{color:#ff7b7b}
.status{padding:0 .6em .3em;color:#bbb;font-variant-numeric:tabular-nums}
.error{padding:0 .6em .3em;color:#f88;font-size:.85em}
.error:empty{display:none}
</style></head>
<body data-ready="0" data-connected="1">
<header><h1>streamer</h1><span id="model">model: waiting for stats</span><span id="uptime"></span>
<span id="conn"></span></header>
<main class="grid">
{tiles}
</main>
<script nonce="{nonce}">
"use strict";
const tiles = Array.from(document.querySelectorAll(".tile"));
let failures = 0;

function fmt(value, digits) {
  return typeof value === "number" && isFinite(value) ? value.toFixed(digits) : "-";
}

function subscribe(img, delay) {
  clearTimeout(img.retryTimer);
  img.retryTimer = setTimeout(() => { img.src = img.dataset.src + "?r=" + Date.now(); }, delay);
}

for (const tile of tiles) {
  const img = tile.querySelector("img");
  if (tile.dataset.mode === "snapshot") {
    img.addEventListener("load", () => subscribe(img, 250));
    img.addEventListener("error", () => subscribe(img, 1000));
  } else {
    img.addEventListener("error", () => subscribe(img, 2000));
  }
}

function render(stats) {
  const model = stats.model || {};
  document.getElementById("model").textContent =
    "model: " + (model.name || "?") + " \\u00b7 " + (model.backend || "?") + " on " + (model.device || "?") +
    " \\u00b7 mean batch " + fmt(model.batch_size_mean, 2);
  document.getElementById("uptime").textContent = "up " + fmt(stats.uptime_s, 0) + " s";
  const cameras = stats.cameras || {};
  for (const tile of tiles) {
    const cam = cameras[tile.dataset.camera] || {};
    const state = typeof cam.state === "string" ? cam.state : "unknown";
    const img = tile.querySelector("img");
    const was = tile.dataset.state;
    const recovered = state === "streaming" && was !== "streaming" && was !== "unknown";
    if (recovered && tile.dataset.mode === "mjpeg" && !img.naturalWidth) {
      subscribe(img, 0);
    }
    tile.dataset.state = state;
    tile.querySelector(".badge").textContent = state;
    tile.querySelector(".overlay").textContent = state.toUpperCase();
    tile.querySelector(".size").textContent = cam.size || "";
    tile.querySelector(".status").textContent =
      fmt(cam.fps, 1) + " fps \\u00b7 latency p50 " + fmt(cam.latency_ms_p50, 0) + " ms, p95 " +
      fmt(cam.latency_ms_p95, 0) + " ms \\u00b7 dropped " + (cam.dropped ?? "-") +
      " \\u00b7 reconnects " + (cam.reconnects ?? "-");
    tile.querySelector(".error").textContent = state === "streaming" ? "" : (cam.last_error || "");
    tile.title = cam.url || "";
  }
}

async function poll() {
  try {
    const response = await fetch("/api/stats", {cache: "no-store", credentials: "same-origin"});
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
    if (failures > 0) {
      for (const tile of tiles) subscribe(tile.querySelector("img"), 0);
    }
    failures = 0;
    document.body.dataset.connected = "1";
    document.getElementById("conn").textContent = "";
    document.body.dataset.ready = "1";
  } catch (error) {
    failures += 1;
    document.body.dataset.connected = "0";
    document.getElementById("conn").textContent = "disconnected (" + error.message + "), retrying";
  } finally {
    setTimeout(poll, 1000);
  }
}
poll();
</script>
</body></html>
"""

"""The dashboard's HTTP server: stdlib ``ThreadingHTTPServer`` in a daemon thread.

Every route is an exact match and nothing is served from disk, which rules out path
traversal by construction. Connections are capped (``max_connections`` in all,
``max_streams`` MJPEG streams): beyond a cap the client gets 503 at once, and the rejection
is counted in ``/metrics``, so a crowd of viewers costs bounded threads and sockets. An MJPEG
handler only ever waits on the hub's newest JPEG, so a slow viewer delays nobody else.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import re
import socket
import socketserver
import threading
from collections.abc import Mapping
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote

import numpy as np

from streamer.errors import ConfigError, SinkError
from streamer.sinks.dashboard.hub import DashboardHub
from streamer.sinks.dashboard.metrics import StatsCollector, content_type, scrape
from streamer.sinks.dashboard.page import render_page

log = logging.getLogger(__name__)

COOKIE_NAME = "streamer_token"
BOUNDARY = "streamerframe"
MAX_CONNECTIONS = 128
MAX_STREAMS = 64

_POLL_S = 0.2  # how often streaming handlers and serve_forever look at the stop flag
_SOCKET_TIMEOUT_S = 30.0  # idle request reads and stuck MJPEG writes give up after this
_TOKEN_IN_TEXT = re.compile(r"(token=)[^&\s\"']*", re.IGNORECASE)
_STREAM_PATH = re.compile(r"/stream/([^/]+)\.mjpg")
_SNAPSHOT_PATH = re.compile(r"/snapshot/([^/]+)\.jpg")
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Retry-After: 5\r\nContent-Length: 35\r\nConnection: close\r\n\r\n503 too many dashboard connections\n"
)


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

    def __init__(
        self, address: tuple[str, int], hub: DashboardHub, token: str | None, family: int,
        max_connections: int = MAX_CONNECTIONS, max_streams: int = MAX_STREAMS,
    ) -> None:
        self.address_family = family
        self.hub = hub
        self.token = token
        self.cookie_value = _cookie_value(token) if token is not None else None
        self.stopping = threading.Event()
        self.max_connections = max_connections
        self.max_streams = max_streams
        self.connections: set[socket.socket] = set()
        self.active = 0  # accepted connections whose handler thread has not finished
        self.streams = 0
        self.rejected = 0
        self.connections_lock = threading.Lock()
        self.collector = StatsCollector(hub.stats, self.dashboard_stats)
        super().__init__(address, _Handler)

    def dashboard_stats(self) -> dict[str, Any]:
        """The server's own counters, for ``/metrics``."""
        with self.connections_lock:
            connections, streams, rejected = self.active, self.streams, self.rejected
        return {"encoder": self.hub.encoder_stats(), "connections": connections, "streams": streams,
                "rejected": rejected}

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Refuse a connection past ``max_connections`` before a thread is spent on it."""
        with self.connections_lock:
            full = self.active >= self.max_connections
            if full:
                self.rejected += 1
            else:
                self.active += 1
        if full:
            log.warning("dashboard: %d connections open, refusing %s", self.max_connections, client_address[0])
            try:
                request.settimeout(1.0)
                request.sendall(_BUSY)
            except OSError:
                pass
            return False
        return True

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.connections_lock:
                self.active -= 1

    def claim_stream(self) -> bool:
        """Count one more MJPEG stream; False (and a rejection counted) at ``max_streams``."""
        with self.connections_lock:
            if self.streams >= self.max_streams:
                self.rejected += 1
                return False
            self.streams += 1
            return True

    def release_stream(self) -> None:
        with self.connections_lock:
            self.streams -= 1

    def server_bind(self) -> None:
        """Bind without ``HTTPServer``'s reverse DNS lookup, which stalls on offline machines."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A vanished client is routine (debug); anything else is a bug worth a warning."""
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("dashboard: client %s went away: %s", client_address[0], exc)
        else:
            log.warning("dashboard: request from %s failed", client_address[0], exc_info=True)

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
            openmetrics = "application/openmetrics-text" in self.headers.get("Accept", "")
            try:
                body = scrape(self.server.collector, openmetrics)
            except Exception:
                log.warning("dashboard: the stats provider failed", exc_info=True)
                self._send_text(HTTPStatus.INTERNAL_SERVER_ERROR, "500 stats unavailable\n", head=head)
                return
            self._send_body(HTTPStatus.OK, content_type(openmetrics), body, head=head, no_store=True)
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
        paint a part when they see the boundary after it (else every frame shows one late).
        A slow client only ever gets the newest JPEG when its socket takes the next one."""
        if head:
            self._stream_headers()
            return
        if not self.server.claim_stream():
            log.warning("dashboard: %d MJPEG streams open, refusing %s", self.server.max_streams,
                        self.address_string())
            self._send_text(HTTPStatus.SERVICE_UNAVAILABLE, "503 too many MJPEG streams\n", {"Retry-After": "5"})
            self.close_connection = True
            return
        try:
            self._stream_headers()
            self._stream_parts(camera)
        finally:
            self.server.release_stream()
        self.close_connection = True

    def _stream_headers(self) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self._common_headers(no_store=True)
        self.send_header("Connection", "close")
        self.end_headers()

    def _stream_parts(self, camera: str) -> None:
        hub = self.server.hub
        seq = 0
        try:
            self.wfile.write(f"--{BOUNDARY}\r\n".encode())
            self.wfile.flush()
            while not self.server.stopping.is_set() and not hub.closed:
                got = hub.wait_frame(camera, seq, _POLL_S)
                if got is None:
                    continue
                seq, jpeg = got
                header = f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                self.wfile.write(header + jpeg + f"\r\n--{BOUNDARY}\r\n".encode())
                self.wfile.flush()
        except OSError:
            pass

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

    def __init__(
        self, hub: DashboardHub, host: str = "127.0.0.1", port: int = 8080, token: str | None = None,
        max_connections: int = MAX_CONNECTIONS, max_streams: int = MAX_STREAMS,
    ) -> None:
        if token is not None and not token:
            raise ConfigError("dashboard token must not be empty (use None for no token)")
        if not 0 <= port <= 65535:
            raise ConfigError(f"dashboard port must be between 0 and 65535, but got {port}")
        if max_connections < 1 or not 1 <= max_streams <= max_connections:
            raise ConfigError(
                "dashboard caps need 1 <= max_streams <= max_connections, but got "
                f"max_streams={max_streams}, max_connections={max_connections}"
            )
        self.max_connections = max_connections
        self.max_streams = max_streams
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
            server = _Server((self.host, self.port), self.hub, self.token, family, self.max_connections,
                             self.max_streams)
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

    def dashboard_stats(self) -> dict[str, Any]:
        """Open connections and streams, rejections and the JPEG encoder's counters."""
        if self._server is None:
            raise RuntimeError("the dashboard server is not running")
        return self._server.dashboard_stats()

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



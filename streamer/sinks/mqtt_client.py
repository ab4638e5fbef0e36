"""The connection to an MQTT broker: a bounded queue in front of paho-mqtt, off the sinks thread.

::

    sinks thread ──send(event)──▶ events deque (bounded, oldest dropped and counted)
                 ──retain(topic)─▶ latest value per topic (nothing to drop: newer replaces older)
                                          │
                     streamer-mqtt thread │ only while connected; JPEGs encoded here
                                          ▼
                          paho client (at most MAX_UNACKED unacknowledged) ── paho's network thread ──▶ broker

Nothing the pipeline calls waits for the network: ``send`` and ``retain`` take a lock for a
dictionary or deque operation and return. paho's own thread connects, reconnects with
backoff (``backoff_initial_s`` doubling to ``backoff_max_s``) and resends what the broker
had not acknowledged. On every (re)connection the announcements (``online``, Home Assistant
discovery) and every retained value are published again, so a broker restarted without
persistence has the whole state back. Everything is QoS 1: "published" counts the broker's
acknowledgements.

The password goes to paho and nowhere else: messages name the server and the user.
"""

from __future__ import annotations

import collections
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as paho

from streamer.config import MqttConfig
from streamer.errors import SinkError

log = logging.getLogger(__name__)

#: Messages handed to paho and not yet acknowledged: the only ones paho keeps. Past this the
#: rest wait in our own queue, where the bound and the drop counter are.
MAX_UNACKED = 100
#: Retained values are sent at most this often (the newest wins): a count that flickers
#: between frames makes one message per interval, not one per frame.
RETAIN_INTERVAL_S = 0.5
#: How often ``tick`` runs on the publisher's thread (camera states).
TICK_S = 1.0
JPEG_QUALITY = 85

Payload = str | bytes | np.ndarray


@dataclass(frozen=True)
class MqttCounters:
    """What the output has done so far: the ``mqtt`` entry of a monitor's stats."""

    server: str
    user: str | None
    connected: bool
    #: Messages the broker acknowledged.
    published: int
    #: Messages waiting: events queued while the broker is away, plus those sent but not yet
    #: acknowledged.
    queued: int
    #: Events dropped because the queue was full (the oldest go first), or still unsent at exit.
    dropped: int
    #: Connections after the first.
    reconnects: int
    last_error: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe(exc: BaseException) -> str:
    """An OS or TLS error as one line (``[Errno 111] Connection refused``)."""
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class _Client(paho.Client):
    """paho's client, remembering why the last connection attempt failed: its network thread
    retries on its own and drops the error, which a user needs to read."""

    last_error: str | None = None

    def reconnect(self) -> paho.MQTTErrorCode:
        try:
            return super().reconnect()
        except OSError as exc:
            self.last_error = describe(exc)
            raise


class MqttPublisher:
    """One broker connection with a bounded event queue and a store of retained values.

    ``announce()`` gives the retained ``(topic, payload)`` pairs published first on every
    connection; ``will_topic`` gets ``online`` then, ``offline`` at a clean close and, from the
    broker, as the last will when the process dies. ``tick()`` runs every ``TICK_S`` on the
    publisher's thread, where it may call ``retain``.
    """

    def __init__(
        self,
        cfg: MqttConfig,
        will_topic: str,
        *,
        announce: Callable[[], list[tuple[str, Payload]]] = list,
        tick: Callable[[], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.will_topic = will_topic
        self.announce = announce
        self.tick = tick
        self.client_id = cfg.client_id or f"{cfg.topic_prefix.replace('/', '-')}-{socket.gethostname()}"
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._events: collections.deque[tuple[str, bytes]] = collections.deque()
        self._retained: dict[str, Payload] = {}
        self._dirty: set[str] = set()
        self._unacked: set[int] = set()
        self._acked_early: set[int] = set()  # acknowledged before publish() returned its mid
        self._connected = False
        self._fresh = False  # connected since the worker last announced
        self._stopping = False
        self._connections = 0
        self._published = 0
        self._dropped = 0
        self._warned_full = False
        self._last_error: str | None = None
        self._answered = threading.Event()  # the first connection attempt got an answer
        self._client: _Client | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ pipeline side

    def send(self, topic: str, payload: str | bytes) -> None:
        """Queue one event message (QoS 1, not retained); never blocks."""
        data = payload.encode() if isinstance(payload, str) else payload
        with self._wake:
            if len(self._events) >= self.cfg.queue_size:
                self._events.popleft()
                self._dropped += 1
                if not self._warned_full:
                    self._warned_full = True
                    log.warning("mqtt %s: %d events queued while the broker is away; dropping the oldest "
                                "(counted in stats) until it is back", self.cfg.server, self.cfg.queue_size)
            self._events.append((topic, data))
            self._wake.notify()

    def retain(self, topic: str, payload: Payload) -> None:
        """Set the retained value of ``topic`` (a JPEG is encoded from an image later, off
        this thread); sent within ``RETAIN_INTERVAL_S`` when it differs from the last."""
        self.retain_many(((topic, payload),))

    def retain_many(self, values: Iterable[tuple[str, Payload]]) -> None:
        """:meth:`retain` for each ``(topic, payload)``, under one lock (a frame's counts)."""
        with self._lock:
            for topic, payload in values:
                old = self._retained.get(topic)
                if old is not None and not isinstance(payload, np.ndarray) and not isinstance(old, np.ndarray) \
                        and old == payload:
                    continue
                self._retained[topic] = payload
                self._dirty.add(topic)

    def counters(self) -> MqttCounters:
        with self._lock:
            return MqttCounters(
                server=self.cfg.server, user=self.cfg.user, connected=self._connected, published=self._published,
                queued=len(self._events) + len(self._unacked), dropped=self._dropped,
                reconnects=max(0, self._connections - 1), last_error=self._last_error,
            )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Connect (``required``: now, or raise SinkError in one line) and start the threads."""
        cfg = self.cfg
        if cfg.tls is not None:
            for key in ("ca", "cert", "key"):
                path = getattr(cfg.tls, key)
                if path is not None and not Path(path).is_file():
                    raise SinkError(f"mqtt.tls.{key}: {path}: no such file")
        client = _Client(paho.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True)
        # paho's own log says "Client is not connected" at error level at every clean close;
        # what matters of it (why a connection failed) is told by the callbacks below. Without
        # suppress_exceptions a bug in a callback would end paho's network thread.
        client.suppress_exceptions = True
        client.connect_timeout = cfg.connect_timeout_s
        client.reconnect_delay_set(cfg.backoff_initial_s, cfg.backoff_max_s)  # type: ignore[arg-type]
        client.max_inflight_messages_set(MAX_UNACKED)
        client.will_set(self.will_topic, "offline", qos=1, retain=True)
        if cfg.user is not None:
            client.username_pw_set(cfg.user, cfg.password)
        if cfg.tls is not None:
            try:
                client.tls_set(ca_certs=cfg.tls.ca, certfile=cfg.tls.cert, keyfile=cfg.tls.key,
                               cert_reqs=ssl.CERT_REQUIRED)
            except (OSError, ValueError) as exc:
                raise SinkError(f"mqtt {cfg.server}: cannot use the TLS files: {describe(exc)}") from None
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client
        if cfg.required:
            self._connect_now(client)
        else:
            client.connect_async(cfg.host, cfg.port_number, keepalive=cfg.keepalive_s)
            client.loop_start()
        self._thread = threading.Thread(target=self._run, name="streamer-mqtt", daemon=True)
        self._thread.start()

    def _connect_now(self, client: _Client) -> None:
        """The first connection, waited for: a refused password or an unreachable host is an
        error at start (exit 2), not a warning."""
        cfg = self.cfg
        try:
            client.connect(cfg.host, cfg.port_number, keepalive=cfg.keepalive_s)
        except OSError as exc:  # refused, unreachable, a name that does not resolve, a TLS failure
            raise SinkError(f"mqtt {cfg.server}: cannot connect: {describe(exc)} (mqtt.required is true)") from None
        client.loop_start()
        answered = self._answered.wait(cfg.connect_timeout_s)
        with self._lock:
            ok, error = self._connected, self._last_error
        if not ok:
            client.loop_stop()
            client.disconnect()
            why = error if answered and error else f"no answer within {cfg.connect_timeout_s:g} s"
            raise SinkError(f"mqtt {cfg.server}: {why} (mqtt.required is true)")

    def close(self, timeout_s: float = 3.0) -> None:
        """Send what is queued for at most ``timeout_s``, say ``offline``, disconnect.

        Events still unsent then are counted as dropped."""
        client = self._client
        if client is None:
            return
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
        with self._lock:
            connected = self._connected
        if connected:
            info = client.publish(self.will_topic, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(1.0)
            except (RuntimeError, ValueError):
                pass  # the connection went in the meantime: the will says offline instead
        client.disconnect()
        client.loop_stop()
        with self._lock:
            left = len(self._events) + len(self._unacked)
            self._dropped += left
            self._events.clear()
            self._unacked.clear()
        if left:
            log.warning("mqtt %s: %d messages not sent before the end", self.cfg.server, left)
        self._client = None

    # ------------------------------------------------------------------ paho's thread

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            who = f" user '{self.cfg.user}'" if self.cfg.user is not None else ""
            self._failed(f"the broker refused{who}: {reason_code}")
        else:
            with self._wake:
                self._connected = self._fresh = True
                self._connections += 1
                again = self._connections > 1 or self._last_error is not None
                self._last_error = None
                self._warned_full = False
                self._wake.notify_all()
            if again:
                log.warning("mqtt %s: connected again", self.cfg.server)
        self._answered.set()

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        self._failed(f"cannot connect: {getattr(client, 'last_error', None) or 'no answer'}")
        self._answered.set()

    def _failed(self, error: str) -> None:
        """Remember why; say it once per new reason, not at every retry."""
        with self._lock:
            new = error != self._last_error
            self._last_error = error
            self._connected = False
        if new and not (self.cfg.required and not self._answered.is_set()):
            log.warning("mqtt %s: %s; retrying in the background (up to %d events kept)",
                        self.cfg.server, error, self.cfg.queue_size)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        with self._lock:
            was, self._connected = self._connected, False
            stopping = self._stopping
        if was and not stopping:
            self._failed(f"connection lost ({reason_code})")

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self._wake:
            self._published += 1
            if mid in self._unacked:
                self._unacked.discard(mid)
            else:
                self._acked_early.add(mid)
            self._wake.notify_all()

    # ------------------------------------------------------------------ the publisher's thread

    def _run(self) -> None:
        next_tick = next_retain = 0.0
        while True:
            now = time.monotonic()
            if self.tick is not None and now >= next_tick:
                next_tick = now + TICK_S
                try:
                    self.tick()
                except Exception:  # noqa: BLE001 - a state probe's bug must not end the publishing
                    log.exception("mqtt: tick failed")
            with self._wake:
                if self._stopping and (not self._connected or not (self._events or self._unacked or self._dirty)):
                    return
                connected = self._connected
                fresh = connected and self._fresh
                if fresh:
                    self._fresh = False
                    self._dirty.update(self._retained)  # a restarted broker may have lost them
                room = MAX_UNACKED - len(self._unacked)
                due = connected and bool(self._dirty) and (fresh or now >= next_retain or self._stopping)
                sendable = connected and room > 0 and bool(self._events)
                if not (fresh or due or sendable):
                    self._wake.wait(min(TICK_S, max(0.05, next_retain - now)) if self._dirty else TICK_S)
                    continue
                retained = [(t, self._retained[t]) for t in self._dirty] if due else []
                if due:
                    self._dirty.clear()
                    next_retain = now + RETAIN_INTERVAL_S
                events = [self._events.popleft() for _ in range(min(max(room, 0), len(self._events)))]
            if fresh:
                self._publish(self.will_topic, b"online", retain=True)
                for topic, payload in self.announce():
                    self._publish(topic, _encode(payload), retain=True)
            for topic, payload in retained:
                self._publish(topic, _encode(payload), retain=True)
            for topic, data in events:
                self._publish(topic, data, retain=False)

    def _publish(self, topic: str, data: bytes, *, retain: bool) -> None:
        """Hand one message to paho (outside our lock: paho calls ``_on_publish`` holding its
        own, so holding ours here could deadlock the two threads)."""
        assert self._client is not None
        info = self._client.publish(topic, data, qos=1, retain=retain)
        with self._lock:
            if info.rc not in (0, 4):  # MQTT_ERR_SUCCESS, MQTT_ERR_NO_CONN (kept by paho and resent)
                self._dropped += 1
                log.warning("mqtt %s: could not queue a message for %s (paho error %s)", self.cfg.server, topic, info.rc)
            elif info.mid in self._acked_early:
                self._acked_early.discard(info.mid)
            else:
                self._unacked.add(info.mid)


def _encode(payload: Payload) -> bytes:
    if isinstance(payload, np.ndarray):
        ok, jpeg = cv2.imencode(".jpg", payload, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        return jpeg.tobytes() if ok else b""
    return payload.encode() if isinstance(payload, str) else payload

"""A real MQTT broker for tests: Debian's ``mosquitto`` as a plain process on loopback.

Why: the MQTT output's promises (last will, QoS 1 redelivery, retained state after a broker
restart, a refused password, TLS) are the broker's and paho's behaviour, which only a real
broker shows. Usage::

    broker = Mosquitto(tmp_path, users={"streamer": "s3cret"}).start()
    broker.stop(); broker.start()      # the same port, the same users
    broker.kill()                      # SIGKILL
    with Subscriber(broker, "watcher", "pw", ["streamer/#"]) as sub:
        sub.wait_for(lambda: sub.last("streamer/available") == b"online", 10, "online")

``tls=True`` makes a test CA and a server certificate for 127.0.0.1 with the openssl CLI;
``persistence=True`` keeps sessions and queued messages across a graceful restart (as
Debian's packaged configuration does).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import paho.mqtt.client as paho

from tests.conftest import require_tool

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class TestCA:
    """A CA and a server certificate for 127.0.0.1 signed by it (PEM files)."""

    ca: Path
    cert: Path
    key: Path


def make_ca(folder: Path, name: str = "ca") -> TestCA:
    """A throwaway CA with openssl (EC P-256, two days) and a server certificate for 127.0.0.1."""
    openssl = require_tool("openssl")
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / f"{name}.pem", folder / f"{name}.key"
    cert, key, csr = folder / f"{name}-server.pem", folder / f"{name}-server.key", folder / f"{name}-server.csr"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda *args: subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)  # noqa: E731
    run("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "2", "-subj", f"/CN=streamer test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext = folder / f"{name}-server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(cert),
        "-days", "2", "-extfile", str(ext))
    return TestCA(ca, cert, key)


class Mosquitto:
    """One ``mosquitto`` on 127.0.0.1 with a password file (no anonymous clients)."""

    def __init__(self, folder: Path, users: dict[str, str], *, tls: bool = False, persistence: bool = False) -> None:
        self.binary = require_tool("mosquitto")
        passwd_tool = require_tool("mosquitto_passwd")
        self.folder = folder / f"mosquitto-{free_port()}"
        self.folder.mkdir(parents=True)
        self.port = free_port()
        self.users = dict(users)
        self.ca = make_ca(self.folder) if tls else None
        passwd = self.folder / "passwd"
        for i, (user, password) in enumerate(users.items()):
            subprocess.run([passwd_tool, "-b", *(["-c"] if i == 0 else []), str(passwd), user, password],
                           check=True, capture_output=True, timeout=30)
        lines = [f"listener {self.port} {HOST}", "allow_anonymous false", f"password_file {passwd}",
                 # root runs the tests here: stay root, or the files in the test's folder are unreadable
                 "user root", f"persistence {'true' if persistence else 'false'}",
                 f"persistence_location {self.folder}/", "log_dest stderr",
                 "log_type error", "log_type warning", "log_type notice", "log_type information"]
        if self.ca is not None:
            lines += [f"cafile {self.ca.ca}", f"certfile {self.ca.cert}", f"keyfile {self.ca.key}"]
        self.config = self.folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.log = self.folder / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> Mosquitto:
        """Start and wait until the port accepts connections."""
        log = open(self.log, "ab")  # noqa: SIM115 - the process writes to it; closed with the process
        self._process = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self._process.returncode}:\n{self.log_text()}")
            try:
                socket.create_connection((HOST, self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout_s} s:\n{self.log_text()}")

    def stop(self) -> None:
        """SIGTERM (a graceful stop: with persistence the sessions are saved), then SIGKILL."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def _end(self, signum: int) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signum)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def mqtt_section(self, user: str, **extra: Any) -> dict[str, Any]:
        """The ``mqtt:`` section of a pipeline file for this broker (the password read from
        the environment variable MQTT_PASSWORD, as the README advises)."""
        section: dict[str, Any] = {"host": HOST, "port": self.port, "user": user, "password": "${MQTT_PASSWORD}"}
        if self.ca is not None:
            section["tls"] = {"ca": str(self.ca.ca)}
        section.update(extra)
        return section


class Subscriber:
    """A paho client that records every message it receives (topic, payload, retain flag).

    ``clean_session=False`` with a fixed ``client_id`` keeps its subscription (and its QoS 1
    messages) in the broker while it is away; it reconnects by itself.
    """

    def __init__(self, broker: Mosquitto, user: str, password: str, topics: Iterable[str], *,
                 client_id: str = "", clean_session: bool = True) -> None:
        self.topics = list(topics)
        self.messages: list[tuple[str, bytes, bool]] = []
        self._cond = threading.Condition()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session)
        self.client.username_pw_set(user, password)
        if broker.ca is not None:
            self.client.tls_set(ca_certs=str(broker.ca.ca))
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.broker = broker

    def __enter__(self) -> Subscriber:
        self.client.connect(HOST, self.broker.port, keepalive=30)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise RuntimeError("the test subscriber was not subscribed within 10 s")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if not reason_code.is_failure:
            client.subscribe([(topic, 1) for topic in self.topics])

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._cond:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))
            self._cond.notify_all()

    def on(self, topic: str) -> list[bytes]:
        with self._cond:
            return [payload for t, payload, _ in self.messages if t == topic]

    def last(self, topic: str) -> bytes | None:
        payloads = self.on(topic)
        return payloads[-1] if payloads else None

    def wait_for(self, predicate: Callable[[], object], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = sorted({t for t, _, _ in self.messages})
                    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; topics seen: {seen}")
                self._cond.wait(min(left, 0.2))

"""The MQTT output against a real mosquitto on loopback: topics, events, retained state, Home
Assistant discovery, the last will, a refused password, TLS with a test CA, and a broker that
goes away and comes back (queued events delivered, drops past the bound counted, retained
state republished). The slow tests run the real model on the two-person RTSP scene of
tests/test_monitor_tracking_e2e.py."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from streamer.config import from_dict, load
from streamer.errors import ConfigError, SinkError
from streamer.sinks.events import EventSink
from streamer.sinks.mqtt import CameraTopics, MqttSink
from streamer.types import Detections, Frame, Result
from tests.mqtt_broker import Mosquitto, Subscriber

NAMES = ("person", "bicycle", "car")
PASSWORD = "s3cret-Pa55:word@x"  # what no log, stat or summary may show
WATCHER = ("watcher", "watcher-pw")


# --------------------------------------------------------------------------- config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("source: synthetic\nmqtt: {}\n", {}, {"host": "127.0.0.1", "port_number": 1883, "password": None}),
        ("source: synthetic\nmqtt:\n  user: ha\n  password: ${MQTT_PASSWORD}\n", {"MQTT_PASSWORD": "pw"},
         {"user": "ha", "password": "pw"}),
        ("source: synthetic\nmqtt:\n  host: ${BROKER}\n  tls: {}\n", {"BROKER": "broker.lan"},
         {"host": "broker.lan", "port_number": 8883, "server": "mqtts://broker.lan:8883"}),
        ("source: synthetic\nmqtt:\n  user: u\n  password: a$${LITERAL}b\n", {}, {"password": "a${LITERAL}b"}),
        ("source: synthetic\nmqtt:\n  user: u\n  password: x${A}y${B}\n", {"A": "1", "B": "2"}, {"password": "x1y2"}),
    ],
)
def test_mqtt_section_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str,
                                      env: dict[str, str], expected: dict[str, Any]) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = load(write(tmp_path, text)).mqtt
    assert cfg is not None
    for key, value in expected.items():
        assert getattr(cfg, key) == value, key


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("source: synthetic\nmqtt:\n  user: ha\n  password: ${NO_SUCH_VAR_HERE}\n",
         r"p\.yaml:4: mqtt\.password: the environment variable NO_SUCH_VAR_HERE is not set"),
        ("cameras:\n  a: {url: 'rtsp://u:${NO_SUCH_VAR_HERE}@h/x'}\n",
         r"p\.yaml:2: cameras\.a\.url: the environment variable NO_SUCH_VAR_HERE is not set"),
        ("source: synthetic\nmqtt:\n  topic_prefix: a/#\n", r"p\.yaml:3: mqtt\.topic_prefix must be a topic without"),
        ("source: synthetic\nmqtt:\n  password: x\n", r"mqtt\.password needs mqtt\.user"),
        ("source: synthetic\nmqtt:\n  queue_size: 0\n", r"p\.yaml:3: mqtt\.queue_size must be between 1 and 100000"),
        ("source: synthetic\nmqtt:\n  broker: x\n", r"p\.yaml:3: unknown key 'broker' in 'mqtt', expecting one of"),
        ("source: synthetic\nmqtt: {tls: {cert: c.pem}}\n", r"mqtt\.tls\.cert and mqtt\.tls\.key go together"),
        ("cameras: {a: {url: synthetic}}\nexecutor: {kind: ray}\nmqtt: {}\n", r"mqtt needs executor\.kind local"),
    ],
)
def test_bad_mqtt_sections_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    os.environ.pop("NO_SUCH_VAR_HERE", None)
    with pytest.raises(ConfigError, match=message):
        load(write(tmp_path, text))


def test_password_is_not_in_the_config_repr_and_set_checks_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MQTT_PASSWORD", PASSWORD)
    path = write(tmp_path, "source: synthetic\nmqtt: {user: ha, password: '${MQTT_PASSWORD}'}\n")
    cfg = load(path, ["mqtt.port=1884"])
    assert cfg.mqtt is not None and cfg.mqtt.password == PASSWORD and cfg.mqtt.port == 1884
    assert PASSWORD not in repr(cfg) and PASSWORD not in str(cfg)
    with pytest.raises(ConfigError, match=r"--set mqtt\.hots=x: unknown key 'hots' in 'mqtt'"):
        load(path, ["mqtt.hots=x"])


def test_mqtt_turns_tracking_on_for_watch() -> None:

    assert from_dict({"source": "synthetic"}).tracking is None
    assert from_dict({"source": "synthetic", "mqtt": {}}).tracking is not None


# --------------------------------------------------------------------------- event listeners


def result(camera: str, index: int, t: float, rows: list[tuple[int, float, int]], analytics: Any = None) -> Result:
    """A frame of ``camera`` with rows of (class id, confidence, track id)."""
    image = np.full((48, 64, 3), index % 255, np.uint8)
    det = Detections(
        xyxy=np.array([[1, 1, 10, 10]] * len(rows), np.float32).reshape(-1, 4),
        confidence=np.array([c for _, c, _ in rows], np.float32),
        class_id=np.array([k for k, _, _ in rows], np.int32),
        tracker_id=np.array([i for _, _, i in rows], np.int32),
    )
    return Result(frame=Frame(camera, index, image, None, t), detections=det, annotated=image, names=NAMES,
                  analytics=analytics)


def test_event_listeners_hear_start_update_and_end(tmp_path: Path) -> None:
    heard: list[tuple[str, dict[str, Any], np.ndarray | None]] = []
    sink = EventSink(tmp_path / "events.jsonl", tmp_path / "snaps", ("person",), min_frames=2, gone_after_s=0.2,
                     listeners=[lambda change, record, picture: heard.append((change, record, picture))])
    sink.open()
    t0 = time.monotonic()
    confs = [0.6, 0.62, 0.9, 0.91]  # 0.9 is a clearly better snapshot, 0.91 is not
    for i, conf in enumerate(confs):
        sink.write(result("door", i, t0 + 0.04 * i, [(0, conf, 7), (1, 0.99, 8), (0, 0.3, 9)]))
    assert [c for c, _, _ in heard] == ["start", "update"]
    sink.close()
    changes = [c for c, _, _ in heard]
    assert changes == ["start", "update", "end"]
    (line,) = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    start, update, end = (record for _, record, _ in heard)
    assert start["id"] == update["id"] == end["id"] and start["track_id"] == 7
    assert start["end"] is None and start["snapshot"] is None and start["max_confidence"] == 0.62
    assert end == {**line, "id": end["id"]}  # the end is the events.jsonl line, plus its id
    assert Path(end["snapshot"]).name == end["id"] + ".jpg"
    assert heard[-1][2] is not None and int(heard[-1][2][0, 0, 0]) == 3  # the 0.91 frame


# --------------------------------------------------------------------------- against a broker


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    b = Mosquitto(tmp_path, {"streamer": PASSWORD, WATCHER[0]: WATCHER[1]}).start()
    yield b
    b.kill()


def sink_for(broker: Mosquitto, **extra: Any) -> MqttSink:
    section = {"host": "127.0.0.1", "port": broker.port, "user": "streamer", "password": PASSWORD,
               "backoff_initial_s": 0.2, "backoff_max_s": 0.5, **extra}
    if broker.ca is not None and "tls" not in extra:
        section["tls"] = {"ca": str(broker.ca.ca)}
    cfg = from_dict({"source": "synthetic", "mqtt": section}).mqtt
    assert cfg is not None
    return MqttSink(cfg, {"door": CameraTopics("door", ("gate",), ("porch",))}, ("person", "car"),
                    states=lambda: {"door": "streaming"}, version="test")


class _Analytics:
    """What MqttSink reads of a frame's analytics: line totals and zone occupancy by class id."""

    def __init__(self, lines: dict[str, dict[str, int]], zones: dict[str, dict[int, int]]) -> None:
        self.lines, self.zones = lines, zones


def test_counts_lines_zones_state_and_events_reach_a_subscriber(broker: Mosquitto) -> None:
    sink = sink_for(broker)
    with Subscriber(broker, *WATCHER, ["streamer/#"]) as sub:
        sink.open()
        t0 = time.monotonic()
        gate = {"gate": {"in": 3, "out": 1}}
        sink.write(result("door", 0, t0, [(0, 0.9, 1), (0, 0.8, 2), (0, 0.4, 3), (0, 0.9, -1), (2, 0.7, 4)],
                          _Analytics(gate, {"porch": {0: 2, 1: 1}})))
        sink.on_event("start", {"id": "door-person-1-x", "type": "object", "camera": "door", "track_id": 1,
                                "label": "person", "start": "2026-01-01T00:00:00.000Z", "end": None},
                      np.full((32, 32, 3), 200, np.uint8))
        sub.wait_for(lambda: sub.last("streamer/door/person") == b"2", 10, "two people in view")
        sub.wait_for(lambda: sub.on("streamer/events"), 10, "the event")
        sub.wait_for(lambda: sub.last("streamer/door/state") == b"streaming", 10, "the camera's state")
        sub.wait_for(lambda: sub.last("streamer/door/person/snapshot"), 10, "the snapshot")
        assert sub.last("streamer/available") == b"online"
        assert sub.last("streamer/door/car") == b"1"
        assert sub.last("streamer/door/lines/gate/in") == b"3" and sub.last("streamer/door/lines/gate/out") == b"1"
        assert sub.last("streamer/door/zones/porch/person") == b"2"
        assert sub.last("streamer/door/zones/porch/bicycle") == b"1"
        assert sub.last("streamer/door/zones/porch/car") == b"0"
        (message,) = [json.loads(m) for m in sub.on("streamer/events")]
        assert message == {"event": "start", "id": "door-person-1-x", "seq": 1, "type": "object", "camera": "door",
                           "track_id": 1, "label": "person", "start": "2026-01-01T00:00:00.000Z", "end": None}
        jpeg = cv2.imdecode(np.frombuffer(sub.last("streamer/door/person/snapshot") or b"", np.uint8), cv2.IMREAD_COLOR)
        assert jpeg is not None and jpeg.shape == (32, 32, 3)
        sink.write(result("door", 1, t0 + 0.1, [(0, 0.9, 1)]))  # one left
        sub.wait_for(lambda: sub.last("streamer/door/person") == b"1", 10, "one person in view")
        sink.close()
        sub.wait_for(lambda: sub.last("streamer/available") == b"offline", 10, "offline at a clean close")
    stats = sink.stats()
    assert stats["published"] >= 10 and stats["dropped"] == 0 and stats["queued"] == 0
    assert stats["server"] == f"mqtt://127.0.0.1:{broker.port}" and stats["user"] == "streamer"
    assert PASSWORD not in json.dumps(stats) and PASSWORD not in (sink.summary() or "")


# Home Assistant's MQTT discovery: topic <prefix>/<component>/<node_id>/<object_id>/config with
# node_id and object_id in [a-zA-Z0-9_-]; required here: name, unique_id, the state (or image)
# topic, the availability topic and its payloads, and a device with identifiers, name,
# manufacturer and model (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery).
DISCOVERY_TOPIC = re.compile(r"^homeassistant/(sensor|binary_sensor|image)/([A-Za-z0-9_-]+)/([A-Za-z0-9_-]+)/config$")


def check_discovery(configs: dict[str, dict[str, Any]], camera: str, watched: list[str],
                    zones: list[str] = (), lines: list[str] = ()) -> dict[str, dict[str, Any]]:  # type: ignore[assignment]
    """Every discovery config of ``camera``, checked field by field; by unique_id."""
    by_id: dict[str, dict[str, Any]] = {}
    for topic, config in configs.items():
        match = DISCOVERY_TOPIC.match(topic)
        assert match, topic
        component, node, object_id = match.groups()
        if config["device"]["name"] != camera:
            continue
        assert node == "streamer" and config["unique_id"] == f"{node}_{object_id}"
        assert config["availability_topic"] == "streamer/available"
        assert (config["payload_available"], config["payload_not_available"]) == ("online", "offline")
        assert config["device"] == {"identifiers": [f"streamer_{camera}"], "name": camera, "manufacturer": "streamer",
                                    "model": "camera monitor", "sw_version": config["device"]["sw_version"]}
        assert isinstance(config["name"], str) and config["name"]
        assert ("image_topic" if component == "image" else "state_topic") in config, config
        assert config["unique_id"] not in by_id
        by_id[config["unique_id"]] = {**config, "component": component}
    expected = {f"streamer_{camera}_state"}
    for label in watched:
        expected |= {f"streamer_{camera}_{label}_count", f"streamer_{camera}_{label}_detected",
                     f"streamer_{camera}_{label}_snapshot"}
        expected |= {f"streamer_{camera}_zone_{zone}_{label}" for zone in zones}
    expected |= {f"streamer_{camera}_line_{line}_{d}" for line in lines for d in ("in", "out")}
    assert set(by_id) == expected
    for label in watched:
        count, detected = by_id[f"streamer_{camera}_{label}_count"], by_id[f"streamer_{camera}_{label}_detected"]
        image = by_id[f"streamer_{camera}_{label}_snapshot"]
        assert (count["component"], count["state_topic"], count["state_class"]) == \
            ("sensor", f"streamer/{camera}/{label}", "measurement")
        assert (detected["component"], detected["state_topic"], detected["device_class"]) == \
            ("binary_sensor", f"streamer/{camera}/{label}", "occupancy")
        assert "value | int" in detected["value_template"]
        assert (image["component"], image["image_topic"], image["content_type"]) == \
            ("image", f"streamer/{camera}/{label}/snapshot", "image/jpeg")
    for line in lines:
        for d in ("in", "out"):
            total = by_id[f"streamer_{camera}_line_{line}_{d}"]
            assert (total["state_topic"], total["state_class"]) == (f"streamer/{camera}/lines/{line}/{d}",
                                                                     "total_increasing")
    for zone in zones:
        for label in watched:
            assert by_id[f"streamer_{camera}_zone_{zone}_{label}"]["state_topic"] == \
                f"streamer/{camera}/zones/{zone}/{label}"
    assert by_id[f"streamer_{camera}_state"]["state_topic"] == f"streamer/{camera}/state"
    return by_id


def retained_json(sub: Subscriber, prefix: str) -> dict[str, dict[str, Any]]:
    return {t: json.loads(p) for t, p, _ in list(sub.messages) if t.startswith(prefix) and p}


def test_home_assistant_discovery_configs(broker: Mosquitto) -> None:
    sink = sink_for(broker, discovery=True)
    sink.open()
    try:
        deadline = time.monotonic() + 10
        while sink.stats()["published"] < 11 and time.monotonic() < deadline:
            time.sleep(0.05)  # subscribe afterwards: what arrives then is what the broker retained
        with Subscriber(broker, *WATCHER, ["homeassistant/#"]) as sub:
            sub.wait_for(lambda: len(sub.messages) >= 11, 10, "the discovery configs")
            time.sleep(0.3)
            configs = retained_json(sub, "homeassistant/")
            assert all(retain for _, _, retain in sub.messages)  # retained: Home Assistant may start later
    finally:
        sink.close()
    check_discovery(configs, "door", ["person", "car"], zones=["porch"], lines=["gate"])


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("bad password", r"^mqtt mqtt://127\.0\.0\.1:\d+: the broker refused user 'streamer': Not authorized "
                         r"\(mqtt\.required is true\)$"),
        ("closed port", r"^mqtt mqtt://127\.0\.0\.1:\d+: cannot connect: \[Errno 111\] Connection refused "
                        r"\(mqtt\.required is true\)$"),
        ("missing CA file", r"^mqtt\.tls\.ca: /nonexistent/ca\.pem: no such file$"),
    ],
)
def test_required_broker_that_refuses_is_one_line_at_start(broker: Mosquitto, case: str, message: str) -> None:
    extra: dict[str, Any] = {"required": True, "connect_timeout_s": 3}
    if case == "bad password":
        extra["password"] = "wrong" + PASSWORD
    elif case == "closed port":
        broker.kill()
    else:
        extra["tls"] = {"ca": "/nonexistent/ca.pem"}
    sink = sink_for(broker, **extra)
    started = time.monotonic()
    with pytest.raises(SinkError) as info:
        sink.open()
    assert re.match(message, str(info.value)), str(info.value)
    assert time.monotonic() - started < 4
    assert PASSWORD not in str(info.value)


def test_not_required_broker_is_a_warning_and_retries(broker: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sink = sink_for(broker, password="wrong")
    started = time.monotonic()
    sink.open()
    assert time.monotonic() - started < 0.5  # never waits for the broker
    time.sleep(2.0)  # several retries at 0.2-0.5 s
    stats = sink.stats()
    sink.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    refused = [w for w in warnings if "refused" in w]
    assert len(refused) == 1, warnings  # once, not at every retry
    assert re.match(r"mqtt mqtt://127\.0\.0\.1:\d+: the broker refused user 'streamer': Not authorized; "
                    r"retrying in the background", refused[0])
    assert broker.log_text().count("not authorised") >= 2  # it did retry
    assert stats["connected"] is False and stats["last_error"].startswith("the broker refused")
    assert all("wrong" not in r.getMessage() and PASSWORD not in r.getMessage() for r in caplog.records)


def test_tls_with_a_test_ca(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path, {"streamer": PASSWORD, WATCHER[0]: WATCHER[1]}, tls=True).start()
    try:
        sink = sink_for(broker, required=True)
        with Subscriber(broker, *WATCHER, ["streamer/#"]) as sub:
            sink.open()
            assert sink.stats()["server"] == f"mqtts://127.0.0.1:{broker.port}"
            sink.write(result("door", 0, time.monotonic(), [(0, 0.9, 1)]))
            sub.wait_for(lambda: sub.last("streamer/door/person") == b"1", 10, "a count over TLS")
            sink.close()
        from tests.mqtt_broker import make_ca

        other = make_ca(tmp_path / "other", "other")  # a CA that did not sign the broker's certificate
        stranger = sink_for(broker, required=True, tls={"ca": str(other.ca)}, connect_timeout_s=3)
        with pytest.raises(SinkError, match=r"cannot connect: \[SSL: CERTIFICATE_VERIFY_FAILED\]"):
            stranger.open()
    finally:
        broker.kill()


def test_broker_away_queues_events_drops_past_the_bound_and_delivers_the_rest(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path, {"streamer": PASSWORD, WATCHER[0]: WATCHER[1]}, persistence=True).start()
    sink = sink_for(broker, queue_size=5)
    # A persistent session: the broker keeps the subscription and queues for it while it is away.
    sub = Subscriber(broker, *WATCHER, ["streamer/events"], client_id="watcher", clean_session=False)
    try:
        with sub:
            sink.open()
            sink.on_event("start", {"id": "before", "camera": "door", "label": "person"}, None)
            sub.wait_for(lambda: len(sub.on("streamer/events")) == 1, 10, "the first event")
            broker.stop()
            time.sleep(0.5)
            started = time.monotonic()
            for i in range(12):
                sink.on_event("update", {"id": f"away-{i}", "camera": "door", "label": "person"}, None)
            assert time.monotonic() - started < 0.05  # the pipeline's side never waits for the broker
            stats = sink.stats()
            assert (stats["connected"], stats["queued"], stats["dropped"]) == (False, 5, 7)
            broker.start()
            sub.wait_for(lambda: len({json.loads(m)["seq"] for m in sub.on("streamer/events")}) == 6, 20,
                         "the five queued events after the broker is back")
            sink.close()
    finally:
        broker.kill()
    messages = {json.loads(m)["seq"]: json.loads(m) for m in sub.on("streamer/events")}  # QoS 1 may repeat one
    assert [m["id"] for _, m in sorted(messages.items())] == ["before"] + [f"away-{i}" for i in range(7, 12)]
    assert sorted(messages) == [1, 9, 10, 11, 12, 13]  # the gap in seq is the 7 counted drops
    final = sink.stats()
    assert final["dropped"] == 7 and final["reconnects"] == 1 and final["queued"] == 0
    assert "7 events dropped" in (sink.summary() or "")


def test_retained_state_is_republished_to_a_restarted_broker(broker: Mosquitto) -> None:
    sink = sink_for(broker)
    sink.open()
    try:
        sink.write(result("door", 0, time.monotonic(), [(0, 0.9, 1), (0, 0.9, 2)]))
        with Subscriber(broker, *WATCHER, ["streamer/door/person"]) as sub:
            sub.wait_for(lambda: sub.last("streamer/door/person") == b"2", 10, "the count")
        broker.kill()  # no persistence: the broker forgets every retained message
        broker.start()
        deadline = time.monotonic() + 10
        while sink.stats()["reconnects"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        with Subscriber(broker, *WATCHER, ["streamer/door/person", "streamer/available"]) as late:
            late.wait_for(lambda: late.last("streamer/door/person") == b"2", 10, "the count again")
            late.wait_for(lambda: late.last("streamer/available") == b"online", 10, "online again")
            assert all(retain for _, _, retain in late.messages)
    finally:
        sink.close()


# --------------------------------------------------------------------------- whole programs


def run_env() -> dict[str, str]:
    return dict(os.environ, PYTHONUNBUFFERED="1", MQTT_PASSWORD=PASSWORD)


def test_watch_publishes_and_the_last_will_says_offline_on_sigkill(broker: Mosquitto, tmp_path: Path) -> None:
    pipeline = {"source": "synthetic:320x240@10", "job": "watch", "model": {"imgsz": 320},
                "output": {"window": False, "status_interval_s": 1},
                "events": {"path": str(tmp_path / "events.jsonl"), "snapshots": str(tmp_path / "snaps")},
                "mqtt": broker.mqtt_section("streamer", camera="porch", keepalive_s=5)}
    (tmp_path / "watch.yaml").write_text(json.dumps(pipeline))
    with Subscriber(broker, *WATCHER, ["streamer/#"]) as sub:
        proc = subprocess.Popen([sys.executable, "-m", "streamer", "run", str(tmp_path / "watch.yaml")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=run_env())
        try:
            sub.wait_for(lambda: sub.last("streamer/available") == b"online" or proc.poll() is not None, 120,
                         "online")
            assert proc.poll() is None, proc.communicate()
            sub.wait_for(lambda: sub.last("streamer/porch/state") == b"streaming", 30, "the camera streaming")
            assert sub.last("streamer/porch/person") == b"0"
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            # The broker notices the dead connection after 1.5 x keepalive at most, then sends the will.
            sub.wait_for(lambda: sub.last("streamer/available") == b"offline", 15, "the last will")
        finally:
            if proc.poll() is None:
                proc.kill()
            out, err = proc.communicate()
    assert PASSWORD not in out + err
    assert [p for p in sub.on("streamer/available")] == [b"online", b"offline"]


@pytest.mark.parametrize(
    ("mqtt", "expected"),
    [
        (None, {}),
        ({"connected": False, "published": 7, "queued": 3, "dropped": 2, "reconnects": 1},
         {"streamer_mqtt_connected": 0.0, "streamer_mqtt_published_messages_total": 7.0,
          "streamer_mqtt_queued_messages": 3.0, "streamer_mqtt_dropped_messages_total": 2.0,
          "streamer_mqtt_reconnects_total": 1.0}),
    ],
)
def test_mqtt_counters_in_metrics(mqtt: dict[str, Any] | None, expected: dict[str, float]) -> None:
    from streamer.sinks.dashboard.metrics import render_metrics

    text = render_metrics({"mqtt": mqtt} if mqtt is not None else {})
    found = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
             if line.startswith("streamer_mqtt_")}
    assert found == expected


# --------------------------------------------------------------------------- the real model


def start_monitor(tmp_path: Path, cfg: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> subprocess.Popen[str]:
    from tests.test_monitor_e2e import launch_monitor

    monkeypatch.setenv("MQTT_PASSWORD", PASSWORD)  # the file says ${MQTT_PASSWORD}
    return launch_monitor(tmp_path, cfg)


def events_of(sub: Subscriber, camera: str) -> list[dict[str, Any]]:
    unique = {m["seq"]: m for m in (json.loads(p) for p in sub.on("streamer/events"))}  # QoS 1 may repeat one
    return [m for _, m in sorted(unique.items()) if m["camera"] == camera]


@pytest.mark.slow
def test_two_people_scene_over_mqtt(broker: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.rtsp import RtspServer, require_rtsp
    from tests.test_monitor_e2e import dashboard_url, get_json, get_text
    from tests.test_monitor_tracking_e2e import metric, still_clip

    require_rtsp()
    server = RtspServer({"yard": still_clip(tmp_path / "yard.mp4", seconds=20)}).start()
    cfg = {
        "cameras": {"yard": {"url": server.url("yard"), "zones": {"lawn": [[0, 0], [700, 0], [700, 466], [0, 466]]}}},
        "capture": {"stall_timeout_s": 3, "open_timeout_s": 3, "backoff_initial_s": 0.25, "backoff_max_s": 1},
        "dashboard": {"port": 0},
        "events": {"track": ["person"], "min_confidence": 0.5, "min_frames": 3, "gone_after_s": 1.5,
                   "path": str(tmp_path / "events.jsonl"), "snapshots": str(tmp_path / "snaps")},
        "mqtt": broker.mqtt_section("streamer", discovery=True),
    }
    out = err = ""
    with Subscriber(broker, *WATCHER, ["streamer/#", "homeassistant/#"]) as sub:
        proc = start_monitor(tmp_path, cfg, monkeypatch)
        try:
            base = dashboard_url(proc)
            starts = lambda: {m["track_id"] for m in events_of(sub, "yard") if m["event"] == "start"}  # noqa: E731
            sub.wait_for(lambda: len(starts()) >= 2, 90, "two event starts")
            sub.wait_for(lambda: sub.last("streamer/yard/person") == b"2", 30, "two people in view")
            sub.wait_for(lambda: sub.last("streamer/yard/zones/lawn/person") == b"2", 30, "two people on the lawn")
            sub.wait_for(lambda: sub.last("streamer/yard/state") == b"streaming", 30, "the camera streaming")
            with Subscriber(broker, *WATCHER, ["streamer/yard/person"]) as late:  # what the broker retained
                late.wait_for(lambda: late.messages, 10, "the retained count")
                assert late.messages[0][1:] == (b"2", True)
            stats = get_json(base + "api/stats")
            metrics = get_text(base + "metrics")
            assert stats["mqtt"]["connected"] is True and stats["mqtt"]["published"] > 0
            assert stats["mqtt"]["dropped"] == 0 and stats["mqtt"]["user"] == "streamer"
            assert (metric(metrics, "streamer_mqtt_published_messages_total") or
                    float(re.search(r"^streamer_mqtt_published_messages_total (\S+)$", metrics, re.M).group(1))) > 0
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 130, err[-2000:]
            sub.wait_for(lambda: sub.last("streamer/available") == b"offline", 10, "offline after the stop")
        finally:
            if proc.poll() is None:
                proc.kill()
                out, err = proc.communicate()
            server.stop()
    messages = events_of(sub, "yard")
    started = {m["id"]: m for m in messages if m["event"] == "start"}
    ended = {m["id"]: m for m in messages if m["event"] == "end"}
    assert len({m["track_id"] for m in started.values()}) == len(started) >= 2, messages
    assert set(ended) == set(started), messages  # every event that started has ended
    for event_id, end in ended.items():
        assert end["type"] == "object" and end["label"] == "person" and end["zones"] == ["lawn"]
        assert end["start"] == started[event_id]["start"] and end["end"] is not None
        assert end["max_confidence"] > 0.8 and Path(end["snapshot"]).is_file()
        assert started[event_id]["end"] is None and started[event_id]["snapshot"] is None
    # The events.jsonl lines are the end messages less their three MQTT fields.
    lines = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert sorted(lines, key=lambda e: e["track_id"]) == sorted(
        ({k: v for k, v in m.items() if k not in ("event", "id", "seq")} for m in ended.values()),
        key=lambda e: e["track_id"])
    jpeg = cv2.imdecode(np.frombuffer(sub.last("streamer/yard/person/snapshot") or b"", np.uint8), cv2.IMREAD_COLOR)
    assert jpeg is not None and jpeg.shape == (466, 700, 3)
    configs = {t: json.loads(p) for t, p, _ in sub.messages if t.startswith("homeassistant/") and p}
    check_discovery(configs, "yard", ["person"], zones=["lawn"])
    summary = [line for line in out.splitlines() if line.startswith("wrote mqtt://")]
    assert summary and re.search(r"\d+ messages published", summary[0]), out
    for text in (out, err, json.dumps(stats), metrics):
        assert PASSWORD not in text


def blinking_clip(path: Path) -> Path:
    """Two people for 2 s, nobody for 2 s, at 10 fps: a looped camera makes events come and go."""
    from streamer import assets
    from tests.conftest import require_tool

    ffmpeg = require_tool("ffmpeg")
    subprocess.run([ffmpeg, "-v", "error", "-y", "-loop", "1", "-t", "2", "-i", str(assets.sample_path("sample:testimg")),
                    "-f", "lavfi", "-t", "2", "-i", "color=c=black:s=480x320:r=10", "-filter_complex",
                    "[0:v]scale=480:320,fps=10,setsar=1[a];[1:v]setsar=1[b];[a][b]concat=n=2:v=1[v]",
                    "-map", "[v]", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)], check=True, timeout=120)
    return path


@pytest.mark.slow
def test_broker_stopped_mid_run_costs_no_frames_and_loses_nothing_silently(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.rtsp import RtspServer, require_rtsp
    from tests.test_monitor_e2e import dashboard_url, get_json

    require_rtsp()
    camera = RtspServer({"door": blinking_clip(tmp_path / "door.mp4")}).start()  # loops the clip at its 10 fps
    broker = Mosquitto(tmp_path, {"streamer": PASSWORD, WATCHER[0]: WATCHER[1]}, persistence=True).start()
    cfg = {
        "cameras": {"door": {"url": camera.url("door")}},
        "model": {"imgsz": 320},
        "dashboard": {"port": 0},
        "events": {"track": ["person"], "min_confidence": 0.5, "min_frames": 2, "gone_after_s": 1.0,
                   "path": str(tmp_path / "events.jsonl"), "snapshots": str(tmp_path / "snaps")},
        "mqtt": broker.mqtt_section("streamer", queue_size=3, backoff_initial_s=0.2, backoff_max_s=1),
    }
    sub = Subscriber(broker, *WATCHER, ["streamer/events"], client_id="watcher", clean_session=False)
    out = err = ""
    try:
        with sub:
            proc = start_monitor(tmp_path, cfg, monkeypatch)
            try:
                base = dashboard_url(proc)

                def frames() -> int:
                    return int(get_json(base + "api/stats")["cameras"]["door"]["frames"])

                def rate(seconds: float) -> float:
                    first, t0 = frames(), time.monotonic()
                    time.sleep(seconds)
                    return (frames() - first) / (time.monotonic() - t0)

                sub.wait_for(lambda: len(events_of(sub, "door")) >= 2, 90, "the first events")
                before = rate(6)
                broker.stop()
                away = rate(8)
                during = get_json(base + "api/stats")["mqtt"]
                assert during["connected"] is False and during["queued"] == 3 and during["dropped"] >= 1, during
                broker.start()
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    mqtt = get_json(base + "api/stats")["mqtt"]
                    if mqtt["connected"] and mqtt["reconnects"] >= 1 and mqtt["queued"] == 0:
                        break
                    time.sleep(0.2)
                else:
                    raise AssertionError(f"the queue was not sent after the broker came back: {mqtt}")
                proc.send_signal(signal.SIGINT)
                out, err = proc.communicate(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    out, err = proc.communicate()
            sub.wait_for(lambda: events_of(sub, "door") and events_of(sub, "door")[-1]["event"] == "end", 10,
                         "the last event's end")
    finally:
        broker.kill()
        camera.stop()
    # The broker's outage costs the pipeline nothing: the camera's 10 fps go on.
    assert before > 5 and away >= 0.85 * before, (before, away)
    seqs = [m["seq"] for m in events_of(sub, "door")]
    dropped = int(re.search(r"(\d+) events dropped", out).group(1))  # type: ignore[union-attr]
    assert dropped >= during["dropped"] >= 1
    # Every message is either received or counted as dropped: no gap in seq is unexplained.
    assert len(seqs) + dropped == max(seqs), (seqs, dropped)
    assert PASSWORD not in out + err


@pytest.mark.parametrize("case", ["bad password", "closed port"])
def test_monitor_with_a_required_broker_that_refuses_exits_2_with_one_line(
        broker: Mosquitto, tmp_path: Path, case: str) -> None:
    section = broker.mqtt_section("streamer", required=True, connect_timeout_s=3)
    env = run_env()
    if case == "bad password":
        env["MQTT_PASSWORD"] = "not-" + PASSWORD
    else:
        broker.kill()
    (tmp_path / "m.yaml").write_text(json.dumps({"cameras": {"door": {"url": "synthetic:320x240@10"}},
                                                 "dashboard": {"enabled": False}, "mqtt": section}))
    proc = subprocess.run([sys.executable, "-m", "streamer", "-v", "monitor", str(tmp_path / "m.yaml")],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and PASSWORD not in proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("streamer:")]
    expected = "the broker refused user 'streamer': Not authorized" if case == "bad password" else \
        "cannot connect: [Errno 111] Connection refused"
    assert errors == [f"streamer: mqtt mqtt://127.0.0.1:{broker.port}: {expected} (mqtt.required is true)"], \
        proc.stderr

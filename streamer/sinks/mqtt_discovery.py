"""Home Assistant MQTT discovery: what makes each camera appear as a device with no YAML.

Home Assistant reads a retained JSON config at
``<discovery_prefix>/<component>/<node_id>/<object_id>/config`` (``node_id`` and
``object_id`` in ``[A-Za-z0-9_-]``): the entity's ``name`` and ``unique_id``, the topic it
reads (``state_topic``, or ``image_topic`` for an image), the ``availability_topic`` with its
two payloads, and a ``device`` object whose ``identifiers`` group the entities of one device.
An empty retained payload at the same topic removes the entity.

Per camera (one device, named like the camera): a sensor of its connection state; per
watched class a count sensor, a "detected" binary sensor (on while the count is above 0)
and, with snapshots, an image entity; per zone and watched class an occupancy sensor; per
line and direction a total. ``node_id`` is the topic prefix, so two streamers with their own
prefixes never share an entity.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from streamer.config import MqttConfig

_NOT_ID = re.compile(r"[^A-Za-z0-9_-]")
_NOT_TOPIC = re.compile(r"[^A-Za-z0-9_.-]")

#: Home Assistant's payloads for "on"/"off" of a binary sensor read from a count.
DETECTED_TEMPLATE = "{{ 'ON' if value | int(0) > 0 else 'OFF' }}"


def discovery_id(name: str) -> str:
    """``name`` as a discovery ``node_id`` / ``object_id`` (other characters become ``_``)."""
    return _NOT_ID.sub("_", name)


@functools.lru_cache(maxsize=4096)  # class, line and zone names: a few, asked for on every frame
def topic_part(name: str) -> str:
    """A class, line or zone name as one topic level ("traffic light" -> "traffic_light");
    '/', '+' and '#' would change the topic's meaning."""
    return _NOT_TOPIC.sub("_", name)


@dataclass(frozen=True)
class CameraTopics:
    """One camera as MQTT sees it: its name in topics, and its lines and zones."""

    name: str
    lines: tuple[str, ...] = ()
    zones: tuple[str, ...] = ()

    # The topics of the camera under ``prefix`` (``mqtt.topic_prefix``), for the sink that
    # publishes them and the discovery configs that point Home Assistant at them.

    def count(self, prefix: str, label: str) -> str:
        return f"{prefix}/{self.name}/{topic_part(label)}"

    def snapshot(self, prefix: str, label: str) -> str:
        return f"{prefix}/{self.name}/{topic_part(label)}/snapshot"

    def line(self, prefix: str, line: str, direction: str) -> str:
        return f"{prefix}/{self.name}/lines/{topic_part(line)}/{direction}"

    def zone(self, prefix: str, zone: str, label: str) -> str:
        return f"{prefix}/{self.name}/zones/{topic_part(zone)}/{topic_part(label)}"

    def state(self, prefix: str) -> str:
        return f"{prefix}/{self.name}/state"


@dataclass
class _Device:
    """One camera's device block, and the discovery configs of its entities."""

    cfg: MqttConfig
    camera: str
    version: str

    def __post_init__(self) -> None:
        self.node = discovery_id(self.cfg.topic_prefix)
        self.device = {"identifiers": [f"{self.node}_{discovery_id(self.camera)}"], "name": self.camera,
                       "manufacturer": "streamer", "model": "camera monitor", "sw_version": self.version}
        self.configs: list[tuple[str, str]] = []

    def entity(self, component: str, key: str, name: str, **fields: Any) -> None:
        object_id = discovery_id(f"{self.camera}_{key}")
        config = {
            "name": name, "unique_id": f"{self.node}_{object_id}",
            "availability_topic": f"{self.cfg.topic_prefix}/available", "payload_available": "online",
            "payload_not_available": "offline", **fields,
            "device": self.device, "origin": {"name": "streamer", "sw_version": self.version},
        }
        self.configs.append((f"{self.cfg.discovery_prefix}/{component}/{self.node}/{object_id}/config",
                             json.dumps(config)))


def discovery_configs(cfg: MqttConfig, cameras: Sequence[CameraTopics], watched: Sequence[str],
                      version: str) -> list[tuple[str, str]]:
    """The retained ``(topic, JSON)`` discovery configs for ``cameras``."""
    configs: list[tuple[str, str]] = []
    prefix = cfg.topic_prefix
    for cam in cameras:
        dev = _Device(cfg, cam.name, version)
        dev.entity("sensor", "state", "state", state_topic=cam.state(prefix), icon="mdi:cctv")
        for label in watched:
            part = topic_part(label)
            dev.entity("sensor", f"{part}_count", f"{label} count", state_topic=cam.count(prefix, label),
                       state_class="measurement", icon="mdi:counter")
            dev.entity("binary_sensor", f"{part}_detected", f"{label} detected", state_topic=cam.count(prefix, label),
                       value_template=DETECTED_TEMPLATE, device_class="occupancy")
            if cfg.snapshots:
                dev.entity("image", f"{part}_snapshot", f"{label} snapshot", image_topic=cam.snapshot(prefix, label),
                           content_type="image/jpeg")
        for zone in cam.zones:
            for label in watched:
                dev.entity("sensor", f"zone_{topic_part(zone)}_{topic_part(label)}", f"{zone} {label}",
                           state_topic=cam.zone(prefix, zone, label), state_class="measurement",
                           icon="mdi:vector-square")
        for line in cam.lines:
            for direction in ("in", "out"):
                dev.entity("sensor", f"line_{topic_part(line)}_{direction}", f"{line} {direction}",
                           state_topic=cam.line(prefix, line, direction), state_class="total_increasing",
                           icon="mdi:transit-transfer")
        configs.extend(dev.configs)
    return configs

"""MQTT output: events, counts, snapshots and camera states where home automation listens.

Topics (``PREFIX`` is ``mqtt.topic_prefix``; class, line and zone names with characters other
than letters, digits, ``_ . -`` have them replaced by ``_``)::

    PREFIX/available                    online / offline (offline is also the last will)
    PREFIX/events                       one JSON message per event change (QoS 1, not retained)
    PREFIX/CAMERA/CLASS                 objects of that class in view now (retained)
    PREFIX/CAMERA/CLASS/snapshot        JPEG: the best frame of the newest event (retained)
    PREFIX/CAMERA/lines/LINE/DIRECTION  crossings so far, in or out (retained)
    PREFIX/CAMERA/zones/ZONE/CLASS      objects of that class in the zone now (retained)
    PREFIX/CAMERA/state                 connecting, streaming, stalled, reconnecting, down (retained)

An event message is the events.jsonl record of the event so far with three more fields::

    {"event": "start", "id": "yard-person-7-20261128T091201.120Z", "seq": 12, "type": "object",
     "camera": "yard", "track_id": 7, "label": "person", "start": "2026-11-28T09:12:01.120Z",
     "end": null, "max_confidence": 0.91, "frames": 3, "snapshot": null, "zones": [], "lines": []}

``event`` is start, update (entered a zone, crossed a line, a clearly better snapshot), end
(``end`` and ``snapshot`` filled) or loiter; ``id`` is the same for every message of one
event; ``seq`` counts this process's event messages, so a gap shows messages dropped while
the broker was away. "In view" counts the objects the events see: confirmed tracks (or, without
tracking, detections) of a watched class (``events.track``) at ``events.min_confidence`` or more.

The sink's ``write`` only computes counts and stores them; :class:`MqttPublisher` sends them
from its own thread, so a broker that is slow, down or refusing never holds the pipeline.
"""

from __future__ import annotations

import collections
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from streamer.config import MqttConfig
from streamer.sinks.base import Sink
from streamer.sinks.mqtt_client import MqttCounters, MqttPublisher
from streamer.sinks.mqtt_discovery import CameraTopics, discovery_configs
from streamer.types import Result

__all__ = ["CameraTopics", "MqttCounters", "MqttSink"]


class MqttSink(Sink):
    """Publishes a pipeline's counts, line and zone totals, camera states and (through
    :meth:`on_event`, an :class:`~streamer.sinks.events.EventSink` listener) its events.

    ``cameras`` maps a source id to the camera's topics; ``states()`` gives each source id's
    connection state and is called once a second from the publisher's thread.
    """

    name = "mqtt"

    def __init__(
        self,
        cfg: MqttConfig,
        cameras: Mapping[str, CameraTopics],
        watched: Sequence[str],
        *,
        min_confidence: float = 0.5,
        states: Callable[[], Mapping[str, str]] | None = None,
        version: str = "",
    ) -> None:
        self.cfg = cfg
        self.cameras = dict(cameras)
        self.watched = tuple(watched)
        self.min_confidence = min_confidence
        self.states = states
        self.version = version
        self.prefix = cfg.topic_prefix
        self.publisher = MqttPublisher(cfg, f"{self.prefix}/available", announce=self._announce,
                                       tick=self._publish_states if states is not None else None)
        self._seq = itertools.count(1)
        #: (camera, zone) -> classes published for it, so one that left goes back to 0.
        self._zone_classes: dict[tuple[str, str], set[str]] = {}
        #: (camera, class) -> start of the newest event: only its pictures go to the snapshot topic.
        self._newest: dict[tuple[str, str], str] = {}

    # ------------------------------------------------------------------ sink

    def open(self) -> None:
        # A class never seen yet is 0, not unknown.
        self.publisher.retain_many((cam.count(self.prefix, label), "0")
                                   for cam in self.cameras.values() for label in self.watched)
        self.publisher.start()

    def write(self, result: Result) -> None:
        cam = self.cameras.get(result.frame.source_id)
        if cam is None:
            return
        prefix = self.prefix
        counts = self._in_view(result)
        values = [(cam.count(prefix, label), str(counts.get(label, 0))) for label in self.watched]
        analytics = result.analytics
        if analytics is not None:
            for line, totals in analytics.lines.items():
                values += [(cam.line(prefix, line, direction), str(totals[direction])) for direction in ("in", "out")]
            for zone, per_class in analytics.zones.items():
                inside: collections.Counter[str] = collections.Counter()
                for class_id, n in per_class.items():
                    inside[result.label(int(class_id))] += n
                known = self._zone_classes.get((cam.name, zone))
                if known is None:
                    known = self._zone_classes[(cam.name, zone)] = set(self.watched)
                known.update(inside)  # bounded by the model's classes
                values += [(cam.zone(prefix, zone, label), str(inside[label])) for label in known]
        self.publisher.retain_many(values)

    def _in_view(self, result: Result) -> collections.Counter[str]:
        """Watched objects on this frame, per class, as the events count them."""
        counts: collections.Counter[str] = collections.Counter()
        det = result.detections
        if det is None or not len(det) or not self.watched:
            return counts
        ids = det.tracker_id.tolist() if det.tracker_id is not None else None
        for i, (class_id, conf) in enumerate(zip(det.class_id.tolist(), det.confidence.tolist(), strict=True)):
            if conf < self.min_confidence or (ids is not None and ids[i] < 0):
                continue
            label = result.label(int(class_id))
            if label in self.watched:
                counts[label] += 1
        return counts

    def close(self) -> None:
        self.publisher.close()

    # ------------------------------------------------------------------ events

    def on_event(self, change: str, record: dict[str, Any], picture: np.ndarray | None) -> None:
        """An :data:`~streamer.sinks.events.EventListener`: queue the message, keep the picture."""
        cam = self.cameras.get(record.get("camera", ""))
        name = cam.name if cam is not None else str(record.get("camera"))
        message = {"event": change, "id": record.get("id"), "seq": next(self._seq),
                   **{k: v for k, v in record.items() if k != "id"}, "camera": name}
        self.publisher.send(f"{self.prefix}/events", json.dumps(message))
        label = str(record.get("label", ""))
        if not self.cfg.snapshots or picture is None or change == "loiter" or cam is None:
            return
        start = str(record.get("start", ""))
        if start >= self._newest.get((name, label), ""):
            self._newest[(name, label)] = start
            self.publisher.retain(cam.snapshot(self.prefix, label), picture)

    # ------------------------------------------------------------------ publisher's thread

    def _announce(self) -> list[tuple[str, str | bytes | np.ndarray]]:
        if not self.cfg.discovery:
            return []
        return list(discovery_configs(self.cfg, list(self.cameras.values()), self.watched, self.version))

    def _publish_states(self) -> None:
        assert self.states is not None
        for source_id, state in self.states().items():
            cam = self.cameras.get(source_id)
            if cam is not None:
                self.publisher.retain(cam.state(self.prefix), state)

    # ------------------------------------------------------------------ reporting

    def stats(self) -> dict[str, Any]:
        """The ``mqtt`` entry of the stats (never the password)."""
        return self.publisher.counters().to_dict()

    def summary(self) -> str | None:
        c = self.publisher.counters()
        text = f"{c.server} ({self.prefix}/...): {c.published} messages published"
        if c.dropped:
            text += f", {c.dropped} events dropped (broker away, queue of {self.cfg.queue_size} full, or unsent at the end)"
        if c.last_error:
            text += f"; last error: {c.last_error}"
        return text

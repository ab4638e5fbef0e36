"""Events: one per watched object on a camera, from when it appears to when it has gone.

With tracking on (the monitor's default when events are configured), an object is a track
of a watched class: its event starts once the track is confirmed and seen on ``min_frames``
frames (confidence >= ``min_confidence``) and ends once it has not been seen for
``gone_after_s``. Without tracking, an object is a class on a camera. At the end, one line
goes to ``events.jsonl``::

    {"type": "object", "camera": "front", "track_id": 7, "label": "person",
     "start": "2026-11-28T09:12:01.120Z", "end": "2026-11-28T09:12:07.480Z",
     "max_confidence": 0.91, "frames": 57, "snapshot": "out/snapshots/front-person-7-....jpg",
     "zones": ["driveway"], "lines": [{"line": "gate", "direction": "in"}]}

and the annotated frame with the highest confidence is saved as the JPEG snapshot. With
``loiter_s``, a ``{"type": "loiter", ...}`` line is written as soon as a track has stayed
that long in one zone. An optional webhook receives the same objects as JSON POSTs from a
background thread with retries; a slow or dead webhook never blocks the pipeline (events
queue up to a bound, then the oldest are dropped and counted).

Listeners (the MQTT output) hear each event as it happens, not only at its end: ``start``
when it starts, ``update`` when it enters a zone, crosses a line or gets a clearly better
snapshot, ``end``, and each ``loiter``.
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import cv2
import numpy as np

from streamer.errors import ConfigError, SinkError
from streamer.sinks.base import Sink
from streamer.sinks.jsonl import check_writable
from streamer.types import Result

if TYPE_CHECKING:
    from streamer.config import EventsConfig
    from streamer.sinks.mqtt import MqttSink

log = logging.getLogger(__name__)

# time.monotonic() -> wall clock, fixed once so that event times are consistent.
_WALL_OFFSET = time.time() - time.monotonic()

#: Hears events as they happen: ``listener(change, record, picture)``. ``change`` is "start",
#: "update", "end" or "loiter"; ``record`` has the fields of an events.jsonl line (``end`` and
#: ``snapshot`` None until the end) plus ``id``, the same for every change of one event;
#: ``picture`` is the best annotated frame so far (BGR, not to be modified), or None. Called
#: on the sinks thread: a listener must only hand the change on, never block.
EventListener = Callable[[str, dict[str, Any], "np.ndarray | None"], None]

#: A rise of the best confidence that makes an "update" for the better snapshot; smaller
#: rises happen on most frames and would make a message of each.
BETTER_SNAPSHOT = 0.05


def iso_time(monotonic_s: float) -> str:
    stamp = datetime.fromtimestamp(monotonic_s + _WALL_OFFSET, tz=timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


@dataclass
class _Object:
    """One watched object on one camera: a confirmed track, or (tracking off) a class."""

    label: str
    track_id: int | None = None
    run: int = 0  # frames seen before the event started
    run_start: float = 0.0
    active: bool = False
    start: float = 0.0
    last_seen: float = 0.0
    frames: int = 0
    max_confidence: float = 0.0
    best: np.ndarray | None = field(default=None, repr=False)
    zones: list[str] = field(default_factory=list)  # zones entered, in order
    lines: list[dict[str, str]] = field(default_factory=list)  # lines crossed: {"line", "direction"}
    loitered: set[str] = field(default_factory=set)  # zones a loiter event was raised for
    told: bool = False  # listeners have heard its start
    told_geometry: int = 0  # zones + lines when listeners last heard of it
    told_confidence: float = 0.0  # max_confidence when listeners last heard of it


class WebhookSender:
    """POSTs JSON events from its own thread, with retries and exponential backoff."""

    def __init__(self, url: str, retries: int = 3, timeout_s: float = 5.0, max_queued: int = 1000) -> None:
        self.url = url
        self.retries = retries
        self.timeout_s = timeout_s
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(max_queued)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamer-webhook", daemon=True)
        self._thread.start()

    def send(self, event: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            log.warning("webhook queue full: event dropped (%d so far)", self.dropped)

    def _post(self, event: dict[str, Any]) -> None:
        body = json.dumps(event).encode()
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 - user-configured URL
            if response.status >= 300:
                raise urllib.error.HTTPError(self.url, response.status, "unexpected status", response.headers, None)

    def _run(self) -> None:
        while True:
            try:
                event = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if event is None:
                return
            for attempt in range(self.retries + 1):
                try:
                    self._post(event)
                    self.sent += 1
                    break
                except (OSError, urllib.error.URLError) as exc:
                    if attempt == self.retries or self._stop.is_set():
                        self.failed += 1
                        log.warning("webhook %s failed after %d attempts: %s", self.url, attempt + 1, exc)
                        break
                    if self._stop.wait(min(10.0, 0.5 * 2**attempt)):
                        self.failed += 1
                        break

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued for at most ``timeout`` seconds, then give up."""
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout)
        self._stop.set()
        self._thread.join(1.0)


class EventSink(Sink):
    """Turns tracked detections into one event per object and camera.

    With tracking (``detections.tracker_id``) an object is a track of a watched class: its
    event starts once the track is confirmed and seen on ``min_frames`` frames, and ends when
    the track has not been seen for ``gone_after_s`` of the camera's own time. Two people are
    two events; a hand-over between them never merges them. Without tracking an object is a
    class on a camera, seen on ``min_frames`` consecutive frames. ``zones`` keeps only objects
    that entered one of those zones; ``loiter_s`` raises a ``loiter`` event as soon as a track
    has stayed that long in one zone.
    """

    name = "events"
    needs_render = True

    def __init__(
        self,
        path: str | Path | None,
        snapshots: str | Path,
        track: tuple[str, ...],
        *,
        min_confidence: float = 0.5,
        min_frames: int = 3,
        gone_after_s: float = 2.0,
        zones: tuple[str, ...] = (),
        loiter_s: float | None = None,
        webhook: str | None = None,
        webhook_retries: int = 3,
        webhook_timeout_s: float = 5.0,
        keep_events: int = 1000,
        listeners: Sequence[EventListener] = (),
    ) -> None:
        if keep_events < 1:
            raise ConfigError(f"events keep_events must be at least 1, but got {keep_events}")
        self.path = Path(path) if path else None
        self.snapshots = Path(snapshots)
        self.track = set(track)
        self.min_confidence = min_confidence
        self.min_frames = min_frames
        self.gone_after_s = gone_after_s
        self.zones = set(zones)
        self.loiter_s = loiter_s
        self.webhook_url = webhook
        self.webhook_retries = webhook_retries
        self.webhook_timeout_s = webhook_timeout_s
        self.listeners = tuple(listeners)
        self.webhook: WebhookSender | None = None
        self._webhook_counts: tuple[int, int, int] | None = None
        # The newest events, for the dashboard; a 24/7 monitor would otherwise grow this
        # forever. Every event still goes to the file and the webhook.
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep_events)
        self.events_total = 0
        self.events_dropped = 0  # events that fell out of ``events``
        self.filtered = 0  # objects that never entered one of ``zones``
        self._objects: dict[tuple[str, int | str], _Object] = {}
        self._clock: dict[str, float] = {}  # per camera: capture time of its newest frame
        self._received: dict[str, float] = {}  # per camera: when its newest frame got here
        self._file: IO[str] | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        if self.path is not None:
            check_writable(self.path, "events")
            try:
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            except OSError as exc:
                raise SinkError(f"{self.path}: cannot open for writing: {exc.strerror}") from None
        try:
            self.snapshots.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"{self.snapshots}: cannot create the snapshot folder: {exc.strerror}") from None
        if self.webhook_url:
            self.webhook = WebhookSender(self.webhook_url, self.webhook_retries, self.webhook_timeout_s)

    def _sightings(self, result: Result) -> dict[int | str, tuple[str, float]]:
        """This frame's watched objects: key (track id, or label untracked) -> (label, confidence)."""
        det = result.detections
        seen: dict[int | str, tuple[str, float]] = {}
        if det is None or not len(det):
            return seen
        ids = det.tracker_id.tolist() if det.tracker_id is not None else None
        for i, (c, conf) in enumerate(zip(det.class_id.tolist(), det.confidence.tolist(), strict=True)):
            label = result.label(int(c))
            if label not in self.track or conf < self.min_confidence:
                continue
            key: int | str = label
            if ids is not None:
                if ids[i] < 0:
                    continue  # not a confirmed track yet
                key = int(ids[i])
            if key not in seen or conf > seen[key][1]:
                seen[key] = (label, conf)
        return seen

    def write(self, result: Result) -> None:
        camera = result.frame.source_id
        now = result.frame.captured_at
        tracked = result.detections is not None and result.detections.tracker_id is not None
        seen = self._sightings(result)
        analytics = result.analytics
        loiter: list[tuple[dict[str, Any], str]] = []
        changes: list[tuple[str, dict[str, Any], np.ndarray | None]] = []
        with self._lock:
            for key, (label, conf) in seen.items():
                obj = self._objects.get((camera, key))
                if obj is None:
                    obj = self._objects[(camera, key)] = _Object(label, key if isinstance(key, int) else None)
                if not obj.active:
                    if obj.run == 0:
                        obj.run_start = now
                    obj.run += 1
                    if obj.run >= self.min_frames:
                        obj.active, obj.start, obj.frames = True, obj.run_start, obj.run - 1
                obj.last_seen = now
                if obj.active:
                    obj.frames += 1
                if conf > obj.max_confidence:
                    obj.max_confidence = conf
                    obj.best = result.image.copy()
            if analytics is not None and tracked:
                loiter = self._note_geometry(camera, analytics, now)
            if not tracked:
                for (cam, key), obj in self._objects.items():
                    if cam == camera and key not in seen and not obj.active:
                        obj.run = 0  # the run of consecutive frames is broken
                        obj.max_confidence, obj.best = 0.0, None
            self._clock[camera] = max(now, self._clock.get(camera, now))
            self._received[camera] = time.monotonic()
            if self.listeners:
                changes = self._changes(camera)
        for change, record, picture in changes:
            self._tell(change, record, picture)
        for event, event_id in loiter:
            self._publish(event)
            self._tell("loiter", {**event, "id": event_id}, None)
        self._expire(time.monotonic())

    def _changes(self, camera: str) -> list[tuple[str, dict[str, Any], np.ndarray | None]]:
        """Starts and updates of ``camera``'s active objects that listeners have not heard yet.

        With ``zones``, an object is news only once it is in one of them, as in the file."""
        changes = []
        for (cam, _key), obj in self._objects.items():
            if cam != camera or not obj.active or (self.zones and not self.zones.intersection(obj.zones)):
                continue
            geometry = len(obj.zones) + len(obj.lines)
            if not obj.told:
                change = "start"
            elif geometry != obj.told_geometry or obj.max_confidence >= obj.told_confidence + BETTER_SNAPSHOT:
                change = "update"
            else:
                continue
            obj.told, obj.told_geometry, obj.told_confidence = True, geometry, obj.max_confidence
            changes.append((change, {**self._record(camera, obj, None, None), "id": self._event_id(camera, obj)},
                            obj.best))
        return changes

    def _tell(self, change: str, record: dict[str, Any], picture: np.ndarray | None) -> None:
        for listener in self.listeners:
            try:
                listener(change, record, picture)
            except Exception:  # noqa: BLE001 - a listener's bug must not cost the file its events
                log.exception("event listener failed on %s %s", change, record.get("id"))

    def _note_geometry(self, camera: str, analytics: Any, now: float) -> list[tuple[dict[str, Any], str]]:
        """Record zones entered and lines crossed by watched tracks; loiter events to raise,
        each with the id of its object's event."""
        for entry in analytics.entries:
            obj = self._objects.get((camera, entry.track_id))
            if obj is not None and entry.zone not in obj.zones:
                obj.zones.append(entry.zone)
        for cross in analytics.crossings:
            obj = self._objects.get((camera, cross.track_id))
            if obj is not None:
                obj.lines.append({"line": cross.line, "direction": cross.direction})
        events: list[tuple[dict[str, Any], str]] = []
        if self.loiter_s is None:
            return events
        for zone, stays in analytics.dwell.items():
            for track_id, dwell_s in stays.items():
                obj = self._objects.get((camera, int(track_id)))
                if obj is None or dwell_s < self.loiter_s or zone in obj.loitered:
                    continue
                if self.zones and zone not in self.zones:
                    continue
                obj.loitered.add(zone)
                events.append(({
                    "type": "loiter", "camera": camera, "track_id": obj.track_id, "label": obj.label,
                    "zone": zone, "since": iso_time(now - dwell_s), "at": iso_time(now), "dwell_s": round(dwell_s, 3),
                }, self._event_id(camera, obj)))
        return events

    def idle(self) -> None:
        self._expire(time.monotonic())

    def _gone(self, camera: str, track: _Object, now: float) -> bool:
        """Gone: the camera's own frames show ``gone_after_s`` without the label, or the camera
        sent nothing for ``gone_after_s``. Both clocks exclude the pipeline's latency: comparing
        capture times with the time of processing would end events (and break the runs of
        consecutive sightings) early whenever latency is a sizeable part of gone_after_s."""
        return (
            self._clock.get(camera, track.last_seen) - track.last_seen >= self.gone_after_s
            or now - self._received.get(camera, now) >= self.gone_after_s
        )

    def _expire(self, now: float, force: bool = False) -> None:
        with self._lock:
            ended = []
            for key, obj in list(self._objects.items()):
                if obj.active and (force or self._gone(key[0], obj, now)):
                    ended.append((key[0], obj))
                    del self._objects[key]
                elif not obj.active and obj.run and self._gone(key[0], obj, now):
                    del self._objects[key]
        for camera, obj in ended:
            self._emit(camera, obj)

    @staticmethod
    def _event_id(camera: str, track: _Object) -> str:
        """``CAMERA-LABEL[-TRACK]-START``: names the event's snapshot, and the event in MQTT."""
        stamp = iso_time(track.start).replace(":", "").replace("-", "")
        who = track.label.replace(" ", "_") + (f"-{track.track_id}" if track.track_id is not None else "")
        return f"{camera}-{who}-{stamp}"

    @staticmethod
    def _record(camera: str, track: _Object, end: float | None, snapshot: str | None) -> dict[str, Any]:
        """The events.jsonl form of an object's event (``end`` None while it goes on)."""
        event: dict[str, Any] = {"type": "object", "camera": camera}
        if track.track_id is not None:
            event["track_id"] = track.track_id
        event.update({
            "label": track.label,
            "start": iso_time(track.start),
            "end": iso_time(end) if end is not None else None,
            "max_confidence": round(track.max_confidence, 4),
            "frames": track.frames,
            "snapshot": snapshot,
        })
        if track.track_id is not None:
            event["zones"] = list(track.zones)
            event["lines"] = list(track.lines)
        return event

    def _emit(self, camera: str, track: _Object) -> None:
        if self.zones and not self.zones.intersection(track.zones):
            self.filtered += 1
            return
        end = max(track.last_seen, track.start + 1e-3)
        event_id = self._event_id(camera, track)
        snapshot = None
        if track.best is not None:
            path = self.snapshots / f"{event_id}.jpg"
            if cv2.imwrite(str(path), track.best, [cv2.IMWRITE_JPEG_QUALITY, 90]):
                snapshot = str(path)
            else:
                log.error("could not write snapshot %s", path)
        event = self._record(camera, track, end, snapshot)
        log.info("event: %s %s%s %s..%s", camera, track.label,
                 f" #{track.track_id}" if track.track_id is not None else "", event["start"], event["end"])
        self._publish(event)
        if self.listeners:
            if not track.told:  # ended before its first write was over (a flush): listeners hear both
                self._tell("start", {**self._record(camera, track, None, None), "id": event_id}, track.best)
            self._tell("end", {**event, "id": event_id}, track.best)

    def _publish(self, event: dict[str, Any]) -> None:
        with self._lock:
            if len(self.events) == self.events.maxlen:
                self.events_dropped += 1
            self.events.append(event)
            self.events_total += 1
        if self._file is not None:
            self._file.write(json.dumps(event) + "\n")
            self._file.flush()
        if self.webhook is not None:
            self.webhook.send(event)

    def recent(self, n: int = 20) -> list[dict[str, Any]]:
        """The newest ``n`` events, oldest first (safe to call from another thread)."""
        with self._lock:
            return list(self.events)[-n:]

    def flush(self) -> None:
        self._expire(time.monotonic(), force=True)

    def close(self) -> None:
        self._expire(time.monotonic(), force=True)
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.webhook is not None:
            self.webhook.close()
            self._webhook_counts = (self.webhook.sent, self.webhook.failed, self.webhook.dropped)
            self.webhook = None

    def summary(self) -> str | None:
        where = f"{self.path}: " if self.path else ""
        text = f"{where}{self.events_total} events"
        if self.filtered:
            text += f" ({self.filtered} objects outside the watched zones not reported)"
        hook = self._webhook_counts
        if hook is not None:
            text += f"; webhook: {hook[0]} delivered, {hook[1]} failed, {hook[2]} dropped (queue full)"
        return text


def events_from(cfg: EventsConfig, mqtt: MqttSink | None = None) -> EventSink:
    """The event sink an ``events:`` section describes (not opened yet), telling ``mqtt`` of
    every event as it happens."""
    return EventSink(
        cfg.path, cfg.snapshots, cfg.track, min_confidence=cfg.min_confidence, min_frames=cfg.min_frames,
        gone_after_s=cfg.gone_after_s, zones=cfg.zones, loiter_s=cfg.loiter_s, webhook=cfg.webhook,
        webhook_retries=cfg.webhook_retries, webhook_timeout_s=cfg.webhook_timeout_s,
        listeners=[mqtt.on_event] if mqtt is not None else (),
    )

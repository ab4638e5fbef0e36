"""Events: when a watched class appears on a camera and when it has gone again.

Per camera and label: the class must be seen (confidence >= ``min_confidence``) on
``min_frames`` consecutive processed frames to start an event; it ends once it has not been
seen for ``gone_after_s``. At the end, one line goes to ``events.jsonl``::

    {"camera": "front", "label": "person", "start": "2026-11-28T09:12:01.120Z",
     "end": "2026-11-28T09:12:07.480Z", "max_confidence": 0.91, "frames": 57,
     "snapshot": "out/snapshots/front-person-20261128T091201.120Z.jpg"}

and the annotated frame with the highest confidence is saved as the JPEG snapshot. An
optional webhook receives the same object as a JSON POST from a background thread with
retries; a slow or dead webhook never blocks the pipeline (events queue up to a bound, then
the oldest are dropped and counted).
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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from streamer.errors import ConfigError, SinkError
from streamer.sinks.base import Sink
from streamer.sinks.jsonl import check_writable
from streamer.types import Result

log = logging.getLogger(__name__)

# time.monotonic() -> wall clock, fixed once so that event times are consistent.
_WALL_OFFSET = time.time() - time.monotonic()


def iso_time(monotonic_s: float) -> str:
    stamp = datetime.fromtimestamp(monotonic_s + _WALL_OFFSET, tz=timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


@dataclass
class _Track:
    label: str
    run: int = 0  # consecutive frames seen before the event started
    run_start: float = 0.0
    active: bool = False
    start: float = 0.0
    last_seen: float = 0.0
    frames: int = 0
    max_confidence: float = 0.0
    best: np.ndarray | None = field(default=None, repr=False)


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
    """Turns per-frame detections into appear/disappear events per camera and label."""

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
        webhook: str | None = None,
        webhook_retries: int = 3,
        webhook_timeout_s: float = 5.0,
        keep_events: int = 1000,
    ) -> None:
        if keep_events < 1:
            raise ConfigError(f"events keep_events must be at least 1, but got {keep_events}")
        self.path = Path(path) if path else None
        self.snapshots = Path(snapshots)
        self.track = set(track)
        self.min_confidence = min_confidence
        self.min_frames = min_frames
        self.gone_after_s = gone_after_s
        self.webhook_url = webhook
        self.webhook_retries = webhook_retries
        self.webhook_timeout_s = webhook_timeout_s
        self.webhook: WebhookSender | None = None
        self._webhook_counts: tuple[int, int, int] | None = None
        # The newest events, for the dashboard; a 24/7 monitor would otherwise grow this
        # forever. Every event still goes to the file and the webhook.
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep_events)
        self.events_total = 0
        self.events_dropped = 0  # events that fell out of ``events``
        self._tracks: dict[tuple[str, str], _Track] = {}
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

    def write(self, result: Result) -> None:
        det = result.detections
        camera = result.frame.source_id
        now = result.frame.captured_at
        best: dict[str, float] = {}
        if det is not None:
            for c, conf in zip(det.class_id.tolist(), det.confidence.tolist(), strict=True):
                label = result.label(int(c))
                if label in self.track and conf >= self.min_confidence and conf > best.get(label, -1.0):
                    best[label] = conf
        with self._lock:
            for label, conf in best.items():
                track = self._tracks.setdefault((camera, label), _Track(label))
                if not track.active:
                    if track.run == 0:
                        track.run_start = now
                    track.run += 1
                    if track.run >= self.min_frames:
                        track.active, track.start, track.frames = True, track.run_start, track.run - 1
                track.last_seen = now
                if track.active:
                    track.frames += 1
                if conf > track.max_confidence:
                    track.max_confidence = conf
                    track.best = result.image.copy()
            for (cam, label), track in self._tracks.items():
                if cam == camera and label not in best and not track.active:
                    track.run = 0  # the run of consecutive frames is broken
                    track.max_confidence, track.best = 0.0, None
            self._clock[camera] = max(now, self._clock.get(camera, now))
            self._received[camera] = time.monotonic()
        self._expire(time.monotonic())

    def idle(self) -> None:
        self._expire(time.monotonic())

    def _gone(self, camera: str, track: _Track, now: float) -> bool:
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
            for key, track in list(self._tracks.items()):
                if track.active and (force or self._gone(key[0], track, now)):
                    self._emit(key[0], track)
                    del self._tracks[key]
                elif not track.active and track.run and self._gone(key[0], track, now):
                    del self._tracks[key]

    def _emit(self, camera: str, track: _Track) -> None:
        start, end = track.start, max(track.last_seen, track.start + 1e-3)
        snapshot = None
        if track.best is not None:
            stamp = iso_time(start).replace(":", "").replace("-", "")
            path = self.snapshots / f"{camera}-{track.label.replace(' ', '_')}-{stamp}.jpg"
            if cv2.imwrite(str(path), track.best, [cv2.IMWRITE_JPEG_QUALITY, 90]):
                snapshot = str(path)
            else:
                log.error("could not write snapshot %s", path)
        event = {
            "camera": camera,
            "label": track.label,
            "start": iso_time(start),
            "end": iso_time(end),
            "max_confidence": round(track.max_confidence, 4),
            "frames": track.frames,
            "snapshot": snapshot,
        }
        if len(self.events) == self.events.maxlen:
            self.events_dropped += 1
        self.events.append(event)
        self.events_total += 1
        log.info("event: %s %s %s..%s", camera, track.label, event["start"], event["end"])
        if self._file is not None:
            self._file.write(json.dumps(event) + "\n")
            self._file.flush()
        if self.webhook is not None:
            self.webhook.send(event)

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
        hook = self._webhook_counts
        if hook is not None:
            text += f"; webhook: {hook[0]} delivered, {hook[1]} failed, {hook[2]} dropped (queue full)"
        return text

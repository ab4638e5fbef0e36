"""The standard stages: preprocess, infer, postprocess, render, sinks."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from streamer.config import ClassifyConfig, DetectConfig, TrackConfig
from streamer.models.base import Model
from streamer.pipeline import Stage
from streamer.postprocess.anchors import AnchorConfig, decode_anchor_detections, ssd_output_split
from streamer.postprocess.decode import decode_classes, decode_detections, keep_mask
from streamer.preprocess import PAD_VALUE, letterbox_into, letterbox_params
from streamer.render import draw_classes, draw_detections, draw_status, draw_trails
from streamer.sinks.base import Sink
from streamer.sources.base import Source
from streamer.types import Detections, Frame, Letterbox, Result

if TYPE_CHECKING:
    # Imported where they are first used: loading them compiles or loads Numba kernels.
    from streamer.analytics import Analytics
    from streamer.analytics.geometry import LineSpec, ZoneSpec
    from streamer.classify import ObjectClassifier
    from streamer.track import Tracker

    #: Lines and zones per source id (None: every source).
    Geometry = dict[str | None, tuple[Sequence[LineSpec], Sequence[ZoneSpec]]]

log = logging.getLogger(__name__)

PAD_FILL = np.float32(PAD_VALUE) / np.float32(255.0)
_DUMMY_FRAME = Frame("warm-up", -1, np.zeros((32, 32, 3), np.uint8), None, 0.0)


class PreprocessStage(Stage):
    """Letterboxes each frame into the model's float32 CHW input."""

    name = "preprocess"

    def __init__(self, model: Model, imgsz: int | tuple[int, int] | None = None, rect: bool = True) -> None:
        self.model = model
        self.imgsz = imgsz
        self.rect = rect
        self._cache: dict[tuple[int, int], Letterbox] = {}

    def open(self) -> None:
        self.model.ensure_open()
        info = self.model.info
        if self.imgsz is None:
            self.imgsz = info.imgsz
        if not info.dynamic:
            # A fixed-size model takes exactly its own size: square letterbox to it.
            self.imgsz, self.rect = info.imgsz, False
        self.process(Result(frame=_DUMMY_FRAME))  # load the Numba kernel before the first frame
        self._cache.clear()

    def letterbox_for(self, source_hw: tuple[int, int]) -> Letterbox:
        lb = self._cache.get(source_hw)
        if lb is None:
            assert self.imgsz is not None
            lb = letterbox_params(source_hw, self.imgsz, rect=self.rect, stride=self.model.info.stride)
            self._cache[source_hw] = lb
        return lb

    def process(self, item: Result) -> Result:
        image = item.frame.image
        lb = self.letterbox_for((image.shape[0], image.shape[1]))
        item.letterbox = lb
        if not self.model.device_preprocess:
            item.input = letterbox_into(image, lb, np.empty((3, *lb.input_hw), np.float32))
        return item


class InferStage(Stage):
    """Runs the model; with ``batch_size > 1`` frames of the same input size share one call.

    With ``workers > 1`` that many model calls run at once (the model must be safe to call
    from several threads, as ONNX Runtime sessions and torch modules in inference mode are);
    results still leave in input order.
    """

    name = "infer"

    def __init__(self, model: Model, batch_size: int = 1, batch_timeout_s: float = 0.0, workers: int = 1) -> None:
        self.model = model
        self.batch_size = batch_size
        self.batch_timeout_s = batch_timeout_s
        self.workers = workers

    def open(self) -> None:
        self.model.ensure_open()
        max_batch = self.model.info.max_batch
        if max_batch is not None and self.batch_size > max_batch:
            log.info("model takes batches of %d at most; using %d", max_batch, max_batch)
            self.batch_size = max_batch

    def process(self, item: Result) -> Result:
        return self.process_batch([item])[0]

    def process_batch(self, items: list[Result]) -> list[Result]:
        if self.model.device_preprocess:
            # The model letterboxes the uint8 frames on its own device (CUDA).
            letterboxes: list[Letterbox] = []
            for item in items:
                assert item.letterbox is not None, "infer before preprocess"
                letterboxes.append(item.letterbox)
            batch_on_device = self.model.prepare([item.frame.image for item in items], letterboxes)
            return self._finish(items, self.model(batch_on_device))
        inputs: list[np.ndarray] = []
        for item in items:
            assert item.input is not None, "infer before preprocess"
            inputs.append(item.input)
        if len(items) == 1:
            batch = inputs[0][None]
        else:
            # Cameras of different sizes letterbox to different inputs. Padding the smaller
            # ones at the bottom and right keeps one model call per batch; the boxes stay
            # right because the letterbox offsets are measured from the top-left corner.
            h = max(x.shape[1] for x in inputs)
            w = max(x.shape[2] for x in inputs)
            batch = np.empty((len(items), 3, h, w), np.float32)
            for i, x in enumerate(inputs):
                _, xh, xw = x.shape
                batch[i, :, :xh, :xw] = x
                if xh < h or xw < w:
                    batch[i, :, xh:, :] = PAD_FILL
                    batch[i, :, :xh, xw:] = PAD_FILL
        return self._finish(items, self.model(batch))

    def _finish(self, items: list[Result], raw: np.ndarray) -> list[Result]:
        for i, item in enumerate(items):
            item.raw = raw[i]
            item.input = None  # free the input tensor as soon as it is used
        return items

    def close(self) -> None:
        self.model.ensure_closed()


class PostprocessStage(Stage):
    """Decodes raw outputs (Numba) into detections or top-k classes in source pixels."""

    name = "postprocess"

    def __init__(self, model: Model, params: DetectConfig, anchors: AnchorConfig | None = None) -> None:
        self.model = model
        self.params = params
        self.anchor_config = anchors
        self._anchors: np.ndarray | None = None
        self._names: tuple[str, ...] = ()

    def open(self) -> None:
        self.model.ensure_open()
        info = self.model.info
        self._names = info.names
        nc = max(len(info.names), 1)
        self._layout = info.layout
        if self.anchor_config is not None:
            # An SSD head's output can look like a YOLO layout; the pipeline file says what it is.
            self._layout = "anchors"
            self._anchors = self.anchor_config.anchors()
            return
        self._warm_up(nc)

    def _warm_up(self, nc: int) -> None:
        # The first call of a Numba kernel loads it from the cache (or compiles it): pay that
        # here, before the first frame, instead of as a stall in the stream.
        if self._layout in ("v8", "v5", "end2end", "classify"):
            lb = Letterbox(1.0, 0, 0, (32, 32), (32, 32))
            shape = {"v8": (4 + nc, 1), "v5": (1, 5 + nc), "end2end": (1, 6), "classify": (nc,)}[self._layout]
            self.process(Result(frame=_DUMMY_FRAME, letterbox=lb, raw=np.zeros(shape, np.float32)))

    def process(self, item: Result) -> Result:
        raw, lb = item.raw, item.letterbox
        assert raw is not None and lb is not None, "postprocess before inference"
        p = self.params
        if self._layout == "classify":
            item.classes = decode_classes(raw, p.top_k)
        elif self._layout == "anchors":
            assert self.anchor_config is not None and self._anchors is not None
            cfg = self.anchor_config
            columns = raw.shape[-1] - 4 if raw.ndim == 2 and raw.shape[0] == cfg.num_anchors else raw.shape[0] - 4
            loc, scores = ssd_output_split(raw, cfg.num_anchors, columns)
            item.detections = decode_anchor_detections(
                loc, scores, self._anchors, keep_mask(p.classes, cfg.num_foreground(columns)), lb, cfg,
                conf=p.conf, iou=p.iou, max_det=p.max_det, max_nms=p.max_nms,
            )
        else:
            item.detections = decode_detections(
                raw, self._layout, keep_mask(p.classes, max(len(self._names), 1)), lb, conf=p.conf, iou=p.iou,
                agnostic=p.agnostic, multi_label=p.multi_label, max_det=p.max_det, max_nms=p.max_nms,
            )
        item.raw = None
        item.names = self._names
        return item


def frame_time(frame: Frame, live: bool, fps: float | None) -> float:
    """A frame's time in seconds for trackers and caches: a live frame's capture time; a
    file's timestamp (its pts), else its index at the nominal rate."""
    if live:
        return frame.captured_at
    if frame.pts_s is not None:
        return frame.pts_s
    return frame.index / (fps or 30.0)


class _StreamState:
    """Tracker, counting geometry and trails of one source."""

    def __init__(self, tracker: Tracker, analytics: Analytics | None, trail: int) -> None:
        self.tracker = tracker
        self.analytics = analytics
        self.trail = trail
        self.points: dict[int, collections.deque[tuple[float, float]]] = {}
        self.last_seen: dict[int, int] = {}
        self.frames = 0


class TrackStage(Stage):
    """Gives detections identities over time, then counts lines and zones per source.

    One :class:`~streamer.track.Tracker` per source (camera), created on its first frame,
    so cameras never share or reset each other's ids. Every processed frame reaches the
    tracker, empty ones included, with its own time: a file's timestamps (its pts, else
    index / fps), a live frame's capture time, so dropped frames age tracks by the time that
    really passed. ``lines`` and ``zones`` (``streamer.analytics`` specs) may be given per
    source id (monitor) or for every source (``None`` key).
    """

    name = "track"

    def __init__(self, settings: TrackConfig, source: Source, live: bool, geometry: Geometry | None = None) -> None:
        self.settings = settings
        self.source = source
        self.live = live
        self.geometry = geometry or {}
        self.streams: dict[str, _StreamState] = {}

    def open(self) -> None:
        # The first update loads the Numba kernels from the cache (or compiles them): pay
        # that here, before the first frame, instead of as a stall in the stream.
        from streamer.track import Tracker

        warm = Tracker(**self.settings.tracker_settings(None))
        box = np.array([[0, 0, 10, 10]], np.float32)
        for t in (0.0, 0.04):
            warm.update(Detections(box, np.array([0.9], np.float32), np.zeros(1, np.int32)), t)
        if any(lines or zones for lines, zones in self.geometry.values()):
            from streamer.analytics import Analytics
            from streamer.analytics.geometry import LineSpec, ZoneSpec

            Analytics([LineSpec("warm", (5, 0), (5, 20))], [ZoneSpec("warm", ((0, 0), (20, 0), (20, 20)))]).update(
                warm.update(Detections(box, np.array([0.9], np.float32), np.zeros(1, np.int32)), 0.08), 0.08)

    def _stream(self, source_id: str) -> _StreamState:
        state = self.streams.get(source_id)
        if state is None:
            from streamer.track import Tracker

            tracker = Tracker(**self.settings.tracker_settings(self.source.fps_of(source_id)))
            lines, zones = self.geometry.get(source_id) or self.geometry.get(None) or ((), ())
            analytics = None
            if lines or zones:
                from streamer.analytics import Analytics

                analytics = Analytics(lines, zones)
            state = _StreamState(tracker, analytics, self.settings.trail)
            self.streams[source_id] = state
        return state

    def process(self, item: Result) -> Result:
        if item.detections is None:
            return item
        state = self._stream(item.frame.source_id)
        t = frame_time(item.frame, self.live, state.tracker.frame_rate)
        item.detections = state.tracker.update(item.detections, t)
        if state.analytics is not None:
            item.analytics = state.analytics.update(item.detections, t)
        if state.trail:
            item.trails = self._trails(state, item.detections)
        return item

    @staticmethod
    def _trails(state: _StreamState, detections: Detections) -> dict[int, np.ndarray]:
        ids = detections.tracker_id
        assert ids is not None
        xyxy = detections.xyxy
        centres = np.stack([(xyxy[:, 0] + xyxy[:, 2]) * 0.5, (xyxy[:, 1] + xyxy[:, 3]) * 0.5], axis=1).tolist()
        trails: dict[int, np.ndarray] = {}
        for track_id, point in zip(ids.tolist(), centres, strict=True):
            if track_id < 0:
                continue
            points = state.points.get(track_id)
            if points is None:
                points = state.points[track_id] = collections.deque(maxlen=state.trail)
            points.append((point[0], point[1]))
            trails[track_id] = np.asarray(points, np.float32)
        state.frames += 1
        for track_id in trails:
            state.last_seen[track_id] = state.frames
        # A track missed for a few frames keeps its trail; one gone for longer loses it, so
        # memory stays bounded by the objects recently in view.
        if state.frames % 32 == 0:
            stale = [k for k, seen in state.last_seen.items() if state.frames - seen > state.trail]
            for track_id in stale:
                del state.last_seen[track_id]
                state.points.pop(track_id, None)
        return trails

    def flush(self) -> None:
        self.streams.clear()


class ClassifyStage(Stage):
    """Classifies the detected objects with a second model (``classify:``), one call per frame.

    One :class:`~streamer.classify.ObjectClassifier` per source, so each camera's per-track
    cache is its own. With tracking on (this stage runs after the track stage) an object is
    classified when its track is confirmed and again only every ``every_s``.

    ``classifier`` is the second model, built but not opened: it opens with the stage, after
    the detector is checked, so that a swapped ``model.name`` and ``classify.model`` is
    reported against the key that is wrong.
    """

    name = "classify"

    def __init__(self, settings: ClassifyConfig, detector: Model, classifier: Model, source: Source,
                 live: bool) -> None:
        self.settings = settings
        self.detector = detector
        self._classifier = classifier
        self.source = source
        self.live = live
        #: The classifier once it is open and checked (None before: nothing to summarize).
        self.model: Model | None = None
        self.classifiers: dict[str, ObjectClassifier] = {}
        self._class_ids: list[int] | None = None

    def open(self) -> None:
        from streamer.classify import check_classifier, check_detector

        check_detector(self.detector, "model.name")
        check_classifier(self._classifier, "classify.model")
        self.model = self._classifier
        self._class_ids = self.settings.class_ids(self.detector.info.names)
        self.classifier("warm-up").classify(
            _DUMMY_FRAME.image, Detections(np.array([[0, 0, 32, 32]], np.float32), np.ones(1, np.float32),
                                           np.zeros(1, np.int32)), 0.0)
        self.classifiers.clear()

    def classifier(self, source_id: str) -> ObjectClassifier:
        found = self.classifiers.get(source_id)
        if found is None:
            from streamer.classify import ObjectClassifier

            s = self.settings
            assert self.model is not None
            found = ObjectClassifier(self.model, self._class_ids, top_k=s.top_k, min_box=s.min_box, every_s=s.every_s)
            self.classifiers[source_id] = found
        return found

    @property
    def calls(self) -> int:
        """Classifier calls so far, over every source."""
        return sum(c.calls for c in self.classifiers.values())

    def summary_lines(self) -> list[str]:
        if self.model is None:
            return []
        crops = sum(c.crops for c in self.classifiers.values())
        reused = sum(c.reused for c in self.classifiers.values())
        return [f"classified {crops} objects with {Path(self.model.info.path).name} in {self.calls} calls"
                + (f" ({reused} more from their track's earlier result)" if reused else "")]

    def process(self, item: Result) -> Result:
        if item.detections is None:
            return item
        frame = item.frame
        t = frame_time(frame, self.live, self.source.fps_of(frame.source_id))
        self.classifier(frame.source_id).classify(frame.image, item.detections, t)
        assert self.model is not None
        item.object_names = self.model.info.names
        return item

    def close(self) -> None:
        if self.model is not None:
            self.model.ensure_closed()


class RenderStage(Stage):
    """Draws detections (and optionally a status overlay) onto the frame.

    With ``copy=False`` it draws on the decoded frame itself, which saves a full-frame copy
    when nothing downstream needs the clean picture. With ``status`` it adds fps and latency
    measured here, then whatever lines ``extra_status`` returns (drops, say).
    """

    name = "render"

    def __init__(self, copy: bool = False, status: bool = False,
                 extra_status: Callable[[], list[str]] | None = None, geometry: Geometry | None = None) -> None:
        self.copy = copy
        self.status = status
        self.extra_status = extra_status
        self.geometry = geometry or {}
        self._times: collections.deque[float] = collections.deque(maxlen=256)

    def status_lines(self, item: Result) -> list[str]:
        now = time.monotonic()
        self._times.append(now)
        while len(self._times) > 1 and now - self._times[0] > 2.0:
            self._times.popleft()
        fps = (len(self._times) - 1) / (now - self._times[0]) if len(self._times) > 1 else 0.0
        latency = (now - item.frame.captured_at) * 1000.0
        lines = [f"{fps:.1f} fps", f"latency {latency:.0f} ms"]
        return lines + self.extra_status() if self.extra_status is not None else lines

    def process(self, item: Result) -> Result:
        image = item.frame.image.copy() if self.copy else item.frame.image
        if item.analytics is not None:
            self._draw_geometry(image, item)
        if item.trails:
            draw_trails(image, item.trails)
        if item.detections is not None:
            draw_detections(image, item.detections, item.names, item.object_names)
        if item.classes is not None:
            draw_classes(image, item.classes, item.names)
        if self.status:
            draw_status(image, self.status_lines(item))
        item.annotated = image
        return item

    def _draw_geometry(self, image: np.ndarray, item: Result) -> None:
        from streamer.analytics.draw import draw_lines, draw_zones

        lines, zones = self.geometry.get(item.frame.source_id) or self.geometry.get(None) or ((), ())
        if zones:
            draw_zones(image, zones, item.analytics.zones, item.names)
        if lines:
            draw_lines(image, lines, item.analytics.lines)


class SinkStage(Stage):
    """Hands every result to each sink, in order; flushes them at end of stream.

    Sinks fail alone: a sink that raises (disk full, closed pipe, a server gone) is reported
    once, retried on the next results, and disabled after ``max_failures`` failures in a row,
    while the other sinks keep working. Failures show in the stats and the run's summary.

    Each sink is called under its own lock, so that :meth:`abandon` (the pipeline giving up on
    a stuck stage thread) can close every sink that is not inside a call, from the closing
    thread, without racing a write: the recording gets its index even when another sink (or
    a later write) never returns.
    """

    name = "sinks"

    #: How long ``abandon`` waits for a sink to leave its current call before leaving it open.
    ABANDON_WAIT_S = 0.5

    def __init__(self, sinks: Sequence[Sink], max_failures: int = 5) -> None:
        self.sinks = tuple(sinks)
        self.max_failures = max_failures
        self._locks = {sink: threading.Lock() for sink in self.sinks}
        self._opened: list[Sink] = []
        self.failures: dict[str, int] = {}
        self.errors: dict[str, str] = {}
        self._streak: dict[Sink, int] = {}  # failures in a row, per sink
        self._disabled: list[Sink] = []
        self._unfinished: set[str] = set()  # sinks whose flush or close failed: their output is not complete

    @property
    def disabled(self) -> list[str]:
        return [sink.name for sink in self._disabled]

    def open(self) -> None:
        for sink in self.sinks:
            try:
                sink.open()
            except BaseException:
                # A stage whose open fails is never closed by the pipeline: undo our part here.
                self.close()
                raise
            self._opened.append(sink)

    def _run(self, call: Callable[[Sink], object], *, flushing: bool = False) -> None:
        """``call(sink)`` for every enabled sink; a failure is counted against that sink only,
        and one while ``flushing`` leaves its output unfinished."""
        for sink in self.sinks:
            if sink in self._disabled:
                continue
            with self._locks[sink]:
                if sink not in self._opened:
                    continue  # closed by ``abandon`` while this thread was stuck elsewhere
                try:
                    call(sink)
                except Exception as exc:  # noqa: BLE001 - one sink's failure must not stop the others
                    self._failed(sink, exc)
                    if flushing:
                        self._unfinished.add(sink.name)
                else:
                    self._streak[sink] = 0

    def _failed(self, sink: Sink, exc: Exception) -> None:
        streak = self._streak.get(sink, 0) + 1
        self._streak[sink] = streak
        self.failures[sink.name] = self.failures.get(sink.name, 0) + 1
        message = str(exc) or type(exc).__name__
        if self.errors.get(sink.name) != message:
            log.error("sink '%s' failed: %s", sink.name, message)
        self.errors[sink.name] = message
        if streak >= self.max_failures:
            self._disabled.append(sink)
            log.error("sink '%s' disabled after %d failures in a row; the other outputs continue", sink.name, streak)

    def process(self, item: Result) -> Result:
        self._run(lambda sink: sink.write(item))
        return item

    def idle(self) -> None:
        self._run(lambda sink: sink.idle())

    def flush(self) -> None:
        self._run(lambda sink: sink.flush(), flushing=True)

    def close(self) -> None:
        self._close_sinks(None)

    def abandon(self) -> None:
        self._close_sinks(self.ABANDON_WAIT_S)

    def _close_sinks(self, wait_s: float | None) -> None:
        """Close every open sink, last first; with ``wait_s``, skip one busy for longer."""
        for sink in reversed(list(self._opened)):
            lock = self._locks[sink]
            if not lock.acquire(timeout=-1 if wait_s is None else wait_s):
                log.error("sink '%s' is stuck in a call; its output is left unfinished", sink.name)
                continue
            try:
                if sink not in self._opened:
                    continue
                self._opened.remove(sink)
                try:
                    sink.close()
                except Exception as exc:  # noqa: BLE001 - close every sink, then report
                    self._unfinished.add(sink.name)
                    self.failures[sink.name] = self.failures.get(sink.name, 0) + 1
                    self.errors[sink.name] = str(exc)
                    log.error("closing sink '%s' failed: %s", sink.name, exc)
            finally:
                lock.release()

    def failure_count(self) -> int:
        return sum(self.failures.values())

    def incomplete_outputs(self) -> list[str]:
        return [name for name in self.failures if name in self.disabled or name in self._unfinished]

    def failure_lines(self) -> list[str]:
        lines = []
        for name, count in self.failures.items():
            state = ("disabled" if name in self.disabled
                     else "not finished" if name in self._unfinished else "recovered")
            lines.append(f"output '{name}' failed {count} time(s), {state}: {self.errors.get(name)}")
        return lines

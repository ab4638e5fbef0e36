"""``/metrics``: the monitor's stats dict as Prometheus metrics, through ``prometheus_client``.

A custom collector reads the same dict that ``/api/stats`` serves at each scrape, so the
two never disagree and nothing is kept twice. Names follow the Prometheus conventions:
counters end in ``_total``, times are in seconds, and latency is a histogram per camera
(``histogram_quantile`` works on it), not gauges with a ``quantile`` label, which
Prometheus reserves for summaries.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from streamer.sources.shedding import STEPS as DECODE_STEPS

CAMERA_STATES = ("connecting", "streaming", "stalled", "reconnecting", "down", "ended")
TEXT_CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


def _number(value: object) -> float | None:
    """A float for a number (bools count as 0/1); None for anything else, which is skipped."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    return None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


class _Families:
    """Metric families by name, each added to only when the value is a number."""

    def __init__(self) -> None:
        self.families: dict[str, Metric] = {}

    def gauge(self, name: str, doc: str, labels: Iterable[str] = ()) -> _Adder:
        return _Adder(self.families.setdefault(name, GaugeMetricFamily(name, doc, labels=list(labels))))

    def counter(self, name: str, doc: str, labels: Iterable[str] = ()) -> _Adder:
        return _Adder(self.families.setdefault(name, CounterMetricFamily(name, doc, labels=list(labels))))


class _Adder:
    def __init__(self, family: Metric) -> None:
        self.family = family

    def add(self, labels: list[str], value: object) -> None:
        number = _number(value)
        if number is not None and not (self.family.type == "counter" and (math.isnan(number) or number < 0)):
            self.family.add_metric(labels, number)  # type: ignore[attr-defined]


def _histogram(cam: Mapping[str, Any]) -> tuple[list[tuple[str, float]], float] | None:
    """``latency_histogram`` of a camera (bounds in seconds, cumulative counts) as buckets."""
    hist = _mapping(cam.get("latency_histogram"))
    bounds, counts, total = hist.get("le"), hist.get("counts"), _number(hist.get("sum_s"))
    if not isinstance(bounds, (list, tuple)) or not isinstance(counts, (list, tuple)) or total is None:
        return None
    if len(counts) != len(bounds) + 1:
        return None
    buckets = [(repr(float(b)), float(c)) for b, c in zip(bounds, counts[:-1], strict=True)]
    buckets.append(("+Inf", float(counts[-1])))
    return buckets, total


class StatsCollector:
    """A ``prometheus_client`` collector over a stats dict (schema in the package docstring).

    ``stats`` and ``dashboard`` are called at each scrape; ``dashboard`` returns the web
    server's own counters (JPEGs, connections, rejections).
    """

    def __init__(self, stats: Any, dashboard: Any = None) -> None:
        self._stats = stats
        self._dashboard = dashboard

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: the families depend on the stats at scrape time

    def collect(self) -> Iterator[Metric]:
        stats = _mapping(self._stats())
        dashboard = _mapping(self._dashboard() if self._dashboard is not None else {})
        yield from metric_families(stats, dashboard)


def metric_families(stats: Mapping[str, Any], dashboard: Mapping[str, Any] | None = None) -> list[Metric]:
    f = _Families()
    cam_l = ["camera"]
    up = f.gauge("streamer_camera_up", "1 while the camera is streaming, else 0.", cam_l)
    state_f = f.gauge("streamer_camera_state", "1 for the camera's current connection state, 0 for the others.",
                      ["camera", "state"])
    fps = f.gauge("streamer_camera_fps", "Frames per second at the end of the pipeline.", cam_l)
    frames = f.counter("streamer_frames", "Frames of the camera through the pipeline.", cam_l)
    dropped = f.counter("streamer_dropped_frames", "Frames of the camera dropped by the pipeline.", cam_l)
    reconnects = f.counter("streamer_reconnects", "Reconnections to the camera.", cam_l)
    latency = HistogramMetricFamily(
        "streamer_camera_latency_seconds", "Capture-to-output latency of the camera's frames.", labels=cam_l
    )
    info_f = f.gauge("streamer_camera_info", "Where the camera runs on a Ray cluster (always 1; the labels carry "
                     "it): its node id and IP.", ["camera", "node", "node_ip"])
    in_view = f.gauge("streamer_tracks_in_view", "Confirmed tracks on the camera's newest frame.", cam_l)
    level = f.gauge("streamer_camera_decode_level", "1 for the camera's current decode level, 0 for the others "
                    "(off, keyframes, gop/8, gop/4, gop/2, nonref, all).", ["camera", "level"])
    decoded_fps = f.gauge("streamer_camera_decoded_fps", "Frames a second the camera's decoder produced.", cam_l)
    inferred_fps = f.gauge("streamer_camera_inferred_fps", "Frames a second of the camera the model processed.", cam_l)
    skipped_fps = f.gauge("streamer_camera_skipped_fps", "Frames a second of the camera the model never saw "
                          "(not decoded, or overtaken by a newer frame).", cam_l)
    result_age = f.gauge("streamer_camera_result_age_seconds", "How old the frame of the camera's newest result is.",
                         cam_l)
    crossings = f.counter("streamer_line_crossings", "Tracks that crossed a counting line, per direction and class.",
                          ["camera", "line", "direction", "class"])
    zone_objects = f.gauge("streamer_zone_objects", "Tracks inside a zone now, per class.", ["camera", "zone", "class"])
    zone_entries = f.counter("streamer_zone_entries", "Distinct tracks that entered a zone, per class.",
                             ["camera", "zone", "class"])
    for name, cam in _mapping(stats.get("cameras")).items():
        cam = _mapping(cam)
        current = cam.get("state")
        up.add([name], 1 if current == "streaming" else 0)
        if "node" in cam:
            info_f.add([name, str(cam.get("node") or ""), str(cam.get("node_ip") or "")], 1)
        states = list(CAMERA_STATES)
        if isinstance(current, str) and current not in states:
            states.append(current)
        for state in states:
            state_f.add([name, state], 1 if state == current else 0)
        fps.add([name], cam.get("fps"))
        frames.add([name], cam.get("frames"))
        dropped.add([name], cam.get("dropped"))
        reconnects.add([name], cam.get("reconnects"))
        hist = _histogram(cam)
        if hist is not None:
            latency.add_metric([name], hist[0], hist[1])
        in_view.add([name], cam.get("tracks_in_view"))
        if isinstance(cam.get("decode_level"), str):
            for step in DECODE_STEPS:
                level.add([name, step], 1 if step == cam["decode_level"] else 0)
        decoded_fps.add([name], cam.get("decoded_fps"))
        inferred_fps.add([name], cam.get("inferred_fps"))
        skipped_fps.add([name], cam.get("skipped_fps"))
        result_age.add([name], cam.get("result_age_s"))
        for line, counts in _mapping(cam.get("lines")).items():
            for label, per_class in _mapping(_mapping(counts).get("classes")).items():
                for direction in ("in", "out"):
                    crossings.add([name, line, direction, label], _mapping(per_class).get(direction))
        for zone, per_class in _mapping(cam.get("zones")).items():
            for label, n in _mapping(per_class).items():
                zone_objects.add([name, zone, label], n)
        for zone, per_class in _mapping(cam.get("zone_entries")).items():
            for label, n in _mapping(per_class).items():
                zone_entries.add([name, zone, label], n)

    stage_l = ["stage"]
    p50 = f.gauge("streamer_stage_time_p50_seconds", "Median per-item time of the stage (recent items).", stage_l)
    p95 = f.gauge("streamer_stage_time_p95_seconds", "95th percentile per-item time of the stage (recent items).",
                  stage_l)
    stage_fps = f.gauge("streamer_stage_fps", "Items per second processed by the stage.", stage_l)
    processed = f.counter("streamer_stage_processed", "Items processed by the stage.", stage_l)
    stage_dropped = f.counter("streamer_stage_dropped", "Items dropped in front of the stage.", stage_l)
    depth = f.gauge("streamer_stage_queue_depth", "Items waiting in the stage's input queue.", stage_l)
    for name, stage in _mapping(stats.get("stages")).items():
        stage = _mapping(stage)
        for gauge, key in ((p50, "p50_ms"), (p95, "p95_ms")):
            ms = _number(stage.get(key))
            gauge.add([name], None if ms is None else ms / 1000.0)
        stage_fps.add([name], stage.get("fps"))
        processed.add([name], stage.get("processed"))
        stage_dropped.add([name], stage.get("dropped"))
        depth.add([name], stage.get("queue_depth"))

    model = _mapping(stats.get("model"))
    info = f.gauge("streamer_model_info", "The model in use (always 1; the labels carry the information).",
                   ["name", "backend", "device"])
    if model:
        info.add([str(model.get(key) or "") for key in ("name", "backend", "device")], 1)
    f.gauge("streamer_model_batch_size_mean", "Mean inference batch size.").add([], model.get("batch_size_mean"))
    f.counter("streamer_model_batches", "Inference batches run.").add([], model.get("batches"))
    f.gauge("streamer_uptime_seconds", "Seconds since the pipeline started.").add([], stats.get("uptime_s"))
    f.gauge("streamer_nodes", "Ray nodes the cameras run on (absent in a single process).").add([], stats.get("nodes"))

    mqtt = _mapping(stats.get("mqtt"))
    f.gauge("streamer_mqtt_connected", "1 while the MQTT output is connected to its broker.").add(
        [], mqtt.get("connected"))
    f.counter("streamer_mqtt_published_messages", "MQTT messages the broker acknowledged.").add([], mqtt.get("published"))
    f.gauge("streamer_mqtt_queued_messages", "MQTT messages waiting: queued while the broker is away, or not yet "
            "acknowledged.").add([], mqtt.get("queued"))
    f.counter("streamer_mqtt_dropped_messages", "MQTT events dropped: the queue was full while the broker was away, "
              "or they were unsent at the end.").add([], mqtt.get("dropped"))
    f.counter("streamer_mqtt_reconnects", "Connections to the MQTT broker after the first.").add(
        [], mqtt.get("reconnects"))

    board = _mapping(dashboard)
    jpegs = f.counter("streamer_dashboard_jpeg_frames", "Frames JPEG-encoded for the dashboard.", cam_l)
    skipped = f.counter("streamer_dashboard_skipped_frames",
                        "Frames not encoded for the dashboard (over max_fps, or overtaken by a newer one).", cam_l)
    for name, counts in _mapping(board.get("encoder")).items():
        counts = _mapping(counts)
        jpegs.add([name], counts.get("encoded"))
        skipped.add([name], (counts.get("skipped") or 0) + (counts.get("replaced") or 0))
    f.gauge("streamer_dashboard_connections", "Open dashboard connections.").add([], board.get("connections"))
    f.gauge("streamer_dashboard_streams", "Open MJPEG streams.").add([], board.get("streams"))
    f.counter("streamer_dashboard_rejected_connections",
              "Connections answered 503 because the dashboard was at its connection or stream cap.").add(
        [], board.get("rejected"))

    families = list(f.families.values())
    families.insert(list(f.families).index("streamer_reconnects") + 1, latency)
    return [fam for fam in families if fam.samples]


def render_metrics(
    stats: Mapping[str, Any], dashboard: Mapping[str, Any] | None = None, openmetrics: bool = False
) -> str:
    """Render a stats dict as Prometheus text format 0.0.4 (or OpenMetrics when asked)."""
    return scrape(StatsCollector(lambda: stats, lambda: dashboard or {}), openmetrics).decode()


def scrape(collector: StatsCollector, openmetrics: bool = False) -> bytes:
    """One scrape of ``collector`` in the text format or OpenMetrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)  # type: ignore[arg-type]
    return (generate_openmetrics if openmetrics else generate_latest)(registry)


def content_type(openmetrics: bool) -> str:
    return OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE

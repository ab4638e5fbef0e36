"""Pipeline files: YAML → validated, frozen dataclasses.

A pipeline file is read with a ``yaml.SafeLoader`` subclass that only records the line of
every key, so that an error can say where it is::

    pipelines/x.yaml:7: unknown key 'confidence' in 'detect', expecting one of ['agnostic', ...]

Everything a file can say, ``--set key.path=value`` can override (the value is parsed as
YAML, so ``--set detect.conf=0.4`` gives a float and ``--set detect.classes=[0,2]`` a list).
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from streamer.errors import AssetError, ConfigError
from streamer.postprocess.anchors import AnchorConfig
from streamer.postprocess.yolo import MAX_NMS

if TYPE_CHECKING:
    from streamer.sources.live import ReconnectPolicy

# --------------------------------------------------------------------------- YAML with lines


class _LineDict(dict):  # type: ignore[type-arg]
    """A mapping that remembers the line of each key (1-based)."""

    line: int = 0
    key_lines: dict[Any, int]


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)
    mapping = _LineDict()
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, typing.Hashable):
            raise ConfigError(f"line {key_node.start_mark.line + 1}: a mapping key must be a plain value")
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = key_node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such pipeline file")
    if not path.is_file():
        raise ConfigError(f"{path}: not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    data = parse_yaml(text, str(path))
    expand_env(data, str(path))
    return data


_ENV_REF = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(node: Any, origin: str, where: str = "", line: int = 0) -> Any:
    """Replace ``${NAME}`` in the file's strings by the environment variable NAME (in place).

    Secrets (a broker password, a camera's credentials) then live in the environment and not
    in a file that is copied around; ``$${NAME}`` stays a literal ``${NAME}``. An unset
    variable is an error naming it, the key and the line, never a silent empty string.
    The values are strings, so the keys that take them are the ones that take text.
    """
    if isinstance(node, dict):
        lines = getattr(node, "key_lines", {})
        for key, value in node.items():
            node[key] = expand_env(value, origin, f"{where}.{key}" if where else str(key), lines.get(key, line))
        return node
    if isinstance(node, list):
        for i, value in enumerate(node):
            node[i] = expand_env(value, origin, f"{where}[{i}]", line)
        return node
    if not isinstance(node, str) or "${" not in node:
        return node

    def value_of(match: re.Match[str]) -> str:
        escaped, name = match.groups()
        if escaped:
            return "${" + name + "}"
        value = os.environ.get(name)
        if value is None:
            place = f"{origin}:{line}" if line else origin
            raise ConfigError(f"{place}: {where}: the environment variable {name} is not set (the file says ${{{name}}})")
        return value

    return _ENV_REF.sub(value_of, node)


def parse_yaml(text: str, origin: str = "<text>") -> dict[str, Any]:
    """Parse pipeline YAML (safe subset only) into a mapping that remembers key lines."""
    try:
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - _LineLoader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{origin}:{mark.line + 1}" if mark is not None else origin
        raise ConfigError(f"{where}: invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: invalid YAML: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{origin}: invalid YAML: nested too deeply") from None
    if data is None:
        raise ConfigError(f"{origin}: the file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of keys, but got {type(data).__name__}")
    return data


# --------------------------------------------------------------------------- schema


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "yolo11n"
    backend: str = "auto"
    device: str = "auto"
    imgsz: int | None = None
    rect: bool = True
    batch: int | None = None
    batch_timeout_ms: float = 10.0
    threads: int | None = None
    #: Model calls in flight at once (file annotation); None: 2 on a CPU with 2+ cores, else 1.
    workers: int | None = None
    half: bool = False
    task: str = "auto"
    labels: str | None = None
    #: SSD-style anchor head (see streamer.postprocess.anchors); its output is decoded
    #: against these anchors instead of being read as a YOLO layout.
    anchors: AnchorConfig | None = None

    def __post_init__(self) -> None:
        _check(bool(self.name), "model.name must not be empty")
        _check(self.imgsz is None or (self.imgsz > 0 and self.imgsz % 32 == 0),
               f"model.imgsz must be a positive multiple of 32, but got {self.imgsz}")
        _check(self.batch is None or 1 <= self.batch <= 256, f"model.batch must be between 1 and 256, but got {self.batch}")
        _check(0 <= self.batch_timeout_ms <= 1000,
               f"model.batch_timeout_ms must be between 0 and 1000, but got {self.batch_timeout_ms}")
        _check(self.threads is None or self.threads >= 1, f"model.threads must be >= 1, but got {self.threads}")
        _check(self.workers is None or 1 <= self.workers <= 16, f"model.workers must be between 1 and 16, but got {self.workers}")
        _check(self.task in ("auto", "detect", "classify"),
               f"model.task must be one of ['auto', 'detect', 'classify'], but got {self.task!r}")


@dataclass(frozen=True)
class DetectConfig:
    conf: float = 0.25
    iou: float = 0.7
    classes: tuple[int, ...] | None = None
    agnostic: bool = False
    multi_label: bool = False
    max_det: int = 300
    top_k: int = 5
    max_nms: int = MAX_NMS
    #: Monitor: at most this many frames a second of each camera go to the model (Frigate's
    #: detect fps); ``cameras.NAME.fps`` overrides it per camera; 0 detects nothing. None:
    #: as many as the model's fair share allows.
    fps: float | None = None

    def __post_init__(self) -> None:
        _check(0.0 <= self.conf <= 1.0, f"detect.conf must be between 0 and 1, but got {self.conf}")
        _check(self.max_nms >= 1, f"detect.max_nms must be >= 1, but got {self.max_nms}")
        _check(0.0 <= self.iou <= 1.0, f"detect.iou must be between 0 and 1, but got {self.iou}")
        _check(self.max_det >= 1, f"detect.max_det must be >= 1, but got {self.max_det}")
        _check(self.top_k >= 1, f"detect.top_k must be >= 1, but got {self.top_k}")
        _check(self.fps is None or self.fps >= 0, f"detect.fps must be >= 0, but got {self.fps}")
        if self.classes is not None:
            _check(all(c >= 0 for c in self.classes), f"detect.classes must be class ids >= 0, but got {list(self.classes)}")


X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


@dataclass(frozen=True)
class OutputConfig:
    video: str | None = None
    jsonl: str | None = None
    images: str | None = None
    window: bool = False
    snapshots: str = "snapshots"
    status_interval_s: float = 5.0
    #: H.264 quality (x264 CRF: 0 lossless .. 51 worst; 23 is x264's default).
    video_crf: int = 23
    #: x264 preset: slower presets make smaller files for the same quality at more CPU.
    video_preset: str = "superfast"
    #: Encoder threads (0: FFmpeg decides). Unset: one on a machine with two cores or fewer
    #: (the cores are the model's), else FFmpeg decides.
    video_threads: int | None = None

    def __post_init__(self) -> None:
        _check(self.status_interval_s > 0, f"output.status_interval_s must be > 0, but got {self.status_interval_s}")
        _check(0 <= self.video_crf <= 51, f"output.video_crf must be between 0 and 51, but got {self.video_crf}")
        _check(self.video_preset in X264_PRESETS,
               f"output.video_preset must be one of {list(X264_PRESETS)}, but got {self.video_preset!r}")
        _check(self.video_threads is None or self.video_threads >= 0,
               f"output.video_threads must be >= 0, but got {self.video_threads}")

    @property
    def video_options(self) -> dict[str, Any]:
        """Keyword arguments of :class:`streamer.sinks.video.VideoSink` for the encoder."""
        return {"crf": self.video_crf, "preset": self.video_preset, "threads": self.video_threads}


@dataclass(frozen=True)
class CaptureConfig:
    """How live sources connect and reconnect, and webcam settings."""

    transport: str = "tcp"
    #: How RTSP/HTTP streams are read: ``auto`` (the faster of the two, see StreamSource),
    #: ``pyav`` or ``opencv``.
    backend: str = "auto"
    #: Who decodes: ``auto`` (NVDEC when the model runs on CUDA and NVDEC opens the stream,
    #: else the CPU), ``cpu`` or ``nvdec`` (see streamer.sources.nvdec).
    decode: str = "auto"
    stall_timeout_s: float = 5.0
    open_timeout_s: float = 5.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    max_reconnects: int | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    fourcc: str | None = None
    loop: bool = False
    #: Monitor: decode only what the model will use (each camera's decode level follows what
    #: the model takes, see streamer.sources.shedding); false decodes every frame.
    shed: bool = True

    def __post_init__(self) -> None:
        _check(self.transport in ("tcp", "udp"), f"capture.transport must be one of ['tcp', 'udp'], but got {self.transport!r}")
        _check(self.backend in ("auto", "pyav", "opencv"),
               f"capture.backend must be one of ['auto', 'pyav', 'opencv'], but got {self.backend!r}")
        _check(self.decode in ("auto", "cpu", "nvdec"),
               f"capture.decode must be one of ['auto', 'cpu', 'nvdec'], but got {self.decode!r}")
        for name in ("stall_timeout_s", "open_timeout_s", "backoff_initial_s", "backoff_max_s"):
            value = getattr(self, name)
            _check(value > 0, f"capture.{name} must be > 0, but got {value}")
        _check(self.backoff_max_s >= self.backoff_initial_s,
               f"capture.backoff_max_s must be >= backoff_initial_s, but got {self.backoff_max_s}")
        _check(self.max_reconnects is None or self.max_reconnects >= 0,
               f"capture.max_reconnects must be >= 0, but got {self.max_reconnects}")
        _check(self.fourcc is None or len(self.fourcc) == 4, f"capture.fourcc must be 4 characters, but got {self.fourcc!r}")
        for name in ("width", "height"):
            value = getattr(self, name)
            _check(value is None or value > 0, f"capture.{name} must be > 0, but got {value}")
        _check(self.fps is None or self.fps > 0, f"capture.fps must be > 0, but got {self.fps}")

    def policy(self) -> ReconnectPolicy:
        """The reconnect policy of a live source (imported here: sources load OpenCV)."""
        from streamer.sources.live import ReconnectPolicy

        return ReconnectPolicy(
            stall_timeout_s=self.stall_timeout_s, open_timeout_s=self.open_timeout_s,
            backoff_initial_s=self.backoff_initial_s, backoff_max_s=self.backoff_max_s,
            max_reconnects=self.max_reconnects,
        )


@dataclass(frozen=True)
class TrackConfig:
    """Tracking settings (``track:`` in a pipeline file; ``track: true`` takes these defaults).

    The thresholds are Ultralytics' ``bytetrack.yaml`` defaults, so the same detections give
    the same identities as ``yolo track``. ``frame_rate`` is the stream's nominal rate, which
    turns ``track_buffer`` frames into a duration; None takes the source's own rate (a file's
    fps) or 30. ``time_aware: false`` steps the tracker once per processed frame, as other
    trackers do, instead of by the frames' timestamps.
    """

    enabled: bool = True
    track_high_thresh: float = 0.25
    track_low_thresh: float = 0.1
    new_track_thresh: float = 0.25
    track_buffer: int = 30
    match_thresh: float = 0.8
    fuse_score: bool = True
    frame_rate: float | None = None
    time_aware: bool = True
    #: Points of each track's trail drawn on the picture (0: no trails).
    trail: int = 30

    def __post_init__(self) -> None:
        for name in ("track_high_thresh", "track_low_thresh", "new_track_thresh", "match_thresh"):
            value = getattr(self, name)
            _check(0.0 <= value <= 1.0, f"track.{name} must be between 0 and 1, but got {value}")
        _check(self.track_low_thresh <= self.track_high_thresh,
               f"track.track_low_thresh must be <= track_high_thresh, but got {self.track_low_thresh} > {self.track_high_thresh}")
        _check(self.track_buffer >= 1, f"track.track_buffer must be >= 1, but got {self.track_buffer}")
        _check(self.frame_rate is None or self.frame_rate > 0, f"track.frame_rate must be > 0, but got {self.frame_rate}")
        _check(0 <= self.trail <= 1000, f"track.trail must be between 0 and 1000, but got {self.trail}")

    def tracker_settings(self, frame_rate: float | None) -> dict[str, Any]:
        """Keyword arguments for :class:`streamer.Tracker`."""
        return {
            "track_high_thresh": self.track_high_thresh, "track_low_thresh": self.track_low_thresh,
            "new_track_thresh": self.new_track_thresh, "track_buffer": self.track_buffer,
            "match_thresh": self.match_thresh, "fuse_score": self.fuse_score,
            "frame_rate": self.frame_rate or frame_rate or 30.0, "time_aware": self.time_aware,
        }


@dataclass(frozen=True)
class ClassifyConfig:
    """A second model on the detector's boxes (``classify:`` in a pipeline file).

    ``classes``: detector class names (or ids) to classify, all when absent; ``min_box``:
    boxes whose shorter side is under this many pixels are skipped; ``every_s``: with tracking
    a track is classified when first confirmed and again only this often (never again when
    absent).
    """

    model: str = "efficientnet-lite0"
    classes: tuple[str, ...] | None = None
    top_k: int = 1
    min_box: int = 32
    every_s: float | None = None
    backend: str = "auto"
    device: str = "auto"

    def __post_init__(self) -> None:
        _check(bool(self.model), "classify.model must not be empty")
        _check(self.top_k >= 1, f"classify.top_k must be >= 1, but got {self.top_k}")
        _check(self.min_box >= 0, f"classify.min_box must be >= 0 pixels, but got {self.min_box}")
        _check(self.every_s is None or self.every_s > 0, f"classify.every_s must be > 0, but got {self.every_s}")

    @property
    def model_section(self) -> ModelConfig:
        """The second model as a ``model:`` section would describe it."""
        return ModelConfig(name=self.model, backend=self.backend, device=self.device)

    def class_ids(self, names: tuple[str, ...]) -> list[int] | None:
        """The detector class ids of ``classes`` (names or ids), checked against ``names``."""
        if self.classes is None:
            return None
        ids = []
        for item in self.classes:
            if item in names:
                ids.append(names.index(item))
            elif item.isdigit() and int(item) < max(len(names), 1):
                ids.append(int(item))
            else:
                raise ConfigError(f"classify.classes: unknown class {item!r}, expecting names of the detector's "
                                  f"classes such as {list(names[:8])}")
        return ids


def _track_section(value: TrackConfig | bool | None) -> TrackConfig | None:
    """``track: true`` -> the defaults; ``false`` -> explicitly off; absent -> None (job decides)."""
    if isinstance(value, bool):
        return TrackConfig(enabled=value)
    return value


def parse_geometry(lines: Any, zones: Any, where: str) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Lines and zones checked into specs (``streamer.analytics``), errors naming the key."""
    if not lines and not zones:
        return (), ()
    from streamer.analytics.geometry import parse_lines, parse_zones

    prefix = f"{where}." if where else ""
    return (parse_lines(lines, f"{prefix}lines") if lines else (),
            parse_zones(zones, f"{prefix}zones") if zones else ())


@dataclass(frozen=True)
class QueueSettings:
    size: int | None = None
    policy: str | None = None

    def __post_init__(self) -> None:
        _check(self.size is None or self.size >= 1, f"queue.size must be >= 1, but got {self.size}")
        _check(self.policy in (None, "block", "drop_oldest", "latest_per_key"),
               f"queue.policy must be one of ['block', 'drop_oldest', 'latest_per_key'], but got {self.policy!r}")


_CAMERA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class CameraConfig:
    """One camera of a monitoring pipeline. ``url`` is any live source: an RTSP/HTTP URL, a
    webcam index, ``synthetic`` or a video file (replayed in real time)."""

    url: str = ""
    jsonl: str | None = None
    #: The camera's recording: its own packets copied into an MP4 (no decode, no encode),
    #: or with ``record_boxes`` a re-encoded copy with the boxes drawn in.
    record: str | None = None
    record_boxes: bool = False
    #: At most this many frames a second to the model (default ``detect.fps``); 0: none.
    fps: float | None = None
    enabled: bool = True
    #: Counting lines and zones of this camera, in its own pixels (see PipelineConfig).
    lines: Any = None
    zones: Any = None
    #: Ray executor only: the node this camera's actor prefers (a node IP or node id; when
    #: that node is gone it moves to another), and Ray resources it needs (``{gpu_room: 1}``).
    node: str | None = None
    resources: dict[str, float] | None = None

    def __post_init__(self) -> None:
        _check(bool(self.url), "url is required for every camera")
        _check(self.fps is None or self.fps >= 0, f"fps must be >= 0, but got {self.fps}")
        _check(self.node is None or bool(self.node.strip()), "node must be a node IP or node id, but got ''")
        for key, amount in (self.resources or {}).items():
            _check(amount > 0, f"resources.{key} must be > 0, but got {amount}")


@dataclass(frozen=True)
class DashboardConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    max_fps: float = 15.0

    def __post_init__(self) -> None:
        _check(0 <= self.port <= 65535, f"dashboard.port must be between 0 and 65535, but got {self.port}")
        _check(self.max_fps > 0, f"dashboard.max_fps must be > 0, but got {self.max_fps}")
        _check(self.token is None or len(self.token) >= 8, "dashboard.token must be at least 8 characters")


@dataclass(frozen=True)
class EventsConfig:
    """When a tracked class appears on a camera and when it is gone again."""

    track: tuple[str, ...] = ("person",)
    min_confidence: float = 0.5
    min_frames: int = 3
    gone_after_s: float = 2.0
    #: Report only objects that enter one of these zones (names from the cameras' zones).
    zones: tuple[str, ...] = ()
    #: Also raise an event for a track that stays this long in a zone.
    loiter_s: float | None = None
    path: str | None = "out/events.jsonl"
    snapshots: str = "out/snapshots"
    webhook: str | None = None
    webhook_retries: int = 3
    webhook_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        _check(0.0 <= self.min_confidence <= 1.0, f"events.min_confidence must be between 0 and 1, but got {self.min_confidence}")
        _check(self.min_frames >= 1, f"events.min_frames must be >= 1, but got {self.min_frames}")
        _check(self.gone_after_s > 0, f"events.gone_after_s must be > 0, but got {self.gone_after_s}")
        _check(self.loiter_s is None or self.loiter_s > 0, f"events.loiter_s must be > 0, but got {self.loiter_s}")
        _check(self.webhook_retries >= 0, f"events.webhook_retries must be >= 0, but got {self.webhook_retries}")
        _check(self.webhook_timeout_s > 0, f"events.webhook_timeout_s must be > 0, but got {self.webhook_timeout_s}")
        _check(self.webhook is None or self.webhook.startswith(("http://", "https://")),
               f"events.webhook must be an http:// or https:// URL, but got {self.webhook!r}")

    def enabled(self, mqtt: bool = False) -> bool:
        """Whether per-object events are made: a class to watch (``track``) and somewhere for
        them to go (``path``, ``webhook``, or ``mqtt``: whether the pipeline has that section,
        which is not this one's to say)."""
        return bool(self.track) and bool(self.path or self.webhook or mqtt)


_TOPIC_ILLEGAL = re.compile(r"[+#\x00]")


def _check_topic(value: str, key: str) -> None:
    _check(bool(value) and not value.startswith("/") and not value.endswith("/") and not _TOPIC_ILLEGAL.search(value),
           f"{key} must be a topic without '+', '#' or a leading/trailing '/', but got {value!r}")


@dataclass(frozen=True)
class MqttTlsConfig:
    """TLS to the broker: ``ca`` checks its certificate (absent: the system's CAs);
    ``cert`` and ``key`` are a client certificate for brokers that ask for one."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        _check((self.cert is None) == (self.key is None), "mqtt.tls.cert and mqtt.tls.key go together")


@dataclass(frozen=True)
class MqttConfig:
    """Events, counts and snapshots published to an MQTT broker (``streamer.sinks.mqtt``).

    ``password`` is best written ``${MQTT_PASSWORD}`` (read from the environment); it is
    never printed, and ``repr`` leaves it out. ``required`` makes a broker that cannot be
    reached at start an error (exit 2) instead of a warning and retries in the background.
    ``camera`` names the one camera of a ``watch`` pipeline in topics (a monitor uses the
    names under ``cameras``). ``queue_size`` bounds the events kept while the broker is away.
    """

    host: str = "127.0.0.1"
    #: None: 1883, or 8883 with tls.
    port: int | None = None
    topic_prefix: str = "streamer"
    #: None: ``<topic_prefix>-<host name>``.
    client_id: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: MqttTlsConfig | None = None
    snapshots: bool = True
    discovery: bool = False
    discovery_prefix: str = "homeassistant"
    required: bool = False
    camera: str = "camera"
    queue_size: int = 1000
    keepalive_s: int = 30
    connect_timeout_s: float = 5.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0

    def __post_init__(self) -> None:
        _check(bool(self.host.strip()), "mqtt.host must not be empty")
        _check(self.port is None or 1 <= self.port <= 65535, f"mqtt.port must be between 1 and 65535, but got {self.port}")
        _check_topic(self.topic_prefix, "mqtt.topic_prefix")
        _check_topic(self.discovery_prefix, "mqtt.discovery_prefix")
        _check(self.client_id is None or 1 <= len(self.client_id) <= 128,
               "mqtt.client_id must be 1 to 128 characters")
        _check(self.password is None or self.user is not None, "mqtt.password needs mqtt.user")
        _check(bool(_CAMERA_NAME.match(self.camera)),
               f"mqtt.camera {self.camera!r} must be letters, digits, '_', '-' or '.' (at most 64)")
        _check(1 <= self.queue_size <= 100_000, f"mqtt.queue_size must be between 1 and 100000, but got {self.queue_size}")
        _check(5 <= self.keepalive_s <= 3600, f"mqtt.keepalive_s must be between 5 and 3600, but got {self.keepalive_s}")
        for name in ("connect_timeout_s", "backoff_initial_s", "backoff_max_s"):
            value = getattr(self, name)
            _check(value > 0, f"mqtt.{name} must be > 0, but got {value}")
        _check(self.backoff_max_s >= self.backoff_initial_s,
               f"mqtt.backoff_max_s must be >= backoff_initial_s, but got {self.backoff_max_s}")

    @property
    def server(self) -> str:
        """``mqtt://host:port`` (``mqtts://`` with TLS), for messages: never the password."""
        return f"{'mqtts' if self.tls is not None else 'mqtt'}://{self.host}:{self.port_number}"

    @property
    def port_number(self) -> int:
        return self.port if self.port is not None else (8883 if self.tls is not None else 1883)


EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class ExecutorConfig:
    """Where a job runs: ``local`` (this process, the default) or ``ray`` (a Ray cluster).

    ``address`` None starts a Ray instance on this machine for the run; ``auto`` joins the
    cluster started here with ``ray start --head``; ``HOST:PORT`` joins that head node.
    The ``*_cpus`` are Ray's logical CPUs per actor or task (they decide how many fit on a
    node, not how many threads run). ``call_timeout_s`` bounds every wait on a remote call;
    ``file_retries`` is how often a file task is retried after its worker or node died.
    """

    kind: str = "local"
    address: str | None = None
    camera_cpus: float = 0.25
    inference_cpus: float = 0.5
    file_cpus: float = 1.0
    call_timeout_s: float = 10.0
    file_retries: int = 3
    tile_quality: int = 85

    def __post_init__(self) -> None:
        _check(self.kind in EXECUTORS, f"executor.kind must be one of {list(EXECUTORS)}, but got {self.kind!r}")
        _check(self.address is None or bool(self.address.strip()), "executor.address must not be empty (null: a local Ray)")
        for name in ("camera_cpus", "inference_cpus", "file_cpus"):
            value = getattr(self, name)
            _check(0 <= value <= 1024, f"executor.{name} must be between 0 and 1024, but got {value}")
        _check(self.call_timeout_s > 0, f"executor.call_timeout_s must be > 0, but got {self.call_timeout_s}")
        _check(self.file_retries >= 0, f"executor.file_retries must be >= 0, but got {self.file_retries}")
        _check(1 <= self.tile_quality <= 100, f"executor.tile_quality must be between 1 and 100, but got {self.tile_quality}")


@dataclass(frozen=True)
class PipelineConfig:
    """A whole pipeline file.

    ``job`` picks what runs it: ``annotate`` (recorded video, every frame), ``watch`` (one live
    source) or ``monitor`` (``cameras``); ``auto`` chooses from the source.
    """

    source: str = ""
    job: str = "auto"
    model: ModelConfig = field(default_factory=ModelConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    queue: QueueSettings = field(default_factory=QueueSettings)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    cameras: dict[str, CameraConfig] | None = None
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    stage_timeout_s: float = 30.0
    #: ``true``, ``false`` or a mapping of :class:`TrackConfig` settings; absent: off, except
    #: in a monitor with events, lines or zones.
    track: TrackConfig | bool | None = None
    #: A classifier run on the detected objects (see :class:`ClassifyConfig`).
    classify: ClassifyConfig | None = None
    #: Counting lines, ``{name: {start: [x, y], end: [x, y]}}``, and zones, ``{name: [[x, y],
    #: ...]}``, in source-frame pixels (``streamer.analytics``); a monitor sets them per camera.
    lines: Any = None
    zones: Any = None
    #: Events, counts and snapshots to an MQTT broker (see :class:`MqttConfig`).
    mqtt: MqttConfig | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "track", _track_section(self.track))
        line_specs, zone_specs = parse_geometry(self.lines, self.zones, "")
        object.__setattr__(self, "lines", line_specs)
        object.__setattr__(self, "zones", zone_specs)
        _check(self.job in JOBS, f"job must be one of {list(JOBS)}, but got {self.job!r}")
        _check(self.mqtt is None or self.executor.kind == "local",
               "mqtt needs executor.kind local: the Ray monitor has no MQTT output")
        _check(self.stage_timeout_s > 0, f"stage_timeout_s must be > 0, but got {self.stage_timeout_s}")
        if self.cameras is not None:
            _check(bool(self.cameras), "cameras must list at least one camera")
            for name in self.cameras:
                _check(bool(_CAMERA_NAME.match(name)),
                       f"camera name {name!r} must be letters, digits, '_', '-' or '.' (at most 64)")
            _check(not self.source, "give either source (one stream or file) or cameras (monitoring), not both")
            _check(self.job in ("auto", "monitor"), f"a pipeline with cameras is a monitor job, but job is {self.job!r}")
            object.__setattr__(self, "job", "monitor")
            _check(not self.lines and not self.zones,
                   "with cameras, lines and zones go under each camera (cameras.NAME.lines, cameras.NAME.zones)")
            known: set[str] = set()
            for name, cam in self.cameras.items():
                cam_lines, cam_zones = parse_geometry(cam.lines, cam.zones, f"cameras.{name}")
                object.__setattr__(cam, "lines", cam_lines)
                object.__setattr__(cam, "zones", cam_zones)
                known.update(z.name for z in cam_zones)
            for zone in self.events.zones:
                _check(zone in known, f"events.zones names an unknown zone {zone!r}, expecting one of {sorted(known)}")
            _check(self.events.loiter_s is None or bool(known), "events.loiter_s needs zones on at least one camera")
        else:
            _check(bool(self.source), "source is required (a file, a folder, a URL, a webcam index or sample:NAME), "
                   "or cameras for monitoring")
            _check(self.job != "monitor", "a monitor job needs cameras")
            _check(not self.events.zones, "events.zones is for monitor pipelines (cameras with zones)")
            if self.job == "auto":
                object.__setattr__(self, "job", "watch" if _is_live(self.source) else "annotate")
            self._check_outputs()

    def _check_outputs(self) -> None:
        """Refuse outputs that would overwrite the input, or each other (a monitor's cameras
        name their own)."""
        from streamer.paths import overwritten, same_file
        from streamer.sources import source_path  # loads the decoders: only for a config with a source

        out = self.output
        try:
            src = source_path(self.source) if self.source else None
        except AssetError:
            src = None  # not a sample this installation has: building the source says so
        clash = overwritten((out.video, out.jsonl), src)
        _check(clash is None, f"{clash}: output path is the same as the input {self.source}; choose another output")
        _check(not (out.video and out.jsonl and same_file(Path(out.video), Path(out.jsonl))),
               f"{out.video}: the video and JSONL outputs must be different files")

    @property
    def events_on(self) -> bool:
        """Whether the pipeline makes per-object events (see :meth:`EventsConfig.enabled`)."""
        return self.events.enabled(mqtt=self.mqtt is not None)

    @property
    def tracking(self) -> TrackConfig | None:
        """The tracking settings the pipeline runs with, or None when it does not track.

        ``track:`` decides when given; otherwise a monitor tracks when it has events, lines or
        zones (per-object events and counts need identities), and the other jobs track when they
        have lines or zones, or publish events to MQTT.
        """
        if isinstance(self.track, TrackConfig):  # a bool became a TrackConfig in __post_init__
            return self.track if self.track.enabled else None
        if self.cameras is not None:
            geometry = any(c.lines or c.zones for c in self.cameras.values())
            return TrackConfig() if geometry or self.events_on else None
        # The other jobs make events only for MQTT; they are per object, which takes identities.
        events = self.mqtt is not None and self.events_on
        return TrackConfig() if self.lines or self.zones or events else None


def _is_live(source: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", source)) or source.isdigit() or source.startswith("synthetic")


JOBS = ("auto", "annotate", "watch", "monitor")


# --------------------------------------------------------------------------- validation


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "a list of " + _type_name(typing.get_args(tp)[0])
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string", type(None): "null"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        concrete = [a for a in args if a is not type(None)]
        mapping_types = [a for a in concrete if dataclasses.is_dataclass(a)]
        if isinstance(value, dict) and len(mapping_types) == 1:
            return _convert(value, mapping_types[0], where)  # its own, more specific message
        if len(concrete) == 1:
            return _convert(value, concrete[0], where)  # its own, more specific message
        for arg in concrete:
            try:
                return _convert(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where} must be {_type_name(tp)}, but got {value!r}")
    if origin is tuple:
        (item_type, _ellipsis) = typing.get_args(tp)
        if isinstance(value, int | str) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be {_type_name(tp)}, but got {value!r}")
        return tuple(_convert(v, item_type, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        key_type, value_type = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, but got {value!r}")
        return {str(k): _convert(v, value_type, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, but got {value!r}")
        return _build(tp, value, where)  # type: ignore[arg-type]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, but got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, but got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, but got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(f"{where} must be a string, but got {value!r}")
        return str(value)
    return value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    lines = getattr(data, "key_lines", {})
    kwargs = {}
    for key, value in data.items():
        line = lines.get(key)
        prefix = f"line {line}: " if line else ""
        if key not in fields:
            section = f" in '{where}'" if where else ""
            raise ConfigError(f"{prefix}unknown key '{key}'{section}, expecting one of {sorted(fields)}")
        name = f"{where}.{key}" if where else str(key)
        try:
            kwargs[key] = _convert(value, hints[key], name)
        except ConfigError as exc:
            text = str(exc)
            raise ConfigError(text if text.startswith("line ") else f"{prefix}{text}") from None
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        # Point at the key the message is about when it names one, else at the section.
        text = str(exc)
        line = getattr(data, "line", 0) if where else 0
        for key, key_line in lines.items():
            name = f"{where}.{key}" if where else str(key)
            if text.startswith((f"{name} ", f"{name}.")):
                line = key_line
        raise ConfigError(f"line {line}: {text}" if line else text) from None


def from_dict(data: dict[str, Any], origin: str = "") -> PipelineConfig:
    """Validate ``data`` into a :class:`PipelineConfig`; errors are prefixed with ``origin``."""
    try:
        return _build(PipelineConfig, data, "")
    except ConfigError as exc:
        text = str(exc)
        if origin:
            m = re.match(r"line (\d+): (.*)", text, re.S)
            text = f"{origin}:{m.group(1)}: {m.group(2)}" if m else f"{origin}: {text}"
        raise ConfigError(text) from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` strings to ``data`` (in place); values are parsed as YAML."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expecting key=value, for example --set detect.conf=0.4")
        key, _, text = item.partition("=")
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set {item}: invalid key '{key}'")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        _check_path(parts, item)
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return data


def _check_path(parts: list[str], item: str) -> None:
    cls: Any = PipelineConfig
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(cls):
            return
        hints = typing.get_type_hints(cls)
        if part not in hints:
            where = ".".join(parts[:i]) or "the pipeline"
            valid = sorted(f.name for f in dataclasses.fields(cls))
            raise ConfigError(f"--set {item}: unknown key '{part}' in {where!r}, expecting one of {valid}")
        tp = hints[part]
        origin = typing.get_origin(tp)
        if origin is dict:
            return
        if origin in (typing.Union, types.UnionType):
            # An optional section (``mqtt: X | None``): its keys are checked like any other.
            sections = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
            tp = sections[0] if len(sections) == 1 else tp
        cls = tp


def load(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Read, override and validate a pipeline file."""
    data = read_yaml(path)
    if overrides:
        apply_overrides(data, overrides)
    return from_dict(data, str(path))

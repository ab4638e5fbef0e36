from __future__ import annotations

from pathlib import Path

import pytest

from streamer.config import PipelineConfig, apply_overrides, from_dict, load
from streamer.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def test_shipped_pipeline_loads() -> None:
    cfg = load(ROOT / "pipelines" / "annotate-video.yaml")
    assert isinstance(cfg, PipelineConfig)
    assert cfg.source == "sample:bikes" and cfg.detect.conf == 0.25 and cfg.model.rect


def test_defaults_from_minimal_file(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, "source: clip.mp4\n"))
    assert cfg.model.name == "yolo11n" and cfg.detect.iou == 0.7 and cfg.job == "annotate" and cfg.capture.backend == "auto"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"p.yaml: the file is empty"),
        ("- a\n- b\n", r"top level must be a mapping"),
        ("source: x\nmodel: {name: [\n", r"p.yaml:\d+: invalid YAML"),
        ("source: x\ndetect:\n  conf: 0.3\n  confidence: 0.5\n",
         r"p.yaml:4: unknown key 'confidence' in 'detect', expecting one of \['agnostic', 'classes', 'conf'"),
        ("source: x\nmodle: {}\n", r"p.yaml:2: unknown key 'modle', expecting one of \["),
        ("source: x\ndetect:\n  conf: 1.5\n", r"p.yaml:3: detect.conf must be between 0 and 1, but got 1.5"),
        ("source: x\ndetect:\n  iou: -1\n", r"detect.iou must be between 0 and 1, but got -1"),
        ("source: x\nmodel:\n  imgsz: 100\n", r"model.imgsz must be a positive multiple of 32, but got 100"),
        ("source: x\nmodel:\n  batch: 0\n", r"model.batch must be between 1 and 256, but got 0"),
        ("source: x\nmodel:\n  workers: 0\n", r"model.workers must be between 1 and 16, but got 0"),
        ("source: x\ndetect:\n  conf: high\n", r"p.yaml:3: detect.conf must be a number, but got 'high'"),
        ("source: x\nmodel:\n  rect: 3\n", r"model.rect must be true or false"),
        ("source: x\ncapture:\n  backend: gstreamer\n",
         r"p.yaml:3: capture.backend must be one of \['auto', 'pyav', 'opencv'\], but got 'gstreamer'"),
        ("job: annotate\n", r"source is required"),
        ("source: x\njob: paint\n", r"job must be one of"),
        ("source: x\nmodel: !!python/object:os.system {}\n", r"invalid YAML"),
    ],
)
def test_bad_files_name_file_line_and_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(write(tmp_path, text))


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="nope.yaml: no such pipeline file"):
        load("nope.yaml")


def test_overrides_parse_values_as_yaml(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, "source: a.mp4\n"), ["detect.conf=0.4", "detect.classes=[0, 2]", "source=b.mp4"])
    assert cfg.detect.conf == 0.4 and cfg.detect.classes == (0, 2) and cfg.source == "b.mp4"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("detect.confx=1", r"--set detect.confx=1: unknown key 'confx' in 'detect', expecting one of"),
        ("nothing", r"expecting key=value"),
        ("detect.conf=2", r"detect.conf must be between 0 and 1"),
    ],
)
def test_bad_overrides(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(apply_overrides({"source": "a.mp4"}, [override]))


def test_classes_accepts_single_int() -> None:
    assert from_dict({"source": "a", "detect": {"classes": 0}}).detect.classes == (0,)


def test_network_servers_bind_loopback_by_default() -> None:
    from streamer.sinks.dashboard import DashboardHub, DashboardServer

    assert from_dict({"cameras": {"a": {"url": "synthetic"}}}).dashboard.host == "127.0.0.1"
    with DashboardServer(DashboardHub(["a"], dict), port=0) as server:
        assert server.url.startswith("http://127.0.0.1:")

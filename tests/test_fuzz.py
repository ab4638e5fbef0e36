"""Property-based tests: whatever the input, only a clear StreamerError escapes."""

from __future__ import annotations

import numpy as np
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from streamer.config import apply_overrides, from_dict, parse_yaml
from streamer.errors import ConfigError, ModelError, StreamerError
from streamer.postprocess.decode import checked_nms, decode_detections
from streamer.types import Letterbox

KEYS = ["source", "job", "model", "detect", "output", "queue", "capture", "cameras", "dashboard", "events",
        "name", "conf", "iou", "imgsz", "batch", "classes", "url", "port", "token", "track", "x", "stage_timeout_s"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), values, max_size=8))
def test_config_from_any_mapping(data: dict) -> None:  # type: ignore[type-arg]
    try:
        from_dict(data, "fuzz.yaml")
    except ConfigError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_config_from_any_text(text: str) -> None:
    try:
        from_dict(parse_yaml(text, "fuzz.yaml"), "fuzz.yaml")
    except ConfigError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=4), st.lists(st.text(max_size=30), max_size=4))
def test_overrides_from_any_text(data: dict, overrides: list[str]) -> None:  # type: ignore[type-arg]
    try:
        from_dict(apply_overrides(data, overrides))
    except ConfigError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=6))
def test_yaml_round_trip_of_any_mapping(data: dict) -> None:  # type: ignore[type-arg]
    try:
        text = yaml.safe_dump(data)
    except yaml.YAMLError:
        return
    try:
        from_dict(parse_yaml(text))
    except ConfigError:
        pass


floats = st.floats(width=32, allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1e30, -1e30, 3.4e38])
arrays = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.float16, np.int32, np.uint8, np.bool_, np.complex64]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=12),
    elements=None,
)
real_arrays = hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=40), elements=floats)


@settings(max_examples=300, deadline=None)
@given(
    raw=st.one_of(arrays, real_arrays),
    layout=st.sampled_from(["v8", "v5", "end2end", "ssd", "classify"]),
    nc=st.integers(1, 8),
    conf=st.floats(0, 1),
    iou=st.floats(0, 1),
    agnostic=st.booleans(),
    multi_label=st.booleans(),
    max_det=st.integers(1, 50),
    scale=st.sampled_from([1.0, 0.5, 3.6, 1e-6, 1e6]),
)
def test_decode_any_array(raw, layout, nc, conf, iou, agnostic, multi_label, max_det, scale) -> None:  # type: ignore[no-untyped-def]
    lb = Letterbox(scale, 3, 7, (64, 64), (48, 60))
    try:
        det = decode_detections(raw, layout, np.ones(nc, np.bool_), lb, conf=conf, iou=iou, agnostic=agnostic,
                                multi_label=multi_label, max_det=max_det)
    except StreamerError:
        return
    assert len(det) <= max_det
    assert np.all(det.class_id >= 0) and np.all(det.class_id < nc)
    if len(det):
        assert np.all(np.diff(det.confidence) <= 0) or np.any(np.isnan(det.confidence))
        finite = det.xyxy[np.isfinite(det.xyxy)]
        assert np.all(finite >= 0) and np.all(finite <= 60)


@st.composite
def box_sets(draw):  # type: ignore[no-untyped-def]
    n = draw(st.integers(0, 60))
    boxes = draw(hnp.arrays(np.float32, (n, 4), elements=floats))
    scores = draw(hnp.arrays(np.float32, (n,), elements=floats))
    classes = draw(hnp.arrays(np.int32, (n,), elements=st.integers(-3, 5)))
    return boxes, scores, classes


@settings(max_examples=300, deadline=None)
@given(box_sets(), st.floats(0, 1), st.booleans(), st.integers(0, 100))
def test_nms_any_boxes(data, iou, agnostic, max_det) -> None:  # type: ignore[no-untyped-def]
    boxes, scores, classes = data
    keep = checked_nms(boxes, scores, classes, iou, agnostic, max_det)
    assert len(keep) <= min(len(boxes), max_det)
    assert len(set(keep.tolist())) == len(keep)
    assert np.all((keep >= 0) & (keep < max(len(boxes), 1)))


def test_nms_bad_shapes_are_model_errors() -> None:
    for boxes, scores, classes in [
        (np.zeros((3, 5)), np.zeros(3), np.zeros(3, np.int32)),
        (np.zeros((3, 4)), np.zeros(2), np.zeros(3, np.int32)),
        (np.zeros((3, 4)), np.zeros(3), np.zeros(3, np.float32)),
        ("boxes", np.zeros(3), np.zeros(3, np.int32)),
    ]:
        try:
            checked_nms(boxes, scores, classes, 0.5)  # type: ignore[arg-type]
        except ModelError:
            continue
        raise AssertionError("expected ModelError")

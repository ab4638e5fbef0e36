"""Identity agreement with Ultralytics' own tracker on the bikes clip.

Reference: tests/data/ultralytics_track_bikes.json, ``YOLO(...).track(..., tracker=
"bytetrack.yaml")`` with Ultralytics 8.4.190 on the same model and clip. Ours: streamer's
own detections of the default model through ``Tracker(frame_rate=25)`` with each frame's
time. Ultralytics reports Kalman boxes and ids given at birth, ours the detector's boxes and
ids given at confirmation; IDF1 is blind to both (ids are labels; IoU >= 0.5 suffices).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import streamer
from tests.track.idf1 import Frame, idf1

DATA = Path(__file__).parents[1] / "data"


@pytest.mark.slow
def test_bikes_ids_agree_with_ultralytics(record_property) -> None:  # type: ignore[no-untyped-def]
    reference = json.loads((DATA / "ultralytics_track_bikes.json").read_text())["frames"]
    truth: list[Frame] = [
        (np.array([r[6] for r in rows], np.int64), np.array([r[:4] for r in rows], np.float64).reshape(-1, 4))
        for rows in reference
    ]
    tracker = streamer.Tracker(frame_rate=25)
    pred: list[Frame] = []
    for result in streamer.stream("sample:bikes", "yolo11n"):
        assert result.detections is not None
        out = tracker.update(result.detections, result.frame.index / 25)
        assert out.tracker_id is not None
        keep = out.tracker_id >= 0
        pred.append((out.tracker_id[keep], out.xyxy[keep]))
    assert len(pred) == len(truth) == 250
    score = idf1(truth, pred)
    ids = np.unique(np.concatenate([p[0] for p in pred]))
    record_property("idf1_vs_ultralytics", round(score, 4))
    print(f"\nbikes: IDF1 vs Ultralytics {score:.4f}, {sum(len(p[0]) for p in pred)} tracked boxes, {ids.size} ids")
    assert ids.tolist() == list(range(1, ids.size + 1))  # confirmed ids, no gaps
    assert score >= 0.95

"""`streamer annotate --track` end to end: identities agree with Ultralytics' own tracker on
the three sample clips, and a counting line on bikes agrees with the count the same rule
gives on Ultralytics' tracks."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from streamer.analytics import Analytics, parse_lines
from streamer.types import Detections
from tests.test_cli_annotate import run_cli
from tests.track.idf1 import idf1

DATA = Path(__file__).parent / "data"
GATE = {"gate": {"start": [400, 0], "end": [400, 272]}}


def reference_tracks(clip: str) -> list[list[list[float]]]:
    return json.loads((DATA / f"ultralytics_track_{clip}.json").read_text())["frames"]


def as_frames(rows_per_frame: list[list[list[float]]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """[[x1, y1, x2, y2, conf, cls, id], ...] per frame -> (ids, boxes) per frame."""
    frames = []
    for rows in rows_per_frame:
        a = np.asarray(rows, np.float64).reshape(-1, 7)
        frames.append((a[:, 6].astype(np.int64), a[:, :4]))
    return frames


def tracked_rows(records: list[dict]) -> list[list[list[float]]]:
    return [[[*d["xyxy"], d["confidence"], d["class_id"], d["track_id"]] for d in r["detections"]
             if d["track_id"] is not None] for r in records]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.CompletedProcess[str], list[dict]]]:
    out = tmp_path_factory.mktemp("track")
    done = {}
    for clip in ("bikes", "carphone", "bigbuckbunny"):
        jsonl = out / f"{clip}.jsonl"
        proc = run_cli("annotate", f"sample:{clip}", "--track", "--no-video", "--no-progress", "--jsonl", str(jsonl))
        records = [json.loads(x) for x in jsonl.read_text().splitlines()] if proc.returncode == 0 else []
        done[clip] = (proc, records)
    return done


@pytest.mark.slow
@pytest.mark.parametrize("clip", ["bikes", "carphone", "bigbuckbunny"])
def test_identities_agree_with_ultralytics(runs, clip: str) -> None:  # type: ignore[no-untyped-def]
    proc, records = runs[clip]
    assert proc.returncode == 0, proc.stderr
    reference = reference_tracks(clip)
    assert len(records) == len(reference)
    ids = [d["track_id"] for r in records for d in r["detections"] if d["track_id"] is not None]
    # Ids are given on confirmation, one counter per stream: 1, 2, 3 ... without gaps.
    assert sorted(set(ids)) == list(range(1, len(set(ids)) + 1))
    score = idf1(as_frames(reference), as_frames(tracked_rows(records)))
    print(f"{clip}: IDF1 {score:.4f} vs Ultralytics' tracker")
    assert score >= 0.90, f"{clip}: IDF1 {score:.4f}"
    assert "tracks: " in proc.stdout, proc.stdout


def count_with_rule(rows_per_frame: list[list[list[float]]]) -> dict[str, int]:
    """The counting rule applied to tracks as given (no tracker involved)."""
    analytics = Analytics(parse_lines(GATE))
    counts = {"in": 0, "out": 0}
    for i, rows in enumerate(rows_per_frame):
        a = np.asarray(rows, np.float32).reshape(-1, 7)
        det = Detections(xyxy=a[:, :4].copy(), confidence=a[:, 4].copy(), class_id=a[:, 5].astype(np.int32),
                         tracker_id=a[:, 6].astype(np.int64))
        counts = analytics.update(det, i / 25.0).lines["gate"]
    return dict(counts)


@pytest.mark.slow
def test_line_count_on_bikes_agrees_with_the_reference_tracks(tmp_path: Path) -> None:
    pipeline = tmp_path / "gate.yaml"
    jsonl = tmp_path / "gate.jsonl"
    pipeline.write_text(json.dumps({"source": "sample:bikes", "lines": GATE, "output": {"jsonl": str(jsonl)}}))
    proc = run_cli("run", str(pipeline), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(x) for x in jsonl.read_text().splitlines()]
    ours = records[-1]["lines"]["gate"]
    expected = count_with_rule(reference_tracks("bikes"))
    print(f"gate on bikes: streamer {ours['in']} in / {ours['out']} out; rule on Ultralytics tracks "
          f"{expected['in']} in / {expected['out']} out")
    assert expected["in"] + expected["out"] > 0
    assert abs((ours["in"] + ours["out"]) - (expected["in"] + expected["out"])) <= 2
    assert "line gate: in " in proc.stdout, proc.stdout
    # Lines imply tracking; the counts grow monotonically through the file.
    totals = [r["lines"]["gate"]["in"] + r["lines"]["gate"]["out"] for r in records]
    assert totals == sorted(totals)


@pytest.mark.slow
def test_watch_track_on_a_live_replay(tmp_path: Path) -> None:
    """watch --track: a file replayed in real time drops frames whenever the model is slower
    than the clip; identities still come from one counter, and the JSONL has them."""
    jsonl = tmp_path / "live.jsonl"
    proc = run_cli("watch", "sample:bikes", "--no-window", "--track", "--jsonl", str(jsonl), "--status-interval", "2")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert len(records) > 20
    ids = {d["track_id"] for r in records for d in r["detections"] if d["track_id"] is not None}
    assert ids and sorted(ids) == list(range(1, len(ids) + 1))
    assert "tracks: " in proc.stdout, proc.stdout

"""`classify:` in a pipeline: the built-in classifier on the detector's boxes, through the
real pipeline, with and without tracking, and the bad settings that name their key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamer.cli import main

DOG_BREEDS = {"English foxhound", "Walker hound", "beagle", "Brittany spaniel", "Welsh springer spaniel",
              "golden retriever", "Labrador retriever", "basset", "bluetick", "redbone", "English setter",
              "Irish setter", "German short-haired pointer", "vizsla", "Blenheim spaniel", "papillon"}


def run(tmp: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    path = tmp / "p.yaml"
    path.write_text(text)
    code = main(["run", str(path), "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_classify_labels_the_dog_and_nothing_it_was_not_asked_to(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(tmp_path, f"""\
source: sample:testimg
classify: {{model: efficientnet-lite0, classes: [dog], top_k: 5}}
output: {{jsonl: {tmp_path}/out.jsonl, images: {tmp_path}/img}}
""", capsys)
    assert code == 0, err
    (record,) = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    classified = [d for d in record["detections"] if "classes" in d]
    assert [d["label"] for d in classified] == ["dog"]
    labels = [c["label"] for c in classified[0]["classes"]]
    assert len(labels) == 5 and DOG_BREEDS & set(labels), labels
    assert all("classes" not in d for d in record["detections"] if d["label"] != "dog")
    assert "classified 1 objects with efficientnet-lite0" in out, out


@pytest.mark.slow
def test_with_tracking_a_track_is_classified_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """carphone: one face (a person) on 120 frames. Per frame that would be about 120 calls;
    per track it is one call per confirmed track."""
    code, out, err = run(tmp_path, f"""\
source: sample:carphone
track: true
classify: {{model: efficientnet-lite0, classes: [person], min_box: 16}}
output: {{jsonl: {tmp_path}/out.jsonl}}
""", capsys)
    assert code == 0, err
    records = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    tracked = {d["track_id"] for r in records for d in r["detections"] if d["label"] == "person" and d["track_id"]}
    with_classes = sum(1 for r in records for d in r["detections"] if "classes" in d)
    line = next(x for x in out.splitlines() if x.startswith("classified "))
    calls = int(line.split(" in ")[1].split()[0])
    assert with_classes > 60, with_classes  # every confirmed person row carries its track's result
    assert 1 <= calls <= len(tracked), (calls, tracked, line)


BAD = [
    ("source: sample:testimg\nmodel: {name: efficientnet-lite0}\nclassify: {model: efficientnet-lite0}\n",
     "model.name: "),
    ("source: sample:testimg\nclassify: {model: yolo11n}\n", "classify.model: "),
    ("source: sample:testimg\nclassify: {classes: [dgo]}\n", "classify.classes: unknown class 'dgo'"),
]


@pytest.mark.parametrize(("text", "expected"), BAD, ids=[b[1] for b in BAD])
def test_bad_classify_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str) -> None:
    code, _, err = run(tmp_path, text, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamer: " + expected), err

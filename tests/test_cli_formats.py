"""The CLI with models users bring: a TorchScript classifier on a folder of images, and an
SSD-style anchor head described in a pipeline file. Both have known right answers."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from streamer.postprocess import anchors_reference
from streamer.postprocess.anchors import AnchorConfig
from tests.models.test_torchscript import ColourClassifier
from tests.test_cli_annotate import run_cli


def test_classify_folder_with_labels(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    red, blue = np.zeros((120, 160, 3), np.uint8), np.zeros((90, 90, 3), np.uint8)
    red[..., 2] = 220  # BGR
    blue[..., 0] = 220
    cv2.imwrite(str(photos / "a_red.png"), red)
    cv2.imwrite(str(photos / "b_blue.jpg"), blue)
    model = tmp_path / "clf.torchscript"
    torch.jit.script(ColourClassifier()).save(str(model))
    (tmp_path / "labels.txt").write_text("stop sign\nsky\n")
    proc = run_cli("annotate", str(photos), "--task", "classify", "--model", str(model),
                   "--labels", str(tmp_path / "labels.txt"), "-o", str(tmp_path / "out"),
                   "--jsonl", str(tmp_path / "c.jsonl"), "--imgsz", "64", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    # softmax of (4*(0.86-0), -4*0.86): p = 1 / (1 + e^-6.9) = 99.9%
    assert lines[0].startswith("[1/2] a_red.png stop sign (99.") and lines[0].endswith("%)")
    assert lines[1].startswith("[2/2] b_blue.jpg sky (99.")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_red.png", "b_blue.jpg"]
    drawn = cv2.imread(str(tmp_path / "out" / "a_red.png"))
    assert drawn.shape == red.shape and not np.array_equal(drawn, red)  # the label is drawn on the copy
    records = [json.loads(x) for x in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert records[0]["classes"][0]["label"] == "stop sign" and records[1]["classes"][0]["label"] == "sky"
    assert abs(sum(c["probability"] for c in records[0]["classes"]) - 1.0) < 1e-3


def test_task_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    model = tmp_path / "clf.torchscript"
    torch.jit.script(ColourClassifier()).save(str(model))
    proc = run_cli("annotate", "sample:testimg", "--task", "detect", "--model", str(model), "--no-progress",
                   "--jsonl", str(tmp_path / "x.jsonl"), cwd=tmp_path)
    assert proc.returncode == 2 and "classify model" in proc.stderr and "Traceback" not in proc.stderr


SSD = AnchorConfig(
    strides=(16, 32), min_sizes=(40.0, 90.0), max_sizes=(90.0, 150.0), aspect_ratios=((2.0,), (2.0,)),
    variances=(0.1, 0.2), background_index=0, softmax=True, input_size=(160, 160),
)


class KnownSsd(nn.Module):
    """Always 'sees' the same boxes: regressions encoded against the anchors, plus logits."""

    def __init__(self, out: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("out", torch.from_numpy(out)[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out.expand(x.shape[0], -1, -1) + x.sum() * 0


def test_ssd_head_from_a_pipeline_file(tmp_path: Path) -> None:
    anchors = SSD.anchors()
    a = len(anchors)
    # Two objects in model-input pixels (a 160x160 letterbox of a 320x240 image: scale 0.5, pad_y 20).
    targets = np.array([[20, 40, 80, 100], [90, 50, 150, 130]], np.float32)
    ious = np.array([[_iou(t, _xyxy(an)) for an in anchors] for t in targets])
    owner = ious.argmax(axis=1)
    boxes = np.tile(_xyxy(anchors[0]), (a, 1))
    boxes[owner] = targets
    loc = anchors_reference.encode_boxes(boxes, anchors, SSD.variances)
    logits = np.full((a, 3), [5.0, -5.0, -5.0], np.float32)  # column 0: background
    logits[owner[0]] = [-5.0, 6.0, -5.0]  # class 0 ("cat")
    logits[owner[1]] = [-5.0, -5.0, 6.0]  # class 1 ("dog")
    out = np.concatenate([loc, logits], axis=1).astype(np.float32)
    model = tmp_path / "ssd.torchscript"
    torch.jit.trace(KnownSsd(out), torch.zeros(1, 3, 160, 160)).save(str(model))
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    image = tmp_path / "scene.png"
    cv2.imwrite(str(image), np.full((240, 320, 3), 90, np.uint8))
    pipeline = tmp_path / "ssd.yaml"
    pipeline.write_text(f"""
source: {image}
model:
  name: {model}
  labels: {tmp_path / 'labels.txt'}
  anchors:
    strides: [16, 32]
    min_sizes: [40, 90]
    max_sizes: [90, 150]
    aspect_ratios: [[2], [2]]
    variances: [0.1, 0.2]
    background_index: 0
    softmax: true
    input_size: [160, 160]
detect: {{conf: 0.5}}
output: {{images: {tmp_path / 'out'}, jsonl: {tmp_path / 'ssd.jsonl'}}}
""")
    proc = run_cli("run", str(pipeline), "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (record,) = [json.loads(x) for x in (tmp_path / "ssd.jsonl").read_text().splitlines()]
    got = sorted((d["label"], d["xyxy"]) for d in record["detections"])
    # Back in source pixels: (x - 0) / 0.5, (y - 20) / 0.5.
    want = [("cat", [40.0, 40.0, 160.0, 160.0]), ("dog", [180.0, 60.0, 300.0, 220.0])]
    assert [g[0] for g in got] == [w[0] for w in want]
    for (_, g), (_, w) in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=0.05)


def test_bad_anchor_section_names_the_key(tmp_path: Path) -> None:
    pipeline = tmp_path / "bad.yaml"
    pipeline.write_text("source: sample:testimg\nmodel:\n  anchors:\n    strides: [16]\n    min_sizes: [1, 2]\n")
    proc = run_cli("run", str(pipeline), "--no-progress", cwd=tmp_path)
    assert proc.returncode == 2 and "anchors." in proc.stderr and "Traceback" not in proc.stderr


def _xyxy(a: np.ndarray) -> np.ndarray:
    return np.array([a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2], np.float32)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

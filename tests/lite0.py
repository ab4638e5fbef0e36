"""Shared set-up for the built-in classifier's tests: real pictures, a short real clip, and
one ONNX export of EfficientNet-Lite0 per test run (a private cache, never the user's)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from streamer import assets
from streamer.models.efficientnet import EfficientNetLite0

#: Boxes (x1, y1, x2, y2) of objects in sample:testimg, as the default detector finds them.
TESTIMG_DOG = (380, 347, 423, 422)
TESTIMG_BICYCLE = (200, 266, 301, 423)
#: ImageNet ids of bicycles and of dogs (the dog breeds are ids 151 to 268).
BICYCLES = {444: "bicycle-built-for-two", 671: "mountain bike", 870: "tricycle", 880: "unicycle"}
DOG_BREEDS = range(151, 269)


def weights() -> Path:
    return assets.model_path("efficientnet-lite0")


@functools.cache
def cache_home() -> Path:
    """An ``XDG_CACHE_HOME`` that holds the export (made once, removed at exit)."""
    home = Path(tempfile.mkdtemp(prefix="streamer-lite0-"))
    atexit.register(shutil.rmtree, home, True)
    model = EfficientNetLite0(weights(), cache_dir=home / "streamer", threads=2)
    model.open()
    model.close()
    return home


def testimg() -> np.ndarray:
    image = cv2.imread(str(assets.sample_path("sample:testimg")), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x1, y1, x2, y2 = box
    return np.ascontiguousarray(image[y1:y2, x1:x2])


def clip_frames(name: str, count: int, step: int = 1) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(assets.sample_path(name)))
    frames: list[np.ndarray] = []
    index = 0
    while len(frames) < count:
        ok, frame = cap.read()
        if not ok:
            break
        if index % step == 0:
            frames.append(frame)
        index += 1
    cap.release()
    assert len(frames) == count, f"{name} has fewer than {count * step} frames"
    return frames


def write_pictures(folder: Path) -> list[str]:
    """Four real pictures (testimg crops, sample clip frames); returns their names, sorted."""
    folder.mkdir(parents=True, exist_ok=True)
    image = testimg()
    x1, y1, x2, y2 = TESTIMG_DOG
    pictures = {
        "a_bicycle.png": crop(image, TESTIMG_BICYCLE),
        # The dog with some of the grass around it, as a photo of it would be framed.
        "b_dog.jpg": crop(image, (x1 - 20, y1 - 20, x2 + 20, min(y2 + 20, image.shape[0]))),
        "c_street.jpg": clip_frames("sample:bikes", 1)[0],
        "d_bunny.png": clip_frames("sample:bigbuckbunny", 1, 1)[0],
    }
    for name, picture in pictures.items():
        assert cv2.imwrite(str(folder / name), picture)
    return sorted(pictures)


def write_clip(path: Path, frames: int = 10, sample: str = "sample:carphone") -> Path:
    """The first ``frames`` frames of a sample clip as an MP4 file."""
    images = clip_frames(sample, frames)
    h, w = images[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (w, h))
    assert writer.isOpened()
    for image in images:
        writer.write(image)
    writer.release()
    return path

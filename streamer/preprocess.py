"""Letterbox and normalize frames for the model, with Ultralytics' semantics.

``r = min(H/h, W/w)``; the frame is resized to ``round(w·r) × round(h·r)`` with
``INTER_LINEAR`` and padded with grey 114 split as ``top = round(dh − 0.1)``,
``bottom = round(dh + 0.1)`` (same for left/right). In *rect* mode the padded size is only
rounded up to a multiple of the stride (640×272 → 640×288); in square mode it is
``imgsz × imgsz``. Then BGR→RGB, HWC→CHW and ``/255`` into float32, no mean/std.

The CPU path does this in one pass: ``cv2.resize`` writes the (smaller or equal) unpadded
uint8 image, then one Numba kernel writes padding, channel swap, transpose and scaling
straight into the model's float32 input. No full-size float temporaries.
"""

from __future__ import annotations

import cv2
import numpy as np

from streamer import _numba  # noqa: F401 - sets the Numba cache folder before numba loads
from numba import njit

from streamer.types import Letterbox

PAD_VALUE = 114


def as_hw(imgsz: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(imgsz, int):
        return imgsz, imgsz
    h, w = imgsz
    return int(h), int(w)


def letterbox_params(
    source_hw: tuple[int, int],
    imgsz: int | tuple[int, int],
    *,
    rect: bool = True,
    stride: int = 32,
    scaleup: bool = True,
) -> Letterbox:
    """Compute where a ``source_hw`` frame goes in the model input (no pixels touched)."""
    h0, w0 = source_hw
    if h0 <= 0 or w0 <= 0:
        raise ValueError(f"frame size must be positive, but got {w0}x{h0}")
    target_h, target_w = as_hw(imgsz)
    r = min(target_h / h0, target_w / w0)
    if not scaleup:
        r = min(r, 1.0)
    new_w, new_h = int(round(w0 * r)), int(round(h0 * r))
    dw, dh = target_w - new_w, target_h - new_h
    if rect:
        dw, dh = dw % stride, dh % stride
    left, right = int(round(dw / 2 - 0.1)), int(round(dw / 2 + 0.1))
    top, bottom = int(round(dh / 2 - 0.1)), int(round(dh / 2 + 0.1))
    return Letterbox(
        scale=r,
        pad_x=left,
        pad_y=top,
        input_hw=(new_h + top + bottom, new_w + left + right),
        source_hw=(h0, w0),
    )


# uint8 -> float32 /255, as a table: a lookup is exact (the same float32 as the division)
# and much cheaper than a division per element.
_LUT = (np.arange(256, dtype=np.float32) / np.float32(255.0)).astype(np.float32)


@njit(nogil=True, cache=True, error_model="numpy")
def _pad_normalize_chw(resized: np.ndarray, top: int, left: int, out: np.ndarray, lut: np.ndarray) -> None:
    # out: (3, H, W) float32. resized: (h, w, 3) uint8 BGR placed at (top, left).
    _, out_h, out_w = out.shape
    h, w, _ = resized.shape
    pad = lut[PAD_VALUE]
    right = min(out_w, left + w)
    for y in range(out_h):
        sy = y - top
        if sy < 0 or sy >= h:
            for c in range(3):
                out[c, y, :] = pad
            continue
        for c in range(3):
            out[c, y, :left] = pad
            out[c, y, right:] = pad
        src = resized[sy]
        r, g, b = out[0, y], out[1, y], out[2, y]
        # BGR -> RGB: output plane c reads input channel 2 - c.
        for x in range(left, right):
            px = src[x - left]
            r[x] = lut[px[2]]
            g[x] = lut[px[1]]
            b[x] = lut[px[0]]


def letterbox_into(image: np.ndarray, lb: Letterbox, out: np.ndarray) -> np.ndarray:
    """Write the letterboxed, normalized CHW float32 version of ``image`` into ``out``.

    ``image``: (h, w, 3) uint8 BGR of size ``lb.source_hw``; ``out``: (3, H, W) float32 with
    (H, W) = ``lb.input_hw``. Returns ``out``.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, but got shape {image.shape} dtype {image.dtype}")
    if tuple(image.shape[:2]) != lb.source_hw:
        raise ValueError(f"image size {image.shape[:2]} does not match letterbox source size {lb.source_hw}")
    if out.shape != (3, *lb.input_hw) or out.dtype != np.float32:
        raise ValueError(f"out must be (3, {lb.input_hw[0]}, {lb.input_hw[1]}) float32, but got {out.shape} {out.dtype}")
    h0, w0 = lb.source_hw
    new_w, new_h = int(round(w0 * lb.scale)), int(round(h0 * lb.scale))
    resized = image if (new_w, new_h) == (w0, h0) else cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    _pad_normalize_chw(np.ascontiguousarray(resized), lb.pad_y, lb.pad_x, out, _LUT)
    return out


def letterbox(image: np.ndarray, imgsz: int | tuple[int, int] = 640, *, rect: bool = True, stride: int = 32) -> tuple[np.ndarray, Letterbox]:
    """Letterbox one frame into a new (3, H, W) float32 array."""
    lb = letterbox_params(image.shape[:2], imgsz, rect=rect, stride=stride)
    out = np.empty((3, *lb.input_hw), np.float32)
    return letterbox_into(image, lb, out), lb


def letterbox_reference(image: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Plain NumPy/OpenCV reference of :func:`letterbox_into`, step by step (for tests)."""
    h0, w0 = lb.source_hw
    new_w, new_h = int(round(w0 * lb.scale)), int(round(h0 * lb.scale))
    resized = image if (new_w, new_h) == (w0, h0) else cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    H, W = lb.input_hw
    bottom = H - new_h - lb.pad_y
    right = W - new_w - lb.pad_x
    padded = cv2.copyMakeBorder(
        resized, lb.pad_y, bottom, lb.pad_x, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3
    )
    chw = padded[..., ::-1].transpose(2, 0, 1)
    return np.ascontiguousarray(chw).astype(np.float32) / np.float32(255.0)

"""NV12 frames to the letterboxed model input, in one gather, on any torch device.

NVDEC writes decoded pictures as NV12: a full-resolution luma plane ``Y`` (H, W) and one
half-resolution plane of interleaved chroma ``UV`` (H/2, W/2, 2), U first. Keeping frames in
that form on the GPU saves the host the colour conversion and the upload of every frame; this
module turns them into exactly what the CPU path would have made of the same picture:

    cv2.cvtColor(nv12, cv2.COLOR_YUV2BGR_NV12)         BT.601 limited range, OpenCV's fixed point
    → streamer.preprocess.letterbox_into(...)           INTER_LINEAR resize, grey-114 padding,
                                                        BGR→RGB, CHW, /255

without materialising the full-size BGR picture. For each pixel of the resized image the four
source pixels that ``cv2.resize`` would blend are gathered straight from the Y and UV planes
(chroma nearest, as OpenCV's NV12 conversion does), converted with OpenCV's integer
arithmetic (the same uint8 values ``cvtColor`` gives, bit for bit), and blended with
``cv2.resize``'s own 11-bit weights. The only difference left is that OpenCV rounds the blend
to uint8 (and its SIMD vertical pass drops a few low bits) and this path does not: within one
grey level of OpenCV's chain, mostly much closer.

The taps and weights depend only on the source and resized sizes; they are computed once per
size pair. Frames of the same size in one batch are converted together (one gather, about
twenty kernels for the whole group, whatever its size), so 64 cameras of 1080p cost about what
one does in launches. The result is written into a caller's batch tensor (a CUDA graph's
static input, for instance), in fp32 or fp16; arithmetic runs in int32/fp32 either way.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from streamer.preprocess import PAD_VALUE
from streamer.types import Letterbox

# BT.601 limited range in OpenCV's 20-bit fixed point (imgproc color_yuv: ITUR_BT_601_*):
#   R = (CY·max(Y − 16, 0) + CVR·(V − 128)                 + 2^19) >> 20
#   G = (CY·max(Y − 16, 0) + CVG·(V − 128) + CUG·(U − 128) + 2^19) >> 20
#   B = (CY·max(Y − 16, 0)                 + CUB·(U − 128) + 2^19) >> 20,  each clipped to 0..255.
# The largest intermediate is below 2^30, so int32 holds it on every device.
_CY = 1220542
_CUB = 2116026
_CUG = -409993
_CVG = -852492
_CVR = 1673527
_SHIFT = 20
_ROUND = 1 << (_SHIFT - 1)

#: cv2.resize's INTER_LINEAR weights for uint8 are 11-bit fixed point (INTER_RESIZE_COEF_BITS).
_COEF_SCALE = 2048

#: Size pairs whose taps are kept per device; a process sees few frame sizes.
_MAX_TAPS = 32


@dataclass(frozen=True, slots=True)
class Nv12Image:
    """One NV12 picture as two uint8 tensors on one device.

    ``y``: (H, W) luma. ``uv``: (H/2, W/2, 2) chroma, U then V, one sample per 2×2 block of
    luma. Either may be strided (NVDEC's planes have a row pitch wider than the picture).
    H and W must be even, as NVDEC and FFmpeg's nv12 produce them.
    """

    y: torch.Tensor
    uv: torch.Tensor

    def __post_init__(self) -> None:
        y, uv = self.y, self.uv
        if y.dtype != torch.uint8 or uv.dtype != torch.uint8:
            raise ValueError(f"NV12 planes must be uint8, but got y {y.dtype} and uv {uv.dtype}")
        if y.ndim != 2:
            raise ValueError(f"y must have shape (H, W), but got shape {tuple(y.shape)}")
        h, w = int(y.shape[0]), int(y.shape[1])
        if h % 2 or w % 2 or h == 0 or w == 0:
            raise ValueError(f"an NV12 picture needs an even, non-zero width and height, but got {w}x{h}")
        if tuple(uv.shape) != (h // 2, w // 2, 2):
            raise ValueError(f"uv must have shape ({h // 2}, {w // 2}, 2) for a {w}x{h} picture, but got {tuple(uv.shape)}")
        if y.device != uv.device:
            raise ValueError(f"y and uv must be on one device, but got {y.device} and {uv.device}")

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W): what ``image.shape[:2]`` gives for a BGR array of the same picture."""
        return int(self.y.shape[0]), int(self.y.shape[1])

    @property
    def height(self) -> int:
        return int(self.y.shape[0])

    @property
    def width(self) -> int:
        return int(self.y.shape[1])

    @property
    def device(self) -> torch.device:
        return self.y.device

    @classmethod
    def from_packed(cls, packed: np.ndarray | torch.Tensor, device: torch.device | str | None = None) -> Nv12Image:
        """Split FFmpeg's packed NV12 array ``(H·3/2, W)`` uint8 (PyAV's ``to_ndarray(format='nv12')``,
        OpenCV's input to ``COLOR_YUV2BGR_NV12``) into planes, on ``device`` (default: where it is)."""
        tensor = torch.from_numpy(np.ascontiguousarray(packed)) if isinstance(packed, np.ndarray) else packed
        if tensor.ndim != 2 or tensor.shape[0] % 3 or tensor.dtype != torch.uint8:
            raise ValueError(
                f"packed NV12 must be a (H*3/2, W) uint8 array, but got shape {tuple(tensor.shape)} dtype {tensor.dtype}"
            )
        if device is not None:
            tensor = tensor.to(device)
        h = int(tensor.shape[0]) * 2 // 3
        w = int(tensor.shape[1])
        return cls(tensor[:h], tensor[h:].reshape(h // 2, w // 2, 2))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Nv12Image:
        return Nv12Image(self.y.to(device, non_blocking=non_blocking), self.uv.to(device, non_blocking=non_blocking))

    def to_bgr(self) -> torch.Tensor:
        """The full picture as (H, W, 3) uint8 BGR on the same device, equal to
        ``cv2.cvtColor(packed, cv2.COLOR_YUV2BGR_NV12)`` value for value (for outputs that
        show pictures: drawing, recording, dashboard tiles)."""
        with torch.no_grad():
            h, w = self.shape
            rows = torch.arange(h, device=self.device) // 2
            cols = torch.arange(w, device=self.device) // 2
            chroma = self.uv[rows[:, None], cols[None, :]]  # (H, W, 2): nearest, like OpenCV
            r, g, b = _yuv_to_rgb(self.y, chroma[..., 0], chroma[..., 1])
            return torch.stack((b, g, r), dim=-1).to(torch.uint8)


def _yuv_to_rgb(y: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 Y, U, V of the same shape → int32 R, G, B in 0..255, OpenCV's integer BT.601."""
    luma = (y.to(torch.int32) - 16).clamp_(min=0).mul_(_CY).add_(_ROUND)
    cu = u.to(torch.int32) - 128
    cv = v.to(torch.int32) - 128
    r = (luma + _CVR * cv).bitwise_right_shift_(_SHIFT).clamp_(0, 255)
    g = (luma + _CVG * cv + _CUG * cu).bitwise_right_shift_(_SHIFT).clamp_(0, 255)
    b = (luma + _CUB * cu).bitwise_right_shift_(_SHIFT).clamp_(0, 255)
    return r, g, b


def linear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """The two source indices and weights ``cv2.resize(INTER_LINEAR)`` uses along one axis.

    Returns ``index`` (dst, 2) int64 and ``weight`` (dst, 2) float32, weights in units of
    1/2048 as OpenCV quantizes them for uint8 images. Follows OpenCV's ``resizeGeneric``: the
    source coordinate ``(d + 0.5)·src/dst − 0.5`` in float32, floor and fraction, and at the
    borders the nearest edge pixel with weight 1 (no extrapolation).
    """
    if src <= 0 or dst <= 0:
        raise ValueError(f"sizes must be positive, but got {src} -> {dst}")
    scale = 1.0 / (dst / src)  # OpenCV keeps inv_scale = dst/src and scale = 1/inv_scale, in double
    pos = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(pos).astype(np.int64)
    frac = (pos - first.astype(np.float32)).astype(np.float32)
    low = first < 0
    first[low], frac[low] = 0, 0.0
    high = first >= src - 1
    first[high], frac[high] = src - 1, 0.0
    index = np.stack([first, np.minimum(first + 1, src - 1)], axis=1)
    # saturate_cast<short>(w · 2048) rounds half to even, like np.rint, each weight on its own.
    weight = np.stack([np.rint((np.float32(1.0) - frac) * _COEF_SCALE), np.rint(frac * _COEF_SCALE)], axis=1)
    return index, (weight / _COEF_SCALE).astype(np.float32)


def _used(index: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop the second tap of an axis where it never weighs anything: a size kept as it is,
    or an integer factor of 3, 5, ... (1080 → 360 samples every third row exactly). Such a
    frame then costs one gather per pixel instead of two or four."""
    if not weight[:, 1].any():
        return index[:, :1], weight[:, :1]
    return index, weight


@dataclass(frozen=True, slots=True)
class _Taps:
    """Where the source pixels of every resized pixel are, and how much each weighs.

    ``T`` taps (4 for a bilinear blend, 2 or 1 where an axis needs one source pixel):
    ``rows``/``cols`` index luma, ``chroma_rows``/``chroma_cols`` the half-size chroma plane;
    all broadcast to (T, Hn, Wn). ``weights``: (T, Hn, Wn) float32, summing to 1 per pixel
    (within OpenCV's rounding of each weight to 1/2048).
    """

    rows: torch.Tensor
    cols: torch.Tensor
    chroma_rows: torch.Tensor
    chroma_cols: torch.Tensor
    weights: torch.Tensor

    @classmethod
    def build(cls, source_hw: tuple[int, int], resized_hw: tuple[int, int], device: torch.device) -> _Taps:
        (h, w), (new_h, new_w) = source_hw, resized_hw
        row_index, row_weight = _used(*linear_taps(h, new_h))
        col_index, col_weight = _used(*linear_taps(w, new_w))
        # Every row tap with every column tap: (T, Hn) and (T, Wn), T = rows · columns.
        ry = np.repeat(row_index.T, len(col_index.T), axis=0)
        wy = np.repeat(row_weight.T, len(col_weight.T), axis=0)
        cx = np.tile(col_index.T, (len(row_index.T), 1))
        wx = np.tile(col_weight.T, (len(row_weight.T), 1))
        rows = torch.from_numpy(ry[:, :, None]).to(device)
        cols = torch.from_numpy(cx[:, None, :]).to(device)
        weights = torch.from_numpy((wy[:, :, None] * wx[:, None, :]).astype(np.float32)).to(device)
        return cls(rows, cols, rows // 2, cols // 2, weights)


class Nv12Letterbox:
    """Letterboxes NV12 frames into the model's input batch on their device.

    ``dtype``: the batch's dtype when this object allocates it (fp32 or fp16); a batch passed
    in keeps its own. Safe to call from several threads (the tap cache is locked; each call
    writes only the slots it is given).
    """

    def __init__(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self._taps: OrderedDict[tuple[tuple[int, int], tuple[int, int]], _Taps] = OrderedDict()
        self._lock = threading.Lock()

    def taps(self, source_hw: tuple[int, int], resized_hw: tuple[int, int]) -> _Taps:
        """The taps of one size pair, computed on first use and kept (the newest ``_MAX_TAPS``)."""
        key = (source_hw, resized_hw)
        with self._lock:
            found = self._taps.get(key)
            if found is not None:
                self._taps.move_to_end(key)
                return found
        built = _Taps.build(source_hw, resized_hw, self.device)
        with self._lock:
            self._taps[key] = built
            while len(self._taps) > _MAX_TAPS:
                self._taps.popitem(last=False)
        return built

    def __call__(
        self, images: Sequence[Nv12Image], boxes: Sequence[Letterbox], out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Write frame ``i``, letterboxed by ``boxes[i]``, into ``out[i]``; return ``out``.

        ``out``: (N ≥ len(images), 3, H, W) float on this device, H and W at least the largest
        ``input_hw``; made (exactly that size, ``self.dtype``) when None. Each slot is RGB in
        [0, 1]: the frame at ``(pad_y, pad_x)``, grey 114/255 around it, and below and right
        of a letterbox smaller than the batch (as the CPU path pads mixed-size batches). Slots
        past ``len(images)`` are left as they are.
        """
        if len(images) != len(boxes):
            raise ValueError(f"got {len(images)} images but {len(boxes)} letterboxes")
        if not images:
            return out if out is not None else torch.empty((0, 3, 0, 0), dtype=self.dtype, device=self.device)
        need_h = max(lb.input_hw[0] for lb in boxes)
        need_w = max(lb.input_hw[1] for lb in boxes)
        if out is None:
            out = torch.empty((len(images), 3, need_h, need_w), dtype=self.dtype, device=self.device)
        elif (
            out.ndim != 4 or out.shape[0] < len(images) or out.shape[1] != 3
            or out.shape[2] < need_h or out.shape[3] < need_w or not out.is_floating_point()
        ):
            raise ValueError(
                f"out must be a float tensor of shape (>={len(images)}, 3, >={need_h}, >={need_w}), "
                f"but got shape {tuple(out.shape)} dtype {out.dtype}"
            )
        groups: dict[tuple[tuple[int, int], Letterbox], list[int]] = {}
        for i, (image, lb) in enumerate(zip(images, boxes, strict=True)):
            if image.shape != lb.source_hw:
                raise ValueError(f"image {i} is {image.shape[1]}x{image.shape[0]}, but its letterbox is for "
                                 f"{lb.source_hw[1]}x{lb.source_hw[0]}")
            if image.device != out.device:
                raise ValueError(f"image {i} is on {image.device}, but the batch is on {out.device}")
            groups.setdefault((image.shape, lb), []).append(i)
        with torch.no_grad():
            out[: len(images)].fill_(PAD_VALUE / 255.0)
            for (source_hw, lb), slots in groups.items():
                self._write_group([images[i] for i in slots], source_hw, lb, out, slots)
        return out

    def _write_group(
        self, images: list[Nv12Image], source_hw: tuple[int, int], lb: Letterbox, out: torch.Tensor, slots: list[int]
    ) -> None:
        """Convert, resize and place frames of one size and letterbox into their slots."""
        h0, w0 = source_hw
        new_h, new_w = int(round(h0 * lb.scale)), int(round(w0 * lb.scale))
        taps = self.taps(source_hw, (new_h, new_w))
        if len(images) == 1:
            luma, chroma = images[0].y[None], images[0].uv[None]
        else:
            luma = torch.stack([im.y for im in images])
            chroma = torch.stack([im.uv for im in images])
        y = luma[:, taps.rows, taps.cols]  # (G, T, Hn, Wn)
        uv = chroma[:, taps.chroma_rows, taps.chroma_cols]  # (G, T, Hn, Wn, 2)
        r, g, b = _yuv_to_rgb(y, uv[..., 0], uv[..., 1])
        rgb = torch.stack((r, g, b), dim=1).to(torch.float32)  # (G, 3, T, Hn, Wn)
        resized = (rgb * taps.weights).sum(dim=2).div_(255.0)  # (G, 3, Hn, Wn)
        top, left = lb.pad_y, lb.pad_x
        first = slots[0]
        if slots == list(range(first, first + len(slots))):
            out[first : first + len(slots), :, top : top + new_h, left : left + new_w] = resized
        else:
            index = torch.tensor(slots, device=out.device)
            out[:, :, top : top + new_h, left : left + new_w][index] = resized.to(out.dtype)

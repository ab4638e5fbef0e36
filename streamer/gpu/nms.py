"""YOLOv8 / YOLO11 decode and class-aware NMS for a whole batch, in torch, on any device.

On the GPU the raw output of a batch (B × 84 × 8400 floats for 640×640) is far larger than
what is kept; the CPU path copies all of it to the host for the Numba kernels. Here the
candidates are selected, suppressed and mapped back to source pixels where the output is, and
only the kept rows, at most ``max_det`` × 6 numbers per image, are copied.

Semantics are those of :mod:`streamer.postprocess.yolo` (Ultralytics' ``non_max_suppression``,
true per-class variant), decision for decision, in float32 whatever the model's precision:

* a candidate is an anchor whose best class score is strictly greater than ``conf`` (NaN scores
  never win); it keeps its best class (the first one reaching the maximum), or with
  ``multi_label`` one row per class above ``conf``; the class filter applies to that class;
* boxes ``cx, cy, w, h`` → ``x1, y1, x2, y2`` in model-input pixels;
* more than ``max_nms`` candidates in one image: its ``max_nms`` best by score go on;
* greedy NMS per image and class (any class when ``agnostic``): in descending score order,
  ties in anchor order, a kept box suppresses later boxes whose IoU with it is strictly greater
  than ``iou`` (IoU computed in float32 exactly as the Numba kernel does; NaN never suppresses);
  at most ``max_det`` per image;
* boxes mapped back through each image's letterbox (``(x − pad) / scale``) and clipped to the
  source frame (NaN becomes 0).

Greedy NMS is sequential by definition; on a GPU it is solved as a fixed point instead. With
``S[i, j]`` = "box i comes before box j and suppresses it", the greedy result is the unique
``keep`` with ``keep[j] = not any(keep[i] and S[i, j])``. Iterating that equation from "keep
everything" fixes at least one more position per round (position ``t`` is final after ``t``
rounds, since it depends only on earlier ones), so it reaches the greedy result exactly, in
as many rounds as the longest chain of suppressions (a handful on detector output), each
round one batched reduction over every (image, class) group at once. The pairwise blocks are
built in chunks of at most ``_BLOCK_BUDGET`` elements.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from streamer.postprocess.yolo import MAX_NMS
from streamer.types import Detections, Letterbox

#: Elements of one chunk of pairwise IoU blocks (float32 temporaries of this size are made):
#: 16 Mi elements is 64 MB per temporary. A single group larger than its square root is done
#: in row tiles, its boolean block (K² bytes, K ≤ max_nms) kept whole.
_BLOCK_BUDGET = 1 << 24


@dataclass(frozen=True, slots=True)
class KeptRows:
    """The kept detections of a batch, still on the device.

    ``rows``: (N, 6) float32 ``[x1, y1, x2, y2, score, class]``, boxes in source-frame pixels.
    ``image``: (N,) int64, the image each row belongs to. Rows are grouped by image in
    ascending order, by descending score within an image (ties in anchor order), as the
    Numba path orders them. ``batch_size``: images in the batch (some may have no rows).
    """

    rows: torch.Tensor
    image: torch.Tensor
    batch_size: int

    def to_host(self) -> list[Detections]:
        """One :class:`Detections` per image, after one copy of the kept rows to the host."""
        rows = self.rows.cpu().numpy()
        counts = torch.bincount(self.image, minlength=self.batch_size).cpu().numpy()
        out = []
        start = 0
        for count in counts.tolist():
            part = rows[start : start + count]
            start += count
            out.append(Detections(
                np.ascontiguousarray(part[:, :4]), np.ascontiguousarray(part[:, 4]), part[:, 5].astype(np.int32)
            ))
        return out


def decode_nms_v8(
    raw: torch.Tensor,
    boxes: Sequence[Letterbox],
    *,
    conf: float = 0.25,
    iou: float = 0.7,
    class_mask: np.ndarray | torch.Tensor | None = None,
    agnostic: bool = False,
    multi_label: bool = False,
    max_det: int = 300,
    max_nms: int = MAX_NMS,
) -> KeptRows:
    """Decode and suppress a batch of v8 outputs where they are.

    ``raw``: (B, 4 + nc, A), any float dtype, on any device, ``cx, cy, w, h`` in model-input
    pixels then one score per class. ``boxes``: each image's letterbox (B of them).
    ``class_mask``: (nc,) bool, True for the classes to keep (None: all).
    """
    if raw.ndim != 3 or raw.shape[1] < 5 or not raw.is_floating_point():
        raise ValueError(f"raw must be a float tensor of shape (B, 4 + nc, A), but got shape {tuple(raw.shape)} dtype {raw.dtype}")
    batch, channels, _ = (int(v) for v in raw.shape)
    nc = channels - 4
    if len(boxes) != batch:
        raise ValueError(f"got {len(boxes)} letterboxes for a batch of {batch}")
    device = raw.device
    mask = torch.ones(nc, dtype=torch.bool, device=device) if class_mask is None else torch.as_tensor(class_mask, device=device)
    if tuple(mask.shape) != (nc,) or mask.dtype != torch.bool:
        raise ValueError(f"class_mask must be ({nc},) bool for {nc} classes, but got shape {tuple(mask.shape)} dtype {mask.dtype}")
    empty = KeptRows(torch.empty((0, 6), dtype=torch.float32, device=device),
                     torch.empty((0,), dtype=torch.int64, device=device), batch)
    if batch == 0 or max_det <= 0:
        return empty

    with torch.no_grad():
        out = raw.float()  # an fp16 model's output is judged in float32, as the CPU path judges it
        image, anchor, cls, score = _candidates(out, conf, mask, multi_label)
        if image.numel() == 0:
            return empty
        xywh = out[:, :4, :].transpose(1, 2)[image, anchor]  # (N, 4)
        half = xywh[:, 2:] / 2.0
        xyxy = torch.cat((xywh[:, :2] - half, xywh[:, :2] + half), dim=1)

        # Score order within each image (ties: anchor order, the candidates' own order), cut to max_nms.
        order = _by_image_then_score(image, score)
        order = order[_rank_in_image(image[order], batch) < max_nms]
        # The same order inside each (image, class) group: suppression happens within a group.
        group = image[order] if agnostic else image[order] * nc + cls[order]
        grouped = torch.sort(group, stable=True)
        order = order[grouped.indices]
        kept = order[_greedy_keep(xyxy[order], grouped.values, iou)]

        # Back to score order within each image, at most max_det each.
        kept = kept.sort().values
        kept = kept[_by_image_then_score(image[kept], score[kept])]
        kept = kept[_rank_in_image(image[kept], batch) < max_det]

        kept_image = image[kept]
        mapped = _to_source(xyxy[kept], kept_image, boxes, device)
        rows = torch.cat((mapped, score[kept, None], cls[kept, None].to(torch.float32)), dim=1)
    return KeptRows(rows, kept_image, batch)


def _candidates(
    out: torch.Tensor, conf: float, mask: torch.Tensor, multi_label: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image, anchor, class, score) of every candidate, each (N,), in (image, anchor[, class]) order."""
    scores = out[:, 4:, :]  # (B, nc, A)
    if multi_label:
        hit = (scores > conf) & mask[None, :, None]
        image, anchor, cls = hit.transpose(1, 2).nonzero(as_tuple=True)  # anchor, then class, as the kernel walks
        return image, anchor, cls, scores[image, cls, anchor]
    # NaN never wins a comparison in the kernel: it is -inf for the maximum here.
    best, cls_all = scores.nan_to_num(nan=-torch.inf, posinf=torch.inf, neginf=-torch.inf).max(dim=1)  # (B, A)
    hit = (best > conf) & mask[cls_all]
    image, anchor = hit.nonzero(as_tuple=True)
    return image, anchor, cls_all[image, anchor], best[image, anchor]


def _by_image_then_score(image: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """Permutation grouping rows by image, by descending score inside (stable: ties keep row order)."""
    by_score = torch.sort(score, descending=True, stable=True).indices
    return by_score[torch.sort(image[by_score], stable=True).indices]


def _rank_in_image(image_sorted: torch.Tensor, batch: int) -> torch.Tensor:
    """Position of each row within its image, for rows already grouped by image."""
    counts = torch.bincount(image_sorted, minlength=batch)
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(image_sorted.numel(), device=image_sorted.device) - starts[image_sorted]


def _greedy_keep(xyxy: torch.Tensor, group: torch.Tensor, iou: float) -> torch.Tensor:
    """Greedy NMS of rows grouped by ``group`` (ascending), in priority order inside each group.

    ``xyxy``: (M, 4) float32. Returns (M,) bool, True for the rows kept.
    """
    keep = torch.zeros(xyxy.shape[0], dtype=torch.bool, device=xyxy.device)
    _, sizes_t = torch.unique_consecutive(group, return_counts=True)
    sizes = sizes_t.tolist()
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    # Chunks of groups of similar size, largest first, so padding to the largest costs little.
    by_size = sorted(range(len(sizes)), key=lambda g: -sizes[g])
    i = 0
    while i < len(by_size):
        k = sizes[by_size[i]]
        count = max(1, min(len(by_size) - i, _BLOCK_BUDGET // (k * k)))
        chunk = by_size[i : i + count]
        i += count
        # (Gc, K) row of each slot in xyxy; slots past a group's size are padding (-1).
        pos = torch.arange(k, device=xyxy.device)
        first = torch.as_tensor(starts[chunk], device=xyxy.device)
        size = torch.as_tensor([sizes[g] for g in chunk], device=xyxy.device)
        valid = pos[None, :] < size[:, None]
        index = torch.where(valid, first[:, None] + pos[None, :], 0)
        block = xyxy[index]  # (Gc, K, 4); padding slots repeat row 0 but are never valid
        kept = _fixed_point_keep(_suppression(block, valid, iou))
        keep[index[valid]] = kept[valid]
    return keep


def _suppression(block: torch.Tensor, valid: torch.Tensor, iou: float) -> torch.Tensor:
    """(Gc, K, K) bool: slot i comes before slot j, both valid, and IoU(i, j) > ``iou``."""
    groups, k, _ = block.shape
    out = torch.empty((groups, k, k), dtype=torch.bool, device=block.device)
    later = torch.ones((k, k), dtype=torch.bool, device=block.device).triu_(1)
    tile = max(1, _BLOCK_BUDGET // max(1, groups * k))
    for start in range(0, k, tile):
        stop = min(k, start + tile)
        rows = block[:, start:stop, None, :]  # (Gc, T, 1, 4)
        cols = block[:, None, :, :]  # (Gc, 1, K, 4)
        out[:, start:stop] = _iou(rows, cols) > iou
    out &= later
    out &= valid[:, :, None] & valid[:, None, :]
    return out


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of broadcast xyxy boxes in float32, in the Numba kernel's order of operations."""
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    iw = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp_(min=0)
    ih = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp_(min=0)
    inter = iw * ih
    return inter / (area_a + area_b - inter)


def _fixed_point_keep(suppresses: torch.Tensor) -> torch.Tensor:
    """Greedy keep flags (Gc, K) from ``suppresses`` (Gc, K, K), by the fixed-point rounds the
    module docstring describes: at most K rounds, usually a few."""
    keep = torch.ones(suppresses.shape[:2], dtype=torch.bool, device=suppresses.device)
    for _ in range(suppresses.shape[1] + 1):
        new = ~(suppresses & keep[:, :, None]).any(dim=1)
        if torch.equal(new, keep):
            break
        keep = new
    return keep


def _to_source(xyxy: torch.Tensor, image: torch.Tensor, boxes: Sequence[Letterbox], device: torch.device) -> torch.Tensor:
    """Model-input boxes (N, 4) of images ``image`` to source pixels: ``(x − pad) / scale``, clipped."""
    table = torch.tensor(
        [[lb.pad_x, lb.pad_y, lb.pad_x, lb.pad_y, lb.scale, lb.source_hw[1], lb.source_hw[0]] for lb in boxes],
        dtype=torch.float32,
    ).to(device)[image]
    pads, gain = table[:, :4], table[:, 4:5]
    limits = table[:, [5, 6, 5, 6]]
    mapped = (xyxy - pads) / gain
    mapped = torch.where(mapped >= 0, mapped, torch.zeros((), dtype=mapped.dtype, device=device))  # NaN fails >= 0
    return torch.minimum(mapped, limits)

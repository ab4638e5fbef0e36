"""Letterbox on the model's device (CUDA): upload uint8 frames, resize/pad/normalize there.

Uploading the decoded uint8 frame moves a quarter of the bytes of the float32 input the CPU
path would send, and the resize, padding, channel swap and scaling then run on the GPU. The
host side copies each frame into a pinned staging buffer (one per thread and frame size), so the
host-to-device copy is asynchronous.

Semantics match :mod:`streamer.preprocess` (Ultralytics' letterbox): bilinear resize with
half-pixel centres and no antialiasing, like ``cv2.INTER_LINEAR``; the only difference is
that OpenCV rounds the resized image to uint8 and this path does not (at most 0.5/255 apart,
plus OpenCV's fixed-point interpolation error).

Frames already on the device as NV12 (:class:`streamer.gpu.nv12.Nv12Image`, from NVDEC) are
not uploaded at all: :class:`streamer.gpu.nv12.Nv12Letterbox` converts, resizes and pads them
in one gather, with the same semantics as the BGR path applied to ``cvtColor``'s picture.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from streamer.gpu.nv12 import Nv12Image, Nv12Letterbox
from streamer.preprocess import PAD_VALUE
from streamer.types import Letterbox


class DeviceLetterbox:
    """Builds a (B, 3, H, W) batch on ``device`` from frames and their letterboxes: uint8 BGR
    arrays on the host (uploaded) or NV12 pictures already on the device."""

    def __init__(self, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        self.device = device
        self.dtype = dtype
        self._pin = device.type == "cuda"
        self._nv12 = Nv12Letterbox(device, dtype)
        # Per thread and frame size: a host buffer and the event of its last upload, so a
        # buffer is refilled only once its previous copy has left, without stalling the
        # stream. Per thread because infer workers share this object: one worker must never
        # refill a buffer whose copy another worker has in flight.
        self._local = threading.local()

    def _staging_buffer(self, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        """This thread's uint8 host buffer of ``shape`` (pinned on CUDA) and its last upload's event."""
        staging: dict[tuple[int, ...], tuple[torch.Tensor, torch.cuda.Event | None]] | None
        staging = getattr(self._local, "staging", None)
        if staging is None:
            staging = self._local.staging = {}
        found = staging.get(shape)
        if found is None:
            buffer = torch.empty(shape, dtype=torch.uint8)
            found = staging[shape] = (buffer.pin_memory() if self._pin else buffer, None)
        return found

    def _upload(self, image: np.ndarray) -> torch.Tensor:
        host = torch.from_numpy(np.ascontiguousarray(image))
        if not self._pin:
            return host.to(self.device)
        staging, event = self._staging_buffer(image.shape)
        if event is not None:
            event.synchronize()
        staging.copy_(host)
        on_device = staging.to(self.device, non_blocking=True)
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(self.device))
        self._local.staging[image.shape] = (staging, done)
        return on_device

    def __call__(
        self, images: Sequence[np.ndarray | Nv12Image], boxes: Sequence[Letterbox], out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Letterbox frame ``i`` into ``out[i]`` (made when None: (B, 3, H, W) of the largest
        letterbox, ``self.dtype``; given: at least that large, e.g. a CUDA graph's static
        input); padding grey 114 around and below/right of smaller letterboxes."""
        h = max(lb.input_hw[0] for lb in boxes)
        w = max(lb.input_hw[1] for lb in boxes)
        if all(isinstance(image, Nv12Image) for image in images):
            return self._nv12(images, boxes, out)  # type: ignore[arg-type]
        pad = PAD_VALUE / 255.0
        if out is None:
            batch = torch.full((len(images), 3, h, w), pad, dtype=self.dtype, device=self.device)
        else:
            if out.shape[0] < len(images) or out.shape[2] < h or out.shape[3] < w:
                raise ValueError(f"out must be at least ({len(images)}, 3, {h}, {w}), but got {tuple(out.shape)}")
            batch = out
            batch[: len(images)].fill_(pad)
        for i, (image, lb) in enumerate(zip(images, boxes, strict=True)):
            if isinstance(image, Nv12Image):  # a batch mixing NV12 and BGR frames
                self._nv12([image], [lb], batch[i : i + 1])
                continue
            src = self._upload(image)  # (h0, w0, 3) uint8 BGR on the device
            x = src.permute(2, 0, 1).flip(0).unsqueeze(0).float()  # (1, 3, h0, w0) RGB
            h0, w0 = lb.source_hw
            new_w, new_h = int(round(w0 * lb.scale)), int(round(h0 * lb.scale))
            if (new_h, new_w) != (h0, w0):
                x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=False)
            batch[i, :, lb.pad_y : lb.pad_y + new_h, lb.pad_x : lb.pad_x + new_w] = (x[0] / 255.0).to(self.dtype)
        return batch

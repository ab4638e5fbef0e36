"""The model replayed as CUDA graphs: one graph per (batch bucket, input shape).

A small detector on a large GPU is bound by kernel launches: YOLO11n in eager PyTorch spends
most of a batch-1 call launching a few hundred kernels (measured on an H200, fp16 640×640:
8.5 ms eager, 1.07 ms replayed as a graph). A graph fixes the shapes it was captured with, so
batches are padded up to a few fixed sizes ("buckets": 1, 2, 4, ..., 64) and each bucket gets
its own graph per input shape. The rows of padding cost compute, which is cheap on a card
this size, and no launches.

Graphs are captured at open for the shapes the model will see (the square ``imgsz``, and any
other shape on its first batch, up to ``max_shapes``; past that, shapes run eagerly and are
counted). All graphs of a shape read one static input buffer (bucket ``b`` reads its first
``b`` rows), so a caller can letterbox frames straight into it (:meth:`GraphedModel.run`);
all graphs share one memory pool, which is safe because replays are serialised by a lock.
``cudnn.benchmark`` is switched on before the first capture: the warm-up runs then pick the
fastest convolution algorithms for exactly these shapes, and the graphs keep them.

Without CUDA the same object keeps the same static buffers and replays by calling the module
eagerly, so the bucket choice, padding and slicing are exercised (and tested) on the CPU.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

#: Batch sizes with a graph each. Powers of two keep the padding under half a batch.
DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def check_buckets(buckets: Sequence[int]) -> tuple[int, ...]:
    """``buckets`` as a tuple of increasing positive ints, or ValueError saying what was wrong."""
    values = tuple(buckets)
    if not values or any(not isinstance(b, int) or isinstance(b, bool) or b <= 0 for b in values):
        raise ValueError(f"batch buckets must be positive integers, but got {list(values)}")
    if list(values) != sorted(set(values)):
        raise ValueError(f"batch buckets must be strictly increasing, but got {list(values)}")
    return values


def bucket_for(n: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds ``n`` rows (1 ≤ n ≤ the largest bucket)."""
    for bucket in buckets:
        if bucket >= n:
            if n <= 0:
                break
            return bucket
    raise ValueError(f"a batch of {n} has no bucket, expecting 1 to {buckets[-1]} rows (buckets {list(buckets)})")


def plan(n: int, buckets: Sequence[int]) -> list[tuple[int, int, int]]:
    """How ``n`` rows are run: ``(start, stop, bucket)`` chunks, full largest buckets first,
    the rest in the smallest bucket that holds it. ``[]`` for ``n == 0``."""
    if n < 0:
        raise ValueError(f"a batch cannot have {n} rows")
    largest = buckets[-1]
    chunks = []
    for start in range(0, n, largest):
        stop = min(n, start + largest)
        chunks.append((start, stop, bucket_for(stop - start, buckets)))
    return chunks


@dataclass(slots=True)
class _Replay:
    """One captured (bucket, shape): its output buffer and how to refresh it from the input."""

    output: torch.Tensor
    replay: Callable[[], object]


class GraphedModel:
    """``module`` on fixed-shape batches, replayed from CUDA graphs on CUDA.

    ``module``: maps (B, 3, H, W) in ``dtype`` on ``device`` to one tensor whose first axis is
    B (YOLO: (B, 4 + nc, A)); rows must not depend on each other (eval mode), since padding
    rows hold whatever the buffer held. ``channels_last``: the static inputs' memory format
    (the layout the CUDA model runs fastest in).
    """

    def __init__(
        self,
        module: Callable[[torch.Tensor], torch.Tensor],
        *,
        device: torch.device | str,
        dtype: torch.dtype = torch.float32,
        buckets: Sequence[int] = DEFAULT_BUCKETS,
        channels_last: bool = False,
        max_shapes: int = 4,
        warmup: int = 3,
    ) -> None:
        if max_shapes < 1:
            raise ValueError(f"max_shapes must be >= 1, but got {max_shapes}")
        self.module = module
        self.device = torch.device(device)
        self.dtype = dtype
        self.buckets = check_buckets(buckets)
        self.channels_last = channels_last
        self.max_shapes = max_shapes
        self.warmup = warmup
        #: True when replays are CUDA graphs; False: the module is called on the static buffers.
        self.uses_graphs = self.device.type == "cuda"
        #: Rows computed only to fill a bucket, and batches run eagerly (a shape past max_shapes).
        self.padded_rows = 0
        self.eager_batches = 0
        self._inputs: dict[tuple[int, int], torch.Tensor] = {}
        self._replays: dict[tuple[int, tuple[int, int]], _Replay] = {}
        self._pool: object | None = None
        self._lock = threading.Lock()

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """Input shapes (H, W) with graphs, in capture order."""
        return list(self._inputs)

    def capture(self, hw: tuple[int, int]) -> bool:
        """Capture every bucket for input shape ``hw`` (at open, before frames flow).
        False when ``max_shapes`` shapes already have graphs (this one will run eagerly)."""
        with self._lock:
            return self._capture_locked((int(hw[0]), int(hw[1])))

    def _capture_locked(self, hw: tuple[int, int]) -> bool:
        if hw in self._inputs:
            return True
        if len(self._inputs) >= self.max_shapes:
            return False
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        static = torch.zeros((self.buckets[-1], 3, *hw), dtype=self.dtype, device=self.device).contiguous(
            memory_format=memory_format
        )
        if self.uses_graphs:
            torch.backends.cudnn.benchmark = True
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
        # Largest first: the pool's blocks are sized by the first capture, the others fit in them.
        for bucket in reversed(self.buckets):
            view = static[:bucket]
            self._replays[(bucket, hw)] = self._capture_one(view) if self.uses_graphs else self._eager_one(view)
        self._inputs[hw] = static
        log.info("%s: %s for input %dx%d, batches of %s", self.device,
                 "CUDA graphs captured" if self.uses_graphs else "static buffers", hw[1], hw[0], list(self.buckets))
        return True

    def _eager_one(self, view: torch.Tensor) -> _Replay:
        with torch.no_grad():
            output = self.module(view).clone()

        def replay() -> None:
            with torch.no_grad():
                output.copy_(self.module(view))

        return _Replay(output, replay)

    def _capture_one(self, view: torch.Tensor) -> _Replay:
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(self.warmup):  # cudnn.benchmark tries its algorithms here, outside the graph
                self.module(view)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: capture threads of other sources (NVDEC) may keep using CUDA meanwhile.
        with torch.no_grad(), torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            output = self.module(view)
        return _Replay(output, graph.replay)

    def run(self, n: int, hw: tuple[int, int], fill: Callable[[torch.Tensor], object]) -> torch.Tensor:
        """Replay on rows that ``fill`` writes: ``fill(buffer)`` gets the (bucket, 3, H, W)
        static input and must write rows ``[:n]`` (a letterbox writing its frames straight in);
        returns the first ``n`` output rows as a new tensor. ``n`` ≤ the largest bucket."""
        bucket = bucket_for(n, self.buckets)
        hw = (int(hw[0]), int(hw[1]))
        with self._lock, torch.no_grad():
            if not self._capture_locked(hw):
                self.eager_batches += 1
                memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
                batch = torch.empty((n, 3, *hw), dtype=self.dtype, device=self.device, memory_format=memory_format)
                fill(batch)
                return self.module(batch)
            fill(self._inputs[hw][:bucket])
            entry = self._replays[(bucket, hw)]
            entry.replay()
            self.padded_rows += bucket - n
            return entry.output[:n].clone()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """The module's output for ``batch`` (N, 3, H, W), any N: chunks of the largest bucket,
        the rest padded to its bucket; rows come back in order, as one new tensor."""
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"batch must have shape (N, 3, H, W), but got {tuple(batch.shape)}")
        hw = (int(batch.shape[2]), int(batch.shape[3]))
        pieces = []
        for start, stop, _ in plan(int(batch.shape[0]), self.buckets):
            rows = batch[start:stop]

            def fill(buffer: torch.Tensor, rows: torch.Tensor = rows) -> None:
                buffer[: rows.shape[0]].copy_(rows)

            pieces.append(self.run(stop - start, hw, fill))
        if not pieces:
            raise ValueError("an empty batch has no output")
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

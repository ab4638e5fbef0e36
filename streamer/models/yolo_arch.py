"""Ultralytics YOLOv8 and YOLO11 detection networks in inference form, in plain PyTorch.

Written from the published architecture (the model YAMLs and the documented block
semantics), not from Ultralytics' code. Every convolution carries its BatchNorm folded into
its bias, exactly as an Ultralytics ONNX export stores it, so a network is rebuilt from the
export's initializers alone: parameter names here mirror the exported ones
(``model.2.m.0.cv1.conv.weight``...) and load by name.

Nothing about the size of a network comes from a table when loading: channel counts, block
repeats (the number of ``model.K.m.N`` entries), C3k versus Bottleneck inside C3k2, the Detect
head's widths, the number of classes and the DFL bins are read from weight names and shapes.
Only the wiring (which layer feeds which, which convolutions downsample) is fixed per version.

Output, like the export: ``(B, 4 + nc, A)``, rows ``cx, cy, w, h`` in input pixels then one
sigmoid score per class; ``A = sum((H / s) * (W / s))`` over the head's strides (8, 16, 32).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from streamer.errors import ModelError
from streamer.models.base import parse_imgsz, parse_names

#: Scales of the published model YAMLs: (depth multiple, width multiple, max channels).
#: Used only to build a network of a given size from scratch (random weights, tests);
#: loading reads every size from the weights instead.
SCALES: dict[str, dict[str, tuple[float, float, int]]] = {
    "v8": {
        "n": (0.33, 0.25, 1024),
        "s": (0.33, 0.50, 1024),
        "m": (0.67, 0.75, 768),
        "l": (1.00, 1.00, 512),
        "x": (1.00, 1.25, 512),
    },
    "v11": {
        "n": (0.50, 0.25, 1024),
        "s": (0.50, 0.50, 1024),
        "m": (0.50, 1.00, 512),
        "l": (1.00, 1.00, 512),
        "x": (1.00, 1.50, 512),
    },
}


class Conv(nn.Module):
    """Convolution with BatchNorm folded into its bias, then SiLU.

    (B, c1, H, W) -> (B, c2, ceil(H / s), ceil(W / s)); 'same' padding ``k // 2``.
    ``act=False`` drops the activation (attention projections, the PSA feed-forward output).
    """

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, g: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, groups=g, bias=True)
        self.act: nn.Module = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class Bottleneck(nn.Module):
    """Two kxk convolutions, with a residual add when ``shortcut`` and shapes allow.

    (B, c1, H, W) -> (B, c2, H, W) through ``hidden`` channels.
    """

    def __init__(self, c1: int, c2: int, hidden: int, *, k: int = 3, shortcut: bool = True) -> None:
        super().__init__()
        self.cv1 = Conv(c1, hidden, k)
        self.cv2 = Conv(hidden, c2, k)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3k(nn.Module):
    """CSP block with two 1x1 branches, one through ``n`` Bottlenecks; YOLO11's C3k2 inner block.

    (B, c1, H, W) -> (B, c2, H, W): ``cv3(cat(m(cv1(x)), cv2(x)))``.
    """

    def __init__(self, c1: int, c2: int, hidden: int, n: int, *, inner: int, k: int = 3, shortcut: bool = True) -> None:
        super().__init__()
        self.cv1 = Conv(c1, hidden, 1)
        self.cv2 = Conv(c1, hidden, 1)
        self.cv3 = Conv(2 * hidden, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, inner, k=k, shortcut=shortcut) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class C2f(nn.Module):
    """YOLOv8's CSP block: split a 1x1 conv in halves of ``c``, chain blocks on the second half.

    (B, c1, H, W) -> (B, c2, H, W). Every block's output is kept, and all ``2 + n`` pieces of
    ``c`` channels are concatenated into the closing 1x1 conv, so gradients (and features)
    from every depth reach the output.
    """

    def __init__(self, c1: int, c2: int, c: int, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.c = c
        self.cv1 = Conv(c1, 2 * c, 1)
        self.cv2 = Conv((2 + len(blocks)) * c, c2, 1)
        self.m = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).split((self.c, self.c), 1))
        for block in self.m:
            y.append(block(y[-1]))
        return self.cv2(torch.cat(y, 1))


class C3k2(C2f):
    """YOLO11's C2f: the same wiring, its blocks either Bottlenecks (hidden c/2) or C3k blocks."""


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained kxk stride-1 max pools, all four maps concatenated.

    (B, c1, H, W) -> (B, c2, H, W); chaining 5x5 pools gives 5, 9 and 13 receptive fields.
    """

    def __init__(self, c1: int, c2: int, hidden: int, k: int = 5) -> None:
        super().__init__()
        self.cv1 = Conv(c1, hidden, 1)
        self.cv2 = Conv(4 * hidden, c2, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class Attention(nn.Module):
    """Multi-head self-attention over the H*W positions, plus a depthwise positional conv on values.

    (B, dim, H, W) -> (B, dim, H, W). One 1x1 conv yields per head ``key_dim`` query and key
    channels and ``head_dim`` value channels (``dim = heads * head_dim``); scores are scaled
    by ``key_dim ** -0.5``. The 3x3 depthwise conv on the values (``pe``) restores the
    position information attention discards.
    """

    def __init__(self, dim: int, heads: int, key_dim: int) -> None:
        super().__init__()
        if heads < 1 or dim % heads:
            raise ValueError(f"attention needs dim divisible by heads, but got dim {dim} and {heads} heads")
        self.heads = heads
        self.key_dim = key_dim
        self.head_dim = dim // heads
        self.scale = key_dim**-0.5
        self.qkv = Conv(dim, heads * (2 * key_dim + self.head_dim), 1, act=False)
        self.proj = Conv(dim, dim, 1, act=False)
        self.pe = Conv(dim, dim, 3, g=dim, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(x).reshape(b, self.heads, 2 * self.key_dim + self.head_dim, h * w)
        q, k, v = qkv.split((self.key_dim, self.key_dim, self.head_dim), 2)
        scores = ((q.transpose(-2, -1) @ k) * self.scale).softmax(-1)
        out = (v @ scores.transpose(-2, -1)).reshape(b, c, h, w) + self.pe(v.reshape(b, c, h, w))
        return self.proj(out)


class PSABlock(nn.Module):
    """Attention then a 1x1 feed-forward pair, each with a residual add: (B, c, H, W) -> same."""

    def __init__(self, c: int, heads: int, key_dim: int, ffn: int) -> None:
        super().__init__()
        self.attn = Attention(c, heads, key_dim)
        self.ffn = nn.Sequential(Conv(c, ffn, 1), Conv(ffn, c, 1, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.ffn(x)


class C2PSA(nn.Module):
    """YOLO11's layer 10: split a 1x1 conv in halves of ``c``, run PSA blocks on the second half.

    (B, c1, H, W) -> (B, c2, H, W).
    """

    def __init__(self, c1: int, c2: int, c: int, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.c = c
        self.cv1 = Conv(c1, 2 * c, 1)
        self.cv2 = Conv(2 * c, c2, 1)
        self.m = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.cv1(x).split((self.c, self.c), 1)
        return self.cv2(torch.cat((a, self.m(b)), 1))


class Concat(nn.Module):
    """Concatenate feature maps of equal size along channels."""

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, 1)


class DFL(nn.Module):
    """Distribution focal loss decoding: expected value of a softmax over ``reg_max`` distance bins.

    (B, 4 * reg_max, A) -> (B, 4, A), distances in units of the level's stride. The bin
    values live in a frozen 1x1 conv weight (``dfl.conv.weight``, 0..reg_max-1) because
    that is how exports store them. The sum is ``bins (1, reg_max) @ prob (B, 4, reg_max, A)``:
    no transpose and no 1-D operand, a pattern ONNX Runtime 1.32's CPU graph optimizer
    (Transpose + MatMul fusion with a 1-D right operand) computes wrongly when exported.
    """

    def __init__(self, reg_max: int = 16) -> None:
        super().__init__()
        self.reg_max = reg_max
        self.conv = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.arange(reg_max, dtype=torch.float32).view(1, reg_max, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        prob = x.reshape(b, 4, self.reg_max, -1).softmax(2)
        return (self.conv.weight.reshape(1, self.reg_max) @ prob).reshape(b, 4, -1)


def make_anchors(
    shapes: Sequence[tuple[int, int]], strides: Sequence[int], *, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor points at cell centres of every level, in level units, and each anchor's stride.

    ``shapes``: (h, w) of each level. Returns ``anchors`` (2, A) rows x, y (``col + 0.5``,
    ``row + 0.5``) in row-major order per level, and ``stride`` (1, A).
    """
    points, sizes = [], []
    for (h, w), s in zip(shapes, strides, strict=True):
        sx = torch.arange(w, device=device, dtype=dtype) + 0.5
        sy = torch.arange(h, device=device, dtype=dtype) + 0.5
        gy, gx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((gx, gy), -1).reshape(-1, 2))
        sizes.append(torch.full((h * w, 1), float(s), device=device, dtype=dtype))
    return torch.cat(points).T, torch.cat(sizes).T


class Detect(nn.Module):
    """Anchor-free decoupled head: per level a box branch (``cv2``) and a class branch (``cv3``).

    Input: one (B, ch[i], H_i, W_i) map per level. The box branch predicts ``4 * reg_max``
    logits (left, top, right, bottom distance distributions), the class branch ``nc`` logits.
    Output (B, 4 + nc, A): ``cx, cy, w, h`` in input pixels, then sigmoid class scores.
    ``depthwise_cls`` selects YOLO11's class branch (depthwise 3x3 + pointwise pairs) over
    YOLOv8's (two full 3x3 convs).
    """

    def __init__(
        self,
        ch: Sequence[int],
        box_hidden: int,
        cls_hidden: int,
        nc: int,
        strides: Sequence[int],
        *,
        reg_max: int = 16,
        depthwise_cls: bool,
    ) -> None:
        super().__init__()
        self.nc = nc
        self.reg_max = reg_max
        self.strides = tuple(int(s) for s in strides)
        self.cv2 = nn.ModuleList(
            nn.Sequential(
                Conv(c, box_hidden, 3), Conv(box_hidden, box_hidden, 3), nn.Conv2d(box_hidden, 4 * reg_max, 1)
            )
            for c in ch
        )
        if depthwise_cls:
            self.cv3 = nn.ModuleList(
                nn.Sequential(
                    nn.Sequential(Conv(c, c, 3, g=c), Conv(c, cls_hidden, 1)),
                    nn.Sequential(Conv(cls_hidden, cls_hidden, 3, g=cls_hidden), Conv(cls_hidden, cls_hidden, 1)),
                    nn.Conv2d(cls_hidden, nc, 1),
                )
                for c in ch
            )
        else:
            self.cv3 = nn.ModuleList(
                nn.Sequential(Conv(c, cls_hidden, 3), Conv(cls_hidden, cls_hidden, 3), nn.Conv2d(cls_hidden, nc, 1))
                for c in ch
            )
        self.dfl = DFL(reg_max)
        self._anchor_cache: tuple[tuple[object, ...], torch.Tensor, torch.Tensor] | None = None

    def _anchors(self, shapes: list[tuple[int, int]], ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return make_anchors(shapes, self.strides, device=ref.device, dtype=ref.dtype)
        key = (tuple(shapes), ref.device, ref.dtype)
        if self._anchor_cache is None or self._anchor_cache[0] != key:
            anchors, stride = make_anchors(shapes, self.strides, device=ref.device, dtype=ref.dtype)
            self._anchor_cache = (key, anchors, stride)
        return self._anchor_cache[1], self._anchor_cache[2]

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        maps = [torch.cat((box(x), cls(x)), 1) for x, box, cls in zip(xs, self.cv2, self.cv3, strict=True)]
        flat = torch.cat([m.flatten(2) for m in maps], 2)
        box, cls = flat.split((4 * self.reg_max, self.nc), 1)
        anchors, stride = self._anchors([(m.shape[2], m.shape[3]) for m in maps], flat)
        lt, rb = self.dfl(box).chunk(2, 1)
        x1y1 = anchors - lt
        x2y2 = anchors + rb
        xywh = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * stride
        return torch.cat((xywh, cls.sigmoid()), 1)


@dataclass(frozen=True, slots=True)
class LayerSpec:
    """One entry of a model YAML: what the layer is and where its inputs come from.

    ``sources``: earlier layer indices, -1 for the previous layer. ``out``, ``repeats``,
    ``e`` and ``c3k`` are the YAML's nominal arguments before scaling; they are used only to
    build from a scale, never when loading weights. ``shortcut``: residual adds inside the
    block's Bottlenecks, which weights cannot show.
    """

    kind: str
    sources: tuple[int, ...] = (-1,)
    out: int = 0
    repeats: int = 1
    shortcut: bool = False
    e: float = 0.5
    c3k: bool = False


def _c(
    kind: str, out: int, repeats: int = 1, *, shortcut: bool = False, e: float = 0.5, c3k: bool = False
) -> LayerSpec:
    return LayerSpec(kind, out=out, repeats=repeats, shortcut=shortcut, e=e, c3k=c3k)


_UP = LayerSpec("upsample")

#: yolov8.yaml: backbone 0-9, neck 10-21, Detect on P3/8, P4/16, P5/32 (15, 18, 21).
V8_LAYERS: tuple[LayerSpec, ...] = (
    _c("conv", 64),
    _c("conv", 128),
    _c("c2f", 128, 3, shortcut=True),
    _c("conv", 256),
    _c("c2f", 256, 6, shortcut=True),
    _c("conv", 512),
    _c("c2f", 512, 6, shortcut=True),
    _c("conv", 1024),
    _c("c2f", 1024, 3, shortcut=True),
    _c("sppf", 1024),
    _UP,
    LayerSpec("concat", (-1, 6)),
    _c("c2f", 512, 3),
    _UP,
    LayerSpec("concat", (-1, 4)),
    _c("c2f", 256, 3),
    _c("conv", 256),
    LayerSpec("concat", (-1, 12)),
    _c("c2f", 512, 3),
    _c("conv", 512),
    LayerSpec("concat", (-1, 9)),
    _c("c2f", 1024, 3),
    LayerSpec("detect", (15, 18, 21)),
)

#: yolo11.yaml: backbone 0-10 (C2PSA at 10), neck 11-22, Detect on 16, 19, 22. Every C3k2
#: keeps its Bottleneck shortcuts (the constructor's default), in the neck too.
V11_LAYERS: tuple[LayerSpec, ...] = (
    _c("conv", 64),
    _c("conv", 128),
    _c("c3k2", 256, 2, shortcut=True, e=0.25),
    _c("conv", 256),
    _c("c3k2", 512, 2, shortcut=True, e=0.25),
    _c("conv", 512),
    _c("c3k2", 512, 2, shortcut=True, c3k=True),
    _c("conv", 1024),
    _c("c3k2", 1024, 2, shortcut=True, c3k=True),
    _c("sppf", 1024),
    _c("c2psa", 1024, 2),
    _UP,
    LayerSpec("concat", (-1, 6)),
    _c("c3k2", 512, 2, shortcut=True),
    _UP,
    LayerSpec("concat", (-1, 4)),
    _c("c3k2", 256, 2, shortcut=True),
    _c("conv", 256),
    LayerSpec("concat", (-1, 13)),
    _c("c3k2", 512, 2, shortcut=True),
    _c("conv", 512),
    LayerSpec("concat", (-1, 10)),
    _c("c3k2", 1024, 2, shortcut=True, c3k=True),
    LayerSpec("detect", (16, 19, 22)),
)

LAYERS: dict[str, tuple[LayerSpec, ...]] = {"v8": V8_LAYERS, "v11": V11_LAYERS}


class YoloDetectionModel(nn.Module):
    """A YOLOv8 / YOLO11 detector: (B, 3, H, W) float in [0, 1], RGB -> (B, 4 + nc, A).

    H and W must be multiples of ``stride`` (32) so the upsampled neck maps line up.
    ``model`` holds the layers under their YAML indices, hence the exported parameter names.
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        specs: Sequence[LayerSpec],
        *,
        version: str,
        names: tuple[str, ...],
        imgsz: tuple[int, int],
        stride: int,
    ) -> None:
        super().__init__()
        self.model = nn.ModuleList(layers)
        self.sources = tuple(s.sources for s in specs)
        self.version = version
        self.names = names
        self.imgsz = imgsz
        self.stride = stride
        head = self.model[-1]
        assert isinstance(head, Detect)
        self.nc = head.nc
        used = {i for sources in self.sources for i in sources if i >= 0}
        self._keep = frozenset(used)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        saved: dict[int, torch.Tensor] = {}
        for i, (layer, sources) in enumerate(zip(self.model, self.sources, strict=True)):
            if sources == (-1,):
                x = layer(x)
            else:
                x = layer([x if s == -1 else saved[s] for s in sources])
            if i in self._keep:
                saved[i] = x
        return x


class _Resolver(Protocol):
    """Decides the sizes of each block: from weights when loading, from a scale when building."""

    def conv(self, i: int, spec: LayerSpec, c1: int) -> tuple[nn.Module, int]: ...

    def c2f(self, i: int, spec: LayerSpec, c1: int) -> tuple[nn.Module, int]: ...

    def sppf(self, i: int, spec: LayerSpec, c1: int) -> tuple[nn.Module, int]: ...

    def c2psa(self, i: int, spec: LayerSpec, c1: int) -> tuple[nn.Module, int]: ...

    def detect(self, i: int, ch: list[int], strides: list[int]) -> nn.Module: ...


def _assemble(
    version: str, resolver: _Resolver, *, names: tuple[str, ...] | None, imgsz: tuple[int, int], where: str
) -> YoloDetectionModel:
    """Walk the version's layer table, tracking each layer's channels and stride."""
    specs = LAYERS[version]
    channels: list[int] = []
    strides: list[int] = []
    layers: list[nn.Module] = []
    c, s = 3, 1
    for i, spec in enumerate(specs):
        ins = [(channels[j], strides[j]) if j >= 0 else (c, s) for j in spec.sources]
        c1, s1 = ins[0]
        layer: nn.Module
        if spec.kind == "conv":
            layer, c = resolver.conv(i, spec, c1)
            s = s1 * 2
        elif spec.kind in ("c2f", "c3k2"):
            layer, c = resolver.c2f(i, spec, c1)
        elif spec.kind == "sppf":
            layer, c = resolver.sppf(i, spec, c1)
        elif spec.kind == "c2psa":
            layer, c = resolver.c2psa(i, spec, c1)
        elif spec.kind == "upsample":
            layer, s = nn.Upsample(scale_factor=2.0, mode="nearest"), s1 // 2
        elif spec.kind == "concat":
            if len({st for _, st in ins}) != 1:
                raise ModelError(f"{where}: layer {i} concatenates maps of different strides {[st for _, st in ins]}")
            layer, c, s = Concat(), sum(ch for ch, _ in ins), s1
        elif spec.kind == "detect":
            layer = resolver.detect(i, [ch for ch, _ in ins], [st for _, st in ins])
        else:
            raise AssertionError(spec.kind)
        layers.append(layer)
        channels.append(c)
        strides.append(s)
    head = layers[-1]
    assert isinstance(head, Detect)
    nc = head.nc
    final_names = names if names is not None and len(names) >= nc else tuple(str(k) for k in range(nc))
    return YoloDetectionModel(layers, specs, version=version, names=final_names, imgsz=imgsz, stride=max(head.strides))


class _WeightShapes:
    """Shapes of the ``model.*`` initializers, with lookups that name what is missing or wrong."""

    def __init__(self, weights: Mapping[str, np.ndarray], where: str) -> None:
        self.where = where
        self.shapes = {k: tuple(int(d) for d in np.shape(v)) for k, v in weights.items() if k.startswith("model.")}

    def has(self, name: str) -> bool:
        return name in self.shapes

    def has_prefix(self, prefix: str) -> bool:
        return any(k.startswith(prefix) for k in self.shapes)

    def count(self, prefix: str) -> int:
        """How many consecutive children ``prefix.0.``, ``prefix.1.``... have weights."""
        n = 0
        while self.has_prefix(f"{prefix}.{n}."):
            n += 1
        return n

    def shape(self, name: str, ndim: int) -> tuple[int, ...]:
        shape = self.shapes.get(name)
        if shape is None:
            raise ModelError(f"{self.where}: weight {name} is missing, so this is not a network of the expected shape")
        if len(shape) != ndim:
            raise ModelError(f"{self.where}: weight {name} should have {ndim} dimensions, but has shape {shape}")
        return shape

    def conv(self, name: str, c1: int, *, stride: int = 1) -> tuple[Conv, int]:
        """Build the Conv stored under ``name.conv``, fed ``c1`` channels; return it and its outputs.

        Groups follow from the weight's input channels: ``c1 // weight.shape[1]`` (depthwise
        convs store one input channel per filter).
        """
        key = f"{name}.conv.weight"
        c2, per_group, kh, kw = self.shape(key, 4)
        groups = c1 // per_group if per_group and c1 % per_group == 0 else 0
        if groups < 1 or c2 % groups or kh != kw or kh % 2 == 0:
            raise ModelError(
                f"{self.where}: weight {key} has shape {(c2, per_group, kh, kw)}, which does not fit the "
                f"{c1} input channels the network feeds it (expected (out, {c1} or {c1}/groups, k, k), k odd)"
            )
        bias = key[: -len("weight")] + "bias"
        if self.shapes.get(bias) != (c2,):
            raise ModelError(f"{self.where}: bias {bias} should have shape ({c2},), but got {self.shapes.get(bias)}")
        return Conv(c1, c2, kh, stride, groups), c2


class _FromWeights:
    """Sizes every block from the initializers' names and shapes."""

    def __init__(self, w: _WeightShapes) -> None:
        self.w = w

    def conv(self, i: int, spec: LayerSpec, c1: int) -> tuple[nn.Module, int]:
        return self.w.conv(f"model.{i}", c1, stride=2)

    def _repeats(self, prefix: str) -> int:
        n = self.w.count(prefix)
        if n == 0:
            raise ModelError(f"{self.w.where}: block {prefix[:-2]} has no inner blocks ({prefix}.0.* weights)")
        return n

    def _bottleneck(self, p: str, c: int, shortcut: bool) -> Bottleneck:
        hidden, _, k, _ = self.w.shape(f"{p}.cv1.conv.weight", 4)
        block = Bottleneck(c, c, hidden, k=k, shortcut=shortcut)
        self._check(block, p, c)
        return block

    def _check(self, block: nn.Module, prefix: str, c1: int) -> None:
        """Compare a block built from a few shapes with every stored shape under ``prefix``."""
        for name, param in block.state_dict().items():
            key = f"{prefix}.{name}"
            got = self.w.shapes.get(key)
            if got is None and not name.startswith("dfl."):
                raise ModelError(f"{self.w.where}: weight {key} is missing (block {prefix} with {c1} input channels)")
            if got is not None and got != tuple(param.shape):
                raise ModelError(
                    f"{self.w.where}: weight {key} has shape {got}, but a block {prefix} fed {c1} channels "
                    f"needs {tuple(param.shape)}"
                )

    def c2f(self, i: int, spec: LayerSpec, c1: int) -> tuple[nn.Module, int]:
        p = f"model.{i}"
        two_c = self.w.shape(f"{p}.cv1.conv.weight", 4)[0]
        if two_c % 2:
            raise ModelError(f"{self.w.where}: {p}.cv1.conv.weight has an odd number of outputs ({two_c}) to split")
        c = two_c // 2
        n = self._repeats(f"{p}.m")
        blocks: list[nn.Module] = []
        for j in range(n):
            q = f"{p}.m.{j}"
            if self.w.has(f"{q}.cv3.conv.weight"):
                hidden = self.w.shape(f"{q}.cv1.conv.weight", 4)[0]
                inner_n = self._repeats(f"{q}.m")
                inner, _, k, _ = self.w.shape(f"{q}.m.0.cv1.conv.weight", 4)
                block: nn.Module = C3k(c, c, hidden, inner_n, inner=inner, k=k, shortcut=spec.shortcut)
                self._check(block, q, c)
            else:
                block = self._bottleneck(q, c, spec.shortcut)
            blocks.append(block)
        c2 = self.w.shape(f"{p}.cv2.conv.weight", 4)[0]
        layer = (C3k2 if spec.kind == "c3k2" else C2f)(c1, c2, c, blocks)
        self._check(layer, p, c1)
        return layer, c2

    def sppf(self, i: int, spec: LayerSpec, c1: int) -> tuple[nn.Module, int]:
        p = f"model.{i}"
        hidden = self.w.shape(f"{p}.cv1.conv.weight", 4)[0]
        c2 = self.w.shape(f"{p}.cv2.conv.weight", 4)[0]
        layer = SPPF(c1, c2, hidden)
        self._check(layer, p, c1)
        return layer, c2

    def c2psa(self, i: int, spec: LayerSpec, c1: int) -> tuple[nn.Module, int]:
        p = f"model.{i}"
        two_c = self.w.shape(f"{p}.cv1.conv.weight", 4)[0]
        c = two_c // 2
        blocks: list[nn.Module] = []
        for j in range(self._repeats(f"{p}.m")):
            q = f"{p}.m.{j}"
            qkv = self.w.shape(f"{q}.attn.qkv.conv.weight", 4)[0]
            ffn = self.w.shape(f"{q}.ffn.0.conv.weight", 4)[0]
            heads, key_dim = attention_heads(c, qkv)
            if heads == 0:
                raise ModelError(
                    f"{self.w.where}: {q}.attn.qkv.conv.weight gives {qkv} channels for a {c}-channel attention, "
                    "which no head count of 64-channel heads fits"
                )
            block = PSABlock(c, heads, key_dim, ffn)
            self._check(block, q, c)
            blocks.append(block)
        c2 = self.w.shape(f"{p}.cv2.conv.weight", 4)[0]
        layer = C2PSA(c1, c2, c, blocks)
        self._check(layer, p, c1)
        return layer, c2

    def detect(self, i: int, ch: list[int], strides: list[int]) -> nn.Module:
        p = f"model.{i}"
        levels = self.w.count(f"{p}.cv2")
        if levels != len(ch):
            raise ModelError(
                f"{self.w.where}: the Detect head ({p}.*) has {levels} box branches, expected {len(ch)} (P3, P4, P5)"
            )
        box_hidden = self.w.shape(f"{p}.cv2.0.0.conv.weight", 4)[0]
        box_out = self.w.shape(f"{p}.cv2.0.2.weight", 4)[0]
        if box_out % 4:
            raise ModelError(f"{self.w.where}: {p}.cv2.0.2.weight has {box_out} outputs, not 4 * reg_max")
        depthwise = self.w.has(f"{p}.cv3.0.0.0.conv.weight")
        cls_hidden = self.w.shape(f"{p}.cv3.0.{'0.1' if depthwise else '0'}.conv.weight", 4)[0]
        nc = self.w.shape(f"{p}.cv3.0.2.weight", 4)[0]
        head = Detect(ch, box_hidden, cls_hidden, nc, strides, reg_max=box_out // 4, depthwise_cls=depthwise)
        self._check(head, p, ch[0])
        return head


def attention_heads(c: int, qkv: int) -> tuple[int, int]:
    """(heads, key_dim) of a C2PSA attention over ``c`` channels whose qkv conv has ``qkv`` outputs.

    C2PSA uses heads of 64 value channels (``heads = c // 64``); the qkv width then gives
    the query/key size per head, ``(qkv - c) / (2 * heads)`` (half the head size in the
    published models). Returns (0, 0) when nothing fits.
    """
    heads = c // 64
    if heads < 1 or c % heads or (qkv - c) % (2 * heads) or qkv <= c:
        return 0, 0
    return heads, (qkv - c) // (2 * heads)


def detect_version(keys: Iterable[str], where: str = "model") -> str:
    """'v8' or 'v11' from initializer names; ModelError when neither detection network fits.

    YOLO11 has a C2PSA (attention) at layer 10 and its Detect head at 23; YOLOv8 has SPPF at
    9 and Detect at 22 (``model.22.cv2.0.0``: a C3k2 at 22 would store ``model.22.cv2.conv``).
    """
    names = set(keys)
    if not any(k.startswith("model.") for k in names):
        raise ModelError(f"{where}: has no Ultralytics YOLO weights (no initializers named like model.0.conv.weight)")
    if "model.10.m.0.attn.qkv.conv.weight" in names or any(k.startswith("model.23.") for k in names):
        if "model.23.cv2.0.0.conv.weight" not in names:
            raise ModelError(f"{where}: looks like YOLO11 but has no Detect head weights (model.23.*)")
        return "v11"
    if "model.22.cv2.0.0.conv.weight" in names:
        return "v8"
    raise ModelError(
        f"{where}: has no Detect head weights (model.22.* for YOLOv8, model.23.* for YOLO11); "
        "only detection models are supported"
    )


def build_from_initializers(
    weights: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None, *, where: str = "model"
) -> YoloDetectionModel:
    """Rebuild a detector from an Ultralytics ONNX export's initializers and metadata.

    ``weights``: initializer name -> array (only ``model.*`` names are used; anonymous
    constants such as ``onnx::Split_186`` are split sizes, reshape targets and scales that
    follow from the architecture). ``metadata``: the export's ``metadata_props`` (``names``
    as a Python dict literal, ``imgsz``, ``stride``). Raises ModelError naming ``where``
    and the first weight that is missing, unused or of the wrong shape.
    """
    meta = dict(metadata or {})
    version = detect_version(weights.keys(), where)
    shapes = _WeightShapes(weights, where)
    names = parse_names(meta.get("names")) or None
    net = _assemble(version, _FromWeights(shapes), names=names, imgsz=parse_imgsz(meta.get("imgsz")), where=where)
    load_weights(net, weights, where=where)
    return net


def load_weights(net: nn.Module, weights: Mapping[str, np.ndarray], *, where: str = "model") -> None:
    """Copy ``model.*`` arrays into ``net`` by name (as float32); every one must be used.

    A missing ``dfl.conv.weight`` keeps its 0..reg_max-1 bins (some exports fold it away).
    """
    state = net.state_dict()
    unused = sorted(k for k in weights if k.startswith("model.") and k not in state)
    if unused:
        more = f" and {len(unused) - 3} more" if len(unused) > 3 else ""
        raise ModelError(
            f"{where}: has weights a detection network does not use ({', '.join(unused[:3])}{more}); "
            "segmentation, pose or OBB models are not supported"
        )
    missing = [k for k in state if k not in weights and not k.endswith("dfl.conv.weight")]
    if missing:
        raise ModelError(f"{where}: weight {missing[0]} is missing ({len(missing)} missing in all)")
    with torch.no_grad():
        for key, param in state.items():
            if key in weights:
                value = np.asarray(weights[key], dtype=np.float32)
                if tuple(value.shape) != tuple(param.shape):
                    raise ModelError(
                        f"{where}: weight {key} has shape {tuple(value.shape)}, expected {tuple(param.shape)}"
                    )
                param.copy_(torch.from_numpy(value.copy()))


def make_divisible(x: float, divisor: int = 8) -> int:
    """Smallest multiple of ``divisor`` not below ``x``: how YAML widths are scaled."""
    return int(math.ceil(x / divisor) * divisor)


class _FromScale:
    """Sizes every block from a YAML scale (depth, width, max channels), as a fresh model would be."""

    def __init__(self, version: str, depth: float, width: float, max_channels: int, nc: int, c3k: bool | None) -> None:
        self.version = version
        self.depth = depth
        self.width = width
        self.max_channels = max_channels
        self.nc = nc
        self.c3k = c3k

    def _ch(self, c: int) -> int:
        return make_divisible(min(c, self.max_channels) * self.width, 8)

    def _n(self, n: int) -> int:
        return max(round(n * self.depth), 1) if n > 1 else n

    def conv(self, i: int, spec: LayerSpec, c1: int) -> tuple[nn.Module, int]:
        c2 = self._ch(spec.out)
        return Conv(c1, c2, 3, 2), c2

    def c2f(self, i: int, spec: LayerSpec, c1: int) -> tuple[nn.Module, int]:
        c2 = self._ch(spec.out)
        n = self._n(spec.repeats)
        c = int(c2 * spec.e)
        blocks: list[nn.Module]
        if spec.kind == "c2f":
            blocks = [Bottleneck(c, c, c, shortcut=spec.shortcut) for _ in range(n)]
            return C2f(c1, c2, c, blocks), c2
        use_c3k = spec.c3k if self.c3k is None else self.c3k
        if use_c3k:
            h = int(c * 0.5)
            blocks = [C3k(c, c, h, 2, inner=h, shortcut=spec.shortcut) for _ in range(n)]
        else:
            blocks = [Bottleneck(c, c, int(c * 0.5), shortcut=spec.shortcut) for _ in range(n)]
        return C3k2(c1, c2, c, blocks), c2

    def sppf(self, i: int, spec: LayerSpec, c1: int) -> tuple[nn.Module, int]:
        c2 = self._ch(spec.out)
        return SPPF(c1, c2, c1 // 2), c2

    def c2psa(self, i: int, spec: LayerSpec, c1: int) -> tuple[nn.Module, int]:
        c = int(c1 * 0.5)
        heads = c // 64
        if heads < 1:
            raise ValueError(f"C2PSA needs at least 128 input channels (one 64-channel head), but got {c1}")
        blocks = [PSABlock(c, heads, int(c // heads * 0.5), 2 * c) for _ in range(self._n(spec.repeats))]
        return C2PSA(c1, c1, c, blocks), c1

    def detect(self, i: int, ch: list[int], strides: list[int]) -> nn.Module:
        reg_max = 16
        box_hidden = max(16, ch[0] // 4, reg_max * 4)
        cls_hidden = max(ch[0], min(self.nc, 100))
        depthwise = self.version == "v11"
        return Detect(ch, box_hidden, cls_hidden, self.nc, strides, reg_max=reg_max, depthwise_cls=depthwise)


def build_from_scale(
    version: str,
    scale: str | tuple[float, float, int],
    *,
    nc: int = 80,
    c3k: bool | None = None,
    names: tuple[str, ...] | None = None,
    imgsz: tuple[int, int] = (640, 640),
) -> YoloDetectionModel:
    """A fresh (untrained) detector of a published scale ('n'...'x') or a custom one.

    ``scale``: a letter of :data:`SCALES` or (depth, width, max_channels). ``c3k`` forces
    YOLO11's C3k2 inner blocks to C3k (True, as the published m/l/x scales do) or Bottleneck
    (False); None keeps the YAML's per-layer choice (and forces C3k for m, l, x).
    """
    if version not in LAYERS:
        raise ValueError(f"unknown version '{version}', expecting one of {sorted(LAYERS)}")
    if isinstance(scale, str):
        if scale not in SCALES[version]:
            raise ValueError(f"unknown scale '{scale}', expecting one of {sorted(SCALES[version])}")
        if c3k is None and version == "v11" and scale in "mlx":
            c3k = True
        depth, width, max_channels = SCALES[version][scale]
    else:
        depth, width, max_channels = scale
    resolver = _FromScale(version, depth, width, max_channels, nc, c3k)
    return _assemble(version, resolver, names=names, imgsz=imgsz, where=f"{version} scale {scale}")

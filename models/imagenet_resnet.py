"""ImageNet ResNet family of the paper: bottleneck ResNet-50 made deeper or wider by multipliers.

He et al. (CVPR 2016), ResNet-50 as torchvision builds it (v1.5, the stride in the 3x3
convolution): a 7x7 stride-2 stem and a 3x3 stride-2 max-pool, then four stages of [3, 4, 6, 3]
post-activation bottleneck blocks (1x1 to `planes`, 3x3, 1x1 to 4 x `planes`, add, ReLU) with
64/128/256/512 planes, stride 2 at the first block of stages 2-4, global average pooling and a
linear classifier; the last BatchNorm of every block starts at zero (Goyal et al. 2017), as in
the paper's training. Nguyen, Raghu & Kornblith (ICLR 2021, section 6) scale it two ways:

- `scale: stage3` (their default): only the third stage is changed, its number of blocks
  multiplied by `depth` and its planes by `width` (ResNet-83 is depth 2.8: 17 blocks in stage 3;
  "ResNet-50 2.8x" is width 2.8: 717 planes there);
- `scale: all`: every stage's blocks and planes and the stem's channels are multiplied.

Counts are rounded half up; a stage keeps at least one block. Depth 1, width 1 is exactly
torchvision's resnet50 (25,557,032 parameters at 1,000 classes).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from repsweep.models.interface import ModelConfig, ModelFamily
from repsweep.models.residual import ResidualBlock, StagedResNet, projection

BLOCKS = (3, 4, 6, 3)  # ResNet-50's blocks per stage
PLANES = (64, 128, 256, 512)  # bottleneck widths per stage; the stage's output is 4x
STEM = 64  # the stem's channels
EXPANSION = 4
SCALES = ("stage3", "all")
MAX_MULTIPLIER = 16.0  # depth or width: ResNet-50 with 16x the blocks or planes is ~100x its cost


def _round(x: float) -> int:
    return math.floor(x + 0.5)  # half up: 6 x 2.8 = 16.8 -> 17; Python's round() goes half to even


def stage_plan(depth: float, width: float, scale: str) -> tuple[int, list[int], list[int]]:
    """(stem channels, blocks per stage, planes per stage) of the multiplied ResNet-50."""
    stages = range(len(BLOCKS)) if scale == "all" else (2,)
    blocks, planes = list(BLOCKS), list(PLANES)
    for s in stages:
        blocks[s] = max(1, _round(BLOCKS[s] * depth))
        planes[s] = max(1, _round(PLANES[s] * width))
    stem = max(1, _round(STEM * width)) if scale == "all" else STEM
    return stem, blocks, planes


class Bottleneck(ResidualBlock):
    """conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1-BN, plus shortcut, then ReLU."""

    conv_bn = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))
    last_bn = "bn3"

    def __init__(self, c_in: int, planes: int, stride: int) -> None:
        super().__init__()
        c_out = planes * EXPANSION
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.shortcut = projection(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ImageNetResNet(StagedResNet):
    """Bottleneck ResNet-50 with its depth and width multiplied (`stage_plan`)."""

    def __init__(self, depth: float = 1.0, width: float = 1.0, *, scale: str = "stage3", in_channels: int = 3,
                 num_classes: int = 1000, zero_init_residual: bool = True) -> None:
        super().__init__()
        problem = FAMILY.arch_problem(ModelConfig("imagenet_resnet", depth, width, in_channels, num_classes,
                                                  scale=scale))
        if problem:
            raise ValueError(f"{problem[0]} must be {problem[1]}; got depth {depth}, width {width}, scale {scale}")
        stem, blocks, planes = stage_plan(depth, width, scale)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages, c_in = [], stem
        for s, (n, p) in enumerate(zip(blocks, planes)):
            stage = []
            for b in range(n):
                stage.append(Bottleneck(c_in, p, stride=2 if (s > 0 and b == 0) else 1))
                c_in = p * EXPANSION
            stages.append(nn.Sequential(*stage))
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(c_in, num_classes)
        self._init_weights(zero_init_residual)


class ImageNetResNetFamily(ModelFamily):
    """ResNet-50 and its deeper or wider derivatives (Nguyen et al. 2021, section 6)."""

    name = "imagenet_resnet"
    min_image_size = 32  # five stride-2 steps: a 32 px image ends at 1 x 1
    options = ("scale",)

    def arch_problem(self, config: ModelConfig) -> tuple[str, str] | None:
        if config.scale not in SCALES:
            return "model.scale", f"one of {', '.join(SCALES)} for model.family {self.name}"
        for axis in ("depth", "width"):
            if not 0 < getattr(config, axis) <= MAX_MULTIPLIER:
                return axis, f"a multiplier in (0, {MAX_MULTIPLIER:g}] (1 = ResNet-50)"
        return None

    def build(self, config: ModelConfig) -> ImageNetResNet:
        return ImageNetResNet(config.depth, config.width, scale=config.scale, in_channels=config.in_channels,
                              num_classes=config.num_classes, zero_init_residual=True)

    def label(self, config: ModelConfig) -> str:
        """'r50-d2.8-w1' (stage 3 scaled) or 'r50all-d1-w0.5' (every stage)."""
        prefix = "r50" if config.scale == "stage3" else "r50all"
        return f"{prefix}-d{config.depth:g}-w{config.width:g}"


FAMILY = ImageNetResNetFamily()

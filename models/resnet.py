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

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from repsweep.models.interface import LayerInfo, ModelConfig, ModelFamily, RepresentationModel


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus shortcut, then ReLU (post-activation)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:  # projection shortcut where the shape changes
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ShortcutOnly(nn.Module):
    """A BasicBlock with its residual branch removed: ReLU(shortcut(x)) (block deletion).

    This is the block's output with the branch's contribution set to zero: an identity
    shortcut passes its (post-ReLU, so non-negative) input through unchanged; a projection
    shortcut keeps its 1x1 convolution and BatchNorm.
    """

    def __init__(self, block: BasicBlock) -> None:
        super().__init__()
        self.shortcut = block.shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.shortcut(x))


class CifarResNet(RepresentationModel):
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
        problem = FAMILY.arch_problem(depth, width)
        if problem:
            raise ValueError(f"{problem[0]} must be {problem[1]}; got depth {depth}, width {width}")
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

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:  # Goyal et al. 2017: each block starts as the identity
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def forward_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every captured representation for a batch, in `layer_info` order (logits last)."""
        x = self.stem(x)
        out = [x]
        for stage in self.stages:
            for block in stage:
                x = block(x)
                out.append(x)
        pooled = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (B, 64k)
        out.append(pooled)
        out.append(self.fc(pooled))  # (B, num_classes)
        return out

    def inference_copy(self) -> CifarResNet:
        """A copy for probing only: BatchNorm folded into each convolution, channels_last.

        Same function as the model in eval mode, to float rounding (~1e-6 relative); its
        forward passes run 1.2-1.4x faster on the 2-core dev machine (ResNet-20 and -32 on
        3x32x32 inputs, benchmarks/RESULTS.md). Outputs are channels_last: flatten them in
        memory order (the CKA engine does). It has no BatchNorm left, so it cannot be trained.
        """
        fused = copy.deepcopy(self).eval()
        fused.stem = nn.Sequential(fuse_conv_bn_eval(fused.stem[0], fused.stem[1]), nn.ReLU())
        for block in fused.modules():
            if isinstance(block, BasicBlock):
                block.conv1 = fuse_conv_bn_eval(block.conv1, block.bn1)
                block.conv2 = fuse_conv_bn_eval(block.conv2, block.bn2)
                block.bn1, block.bn2 = nn.Identity(), nn.Identity()
            if isinstance(block, (BasicBlock, ShortcutOnly)) and isinstance(block.shortcut, nn.Sequential):
                block.shortcut = fuse_conv_bn_eval(*block.shortcut)
        return fused.to(memory_format=torch.channels_last)

    def residual_blocks(self) -> list[str]:
        """Every residual block, by layer name: stage1.block0 ... stage3.block{n-1}."""
        return [f"stage{s + 1}.block{b}" for s in range(3) for b in range(self.n_blocks)]

    def without_block(self, name: str) -> CifarResNet:
        """A copy with block `name`'s residual branch removed (`ShortcutOnly`); same layers."""
        if name not in self.residual_blocks():
            raise ValueError(f"no residual block '{name}'; blocks are {', '.join(self.residual_blocks())}")
        stage, block = (int(part[len(prefix):]) for part, prefix in zip(name.split("."), ("stage", "block")))
        cut = copy.deepcopy(self)
        cut.stages[stage - 1][block] = ShortcutOnly(cut.stages[stage - 1][block])
        return cut

    def layer_info(self, input_shape: tuple[int, int, int]) -> list[LayerInfo]:
        """Metadata of every captured layer for inputs of shape (channels, height, width)."""
        with torch.no_grad():
            was_training = self.training
            self.eval()
            param = next(self.parameters())
            probe = torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype)
            dims = [t[0].numel() for t in self.forward_layers(probe)]
            self.train(was_training)
        info = [LayerInfo(0, "stem", "stem", 0, 0, dims[0])]
        for s in range(3):
            for b in range(self.n_blocks):
                i = len(info)
                info.append(LayerInfo(i, f"stage{s + 1}.block{b}", "block", s + 1, b, dims[i]))
        info.append(LayerInfo(len(info), "pool", "pool", 4, 0, dims[-2]))
        info.append(LayerInfo(len(info), "logits", "logits", 4, 0, dims[-1]))
        return info


class CifarResNetFamily(ModelFamily):
    """The CIFAR ResNets of He et al. (2016), depth 6n+2, width multiplier k."""

    name = "cifar_resnet"

    def arch_problem(self, depth: int, width: int) -> tuple[str, str] | None:
        if depth < 8 or (depth - 2) % 6:
            return "depth", "6n+2 with n >= 1 (8, 14, 20, 26, 32, 38, 44, 56, 110, ...)"
        if width < 1:
            return "width", "a positive integer width multiplier"
        return None

    def build(self, config: ModelConfig) -> CifarResNet:
        return CifarResNet(config.depth, config.width, in_channels=config.in_channels,
                           num_classes=config.num_classes, zero_init_residual=config.zero_init_residual)


FAMILY = CifarResNetFamily()

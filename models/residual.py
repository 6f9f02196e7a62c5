"""What every staged residual network shares: named layer capture, BatchNorm folding, block removal.

A `StagedResNet` is a stem, stages of residual blocks and a linear classifier on globally
pooled features; the CIFAR family (`resnet.py`, basic blocks) and the ImageNet family
(`imagenet_resnet.py`, bottleneck blocks) build one each. Its representations, in order
(`forward_layers`): the stem's output, every block's output, the pooled features, the logits.
A block is post-activation (ReLU after the addition) and has a `shortcut` (nn.Identity, or a
1x1 convolution with BatchNorm where its shape changes) and `conv_bn` pairs to fold.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from repsweep.models.interface import LayerInfo, RepresentationModel, on_one_zero_example


class ResidualBlock(nn.Module):
    """A post-activation residual block: ReLU(branch(x) + shortcut(x))."""

    conv_bn: tuple[tuple[str, str], ...]  # (convolution, its BatchNorm) attribute names of the branch
    last_bn: str  # the branch's last BatchNorm (zero-initialised: the block starts as the identity)
    shortcut: nn.Module


def projection(c_in: int, c_out: int, stride: int) -> nn.Module:
    """The shortcut: identity, or a 1x1 convolution with BatchNorm where the shape changes ("option B")."""
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))


class ShortcutOnly(nn.Module):
    """A block with its residual branch removed: ReLU(shortcut(x)) (block deletion).

    This is the block's output with the branch's contribution set to zero: an identity
    shortcut passes its (post-ReLU, so non-negative) input through unchanged; a projection
    shortcut keeps its 1x1 convolution and BatchNorm.
    """

    def __init__(self, block: ResidualBlock) -> None:
        super().__init__()
        self.shortcut = block.shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.shortcut(x))


class StagedResNet(RepresentationModel):
    """Stem, stages of residual blocks, global average pooling, linear classifier."""

    stem: nn.Sequential  # convolution, BatchNorm, ReLU (and a max-pool for the ImageNet stem)
    stages: nn.ModuleList  # of nn.Sequential of ResidualBlock
    fc: nn.Linear

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:  # Goyal et al. 2017: each block starts as the identity
            for m in self.modules():
                if isinstance(m, ResidualBlock):
                    nn.init.zeros_(getattr(m, m.last_bn).weight)

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
        pooled = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (B, channels of the last stage)
        out.append(pooled)
        out.append(self.fc(pooled))  # (B, num_classes)
        return out

    def inference_copy(self) -> StagedResNet:
        """A copy for probing only: BatchNorm folded into each convolution, channels_last.

        Same function as the model in eval mode, to float rounding (~1e-6 relative); its
        forward passes run 1.2-1.4x faster on the 2-core dev machine (ResNet-20 and -32 on
        3x32x32 inputs, benchmarks/RESULTS.md). Outputs are channels_last: flatten them in
        memory order (the CKA engine does). It has no BatchNorm left, so it cannot be trained.
        """
        fused = copy.deepcopy(self).eval()
        fused.stem = nn.Sequential(fuse_conv_bn_eval(fused.stem[0], fused.stem[1]), *fused.stem[2:])
        for block in fused.modules():
            if isinstance(block, ResidualBlock):
                for conv, bn in block.conv_bn:
                    setattr(block, conv, fuse_conv_bn_eval(getattr(block, conv), getattr(block, bn)))
                    setattr(block, bn, nn.Identity())
            if isinstance(block, (ResidualBlock, ShortcutOnly)) and isinstance(block.shortcut, nn.Sequential):
                block.shortcut = fuse_conv_bn_eval(*block.shortcut)
        return fused.to(memory_format=torch.channels_last)

    def residual_blocks(self) -> list[str]:
        """Every residual block, by layer name: stage1.block0 ... the last stage's last block."""
        return [f"stage{s + 1}.block{b}" for s, stage in enumerate(self.stages) for b in range(len(stage))]

    def without_block(self, name: str) -> StagedResNet:
        """A copy with block `name`'s residual branch removed (`ShortcutOnly`); same layers."""
        if name not in self.residual_blocks():
            raise ValueError(f"no residual block '{name}'; blocks are {', '.join(self.residual_blocks())}")
        stage, block = (int(part[len(prefix):]) for part, prefix in zip(name.split("."), ("stage", "block")))
        cut = copy.deepcopy(self)
        cut.stages[stage - 1][block] = ShortcutOnly(cut.stages[stage - 1][block])
        return cut

    def layer_info(self, input_shape: tuple[int, int, int]) -> list[LayerInfo]:
        """Metadata of every captured layer for inputs of shape (channels, height, width)."""
        dims = [t[0].numel() for t in on_one_zero_example(self, input_shape, self.forward_layers)]
        info = [LayerInfo(0, "stem", "stem", 0, 0, dims[0])]
        for s, stage in enumerate(self.stages):
            for b in range(len(stage)):
                i = len(info)
                info.append(LayerInfo(i, f"stage{s + 1}.block{b}", "block", s + 1, b, dims[i]))
        last = len(self.stages) + 1
        info.append(LayerInfo(len(info), "pool", "pool", last, 0, dims[-2]))
        info.append(LayerInfo(len(info), "logits", "logits", last, 0, dims[-1]))
        return info

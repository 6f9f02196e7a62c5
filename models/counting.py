"""Parameter and forward-FLOP counts.

FLOPs are counted as 2 x multiply-accumulates of convolutions and linear layers for one
example (BatchNorm, ReLU, additions and pooling are ignored: under 1% for these networks),
the convention of Nguyen et al. (2021) and most CIFAR ResNet tables. `nn.MultiheadAttention`
(torchvision's ViTs) adds its four projections and its two T x T products (scores, weighted
sum); attention written without that module (Swin's windows) counts its linear layers only.
"""

from __future__ import annotations

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Forward FLOPs (2 x MACs of conv and linear layers) for one example of `input_shape`."""
    macs = 0

    def conv_hook(m: nn.Conv2d, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal macs
        kh, kw = m.kernel_size
        macs += out[0].numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal macs
        macs += out[0].numel() * m.in_features

    def attention_hook(m: nn.MultiheadAttention, inp: tuple, _out: tuple) -> None:
        nonlocal macs
        q = inp[0]
        tokens = q.shape[1] if m.batch_first else q.shape[0]  # one example: (1, T, D) or (T, 1, D)
        # q, k, v and output projections (out_proj's weight is used, its module not called), scores, weighted sum
        macs += 4 * tokens * m.embed_dim * m.embed_dim + 2 * tokens * tokens * m.embed_dim

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, nn.MultiheadAttention):
            handles.append(m.register_forward_hook(attention_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return 2 * macs

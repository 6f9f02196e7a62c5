"""The ImageNet ResNet family: ResNet-50 exactly, its two scalings, parameters and FLOPs counted by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from repsweep.models import ImageNetResNet, count_flops, count_params


def plan(depth: float, width: float, scale: str) -> tuple[int, list[int], list[int]]:
    """(stem channels, blocks, planes) as the paper's scaling defines them, rounded half up."""
    r = lambda x: max(1, math.floor(x + 0.5))  # noqa: E731
    stages = range(4) if scale == "all" else [2]
    blocks, planes = [3, 4, 6, 3], [64, 128, 256, 512]
    for s in stages:
        blocks[s], planes[s] = r(blocks[s] * depth), r(planes[s] * width)
    return (r(64 * width) if scale == "all" else 64), blocks, planes


def hand_counts(depth: float, width: float, scale: str, c_in: int, hw: int, classes: int) -> tuple[int, int]:
    """(parameters, 2 x MACs) of the multiplied ResNet-50 counted from its definition (convs without bias)."""
    stem, blocks, planes = plan(depth, width, scale)
    params = c_in * stem * 49 + 2 * stem
    size = lambda s, k, stride, pad: (s + 2 * pad - k) // stride + 1  # noqa: E731
    s = size(hw, 7, 2, 3)
    macs = s * s * c_in * stem * 49
    s = size(s, 3, 2, 1)  # max-pool
    c = stem
    for i, (n, p) in enumerate(zip(blocks, planes)):
        for b in range(n):
            stride = 2 if i > 0 and b == 0 else 1
            out = size(s, 3, stride, 1)
            params += c * p + 2 * p + p * p * 9 + 2 * p + p * 4 * p + 2 * 4 * p
            macs += s * s * c * p + out * out * p * p * 9 + out * out * p * 4 * p
            if stride != 1 or c != 4 * p:
                params += c * 4 * p + 2 * 4 * p
                macs += out * out * c * 4 * p
            c, s = 4 * p, out
    params += c * classes + classes
    macs += c * classes
    return params, 2 * macs


def test_depth_1_width_1_is_torchvisions_resnet50():
    model, reference = ImageNetResNet(), torchvision.models.resnet50()
    assert count_params(model) == count_params(reference) == 25_557_032
    assert count_flops(model, (3, 224, 224)) == count_flops(reference, (3, 224, 224)) == 8_178_368_512
    assert [len(s) for s in model.stages] == [3, 4, 6, 3]
    assert all(b.bn3.weight.abs().sum() == 0 for s in model.stages for b in s)  # each block starts as the identity


@pytest.mark.parametrize("depth, width, scale, c_in, hw, classes", [
    (2.8, 1, "stage3", 3, 224, 1000),  # ResNet-83
    (1, 2.8, "stage3", 3, 224, 1000),  # ResNet-50 2.8x
    (0.5, 0.5, "all", 3, 64, 10),
    (2, 0.25, "all", 1, 32, 5),
    (0.25, 1.5, "stage3", 3, 96, 100),
])
def test_params_and_flops_match_hand_counts(depth, width, scale, c_in, hw, classes):
    model = ImageNetResNet(depth, width, scale=scale, in_channels=c_in, num_classes=classes)
    params, flops = hand_counts(depth, width, scale, c_in, hw, classes)
    assert count_params(model) == params
    assert count_flops(model, (c_in, hw, hw)) == flops
    _, blocks, _ = plan(depth, width, scale)
    info = model.layer_info((c_in, hw, hw))
    assert [i.layer_kind for i in info] == ["stem"] + ["block"] * sum(blocks) + ["pool", "logits"]
    assert info[-1].dim == classes and info[-2].dim == 4 * plan(depth, width, scale)[2][-1]


def test_resnet83_has_17_blocks_in_stage3_and_the_wide_one_717_planes():
    deep, wide = ImageNetResNet(2.8, 1), ImageNetResNet(1, 2.8)
    assert [len(s) for s in deep.stages] == [3, 4, 17, 3]
    assert 3 * sum(len(s) for s in deep.stages) + 2 == 83  # convolutions of the branches, stem and classifier
    assert wide.stages[2][0].conv1.out_channels == 717 and wide.stages[2][0].conv3.out_channels == 4 * 717
    x = torch.randn(2, 3, 64, 64)
    assert deep(x).shape == wide(x).shape == (2, 1000)


def test_the_imagenet_example_loads_and_its_cost_header_is_the_counters():
    from pathlib import Path

    from repsweep.orchestrator.grid import expand_grid
    from repsweep.orchestrator.spec import load_spec

    path = Path(__file__).parents[1] / "examples" / "imagenet-paper.yaml"
    trials = expand_grid(load_spec(path))
    assert sorted({t.arch for t in trials}) == ["r50-d1-w2.8", "r50-d2.8-w1"] and len(trials) == 6
    header = path.read_text()
    for (d, w), text in (((2.8, 1), "ResNet-83       12.98 GFLOPs forward, 37.8 M parameters"),
                         ((1, 2.8), "ResNet-50 2.8x  26.89 GFLOPs forward, 75.5 M parameters")):
        model = ImageNetResNet(d, w)
        assert f"{count_flops(model, (3, 224, 224)) / 1e9:.2f} GFLOPs" in text and text in header
        assert f"{count_params(model) / 1e6:.1f} M" in text

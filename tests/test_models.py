"""The CIFAR ResNet family: shapes, captured layers, parameter and FLOP counts by hand."""

from __future__ import annotations

import pytest
import torch

from repsweep.models import CifarResNet, count_flops, count_params


def hand_params(depth: int, k: int, c_in: int, classes: int) -> int:
    """Parameters of a CIFAR ResNet counted from its definition (convs have no bias)."""
    n, (c1, c2, c3) = (depth - 2) // 6, (16 * k, 32 * k, 64 * k)
    conv = lambda a, b, s=3: a * b * s * s  # noqa: E731
    bn = lambda c: 2 * c  # noqa: E731  (gamma, beta)
    block = lambda a, b: conv(a, b) + bn(b) + conv(b, b) + bn(b) + (conv(a, b, 1) + bn(b) if a != b else 0)  # noqa: E731
    total = conv(c_in, c1) + bn(c1)
    for a, b in [(c1, c1), (c1, c2), (c2, c3)]:
        total += block(a, b) + (n - 1) * block(b, b)
    return total + c3 * classes + classes


def hand_flops(depth: int, k: int, c_in: int, hw: int, classes: int) -> int:
    """2 x MACs of convs and the classifier for one example of size c_in x hw x hw."""
    n, (c1, c2, c3) = (depth - 2) // 6, (16 * k, 32 * k, 64 * k)
    macs = hw * hw * c_in * c1 * 9
    for a, b, s in [(c1, c1, hw), (c1, c2, hw // 2), (c2, c3, hw // 4)]:
        macs += s * s * a * b * 9 + s * s * b * b * 9 + (s * s * a * b if a != b else 0)
        macs += (n - 1) * 2 * s * s * b * b * 9
    return 2 * (macs + c3 * classes)


@pytest.mark.parametrize("depth, width, c_in, hw, classes", [
    (8, 1, 1, 8, 10), (20, 1, 3, 32, 10), (20, 4, 3, 32, 100), (56, 2, 1, 8, 10), (110, 1, 3, 32, 10)])
def test_shapes_layers_params_and_flops_match_hand_counts(depth, width, c_in, hw, classes):
    model = CifarResNet(depth, width, in_channels=c_in, num_classes=classes)
    x = torch.randn(2, c_in, hw, hw)
    assert model(x).shape == (2, classes)
    layers = model.forward_layers(x)
    info = model.layer_info((c_in, hw, hw))
    n = (depth - 2) // 6
    assert len(layers) == len(info) == 3 * n + 3  # stem, 3n blocks, pool, logits
    assert [i.layer_kind for i in info] == ["stem"] + ["block"] * 3 * n + ["pool", "logits"]
    assert [i.dim for i in info] == [t[0].numel() for t in layers]
    assert info[0].dim == 16 * width * hw * hw and info[-2].dim == 64 * width and info[-1].dim == classes
    assert info[1 + n].layer_name == "stage2.block0" and info[1 + n].stage == 2
    assert torch.allclose(layers[-1], model(x), atol=1e-5)
    assert count_params(model) == hand_params(depth, width, c_in, classes)
    assert count_flops(model, (c_in, hw, hw)) == hand_flops(depth, width, c_in, hw, classes)


def test_known_reference_sizes():
    # ResNet-20 with projection shortcuts on CIFAR-10: 272,474 parameters, ~41 MMACs (He et al. 2016)
    r20 = CifarResNet(20, 1)
    assert count_params(r20) == 272_474
    assert 40e6 < count_flops(r20, (3, 32, 32)) / 2 < 42e6


def test_zero_init_residual_makes_each_block_start_as_identity_plus_relu():
    model = CifarResNet(8, 1, in_channels=1, zero_init_residual=True).eval()
    x = torch.randn(4, 1, 8, 8)
    stem, first_block = model.forward_layers(x)[:2]
    assert torch.allclose(first_block, torch.relu(stem))  # bn2 gamma = 0: only the shortcut remains


def test_invalid_depth_is_refused():
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(10, 1)


def test_layer_info_works_for_float64_models():
    model = CifarResNet(8, 1, in_channels=1).double()
    assert [i.dim for i in model.layer_info((1, 8, 8))] == [1024, 1024, 512, 256, 64, 10]


def test_inference_copy_computes_the_same_layers_without_batchnorm():
    torch.manual_seed(0)
    model = CifarResNet(14, 2)
    model(torch.randn(32, 3, 16, 16))  # training mode: BatchNorm learns running statistics
    fused = model.inference_copy()
    x = torch.randn(16, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        for plain, folded in zip(model.forward_layers(x), fused.forward_layers(x)):
            torch.testing.assert_close(folded, plain, rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # original intact

"""The torchvision family: blocks found by feature extraction, their metadata, token layers, CKA with itself."""

from __future__ import annotations

import pytest
import torch
import torchvision

from repsweep.analysis.engine.cka import minibatch_cka
from repsweep.models import ModelConfig, count_flops, count_params, get_family


def build(name: str, tokens: str = "mean", classes: int = 10):
    torch.manual_seed(0)
    return get_family("torchvision").build(ModelConfig("torchvision", 1, 1, 3, classes, name=name, tokens=tokens)).eval()


def test_a_resnet18s_layers_are_its_blocks_then_the_classifiers_input_and_the_logits():
    model = build("resnet18")
    info = model.layer_info((3, 32, 32))
    assert [i.layer_name for i in info] == [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)] + ["flatten", "fc"]
    assert [i.layer_kind for i in info] == ["block"] * 8 + ["pool", "logits"]
    assert [(i.stage, i.block) for i in info] == [(s, b) for s in range(1, 5) for b in range(2)] + [(5, 0), (5, 0)]
    # 32 px: layer1 at 8 x 8 (stride-2 stem and max-pool), halving at each later stage
    assert [i.dim for i in info] == [64 * 64] * 2 + [128 * 16] * 2 + [256 * 4] * 2 + [512] * 2 + [512, 10]
    assert [i.layer for i in info] == list(range(10)) and all(i.tokens == "" for i in info)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        layers = model.forward_layers(x)
        plain = model.net
        h = plain.maxpool(plain.relu(plain.bn1(plain.conv1(x))))
        torch.testing.assert_close(layers[0], plain.layer1[0](h))  # the block's own output, by hand
        torch.testing.assert_close(layers[-1], model(x))


def test_parameter_and_flop_counts_are_torchvisions():
    # torchvision's documented GFLOPS (multiply-accumulates) at 224 px: resnet18 1.81, vit_b_16 17.56
    for name, params, gmacs in (("resnet18", 11_689_512, 1.81), ("vit_b_16", 86_567_656, 17.56)):
        model = build(name, classes=1000)
        assert count_params(model) == count_params(torchvision.models.get_model(name)) == params
        assert round(count_flops(model, (3, 224, 224)) / 2e9, 2) == gmacs
    # the ViT by hand: patch embedding, then per layer q, k, v, out (4 T D^2), scores and sum (2 T^2 D), MLP (2 T D 4D)
    t, d = 197, 768
    macs = 196 * d * (16 * 16 * 3) + 12 * (4 * t * d * d + 2 * t * t * d + 2 * t * d * 4 * d) + d * 1000
    assert count_flops(build("vit_b_16", classes=1000), (3, 224, 224)) == 2 * macs


def test_a_vits_token_layers_are_reduced_as_the_spec_says_and_recorded():
    x = torch.randn(2, 3, 224, 224)
    layers = {}
    for tokens in ("mean", "cls", "flatten"):
        model = build("vit_b_16", tokens=tokens)
        info = model.layer_info((3, 224, 224))
        blocks = [i for i in info if i.layer_kind == "block"]
        assert len(blocks) == 12 and {i.stage for i in blocks} == {1}
        assert all(i.tokens == tokens for i in blocks) and info[-2].tokens == "" and info[-1].tokens == ""
        assert blocks[0].dim == (197 * 768 if tokens == "flatten" else 768)
        with torch.no_grad():
            layers[tokens] = model.forward_layers(x)
    full = layers["flatten"][0].reshape(2, 197, 768)
    torch.testing.assert_close(layers["mean"][0], full.mean(1))
    torch.testing.assert_close(layers["cls"][0], full[:, 0])


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "convnext_tiny"])
def test_minibatch_cka_of_a_model_with_itself_has_a_unit_diagonal(name):
    model = build(name)
    x = torch.randn(48, 3, 32, 32)
    result = minibatch_cka(model, model, x, batch_size=16, passes=1)
    cka = result.cka()
    n = len(model.layer_info((3, 32, 32)))
    assert cka.shape == (n, n)
    # float32 sums over 16-example batches: the diagonal is 1 to float rounding
    assert abs(cka.diagonal() - 1).max() < 1e-4
    assert (abs(cka - cka.T) < 1e-4).all()

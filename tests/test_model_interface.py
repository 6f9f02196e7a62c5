"""Every model family in the registry passes the same checks of the written model interface."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from repsweep.models import (FAMILIES, CheckpointError, ModelConfig, ModelFamily, RepresentationModel, count_flops,
                             count_params, model_bytes, model_from_bytes)


MULTIPLIERS = (0.25, 0.5, *range(1, 64))
OPTIONS = {"scale": ("all", "stage3"), "name": ("resnet18", "mobilenet_v3_small"), "tokens": ("mean",)}  # values to try


def small_archs(family: ModelFamily, n: int = 2) -> list[ModelConfig]:
    """The n smallest architectures the family builds (by depth x width^2), found from its own rule."""
    options = [dict(zip(family.options, v)) for v in itertools.product(*(OPTIONS[o] for o in family.options))]
    found = [ModelConfig(family.name, d, w, 0, 0, **o) for d, w, o in itertools.product(MULTIPLIERS, (0.25, 1, 2), options)]
    found = [c for c in found if family.arch_problem(c) is None]
    return sorted(found, key=lambda c: (c.depth * c.width ** 2, c.depth, c.width))[:n]


def trained_like(config: ModelConfig, input_shape: tuple[int, ...]) -> RepresentationModel:
    """A built model whose BatchNorm statistics moved (a forward pass in training mode) and, unless
    it is to start as the identity, whose BatchNorm scales moved off a zero initialisation."""
    torch.manual_seed(0)
    model = FAMILIES[config.family].build(config)
    with torch.no_grad():
        if not config.zero_init_residual:
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.weight.uniform_(0.5, 1.5)
        model(torch.randn(16, *input_shape))
    return model.eval()


def shapes(family: ModelFamily) -> list[tuple[int, int, int]]:
    """A grey (where the family takes it) and a colour image, the smallest size it takes and twice that."""
    m = max(8, family.min_image_size)
    return [(family.image_channels or 1, m, m), (3, 2 * m, 2 * m)]


CASES = [(arch, shape) for family in FAMILIES.values() for arch in small_archs(family) for shape in shapes(family)]


@pytest.fixture(params=CASES, ids=[f"{FAMILIES[a.family].label(a)}-{s[0]}x{s[1]}" for a, s in CASES])
def case(request):
    arch, shape = request.param
    config = dataclasses.replace(arch, in_channels=shape[0], num_classes=5)
    return config, shape, trained_like(config, shape)


def test_layers_match_their_metadata_and_end_in_the_logits(case):
    config, shape, model = case
    assert isinstance(model, RepresentationModel)
    x = torch.randn(4, *shape)
    layers, info = model.forward_layers(x), model.layer_info(shape)
    assert len(layers) == len(info) >= 3
    assert [i.layer for i in info] == list(range(len(info)))
    assert len({i.layer_name for i in info}) == len(info)
    assert [i.dim for i in info] == [t[0].numel() for t in layers]
    assert info[-1].layer_kind == "logits" and info[-1].dim == config.num_classes
    torch.testing.assert_close(layers[-1], model(x))


def test_inference_copy_computes_the_same_layers_and_leaves_the_model_alone(case):
    _, shape, model = case
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(8, *shape)
    fast = model.inference_copy()
    with torch.no_grad():
        for plain, copy in zip(model.forward_layers(x), fast.forward_layers(x), strict=True):
            # float32 rounding, relative to the layer's scale (it grows with depth)
            torch.testing.assert_close(copy, plain, rtol=1e-5, atol=1e-5 * max(1.0, plain.abs().max().item()))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_a_saved_model_loads_back_identical_and_a_damaged_file_is_named(case):
    config, shape, model = case
    blob = model_bytes(model, config, shape, {"note": "meta"})
    loaded, saved = model_from_bytes(blob, "mem://m.pt")
    assert saved["model"] == config and saved["input_shape"] == shape and saved["meta"] == {"note": "meta"}
    x = torch.randn(4, *shape)
    with torch.no_grad():
        for a, b in zip(model.forward_layers(x), loaded.forward_layers(x), strict=True):
            assert torch.equal(a, b)
    with pytest.raises(CheckpointError, match="checkpoint 'mem://m.pt' is corrupt"):
        model_from_bytes(blob[: len(blob) // 2], "mem://m.pt")


def test_sizes_are_counted(case):
    _, shape, model = case
    assert count_params(model) > 0 and count_flops(model, shape) > 0


def test_removing_a_block_keeps_the_layers_before_it_and_leaves_the_model_alone(case):
    _, shape, model = case
    blocks = model.residual_blocks()
    names = [i.layer_name for i in model.layer_info(shape)]
    assert set(blocks) <= set(names)
    if not blocks:  # a family without block removal (torchvision) says so in one line
        with pytest.raises(ValueError, match="removes no blocks"):
            model.without_block(names[0])
        return
    x = torch.randn(8, *shape)
    with torch.no_grad():
        full = model.forward_layers(x)
        for block in blocks:
            cut = model.without_block(block)
            layers = cut.forward_layers(x)
            assert len(layers) == len(full) and cut.layer_info(shape) == model.layer_info(shape)
            first = names.index(block)
            for a, b in zip(full[:first], layers[:first]):
                assert torch.equal(a, b)  # nothing before the removed block changes
        assert all(torch.equal(a, b) for a, b in zip(full, model.forward_layers(x)))  # original intact
    with pytest.raises(ValueError, match="no residual block"):
        model.without_block("no-such-block")


def test_a_block_whose_branch_is_zero_removes_without_a_trace_and_others_matter(case):
    config, shape, model = case
    if not model.residual_blocks():
        pytest.skip(f"model.family {config.family} removes no blocks")
    identity = trained_like(ModelConfig(**{**config.to_dict(), "zero_init_residual": True}), shape)
    x = torch.randn(8, *shape)
    with torch.no_grad():
        for block in identity.residual_blocks():  # residual branch exactly zero: removing it is a no-op
            torch.testing.assert_close(identity.without_block(block)(x), identity(x), rtol=0, atol=0)
        changed = [not torch.allclose(model.without_block(b)(x), model(x)) for b in model.residual_blocks()]
    assert any(changed)


def test_each_architecture_has_one_label():
    for family in FAMILIES.values():
        archs = small_archs(family, n=6)
        labels = [family.label(c) for c in archs]
        assert len(set(labels)) == len(labels) and all(" " not in x for x in labels)

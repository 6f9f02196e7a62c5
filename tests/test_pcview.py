"""The first-PC view from the CKA batches' Grams, on constructed activations whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repsweep.analysis.engine.cka import CKAAccumulator, linear_cka
from repsweep.analysis.engine.pcview import PCView
from repsweep.analysis.engine.stream import stream_batches


from tests.test_cka import one_torch_thread  # noqa: E402, F401  (autouse: one torch thread here too)


def _remove_pc1(x: np.ndarray) -> np.ndarray:
    """Centred activations with their top principal component taken out (by SVD, the naive way)."""
    xc = x - x.mean(axis=0)
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    return xc - s[0] * np.outer(u[:, 0], vt[0])


def _accumulate(layers: list[np.ndarray], batches: list[np.ndarray], probe_size: int | None = None):
    view = PCView(probe_size=probe_size)
    acc = CKAAccumulator(pc1=True, pc_view=view)
    for idx in batches:
        acc.update([torch.from_numpy(x[idx]) for x in layers], examples=torch.from_numpy(idx))
    return acc.result(), view.result()


def test_cka_without_pc1_from_the_gram_equals_removing_pc1_from_the_activations():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 30)) @ rng.standard_normal((30, 30))
    y = np.tanh(x @ rng.standard_normal((30, 20))) + 0.3 * rng.standard_normal((120, 20))
    batches = [b.numpy() for b in stream_batches(120, batch_size=40, passes=2, seed=1)]
    _, view = _accumulate([x, y], batches)
    direct = CKAAccumulator()  # the same minibatch estimator, on activations with PC1 removed per batch
    for idx in batches:
        direct.update([torch.from_numpy(_remove_pc1(x[idx])), torch.from_numpy(_remove_pc1(y[idx]))])
    np.testing.assert_allclose(view.cka_without_pc1(), direct.result().cka(), rtol=0, atol=1e-8)
    np.testing.assert_allclose(view.removed_xy, direct.result().hsic_xy, rtol=1e-8)
    one = batches[0]  # and one batch against the full-batch formula
    _, single = _accumulate([x, y], [one])
    assert single.cka_without_pc1()[0, 1] == pytest.approx(
        linear_cka(_remove_pc1(x[one]), _remove_pc1(y[one]), debiased=True), abs=1e-8)


def test_a_shared_dominant_direction_carries_cka_and_removing_it_leaves_the_rest():
    rng = np.random.default_rng(1)
    n = 256
    score = rng.standard_normal(n) * 10  # one planted direction over the examples, large
    z, w = rng.standard_normal((n, 50)), rng.standard_normal((n, 50))  # the rest: independent
    x = z + np.outer(score, rng.standard_normal(50))
    y = w + np.outer(score, rng.standard_normal(50))
    batches = [b.numpy() for b in stream_batches(n, batch_size=128, passes=3)]
    cka, view = _accumulate([x, y], batches)
    rest, _ = _accumulate([z, w], batches)
    assert cka.cka()[0, 1] > 0.9  # the shared PC makes them look alike
    assert view.cka_without_pc1()[0, 1] == pytest.approx(rest.cka()[0, 1], abs=0.05)  # PC1 gone: the rest
    assert abs(rest.cka()[0, 1]) < 0.05
    assert view.pc1_cos2()[0, 1] > 0.99 and view.pc1_cos2()[0, 0] == pytest.approx(1.0)
    np.testing.assert_allclose(view.pc1_fraction()[0], cka.pc1_fraction()[0], rtol=1e-9)  # = eigvalsh's
    assert (view.pc1_fraction()[0] > 0.8).all()


def test_a_few_large_norm_examples_are_found_dominant_and_leaving_them_out_dissolves_the_block():
    rng = np.random.default_rng(2)
    n, big = 300, [7, 42, 101, 250]
    direction = rng.standard_normal(40)
    layers = []
    for _ in range(4):  # a "block" of 4 layers: independent noise, plus the same huge activations on 4 examples
        x = rng.standard_normal((n, 40))
        x[big] += 30 * direction
        layers.append(x)
    batches = [b.numpy() for b in stream_batches(n, batch_size=100, passes=4)]
    cka, view = _accumulate(layers, batches, probe_size=n)
    share, score, norm = view.example_stats()  # (R, N) each
    for layer in range(4):
        assert set(np.argsort(-share[layer])[:4]) == set(big)
        assert set(np.argsort(-score[layer])[:4]) == set(big) and set(np.argsort(-norm[layer])[:4]) == set(big)
    assert share[:, big].sum(axis=1).min() > 0.9  # the first PC rests on them
    inside = cka.cka()[np.triu_indices(4, 1)]
    assert inside.min() > 0.8
    keep = np.setdiff1d(np.arange(n), big)
    without, _ = _accumulate([x[keep] for x in layers],
                             [b.numpy() for b in stream_batches(len(keep), batch_size=100, passes=4)])
    assert np.abs(without.cka()[np.triu_indices(4, 1)]).max() < 0.1  # the block is gone


def test_a_layers_shares_sum_to_one_over_the_probe_set_and_every_example_is_counted():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((90, 12))
    batches = [b.numpy() for b in stream_batches(90, batch_size=30, passes=2)]
    _, view = _accumulate([x], batches, probe_size=90)
    assert view.seen.tolist() == [2.0] * 90
    share, score, _ = view.example_stats()
    assert share.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(share, score ** 2 / (score ** 2).sum(), rtol=1e-12)


def test_an_examples_share_does_not_depend_on_the_size_of_its_batch():
    """A layer with a real first PC (variance 25 against noise 1), cut 256 + 104 as the probe stream
    once was: u_1(i)^2 sums to 1 per batch, so it weighted the small batch's examples 2.5 times;
    the first-PC score lambda_1 u_1(i)^2 (and the share made from it) does not."""
    rng = np.random.default_rng(5)
    n, d = 360, 16
    x = 5 * rng.standard_normal((n, 1)) @ rng.standard_normal((1, d)) + rng.standard_normal((n, d))
    batches = [np.arange(256), np.arange(256, n)]
    _, view = _accumulate([x], batches, probe_size=n)
    share, _, _ = view.example_stats()
    assert share[0, 256:].mean() / share[0, :256].mean() == pytest.approx(1.0, abs=0.15)

    u2 = np.empty(n)  # the old weight, u_1(i)^2 of each batch's centred Gram (the naive way, by SVD)
    for idx in batches:
        u2[idx] = np.linalg.svd(x[idx] - x[idx].mean(axis=0), full_matrices=False)[0][:, 0] ** 2
    assert u2[256:].mean() / u2[:256].mean() == pytest.approx(256 / 104, rel=0.05)


def _model_layers(rng: np.random.Generator, shared: str, n: int = 512, d: int = 32, n_layers: int = 10):
    """Activations of 10 layers, each independent noise but layers 4-7, which share either one
    dominant component (`shared` = "pc1": 4x the noise's variance, so the first PC carries ~80%)
    or a common isotropic d-dimensional subspace ("subspace": alike, but no component dominates)."""
    score = rng.standard_normal((n, 1))  # (n, 1) the dominant component's scores
    common = rng.standard_normal((n, d))  # (n, d) the shared subspace
    layers = []
    for layer in range(n_layers):
        x = rng.standard_normal((n, d))
        if 4 <= layer <= 7 and shared == "pc1":
            x = x + 2 * np.sqrt(d) * score @ (rng.standard_normal((1, d)) / np.sqrt(d))
        elif 4 <= layer <= 7:
            x = 0.3 * x + common @ np.linalg.qr(rng.standard_normal((d, d)))[0]
        layers.append(x)
    return layers


def test_a_planted_first_component_makes_a_block_whose_contrast_vanishes_without_it():
    from repsweep.analysis.study.blocks import span_contrast

    rng = np.random.default_rng(0)
    batches = [b.numpy() for b in stream_batches(512, batch_size=256, passes=2, seed=0)]
    res, view = _accumulate(_model_layers(rng, "pc1"), batches)
    pc1 = view.pc1_fraction()[0]
    assert pc1[4:8].min() > 0.6 and pc1[[0, 1, 2, 3, 8, 9]].max() < 0.2  # the paper's block: PC1 0.6-0.9 inside
    with_pc1 = span_contrast(res.cka(), 4, 7, exclude=())
    without = span_contrast(view.cka_without_pc1(), 4, 7, exclude=())
    assert with_pc1["contrast"] > 0.5 and abs(without["contrast"]) < 0.1  # the block is its first PC

    # the control: as alike a run of layers, carried by a whole subspace, keeps its contrast without PC1
    res, view = _accumulate(_model_layers(rng, "subspace"), batches)
    assert view.pc1_fraction()[0][4:8].max() < 0.2
    with_pc1 = span_contrast(res.cka(), 4, 7, exclude=())
    without = span_contrast(view.cka_without_pc1(), 4, 7, exclude=())
    assert with_pc1["contrast"] > 0.5 and with_pc1["contrast"] - without["contrast"] < 0.1

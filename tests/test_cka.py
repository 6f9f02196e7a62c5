"""Tests of the CKA engine: estimator, accumulator, results, full-batch CKA, probe stream.

References are written naively here (explicit trace formulas, centring matrices, loops) so
that the engine's U-centring and single-matmul accumulation are checked against the papers'
formulas, not against themselves.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from repsweep.analysis.engine.cka import (
    MIN_BATCH,
    CKAAccumulator,
    combine,
    linear_cka,
    minibatch_cka,
)
from repsweep.analysis.engine.stream import batch_sizes, stream_batches
from repsweep.models import LayerInfo, RepresentationModel


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Another job shares this machine: keep torch to one thread in these tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- naive references


def naive_hsic1(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al. 2012 unbiased HSIC, term by term (Nguyen et al. 2021, eq. 2)."""
    n = k.shape[0]
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    one = np.ones(n)
    value = (
        np.trace(kt @ lt)
        + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ kt @ lt @ one)
    )
    return value / (n * (n - 3))


def naive_minibatch_hsic(xs, ys, batches) -> tuple[float, float, float]:
    """Sums over batches of HSIC1(K, L), HSIC1(K, K), HSIC1(L, L) with K, L linear Grams."""
    xy = xx = yy = 0.0
    for idx in batches:
        x, y = xs[idx].reshape(len(idx), -1), ys[idx].reshape(len(idx), -1)
        k, l = x @ x.T, y @ y.T
        xy, xx, yy = xy + naive_hsic1(k, l), xx + naive_hsic1(k, k), yy + naive_hsic1(l, l)
    return xy, xx, yy


def naive_biased_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. 2019, eqs. 3-4: HSIC0 = tr(K H L H) / (n-1)^2 with H = I - 11'/n."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T

    def hsic0(a, b):
        return np.trace(a @ h @ b @ h) / (n - 1) ** 2

    return hsic0(k, l) / np.sqrt(hsic0(k, k) * hsic0(l, l))


def random_layers(n: int, seed: int = 0) -> list[np.ndarray]:
    """Four related representations of n examples, of different shapes, in float64."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2, 3, 3))
    h = np.maximum(x.reshape(n, -1) @ rng.standard_normal((18, 12)), 0.0) + 1.0  # offset ReLU
    z = np.tanh(h @ rng.standard_normal((12, 5))) + 0.3 * rng.standard_normal((n, 5))
    return [x, h, z, rng.standard_normal((n, 7))]


def accumulate(layers, batches, cols=None, **kwargs) -> CKAAccumulator:
    """Feed NumPy layers (and optional cols) batch by batch into a new accumulator."""
    acc = CKAAccumulator(**kwargs)
    for idx in batches:
        rows = [torch.from_numpy(a[idx]) for a in layers]
        acc.update(rows, None if cols is None else [torch.from_numpy(a[idx]) for a in cols])
    return acc


def batches_of(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """One pass of the probe stream as NumPy index arrays."""
    return [idx.numpy() for idx in stream_batches(n, batch_size=size, passes=1, seed=seed)]


# ----------------------------------------------------------------- the estimator


def test_accumulator_matches_naive_song_formula_to_1e10_in_float64():
    layers = random_layers(150)
    batches = batches_of(150, 40)  # 40, 40, 40, 30: a short last batch included
    result = accumulate(layers, batches).result()
    for i, a in enumerate(layers):
        for j, b in enumerate(layers):
            xy, xx, yy = naive_minibatch_hsic(a, b, batches)
            assert result.hsic_xy[i, j] == pytest.approx(xy, rel=1e-10, abs=1e-12)
            assert result.hsic_xx[i] == pytest.approx(xx, rel=1e-10)
            assert result.hsic_yy[j] == pytest.approx(yy, rel=1e-10)
            assert abs(result.cka()[i, j] - xy / np.sqrt(xx * yy)) < 1e-10


def test_wide_layers_on_the_blocked_cpu_gram_match_the_naive_formula():
    # d > n takes the blocked Gram path; batches of 150 and 90 cut 64-example blocks unevenly
    rng = np.random.default_rng(5)
    x = rng.standard_normal((240, 300))
    y = np.maximum(x @ rng.standard_normal((300, 500)), 0.0)  # (240, 500)
    batches = [np.arange(150), np.arange(150, 240)]
    xy, xx, yy = naive_minibatch_hsic(x, y, batches)
    res = accumulate([x], batches, cols=[y]).result()
    np.testing.assert_allclose([res.hsic_xy[0, 0], res.hsic_xx[0], res.hsic_yy[0]], [xy, xx, yy],
                               rtol=1e-10)


def test_channels_last_activations_give_the_same_cka_as_contiguous_ones():
    x = torch.randn(64, 8, 5, 5, generator=torch.Generator().manual_seed(0)).relu()
    y = torch.randn(64, 3, 4, 4, generator=torch.Generator().manual_seed(1)) + x[:, :3, :4, :4]
    plain = CKAAccumulator()
    plain.update([x, y])
    strided = CKAAccumulator()
    strided.update([t.contiguous(memory_format=torch.channels_last) for t in (x, y)])
    np.testing.assert_allclose(strided.result().hsic_xy, plain.result().hsic_xy, rtol=1e-6)


def test_linear_cka_biased_matches_the_centring_matrix_formula():
    x, h, z, _ = random_layers(60)
    for a, b in [(x, h), (h, z), (x, z)]:
        a2, b2 = a.reshape(60, -1), b.reshape(60, -1)
        assert linear_cka(a, b) == pytest.approx(naive_biased_cka(a2, b2), abs=1e-12)


def test_linear_cka_of_one_dimensional_features_is_the_squared_correlation():
    # With one feature each, linear CKA = (x_c . y_c)^2 / (|x_c|^2 |y_c|^2) = Pearson r^2.
    # x = 1..4, y = x^2: x_c = (-1.5, -0.5, 0.5, 1.5), y_c = (-6.5, -3.5, 1.5, 8.5),
    # x_c . y_c = 25, |x_c|^2 = 5, |y_c|^2 = 129, so CKA = 625 / 645 = 125 / 129.
    x = np.array([[1.0], [2.0], [3.0], [4.0]])
    assert linear_cka(x, x**2) == pytest.approx(125 / 129, abs=1e-14)
    assert linear_cka(torch.from_numpy(x), torch.from_numpy(x**2)) == pytest.approx(125 / 129)


def test_linear_cka_debiased_matches_naive_song_formula_on_the_full_batch():
    x, h, _, _ = random_layers(50)
    a, b = x.reshape(50, -1), h
    k, l = a @ a.T, b @ b.T
    expected = naive_hsic1(k, l) / np.sqrt(naive_hsic1(k, k) * naive_hsic1(l, l))
    assert linear_cka(x, h, debiased=True) == pytest.approx(expected, abs=1e-12)


def test_cka_of_a_representation_with_itself_is_one():
    layers = random_layers(80)
    for a in layers:
        assert linear_cka(a, a) == pytest.approx(1.0, abs=1e-12)
        assert linear_cka(a, a, debiased=True) == pytest.approx(1.0, abs=1e-12)
    cka = accumulate(layers, batches_of(80, 20)).result().cka()
    np.testing.assert_allclose(np.diag(cka), 1.0, atol=1e-12)


def test_cka_is_symmetric():
    x, h, z, _ = random_layers(70)
    assert linear_cka(x, h) == pytest.approx(linear_cka(h, x), abs=1e-14)
    assert linear_cka(h, z, debiased=True) == pytest.approx(linear_cka(z, h, debiased=True))
    result = accumulate([x, h, z], batches_of(70, 16)).result()
    np.testing.assert_allclose(result.hsic_xy, result.hsic_xy.T, rtol=1e-12)
    np.testing.assert_allclose(result.cka(), result.cka().T, atol=1e-14)


def all_estimators(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Biased full-batch, debiased full-batch and minibatch CKA of a and b."""
    mini = accumulate([a], batches_of(len(a), 25), cols=[b]).result().cka()[0, 0]
    return np.array([linear_cka(a, b), linear_cka(a, b, debiased=True), mini])


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling():
    _, h, z, _ = random_layers(100)
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((12, 12)))
    before = all_estimators(h, z)
    np.testing.assert_allclose(all_estimators(h @ q, z), before, atol=1e-12)
    np.testing.assert_allclose(all_estimators(h * 37.5, z * 1e-3), before, atol=1e-12)
    assert all_estimators(h @ q, h) == pytest.approx(1.0, abs=1e-12)


def test_cka_is_not_invariant_to_a_general_invertible_linear_map():
    _, h, z, _ = random_layers(100)
    a = np.diag(np.geomspace(1e-2, 1e2, 12)) @ np.random.default_rng(2).standard_normal((12, 12))
    assert abs(np.linalg.det(a)) > 1e-8  # invertible
    changed = np.abs(all_estimators(h @ a, z) - all_estimators(h, z))
    assert (changed > 1e-2).all()
    assert (all_estimators(h @ a, h) < 0.99).all()


# ---------------------------------------------------------------- the accumulator


def test_all_pairs_equal_pair_by_pair():
    layers = random_layers(90)
    batches = batches_of(90, 32)
    joint = accumulate(layers, batches).result()
    for i, a in enumerate(layers):
        for j, b in enumerate(layers):
            pair = accumulate([a], batches, cols=[b]).result()
            assert joint.hsic_xy[i, j] == pytest.approx(pair.hsic_xy[0, 0], rel=1e-12, abs=1e-14)
            assert joint.cka()[i, j] == pytest.approx(pair.cka()[0, 0], abs=1e-12)


def test_cross_tile_equals_the_off_diagonal_block_of_joint_accumulation():
    layers = random_layers(120)
    group_a, group_b = layers[:3], layers[3:] + [np.sin(layers[1])]
    batches = batches_of(120, 30)
    joint = accumulate(group_a + group_b, batches, pc1=True).result()
    tile = accumulate(group_a, batches, cols=group_b, pc1=True).result()
    np.testing.assert_allclose(tile.hsic_xy, joint.hsic_xy[:3, 3:], rtol=1e-12)
    np.testing.assert_allclose(tile.hsic_xx, joint.hsic_xx[:3], rtol=1e-12)
    np.testing.assert_allclose(tile.hsic_yy, joint.hsic_yy[3:], rtol=1e-12)
    np.testing.assert_allclose(tile.cka(), joint.cka()[:3, 3:], atol=1e-12)
    np.testing.assert_allclose(tile.pc1_sum_x, joint.pc1_sum_x[:3], rtol=1e-12)
    np.testing.assert_allclose(tile.pc1_sum_y, joint.pc1_sum_y[3:], rtol=1e-12)


def test_combining_two_halves_of_a_run_equals_the_whole_run():
    layers = random_layers(200)
    batches = batches_of(200, 32) + batches_of(200, 32, seed=1)  # two passes
    half = len(batches) // 2
    whole = accumulate(layers, batches, pc1=True).result()
    first = accumulate(layers, batches[:half], pc1=True).result()
    second = accumulate(layers, batches[half:], pc1=True).result()
    for combined in (first + second, combine([first, second])):
        np.testing.assert_allclose(combined.hsic_xy, whole.hsic_xy, rtol=1e-12)
        np.testing.assert_allclose(combined.hsic_xx, whole.hsic_xx, rtol=1e-12)
        np.testing.assert_allclose(combined.pc1_fraction()[0], whole.pc1_fraction()[0], rtol=1e-12)
        assert (combined.n_batches, combined.n_examples, combined.n_skipped) == (
            whole.n_batches, whole.n_examples, whole.n_skipped)
    assert whole.n_examples == 400


def test_combining_results_over_different_layers_is_an_error():
    layers = random_layers(40)
    a = accumulate(layers[:2], batches_of(40, 20)).result()
    b = accumulate(layers[1:3], batches_of(40, 20), row_names=["h", "z"]).result()
    with pytest.raises(ValueError, match="different layers"):
        a + b


def test_minibatch_cka_approaches_full_batch_debiased_cka_as_batches_grow():
    rng = np.random.default_rng(0)
    n = 2048
    x = rng.standard_normal((n, 20))
    y = np.tanh(x @ rng.standard_normal((20, 30))) + 0.5 * rng.standard_normal((n, 30))
    full = linear_cka(x, y, debiased=True)
    rms_error = []
    for size in (8, 64, 512, n):  # one pass per seed; at size n it is the full batch
        errors = [accumulate([x], batches_of(n, size, seed), cols=[y]).result().cka()[0, 0] - full
                  for seed in range(5)]
        rms_error.append(np.sqrt(np.mean(np.square(errors))))
    assert rms_error[0] > rms_error[1] > rms_error[2] > rms_error[3]
    assert rms_error[3] < 1e-12


def test_batches_smaller_than_four_are_skipped_and_counted():
    layers = random_layers(11)
    acc = accumulate(layers, [np.arange(0, 4), np.arange(4, 8), np.arange(8, 11)])
    result = acc.result()
    assert (result.n_batches, result.n_examples, result.n_skipped) == (2, 8, 1)
    xy, _, _ = naive_minibatch_hsic(layers[0], layers[1], [np.arange(0, 4), np.arange(4, 8)])
    assert result.hsic_xy[0, 1] == pytest.approx(xy, rel=1e-10)
    only_short = accumulate(layers, [np.arange(MIN_BATCH - 1)]).result()
    assert (only_short.n_batches, only_short.n_skipped) == (0, 1)
    assert np.isnan(only_short.cka()).all()


def test_batches_of_unequal_sizes_are_each_accumulated_with_their_own_size():
    layers = random_layers(70)
    batches = np.split(np.random.default_rng(0).permutation(70), [32, 64])  # 32, 32, 6
    result = accumulate(layers, batches).result()
    assert (result.n_batches, result.n_examples, result.n_skipped) == (3, 70, 0)
    xy, _, _ = naive_minibatch_hsic(layers[1], layers[2], batches)
    assert result.hsic_xy[1, 2] == pytest.approx(xy, rel=1e-10)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("side", ["rows", "cols"])
def test_non_finite_activations_raise_an_error_naming_the_layer(bad, side):
    x, h, z, _ = random_layers(16)
    h = h.copy()
    h[5, 3] = bad
    rows, cols = ([x, h], [z]) if side == "rows" else ([x], [z, h])
    names = {"row_names": ["stem", "stage1.block0"] if side == "rows" else ["stem"],
             "col_names": ["logits"] if side == "rows" else ["logits", "stage1.block0"]}
    with pytest.raises(ValueError, match=r"non-finite.*stage1\.block0"):
        accumulate(rows, [np.arange(16)], cols=cols, **names)
    with pytest.raises(ValueError, match="non-finite"):
        linear_cka(x, h)


def test_a_batch_with_non_finite_activations_leaves_the_sums_unchanged():
    x, h, _, _ = random_layers(16)
    bad = h.copy()
    bad[10, 0] = np.nan  # in the second batch
    acc = accumulate([x, h], [np.arange(8)], pc1=True)
    before = acc.result()
    with pytest.raises(ValueError, match="row1"):
        acc.update([torch.from_numpy(x[8:]), torch.from_numpy(bad[8:])])
    after = acc.result()
    assert (after.n_batches, after.n_examples) == (before.n_batches, before.n_examples)
    np.testing.assert_array_equal(after.hsic_xy, before.hsic_xy)
    np.testing.assert_array_equal(after.pc1_sum_x, before.pc1_sum_x)


def test_a_constant_layer_gives_nan_not_a_crash():
    x, h, _, _ = random_layers(64)
    constant, zeros = np.full((64, 5), 3.7), np.zeros((64, 2, 2))
    result = accumulate([x, constant, h, zeros], batches_of(64, 16), pc1=True).result()
    cka = result.cka()
    assert np.isnan(cka[[1, 3], :]).all() and np.isnan(cka[:, [1, 3]]).all()
    assert np.isfinite(cka[np.ix_([0, 2], [0, 2])]).all()
    assert (result.hsic_xx[[1, 3]] == 0).all()
    assert np.isnan(result.pc1_fraction()[0][[1, 3]]).all()
    assert np.isnan(linear_cka(x, constant)) and np.isnan(linear_cka(zeros, h, debiased=True))


def test_first_pc_fraction_matches_numpy_svd_of_centred_data():
    layers = random_layers(96)
    batches = batches_of(96, 48)
    result = accumulate(layers, batches, pc1=True).result()
    for i, a in enumerate(layers):
        fractions = []
        for idx in batches:
            centred = a[idx].reshape(len(idx), -1) - a[idx].reshape(len(idx), -1).mean(axis=0)
            s = np.linalg.svd(centred, compute_uv=False)
            fractions.append(s[0] ** 2 / np.sum(s**2))
        assert result.pc1_fraction()[0][i] == pytest.approx(np.mean(fractions), rel=1e-9)


def test_float32_activations_with_a_large_offset_stay_close_to_float64():
    layers = [a.reshape(len(a), -1) + 1e3 for a in random_layers(256)]  # post-ReLU-like mean
    batches = batches_of(256, 64)
    exact = accumulate(layers, batches).result().cka()
    single = accumulate([a.astype(np.float32) for a in layers], batches).result()
    assert single.hsic_xy.dtype == np.float64
    np.testing.assert_allclose(single.cka(), exact, atol=1e-5)


def test_mixing_update_forms_or_layer_counts_is_an_error():
    x, h, z, _ = random_layers(8)
    t = [torch.from_numpy(a) for a in (x, h, z)]
    acc = CKAAccumulator()
    acc.update(t[:2])
    with pytest.raises(ValueError, match="one form"):
        acc.update(t[:2], t[2:])
    with pytest.raises(ValueError, match="got 3 layers, expected 2"):
        acc.update(t)
    with pytest.raises(ValueError, match="'row1' has 4 examples"):
        CKAAccumulator().update([t[0], t[1][:4]])
    with pytest.raises(ValueError, match="one form"):
        CKAAccumulator(col_names=["z"]).update(t[:2])


def test_accumulator_works_inside_and_outside_inference_mode():
    layers = [torch.from_numpy(a) for a in random_layers(24)]
    acc = CKAAccumulator()
    with torch.inference_mode():
        acc.update([t[:12] for t in layers])
    acc.update([t[12:] for t in layers])
    expected = accumulate([t.numpy() for t in layers], [np.arange(12), np.arange(12, 24)])
    np.testing.assert_allclose(acc.result().hsic_xy, expected.result().hsic_xy, rtol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_accumulation_matches_cpu():
    layers = random_layers(64)
    batches = batches_of(64, 32)
    cpu = accumulate(layers, batches).result()
    gpu = accumulate(layers, batches, device="cuda").result()
    np.testing.assert_allclose(gpu.hsic_xy, cpu.hsic_xy, rtol=1e-10)


# --------------------------------------------------------------- models, probe stream


class TinyNet(RepresentationModel):
    """A two-layer model of the model interface, with BatchNorm so eval vs train mode matters."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc1, self.bn, self.fc2 = nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)
        self.bn.running_mean.normal_()

    def forward_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = torch.relu(self.bn(self.fc1(x)))
        return [x, h, self.fc2(h)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_layers(x)[-1]

    def layer_info(self, input_shape: tuple[int, ...]) -> list[LayerInfo]:
        return [LayerInfo(i, name, name, 0, 0, d) for i, (name, d) in enumerate(
            [("input", input_shape[0]), ("hidden", 8), ("logits", 3)])]

    def inference_copy(self) -> TinyNet:
        return copy.deepcopy(self).eval()

    def residual_blocks(self) -> list[str]:
        return []

    def without_block(self, name: str) -> TinyNet:
        raise ValueError(f"TinyNet has no residual block {name!r}")


def test_minibatch_cka_runs_both_models_on_the_same_batches_in_eval_mode():
    a, b = TinyNet(0), TinyNet(1)
    x = torch.randn(100, 6, generator=torch.Generator().manual_seed(0))
    result = minibatch_cka(a, b, x, batch_size=32, passes=2, seed=3)
    assert a.training and b.training  # restored
    assert (result.n_batches, result.n_examples, result.n_skipped) == (8, 200, 0)
    acc = CKAAccumulator()
    a.eval(), b.eval()
    with torch.no_grad():
        for idx in stream_batches(100, batch_size=32, passes=2, seed=3):
            acc.update(a.forward_layers(x[idx]), b.forward_layers(x[idx]))
    np.testing.assert_allclose(result.hsic_xy, acc.result().hsic_xy, rtol=1e-12)
    assert result.cka()[0, 0] == pytest.approx(1.0)  # both see the same inputs
    within = minibatch_cka(a, a, x, batch_size=32, passes=1)
    np.testing.assert_allclose(np.diag(within.cka()), 1.0, atol=1e-6)


def test_minibatch_cka_of_resnets_runs_their_folded_copies_with_the_same_result():
    from repsweep.models import CifarResNet

    torch.manual_seed(0)
    a, b = CifarResNet(8, 1, in_channels=1), CifarResNet(14, 1, in_channels=1)
    for bn in (m for m in [*a.modules(), *b.modules()] if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.normal_(0.0, 0.5), bn.running_var.uniform_(0.5, 2.0)  # trained-like stats
    x = torch.randn(80, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    result = minibatch_cka(a, b, x, batch_size=32, passes=1)
    assert a.training and b.training  # the originals are untouched
    acc = CKAAccumulator()
    a.eval(), b.eval()
    with torch.no_grad():
        for idx in stream_batches(80, batch_size=32, passes=1):
            acc.update(a.forward_layers(x[idx]), b.forward_layers(x[idx]))
    np.testing.assert_allclose(result.cka(), acc.result().cka(), atol=1e-6)


def test_probe_stream_is_a_permutation_per_pass():
    batches = list(stream_batches(1000, batch_size=256, passes=3, seed=7))
    assert [len(b) for b in batches] == [250, 250, 250, 250] * 3  # equal batches, not 256 x 3 + 232
    passes = [torch.cat(batches[i : i + 4]) for i in range(0, 12, 4)]
    for p in passes:
        assert p.dtype == torch.int64
        assert torch.equal(p.sort().values, torch.arange(1000))
    assert not torch.equal(passes[0], passes[1])  # each pass is shuffled anew


@pytest.mark.parametrize("n, sizes", [(360, [180, 180]), (1000, [250] * 4), (10000, [250] * 40), (200, [200])])
def test_a_pass_is_cut_into_the_fewest_equal_batches(n, sizes):
    assert batch_sizes(n, 256) == sizes
    assert [len(b) for b in stream_batches(n, batch_size=256, passes=1)] == sizes


def test_batch_sizes_differ_by_at_most_one_and_never_exceed_the_limit():
    for n in range(1, 400):
        for limit in (8, 9, 64, 256):
            sizes = batch_sizes(n, limit)
            assert sum(sizes) == n and max(sizes) <= limit and max(sizes) - min(sizes) <= 1
            assert len(sizes) == -(-n // limit)  # the fewest batches
            assert n < 4 or min(sizes) >= 4  # every batch usable by the estimator (limit >= 8)


def test_probe_stream_is_seeded_and_identical_across_calls():
    def stream(seed):
        return torch.cat(list(stream_batches(500, batch_size=64, passes=2, seed=seed)))

    assert torch.equal(stream(0), stream(0))
    assert not torch.equal(stream(0), stream(1))
    first_pass = torch.cat(list(stream_batches(500, batch_size=64, passes=1, seed=0)))
    assert torch.equal(stream(0)[:500], first_pass)  # pass p depends on (seed, p) only


@pytest.mark.parametrize("field, value", [("n_examples", 0), ("batch_size", 0),
                                          ("passes", -1), ("seed", -3), ("batch_size", 2.5)])
def test_probe_stream_rejects_invalid_arguments(field, value):
    kwargs = {"n_examples": 10, "batch_size": 4, "passes": 1, "seed": 0, field: value}
    with pytest.raises(ValueError, match=field):
        next(stream_batches(kwargs.pop("n_examples"), **kwargs))

"""Benchmark the CKA engine against a pair-by-pair baseline and two published CKA libraries.

    .venv/bin/python benchmarks/cka_bench.py                 # CPU, all cores
    .venv/bin/python benchmarks/cka_bench.py --device cuda   # on a GPU machine

Workload: two randomly initialised CIFAR ResNets of the project's family (depth 20 and
depth 32, width 1; 12 and 18 captured layers: stem, every block, pooled features, logits),
2,048 probe images of 3x32x32 (seeded Gaussian noise), minibatches of 256, one pass (8
batches), every layer of one model against every layer of the other.

Implementations, all fed the same batches in the same order:
  repsweep      analysis.engine.cka.minibatch_cka: one Gram per layer, one matmul per batch; the
                ResNets run as their inference copies (BatchNorm folded, channels_last),
                as in the comparison stage
  repsweep, unfolded models   the same engine on the models as given
  pair-by-pair  the same estimator written plainly below: both Grams rebuilt for every pair
  pytorch-cka   PyPI pytorch-cka 1.1.3, cka.compute_cka (minibatch, unbiased HSIC); also
                fed float64 copies of the activations, its cheapest accurate configuration
  torch-cka     PyPI torch-cka 0.21, torch_cka.CKA.compare (minibatch, unbiased HSIC)
The peers are installed in benchmarks/.peers, outside repsweep's dependencies (see
benchmarks/README.md); they capture layers with forward hooks, so each model is wrapped in
`Taps`, whose identity modules emit exactly the tensors of `forward_layers`.

Timed per implementation: end to end (forward passes included, float32, best of
--repeats rounds run round-robin; a run over 20 s is timed once) and CKA math only (the
same code run on `Replay` models that return pre-captured activations, so the forward pass
costs nothing). Accuracy: every implementation is run once more in float64 (models, inputs
and torch's default dtype) and its CKA matrix compared with repsweep's float64 one; the
float32 runs are compared too.

A second workload (--models M [M ...], default 4 8; 0 skips it) times every pair of M ResNet-20s,
within-model included: one repsweep accumulation of all layers against one pytorch-cka run
per model pair, the way a sweep's all-pairs comparison would have to use it.

Writes nothing; prints markdown tables (pasted into benchmarks/RESULTS.md), progress on
stderr. Cost on the 2-core CPU: about 17 minutes, most of it the pair-by-pair baseline,
torch-cka (their float64 runs included) and pytorch-cka on 8 models.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")  # the peers import matplotlib.pyplot
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "benchmarks" / ".peers"))  # after the venv: peers never shadow it

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from repsweep.analysis.engine.cka import CKAAccumulator, minibatch_cka  # noqa: E402
from repsweep.analysis.engine.stream import stream_batches  # noqa: E402
from repsweep.models import CifarResNet  # noqa: E402

# ------------------------------------------------------------------ models as the peers see them


class Tapped(nn.Module):
    """A model whose `forward_layers(x)[i]` passes through the identity module `taps.<i>`,
    where the peers' forward hooks capture it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_layers(x)[-1]

    def layer_names(self) -> list[str]:
        return [f"taps.{i}" for i in range(len(self.taps))]


class Taps(Tapped):
    """Wrap a model's `forward_layers`; with `dtype`, the taps emit copies in that dtype."""

    def __init__(self, model: nn.Module, n_layers: int, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype
        self.taps = nn.ModuleList(nn.Identity() for _ in range(n_layers))
        self.train(model.training)  # restoring the wrapper's mode must not flip the model's

    def forward_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = self.model.forward_layers(x)
        return [tap(out if self.dtype is None else out.to(self.dtype))
                for tap, out in zip(self.taps, outs)]


class Replay(Tapped):
    """A stand-in model returning pre-captured activations batch after batch (math-only timing)."""

    def __init__(self, captured: list[list[torch.Tensor]]) -> None:
        super().__init__()
        self.captured = captured
        self.taps = nn.ModuleList(nn.Identity() for _ in range(len(captured[0])))
        self._next: Iterator[list[torch.Tensor]] = iter(captured)

    def rewind(self) -> Replay:
        self._next = iter(self.captured)
        return self

    def forward_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [tap(out) for tap, out in zip(self.taps, next(self._next))]


# ------------------------------------------------------------------------------ implementations


def run_repsweep(a, b, x, batch_size, device):
    """The engine on the models themselves: ResNets run as their folded inference copies."""
    a, b = (getattr(m, "model", m) for m in (a, b))  # unwrap Taps; a Replay stays as it is
    return minibatch_cka(a, b, x, batch_size=batch_size, passes=1, seed=0, device=device).cka()


def run_repsweep_unfolded(a, b, x, batch_size, device):
    """The engine on the models as given (the Taps wrappers offer no inference copy)."""
    return minibatch_cka(a, b, x, batch_size=batch_size, passes=1, seed=0, device=device).cka()


def hsic1(k: torch.Tensor, l: torch.Tensor) -> float:
    """Song et al. 2012 unbiased HSIC of two Grams, term by term, in float64."""
    n = k.shape[0]
    k, l = k.double(), l.double()
    k, l = k - torch.diag(torch.diag(k)), l - torch.diag(torch.diag(l))  # K~, L~
    value = ((k * l).sum() + k.sum() * l.sum() / ((n - 1) * (n - 2))
             - 2.0 / (n - 2) * (k.sum(dim=0) @ l.sum(dim=1)))  # tr(K~L~) = sum(K~ * L~)
    return float(value) / (n * (n - 3))


def run_pair_by_pair(a, b, x, batch_size, device):
    """Baseline: the same estimator, one layer pair at a time, Grams rebuilt for every pair."""
    xy = xx = yy = None
    with torch.inference_mode():
        for idx in stream_batches(len(x), batch_size=batch_size, passes=1, seed=0):
            batch = x[idx].to(device)
            feats_a, feats_b = a.forward_layers(batch), b.forward_layers(batch)
            if xy is None:
                xy = np.zeros((len(feats_a), len(feats_b)))
                xx, yy = np.zeros(len(feats_a)), np.zeros(len(feats_b))
            for i, fa in enumerate(feats_a):
                for j, fb in enumerate(feats_b):
                    fa2, fb2 = fa.flatten(1), fb.flatten(1)  # (n, d_a), (n, d_b)
                    k, l = fa2 @ fa2.T, fb2 @ fb2.T
                    xy[i, j] += hsic1(k, l)
                    if j == 0:
                        xx[i] += hsic1(k, k)
                    if i == 0:
                        yy[j] += hsic1(l, l)
    return xy / np.sqrt(np.outer(xx, yy))


def peer_loader(x: torch.Tensor, batch_size: int) -> DataLoader:
    """The probe stream's batches, in order, as a DataLoader (what the peers consume)."""
    order = torch.cat(list(stream_batches(len(x), batch_size=batch_size, passes=1, seed=0)))
    return DataLoader(TensorDataset(x[order]), batch_size=batch_size, shuffle=False)


def run_pytorch_cka(a, b, x, batch_size, device):
    import cka  # pytorch-cka 1.1.3

    loader = peer_loader(x, batch_size)
    matrices = cka.compute_cka(a, b, loader, layers=a.layer_names(),
                               model2_layers=b.layer_names(), device=device, progress=False)
    return matrices[0].cpu().double().numpy()


def run_pytorch_cka_float64(a, b, x, batch_size, device):
    """pytorch-cka fed float64 activations with float64 sums: its cheapest configuration whose
    CKA is within 1e-6 (its float32 formula is off by up to 0.15, see RESULTS.md)."""
    with default_dtype(torch.float64):
        a, b = (Taps(m, len(m.taps), torch.float64) for m in (a, b))
        return run_pytorch_cka(a, b, x, batch_size, device)


def run_torch_cka(a, b, x, batch_size, device):
    import torch_cka  # torch-cka 0.21

    loader = peer_loader(x, batch_size)
    runner = torch_cka.CKA(a, b, model1_name="model_a", model2_name="model_b",
                           model1_layers=a.layer_names(), model2_layers=b.layer_names(),
                           device=str(device))
    runner.compare(loader, loader)
    return runner.export()["CKA"].cpu().double().numpy()


IMPLEMENTATIONS: dict[str, tuple[str, Callable]] = {  # name: (estimator as computed, run)
    "repsweep": ("minibatch, unbiased HSIC as <U(K), U(L)>; Grams in the features' dtype "
                 "after a shift; U-centring and sums float64", run_repsweep),
    "repsweep, unfolded models": ("the same, on the models as given: forward passes with "
                                  "BatchNorm, NCHW", run_repsweep_unfolded),
    "pair-by-pair": ("minibatch, unbiased HSIC term by term; Grams in the features' dtype, "
                     "formula and sums float64", run_pair_by_pair),
    "pytorch-cka 1.1.3": ("minibatch, unbiased HSIC term by term on stacked Grams; formula "
                          "and sums in the features' dtype; clamped to [0, 1]", run_pytorch_cka),
    "pytorch-cka 1.1.3, float64 activations": ("the same, fed float64 copies of the float32 "
                                               "activations, sums float64",
                                               run_pytorch_cka_float64),
    "torch-cka 0.21": ("minibatch, unbiased HSIC term by term (tr(KL) by an n^3 matmul, "
                       "column Grams rebuilt per row layer); formula and sums in the "
                       "features' dtype", run_torch_cka),
}


# ------------------------------------------------------------------------------------ harness


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def default_dtype(dtype: torch.dtype):
    """The peers allocate their sums with torch.zeros(...): run them in the dtype under test."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def timed(fn: Callable, device: torch.device) -> tuple[float, np.ndarray]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def capture(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device):
    with torch.inference_mode():
        return [[t.clone() for t in model.forward_layers(x[idx].to(device))]
                for idx in stream_batches(len(x), batch_size=batch_size, passes=1, seed=0)]


SLOW_S = 20.0  # seconds; slower implementations are timed once


def timed_rounds(runs: dict[str, Callable], repeats: int) -> tuple[dict, dict]:
    """Run each implementation round-robin (fair under a varying machine load); one that
    takes over SLOW_S seconds is timed once. Returns the best (least disturbed) seconds,
    as timeit does, and the last outputs."""
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    outputs = {}
    for round_ in range(repeats):
        for name, run in runs.items():
            if round_ > 0 and seconds[name][0] > SLOW_S:
                continue
            print(f"  {name}: round {round_ + 1}", file=sys.stderr)
            took, outputs[name] = run()
            seconds[name].append(took)
    return {name: min(s) for name, s in seconds.items()}, outputs


def two_model_workload(args, device: torch.device) -> None:
    """ResNet-20 vs ResNet-32: every implementation, timed and checked against repsweep."""
    torch.manual_seed(0)
    model_a = CifarResNet(20, 1).eval().to(device)
    torch.manual_seed(1)
    model_b = CifarResNet(32, 1).eval().to(device)
    info_a, info_b = model_a.layer_info((3, 32, 32)), model_b.layer_info((3, 32, 32))
    n_a, n_b = len(info_a), len(info_b)
    gram_gflop = 2 * args.batch_size**2 * sum(i.dim for i in info_a + info_b) / 1e9  # 2 n^2 sum d
    x = torch.randn(args.examples, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    impls = {name: spec for name, spec in IMPLEMENTATIONS.items() if name not in args.skip}

    def end_to_end(run, models, inputs, dtype):
        def go():
            wrapped = [Taps(m, k) for m, k in zip(models, (n_a, n_b))]
            with default_dtype(dtype):
                return timed(lambda: run(*wrapped, inputs, args.batch_size, device), device)
        return go

    def math_only(run, replays):
        def go():
            with default_dtype(torch.float32):
                return timed(lambda: run(*[r.rewind() for r in replays], x, args.batch_size,
                                          device), device)
        return go

    def forward_only(models):
        def go():
            with torch.inference_mode():
                for idx in stream_batches(len(x), batch_size=args.batch_size, passes=1, seed=0):
                    batch = x[idx].to(device)
                    models[0].forward_layers(batch), models[1].forward_layers(batch)
        return lambda: timed(go, device)

    folded = [m.inference_copy() for m in (model_a, model_b)]

    print("end to end, float32:", file=sys.stderr)
    e2e, cka32 = timed_rounds({"forward passes only": forward_only((model_a, model_b)),
                               "forward passes only, folded": forward_only(folded)}
                              | {name: end_to_end(run, (model_a, model_b), x, torch.float32)
                                 for name, (_, run) in impls.items()}, args.repeats)
    print("math only (replayed activations), float32:", file=sys.stderr)
    replays = [Replay(capture(m, x, args.batch_size, device)) for m in (model_a, model_b)]
    math_s, _ = timed_rounds({name: math_only(run, replays) for name, (_, run) in impls.items()},
                             args.repeats)
    del replays
    print("accuracy, float64:", file=sys.stderr)
    models64 = [copy.deepcopy(m).double() for m in (model_a, model_b)]
    _, cka64 = timed_rounds({name: end_to_end(run, models64, x.double(), torch.float64)
                             for name, (_, run) in impls.items()}, 1)

    reference = cka64["repsweep"]
    print(f"\n### Two models: ResNet-20x1 ({n_a} layers) vs ResNet-32x1 ({n_b} layers)\n")
    print(f"{args.examples} probe images 3x32x32 (seeded Gaussian noise), batch "
          f"{args.batch_size}, 1 pass ({-(-args.examples // args.batch_size)} batches), "
          f"random init, "
          f"eval mode. Forward passes alone (both models, inference mode, timed in the same "
          f"rounds): {e2e['forward passes only']:.2f} s as given, "
          f"{e2e['forward passes only, folded']:.2f} s as folded inference copies. "
          f"Grams of both models: {gram_gflop:.1f} GFLOP per batch (2 n^2 sum_l d_l). "
          f"repsweep float64 CKA: min {np.nanmin(reference):.4f}, max "
          f"{np.nanmax(reference):.4f}, mean {np.nanmean(reference):.4f}.\n")
    print("| implementation | estimator | end-to-end s | math-only s | repsweep faster by "
          "(end-to-end / math) | max abs CKA diff vs repsweep, float64 runs | same, float32 "
          "runs (vs repsweep float64) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, (estimator, _) in impls.items():
        ratio = ("-" if name == "repsweep" else
                 f"{e2e[name] / e2e['repsweep']:.1f}x / {math_s[name] / math_s['repsweep']:.1f}x")
        print(f"| {name} | {estimator} | {e2e[name]:.2f} | {math_s[name]:.2f} | {ratio} | "
              f"{np.abs(cka64[name] - reference).max():.1e} | "
              f"{np.abs(cka32[name] - reference).max():.1e} |")


def all_pairs_workload(args, n_models: int, device: torch.device) -> None:
    """M ResNet-20s, every pair of models (within-model included): one repsweep accumulation
    of all M x 12 layers against one pytorch-cka run per model pair."""
    models = []
    for seed in range(n_models):
        torch.manual_seed(seed)
        models.append(CifarResNet(20, 1).eval().to(device))
    n_layers = len(models[0].layer_info((3, 32, 32)))
    x = torch.randn(args.examples, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def repsweep_all():  # what a diagonal tile of the comparison stage does
        folded = [m.inference_copy() for m in models]
        acc = CKAAccumulator()
        with torch.inference_mode():
            for idx in stream_batches(len(x), batch_size=args.batch_size, passes=1, seed=0):
                batch = x[idx].to(device)
                acc.update([t for m in folded for t in m.forward_layers(batch)])
        return acc.result().cka()  # (M L, M L)

    def pytorch_cka_all():
        out = np.zeros((len(models) * n_layers,) * 2)
        wrapped = [Taps(m, n_layers) for m in models]
        for i in range(len(models)):
            for j in range(i, len(models)):
                block = run_pytorch_cka(wrapped[i], wrapped[j], x, args.batch_size, device)
                out[i * n_layers:(i + 1) * n_layers, j * n_layers:(j + 1) * n_layers] = block
                out[j * n_layers:(j + 1) * n_layers, i * n_layers:(i + 1) * n_layers] = block.T
        return out

    print(f"all pairs of {n_models} models:", file=sys.stderr)
    seconds, outputs = timed_rounds(
        {"repsweep": lambda: timed(repsweep_all, device),
         "pytorch-cka 1.1.3": lambda: timed(pytorch_cka_all, device)}, args.repeats)
    pairs = n_models * (n_models + 1) // 2
    print(f"\n### All pairs of {n_models} ResNet-20x1 models (seeds 0-{n_models - 1}), "
          f"within-model included\n")
    print(f"Same probe set and batches; float32. repsweep: one accumulation of all "
          f"{n_models * n_layers} layers (one forward per model per batch); pytorch-cka: "
          f"one compute_cka per model pair ({pairs} runs).\n")
    print("| implementation | end-to-end s | repsweep faster by | max abs CKA diff vs repsweep "
          "(float32 runs) |")
    print("| --- | ---: | ---: | ---: |")
    for name, took in seconds.items():
        ratio = "-" if name == "repsweep" else f"{took / seconds['repsweep']:.1f}x"
        diff = np.abs(outputs[name] - outputs["repsweep"]).max()
        print(f"| {name} | {took:.2f} | {ratio} | {diff:.1e} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--examples", type=int, default=2048, help="probe images (default 2048)")
    parser.add_argument("--batch-size", type=int, default=256, help="examples per minibatch")
    parser.add_argument("--repeats", type=int, default=3,
                        help=f"timed rounds, best reported (runs over {SLOW_S:.0f} s: once)")
    parser.add_argument("--models", type=int, nargs="+", default=[4, 8],
                        help="models in the all-pairs workload (0: skip it)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--skip", nargs="*", default=[], choices=list(IMPLEMENTATIONS)[1:],
                        help="implementations to leave out of the two-model workload")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    try:  # import the peers (and matplotlib) outside the timed regions
        import cka  # noqa: F401  pytorch-cka
        import torch_cka  # noqa: F401
    except ImportError as e:
        raise SystemExit(f"{e}: install the peers into benchmarks/.peers first, "
                         "see benchmarks/README.md") from e
    print(f"{datetime.date.today()}, {cpu_name()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, Python {platform.python_version()}, device {device}, "
          f"load average before the run {os.getloadavg()[0]:.2f}")
    two_model_workload(args, device)
    for n_models in filter(None, args.models):
        all_pairs_workload(args, n_models, device)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
    return platform.processor()


if __name__ == "__main__":
    main()

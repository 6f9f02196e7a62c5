"""How the comparison stage's time grows with the number of models, against DESIGN.md's cost model.

    .venv/bin/python benchmarks/compare_scaling.py [--models 2 4 8 16] [--depth 20] [--width 1]
                                                   [--passes 2] [--device cpu|cuda]

For N models of one size (randomly initialised CIFAR ResNets on digits-shaped 1x8x8 inputs,
360 probe examples = the digits test set, batch 256), it saves N checkpoints to a temporary
sweep and times the real path, `orchestrator.comparison.tiles.run_tile`, on one diagonal tile holding
all N models (every layer pair of every model pair), plus the forward passes alone. It prints
a markdown table: measured seconds, and the cost model's FLOPs per term,

    forward  = model FLOPs x examples streamed
    grams    = 2 n^2 sum_l d_l per batch      (each layer's Gram, once)
    product  = 2 R^2 n^2 per batch            (S += G G', R = layers of all models)

with a predicted time from one rate fitted on the largest N's CKA-math time. Writes nothing
outside a temp dir. Cost: about a minute on 2 CPU cores for the default sizes. Needs no Ray.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from repsweep.analysis.engine.stream import stream_batches
from repsweep.analysis.tables.store import SweepStore
from repsweep.models import count_flops, model_bytes, model_from_bytes
from repsweep.orchestrator.comparison.plan import Tile
from repsweep.orchestrator.training.data import load_dataset
from repsweep.orchestrator.grid import expand_grid
from repsweep.orchestrator.spec import CompareSpec, DatasetSpec, GridSpec, SweepSpec
from repsweep.orchestrator.comparison.tiles import run_tile
from repsweep.orchestrator.training.train import build


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, nargs="+", default=[2, 4, 8, 16])
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--width", type=int, default=1)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="timings are the minimum of this many runs")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    dataset = DatasetSpec("digits")
    data = load_dataset(dataset)
    compare = CompareSpec(batch_size=256, passes=args.passes)
    n_max = max(args.models)
    spec = SweepSpec(name="bench", grid=GridSpec(depth=[args.depth], width=[args.width], seed=list(range(n_max))))
    trials = expand_grid(spec)

    with tempfile.TemporaryDirectory() as tmp:
        store = SweepStore(f"{tmp}/bench")
        for t in trials:
            model = build(t, data, len(data.x_train), torch.device("cpu"))[0]
            config = t.model_config(data.input_shape[0], data.num_classes)
            store.write_bytes(model_bytes(model, config, data.input_shape, {"trial": t.to_dict()}),
                              "checkpoints", f"{t.trial_id}.pt")
        model = build(trials[0], data, len(data.x_train), torch.device("cpu"))[0]
        info = model.layer_info(data.input_shape)
        flops_per_example = count_flops(model, data.input_shape)
        batches = [len(i) for i in stream_batches(len(data.x_test), batch_size=256, passes=args.passes)]
        rows = []
        for n_models in args.models:
            ids = tuple(t.trial_id for t in trials[:n_models])
            tile = Tile(f"bench-{n_models}", ids, ids, ())
            run_tile(tile, store.uri, compare, dataset, device)  # warm-up: allocator, kernels
            total = min(_timed(run_tile, tile, store.uri, compare, dataset, device) for _ in range(args.repeat))
            fwd = min(_forward_only(store, ids, data.x_test.to(device), batches, device)
                      for _ in range(args.repeat))
            r = n_models * len(info)
            rows.append({
                "models": n_models, "layers R": r, "total s": total, "forward s": fwd, "cka math s": total - fwd,
                "forward GFLOP": flops_per_example * sum(batches) * n_models / 1e9,
                "grams GFLOP": sum(2 * b * b * sum(i.dim for i in info) * n_models for b in batches) / 1e9,
                "product GFLOP": sum(2 * r * r * b * b for b in batches) / 1e9})
    rate = (rows[-1]["grams GFLOP"] + rows[-1]["product GFLOP"]) / rows[-1]["cka math s"]  # GFLOP/s
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"ResNet-{args.depth}x{args.width}, {len(info)} layers each, {sum(batches)} examples streamed "
          f"({args.passes} passes, batch 256); fitted CKA-math rate {rate:.1f} GFLOP/s\n")
    cols = list(rows[0]) + ["model s (grams+product)"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        r["model s (grams+product)"] = (r["grams GFLOP"] + r["product GFLOP"]) / rate
        print("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in r.values()) + " |")


def _timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _forward_only(store: SweepStore, ids: tuple[str, ...], x: torch.Tensor, batches: list[int],
                  device: torch.device) -> float:
    """Seconds for the tile's forward passes alone (the same inference copies and batch sizes)."""
    models = [model_from_bytes(store.read_bytes("checkpoints", f"{t}.pt"), t)[0].inference_copy().to(device)
              for t in ids]
    with torch.inference_mode():
        for m in models:  # warm-up
            m.forward_layers(x[:batches[0]])
    t0 = time.perf_counter()
    with torch.inference_mode():
        for b in batches:
            for m in models:
                m.forward_layers(x[:b])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()

"""Benchmark the streaming image-folder loader against a plain torchvision ImageFolder + DataLoader loop.

    .venv/bin/python benchmarks/loader_bench.py [--images 1536] [--workers N]

Workload: a generated image folder in a temp dir (10 classes of JPEG photos-like noise at
--side x 3/4 --side pixels, quality 90), read once per measurement in batches of 64 through
the ImageNet recipe at 224 px. Three loops, side by side in one run, each with the same
number of worker processes:

- repsweep: `batches(dataset.x_train.augmented(seed), ...)` (`orchestrator/training/imagefolder.py`:
  random-resized crop in the workers, uint8 batches, standardised on the device, here the CPU)
  and the test recipe (resize, centre crop);
- baseline: `torchvision.datasets.ImageFolder` with RandomResizedCrop, RandomHorizontalFlip,
  ToTensor and Normalize per image in the workers, `DataLoader(shuffle=True)`;
- limit: one process decoding and cropping the same files with no loader at all (the
  per-core rate), times the workers: what the cores can decode, the loop's ceiling.

Prints images per second (median of --repeats passes, after one warm-up pass).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import numpy as np
import torch
from PIL import Image

from repsweep.analysis.engine.stream import batches, in_order
from repsweep.orchestrator.training import imagefolder
from repsweep.orchestrator.training.data import load_dataset
from repsweep.orchestrator.spec import DatasetSpec

SIZE = 224
BATCH = 64


def write_folder(root: str, n: int, side: int) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("test", 10)):
        for i in range(count):
            c = i % 10
            os.makedirs(os.path.join(root, split, f"c{c}"), exist_ok=True)
            base = rng.integers(0, 255, (side * 3 // 4 // 8, side // 8, 3), dtype=np.uint8)
            img = Image.fromarray(base).resize((side, side * 3 // 4), Image.BICUBIC)  # smooth, photo-like
            img.save(os.path.join(root, split, f"c{c}", f"{i}.jpg"), quality=90)


def timed(run, repeats: int, n: int) -> float:
    run()  # warm-up: the page cache, the workers' imports
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return n / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1536)
    ap.add_argument("--side", type=int, default=400, help="width of the generated images (height 3/4 of it)")
    ap.add_argument("--workers", type=int, default=imagefolder.loader_workers())
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    imagefolder.loader_workers = lambda: args.workers  # the same worker count for every loop
    from torchvision import datasets
    from torchvision.transforms import v2

    with tempfile.TemporaryDirectory() as root:
        write_folder(root, args.images, args.side)
        data = load_dataset(DatasetSpec("imagefolder", root=root, image_size=SIZE))
        order = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(0))
        index_batches = list(order.split(BATCH))

        def ours_train() -> None:
            for _ in batches(data.x_train.augmented(1), index_batches):
                pass

        def ours_test() -> None:
            for _ in batches(data.x_train, in_order(len(data.x_train), BATCH)):
                pass

        plain = datasets.ImageFolder(os.path.join(root, "train"), transform=v2.Compose([
            v2.RandomResizedCrop(SIZE, antialias=True), v2.RandomHorizontalFlip(), v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True), v2.Normalize(data.x_train.mean, data.x_train.std)]))

        def baseline() -> None:
            loader = torch.utils.data.DataLoader(plain, batch_size=BATCH, shuffle=True, num_workers=args.workers)
            for _ in loader:
                pass

        files = list(data.x_train.files)

        def one_core() -> None:
            for i, f in enumerate(files[:256]):
                imagefolder._decode(f, SIZE, True, i)

        n = len(files)
        rates = {"repsweep, training recipe": timed(ours_train, args.repeats, n),
                 "repsweep, test recipe": timed(ours_test, args.repeats, n),
                 "baseline: ImageFolder + DataLoader": timed(baseline, args.repeats, n)}
        per_core = timed(one_core, args.repeats, 256)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; "
          f"{n} JPEGs of {args.side}x{args.side * 3 // 4} -> {SIZE} px, batch {BATCH}, {args.workers} workers")
    print(f"{'loop':40s} {'images/s':>9s}")
    for name, rate in rates.items():
        print(f"{name:40s} {rate:9.0f}")
    print(f"{'limit: one core x ' + str(args.workers) + ' workers':40s} {per_core * args.workers:9.0f}  "
          f"(one core, no loader: {per_core:.0f})")


if __name__ == "__main__":
    main()

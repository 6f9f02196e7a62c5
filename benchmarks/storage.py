"""Storage round trips: an S3 bucket (moto's server on loopback) against a local folder, side by side.

    .venv/bin/python benchmarks/storage.py [--repeat 20] [--rows 5000] [--parts 20] [--sweep]

Through `SweepStore`, as the sweep uses it, on both stores in one run: opening the store (for
S3: the bucket probe), put and get of a small object (a spec.yaml), write and read of one
table part (`--rows` predictions rows), listing a table of `--parts` parts, and reading the
whole table. Each is timed `--repeat` times; the table shows the median and the fastest, in
milliseconds. `--sweep` also times `repsweep run` and `repsweep resume` of the tiny sweep of
tests/test_object_storage.py (2 digits models, 1 epoch; local Ray, about 2-3 minutes for both
stores). Needs moto[server] (a dev extra). Writes only into a temp dir and the server's memory.

moto's server is a single Python process: its per-request cost (milliseconds) stands for the
request overhead of an S3-compatible store, not for S3's own latency (tens of ms per request).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import yaml

from repsweep.analysis.tables.store import SweepStore

SPEC = {"name": "tiny", "dataset": {"name": "digits"},
        "grid": {"depth": [8], "width": [1], "data_fraction": [1.0], "seed": [0, 1]},
        "training": {"epochs": 1, "warmup_epochs": 0},
        "compare": {"passes": 1, "probes": False, "deletion": False, "max_actors": 1}}


def start_moto() -> tuple[subprocess.Popen, str]:
    """moto's S3 server on a free loopback port; the process and its endpoint URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto's server did not start")


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median and fastest wall time of fn() in milliseconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), min(times)


def round_trips(location: str, *, repeat: int, rows: int, parts: int) -> dict[str, tuple[float, float]]:
    """The timings of one store (see the module docstring)."""
    store = SweepStore(location)
    spec = yaml.safe_dump(SPEC, sort_keys=False).encode()
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"trial_id": "t", "example": np.arange(rows), "label": rng.integers(0, 10, rows),
                          "prediction": rng.integers(0, 10, rows), "correct": rng.random(rows) < 0.9,
                          "confidence": rng.random(rows).astype("float32")})
    for i in range(parts):
        store.write_part("predictions", f"part-{i:03d}", frame.assign(trial_id=f"t{i}"))
    out = {"open the store": timed(lambda: SweepStore(location), repeat),
           "put spec.yaml": timed(lambda: store.write_bytes(spec, "spec.yaml"), repeat),
           "get spec.yaml": timed(lambda: store.read_bytes("spec.yaml"), repeat),
           f"write a part ({rows:,} rows)": timed(lambda: store.write_part("predictions", "part-000", frame), repeat),
           f"read a part ({rows:,} rows)": timed(lambda: store.read_part("predictions", "part-000"), repeat),
           f"list a table ({parts} parts)": timed(lambda: store.part_keys("predictions"), repeat),
           f"read a table ({parts} parts)": timed(lambda: store.read_table("predictions"), max(1, repeat // 4))}
    return out


def sweep_times(storage: str, tmp: Path) -> dict[str, float | str]:
    """Wall seconds of `repsweep run` and `repsweep resume` of the tiny sweep stored at `storage`,
    and the rows of its tables after both."""
    from repsweep.orchestrator.cli import main

    spec_file = tmp / f"spec-{abs(hash(storage))}.yaml"
    spec_file.write_text(yaml.safe_dump({**SPEC, "storage": storage}, sort_keys=False))
    out = {}
    for argv in (["run", str(spec_file)], ["resume", f"{storage}/tiny"]):
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # its report lines: stdout keeps the tables
            rc = main(argv)
        if rc != 0:
            raise SystemExit(f"repsweep {' '.join(argv)} failed")
        out[f"repsweep {argv[0]}, s"] = time.perf_counter() - t0
    store = SweepStore(f"{storage}/tiny")
    tables = ("trials", "predictions", "layers", "cka", "pca", "tiles")
    out[f"rows of {', '.join(tables)}"] = " / ".join(str(len(store.read_table(t))) for t in tables)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--parts", type=int, default=20)
    ap.add_argument("--sweep", action="store_true", help="also time the tiny sweep's run and resume")
    args = ap.parse_args()
    proc, endpoint = start_moto()
    try:
        # the S3 store as a user would set it: the environment; nothing reaches AWS itself
        os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                          AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
        pafs.S3FileSystem(endpoint_override=endpoint.split("://")[1], scheme="http",
                          allow_bucket_creation=True).create_dir("bench")
        with tempfile.TemporaryDirectory() as tmp:
            local = round_trips(f"{tmp}/local", repeat=args.repeat, rows=args.rows, parts=args.parts)
            s3 = round_trips("s3://bench/store", repeat=args.repeat, rows=args.rows, parts=args.parts)
            load = os.getloadavg()[0]
            print(f"{platform.node()}: {os.cpu_count()} cores, load {load:.1f}; pyarrow {version('pyarrow')}, "
                  f"moto {version('moto')}; median (fastest) of {args.repeat} runs, ms\n")
            print("| operation | local folder | S3 (moto, loopback) | S3 / local |\n|---|---|---|---|")
            for op, (lm, lf) in local.items():
                sm, sf = s3[op]
                print(f"| {op} | {lm:.2f} ({lf:.2f}) | {sm:.2f} ({sf:.2f}) | {sm / lm:.1f}x |")
            if args.sweep:
                import ray

                # a local Ray of its own (2 CPUs, own temp dir), started inside the S3 environment
                ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
                         _temp_dir=tempfile.mkdtemp(prefix="rs-bench-", dir="/tmp"))
                try:
                    local_s = sweep_times(f"{tmp}/sweeps", Path(tmp))
                    s3_s = sweep_times("s3://bench/sweeps", Path(tmp))
                finally:
                    ray.shutdown()
                print("\n| tiny sweep (2 models, 1 epoch) | local folder | S3 (moto) |\n|---|---|---|")
                for k, v in local_s.items():
                    print(f"| {k} | {v:.1f} | {s3_s[k]:.1f} |" if isinstance(v, float) else f"| {k} | {v} | {s3_s[k]} |")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()

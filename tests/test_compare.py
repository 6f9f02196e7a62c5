"""The comparison stage: planned pairs and rows, idempotent tiles, kills, failures, two nodes."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from repsweep.analysis.engine.cka import FLOAT32_CKA_ATOL
from repsweep.analysis.tables.store import SweepStore
from repsweep.orchestrator.cli import main
from repsweep.orchestrator.comparison.plan import plan_comparison, select_pairs
from repsweep.orchestrator.comparison.tiles import run_tile
from repsweep.orchestrator.training.sweep import load_sweep
from tests.conftest import cli_env, copy_sweep, kill_cli_when, local_cluster, table_rows

pytestmark = pytest.mark.timeout(300)


def _set_compare(sweep: Path, **fields) -> None:
    """Make a copied sweep one begun with other compare settings (e.g. smaller tiles): its spec and the
    copy it began with both say so (an edited spec.yaml alone is refused)."""
    spec = yaml.safe_load((sweep / "spec.yaml").read_text())
    spec["compare"].update(fields)
    for name in ("spec.yaml", "spec.started.yaml"):
        (sweep / name).write_text(yaml.safe_dump(spec, sort_keys=False))


def _drop_comparison(sweep: Path) -> None:
    for table in ("cka", "pca", "tiles", "disagreement", "class_accuracy"):
        for p in (sweep / "tables" / table).glob("*.parquet"):
            p.unlink()


def _mtimes(sweep: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (sweep / "tables").rglob("*.parquet")}


def test_pair_selection_by_kind(small_sweep):
    trials = SweepStore(str(small_sweep)).read_table("trials")
    count = lambda kinds: pd.Series([p.kind for p in select_pairs(trials, kinds)]).value_counts().to_dict()  # noqa: E731
    assert count(["within", "cross_seed", "cross_arch"]) == {"within": 4, "cross_seed": 2, "cross_arch": 2}
    assert count(["cross_seed"]) == {"cross_seed": 2}
    assert sum(count(["all"]).values()) == 4 + 6  # every model with itself, every unordered pair


def test_cka_table_holds_exactly_the_planned_rows(small_sweep):
    spec, store = load_sweep(str(small_sweep))
    plan = plan_comparison(spec, store)
    cka, layers = store.read_table("cka"), store.read_table("layers").groupby("trial_id").size()
    assert len(cka) == plan.n_layer_pairs == 2 * 6 ** 2 + 2 * 9 ** 2 + 6 * 6 + 9 * 9 + 2 * 6 * 9  # within, cross_seed, cross_arch
    assert not cka.duplicated(["trial_a", "layer_a", "trial_b", "layer_b"]).any()
    for tid, n in layers.items():  # within-model: the full L x L matrix, symmetric, ones on the diagonal
        w = cka[(cka.trial_a == tid) & (cka.trial_b == tid)].pivot(index="layer_a", columns="layer_b", values="cka")
        assert w.shape == (n, n)
        assert np.allclose(np.diag(w), 1) and np.allclose(w, w.T)
    assert ((cka.cka > -0.1) & (cka.cka < 1 + 1e-9)).all() and (cka.n_batches == 4).all()  # 2 passes of 256 + 104
    pca = store.read_table("pca")
    assert len(pca) == layers.sum() and pca.pc1_fraction.between(0, 1).all()
    dis = store.read_table("disagreement")
    assert sorted(dis.pair_kind) == ["cross_arch", "cross_arch", "cross_seed", "cross_seed"]
    both_right = dis.agreement - dis.both_wrong  # agreeing and right (two wrong answers may differ)
    assert (both_right + dis.only_a_wrong + dis.only_b_wrong + dis.both_wrong <= 1 + 1e-12).all()
    assert len(store.read_table("class_accuracy")) == 4 * 10
    assert (store.read_table("tiles").status == "done").all()


def test_second_compare_changes_nothing(small_sweep, tmp_path, ray_local):
    sweep = copy_sweep(small_sweep, tmp_path)
    before = _mtimes(sweep)
    assert main(["compare", str(sweep)]) == 0
    assert _mtimes(sweep) == before  # no part added, removed or rewritten
    assert SweepStore(str(sweep)).read_table("cka").equals(SweepStore(str(small_sweep)).read_table("cka"))


def test_comparison_killed_then_interrupted_finishes_with_no_duplicated_or_missing_rows(small_sweep, tmp_path,
                                                                                         ray_local, capsys):
    """kill -9 a compare once 2 tiles are written, SIGTERM the next (what Ray Jobs and schedulers
    send; handled as Ctrl-C) once it has written one more; a third finishes: the tiles written before each signal are kept as they are, none twice."""
    sweep = copy_sweep(small_sweep, tmp_path)
    _drop_comparison(sweep)
    _set_compare(sweep, group_size=1, passes=4)  # 4 diagonal + 4 cross tiles
    spec, store = load_sweep(str(sweep))
    plan = plan_comparison(spec, store)
    assert len(plan.tiles) == 8
    kept: dict[str, int] = {}
    figures = []
    for sig in (signal.SIGKILL, signal.SIGTERM):  # SIGTERM ends the driver as Ctrl-C (SIGINT) does
        wanted = max(2, len(kept) + 1)
        killed = kill_cli_when(["compare", str(sweep)], cli_env("rs-cmp-"),
                               lambda: len(store.part_keys("cka")) >= wanted, timeout=180, sig=sig)
        assert killed.ray_gone_s is not None and killed.ray_gone_s < 10, killed.left  # no actor is left to write a part
        assert killed.rc == (-9 if sig == signal.SIGKILL else 130)  # SIGTERM: ended as Ctrl-C ends it
        done = store.part_keys("cka")
        assert wanted <= len(done) < 8, f"{len(done)} of 8 tiles finished before the signal"
        assert {k: _part_mtime(sweep, k) for k in kept} == kept  # what the killed run wrote was not redone
        kept = {k: _part_mtime(sweep, k) for k in done}
        figures.append(f"{signal.Signals(sig).name}: Ray gone {killed.ray_gone_s:.1f} s after, {len(done)} of 8 "
                       f"tiles kept, {len(store.read_table('cka'))} cka rows")
    t0 = time.time()
    assert main(["compare", str(sweep)]) == 0  # the next compare (in this process, on the tests' own Ray)
    out = capsys.readouterr().out
    print("mid-comparison " + "; ".join(figures) + f"; the last compare finished in {time.time() - t0:.0f} s, "
          f"{len(store.read_table('cka'))} cka rows after (planned {plan.n_layer_pairs})")
    assert f"8 tiles ({8 - len(kept)} to run)" in out
    cka = store.read_table("cka")
    assert len(cka) == plan.n_layer_pairs
    assert not cka.duplicated(["trial_a", "layer_a", "trial_b", "layer_b"]).any()
    assert {k: _part_mtime(sweep, k) for k in kept} == kept
    assert sorted(store.part_keys("tiles")) == sorted(t.key for t in plan.tiles)
    assert all(dups == 0 for _, dups in table_rows(sweep).values()), table_rows(sweep)  # no row twice, any table


def _part_mtime(sweep: Path, key: str) -> int:
    return (sweep / "tables" / "cka" / f"{key}.parquet").stat().st_mtime_ns


def test_failed_tile_is_retried_then_recorded_while_the_rest_finish(small_sweep, tmp_path, ray_local, capsys):
    sweep = copy_sweep(small_sweep, tmp_path)
    _drop_comparison(sweep)
    _set_compare(sweep, group_size=1, passes=1)
    spec, store = load_sweep(str(sweep))
    broken = sorted(store.read_table("trials").trial_id)[0]
    (sweep / "checkpoints" / f"{broken}.pt").write_bytes(b"truncated")
    assert main(["compare", str(sweep)]) == 1
    tiles = store.read_table("tiles")
    failed = tiles[tiles.status == "failed"]
    has_broken = tiles.trials_a.apply(lambda t: broken in t) | tiles.trials_b.apply(lambda t: broken in t)
    assert set(failed.tile) == set(tiles[has_broken].tile) and len(failed) >= 2
    assert failed.error.str.contains(f"checkpoint '.*{broken}.pt' is corrupt", regex=True).all()
    assert (tiles[~has_broken].status == "done").all()
    assert f"failed tile {failed.tile.iloc[0]}" in capsys.readouterr().out


def test_the_pool_asks_for_an_actor_per_tile_and_grows_onto_a_node_that_joins_later(small_sweep, tmp_path,
                                                                                     monkeypatch):
    """The pool is sized by the work (8 tiles, cap 6), not by the one CPU present at its start:
    5 actors wait in Ray's queue (what an autoscaler scales up for) and start on a node added
    mid-comparison; the values equal a single process's."""
    import threading

    import ray
    from ray._private.state import actors

    from repsweep.orchestrator.comparison.compare import compare

    sweep = copy_sweep(small_sweep, tmp_path)
    _drop_comparison(sweep)
    _set_compare(sweep, group_size=1, passes=20, cpu=1, max_actors=6)  # 8 tiles of ~1-2 s each on 1 CPU
    spec, store = load_sweep(str(sweep))
    assert len(plan_comparison(spec, store).tiles) == 8
    with local_cluster(monkeypatch, "rs-2n-", head_cpus=1) as cluster:
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        done: list = []
        driver = threading.Thread(target=lambda: done.append(compare(spec, store)))
        driver.start()
        workers: list = []
        deadline = time.time() + 60
        while time.time() < deadline and len(workers) < 6:
            workers = [a for a in actors().values() if a["ActorClassName"] == "PoolWorker"]
            time.sleep(0.05)
        alive = sum(a["State"] == "ALIVE" for a in workers)
        assert len(workers) == 6 and alive <= 1, f"{len(workers)} actors asked for, {alive} alive on 1 CPU"
        while not store.part_keys("cka"):  # the first node is busy: now a second one joins
            time.sleep(0.1)
        cluster.add_node(num_cpus=1)
        driver.join(timeout=240)
        assert done and done[0]["failed"] == {}
        tiles = store.read_table("tiles")
        assert len(tiles) == 8 and tiles.node.nunique() == 2  # an actor queued before the node existed ran there
        assert all(a["State"] == "DEAD" for a in actors().values() if a["ActorClassName"] == "PoolWorker")

    # a tile from each node, again in this process, without Ray: the same values
    ran_on = tiles.drop_duplicates("node").tile.tolist()
    single = copy_sweep(small_sweep, tmp_path / "single")
    _drop_comparison(single)
    _set_compare(single, group_size=1, passes=20)
    spec, single_store = load_sweep(str(single))
    for tile in plan_comparison(spec, single_store).tiles:
        if tile.key in ran_on:
            run_tile(tile, single_store.uri, spec.compare, spec.dataset)
    key = ["trial_a", "layer_a", "trial_b", "layer_b"]
    a = store.read_table("cka").set_index(key)
    b = single_store.read_table("cka").set_index(key)
    assert len(b) > 0 and b.index.isin(a.index).all()
    # The actors run 1 torch thread, this process 2: float32 Grams sum in another order and
    # round differently (seen: 1.4e-8). Compare at the engine's float32 precision, not bit for bit.
    assert np.allclose(a.cka.loc[b.index], b.cka, rtol=0, atol=FLOAT32_CKA_ATOL, equal_nan=True)

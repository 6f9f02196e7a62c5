"""Bad inputs beyond the spec's fields: damaged folders, crafted files, odd storage, impossible
resources. Each is one line on stderr with exit code 2 (or a clear recovery), and nothing already
written is lost, changed or duplicated. (Bad spec fields and hostile spec files: test_spec.py;
queries: test_query.py.)"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import yaml
from PIL import Image

from repsweep.analysis.tables.store import SweepStore
from repsweep.orchestrator.cli import main
from repsweep.orchestrator.training.data import load_dataset
from repsweep.orchestrator.spec import DatasetSpec, SpecError
from tests.conftest import copy_sweep, write_cifar

pytestmark = pytest.mark.timeout(300)


def _one_line(capsys, rc: int, *, code: int = 2) -> str:
    err = capsys.readouterr().err
    assert rc == code and err.count("\n") == 1 and err.startswith("repsweep: error: ") and len(err) < 600, err
    return err


def _snapshot(folder: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


# ------------------------------------------------------------------------ crafted data

class _Exploit:
    def __reduce__(self):  # what a crafted pickle does: call anything on load
        return (os.system, ("touch PWNED",))


def test_a_crafted_cifar_pickle_is_refused_before_any_of_it_runs(tmp_path, monkeypatch):
    write_cifar(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_2", "wb") as f:
        pickle.dump({"data": _Exploit(), "labels": [0]}, f)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError, match=r"data_batch_2' is not a cifar10 file \(UnpicklingError: it asks to load "
                                        r"'posix.system'"):
        load_dataset(DatasetSpec("cifar10", root=str(tmp_path)))
    assert not (tmp_path / "PWNED").exists()


def test_an_undecodable_image_is_named(tmp_path):
    for split in ("train", "test"):
        (tmp_path / split / "cat").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / split / "cat" / "ok.png")
    (tmp_path / "train" / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(SpecError, match=r"image '.*broken.png' cannot be read \(.*\); remove or replace it"):
        load_dataset(DatasetSpec("imagefolder", root=str(tmp_path), image_size=8))


# --------------------------------------------------------------------------- storage

def test_storage_on_a_file_or_a_read_only_folder_is_one_line_and_writes_nothing(tiny_spec, tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    assert main(["run", str(tiny_spec(storage=str(tmp_path / "a-file")))]) == 2
    assert "storage" in _one_line(capsys, 2) and (tmp_path / "a-file").read_text() == "not a folder"
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root may write anywhere: that case cannot happen here
            pytest.skip("running as a user who can write into a read-only folder")
        rc = main(["run", str(tiny_spec(storage=str(locked)))])
        assert "cannot write the sweep" in _one_line(capsys, rc) and not list(locked.iterdir())
    finally:
        locked.chmod(0o700)


def test_a_sweep_or_storage_path_holding_tmp_is_read_back_whole(tmp_path):
    store = SweepStore(str(tmp_path / "x.tmp-1" / "sweep.tmp-2"))
    store.write_part("train_subset", "t.tmp-3", [{"trial_id": "t", "example": 1}])
    assert store.part_keys("train_subset") == ["t.tmp-3"] and len(store.read_table("train_subset")) == 1
    (Path(store.root) / "tables" / "train_subset" / "u.parquet.tmp-0a1b2c3d").write_bytes(b"half")  # a temp file
    assert store.part_keys("train_subset") == ["t.tmp-3"]


def test_a_damaged_saved_spec_is_one_line_for_every_command(small_sweep, tmp_path, capsys):
    sweep = copy_sweep(small_sweep, tmp_path)
    (sweep / "spec.yaml").write_text("name: small\ngrid: {depth: [8\n")
    before = _snapshot(sweep)
    for command in ("status", "resume", "compare"):
        rc = main([command, str(sweep)])
        assert "spec.yaml': not valid YAML at line" in _one_line(capsys, rc), command
    assert main(["report", str(sweep), "--out", str(tmp_path / "r.html")]) == 0  # drawn from the tables
    capsys.readouterr()
    assert _snapshot(sweep) == before


def test_a_saved_spec_edited_to_another_grid_is_refused_naming_what_changed(small_sweep, tmp_path, capsys):
    # another grid regroups the comparison's tiles: every pair computed again beside the old rows
    sweep = copy_sweep(small_sweep, tmp_path)
    original = (sweep / "spec.yaml").read_text()

    def edited(section: str, field: str, value) -> str:
        spec = yaml.safe_load(original)
        (spec[section][0] if section == "grid" else spec[section])[field] = value
        return yaml.safe_dump(spec, sort_keys=False)

    edits = {"grid[0].depth: [8, 14] -> [8, 20]": edited("grid", "depth", [8, 20]),
             "grid[0].seed: [0, 1] -> [0, 1, 2]": edited("grid", "seed", [0, 1, 2]),
             "training.epochs: 2 -> 3": edited("training", "epochs", 3)}
    before = _snapshot(sweep)
    for change, text in edits.items():
        assert text != original, change
        (sweep / "spec.yaml").write_text(text)
        for command in ("resume", "compare", "status"):
            err = _one_line(capsys, main([command, str(sweep)]))
            assert "spec.yaml' was edited after the sweep began (" in err and change in err, err
            assert "put it back as it was (spec.started.yaml beside it is a copy)" in err, err
    (sweep / "spec.yaml").write_text(original)
    assert _snapshot(sweep).keys() == before.keys()  # nothing written; nothing but spec.yaml changed
    assert {p: v for p, v in _snapshot(sweep).items() if p.name != "spec.yaml"} == \
        {p: v for p, v in before.items() if p.name != "spec.yaml"}
    assert main(["status", str(sweep)]) == 0  # put back, the sweep opens again


def test_a_corrupt_cka_part_is_computed_again_not_taken_as_done(small_sweep, tmp_path, ray_local):
    sweep = copy_sweep(small_sweep, tmp_path)
    part = sorted((sweep / "tables" / "cka").glob("*.parquet"))[0]
    rows = len(SweepStore(str(small_sweep)).read_part("cka", part.stem))
    part.write_bytes(part.read_bytes()[:100])  # cut off mid-write
    assert main(["compare", str(sweep)]) == 0
    assert len(SweepStore(str(sweep)).read_part("cka", part.stem)) == rows


# ------------------------------------------------------------------------- resources

@pytest.mark.parametrize("override, asked", [
    ({"resources": {"gpu": 1}}, "a trial asks for 1 CPU and 1 GPU (resources.cpu, resources.gpu)"),
    ({"resources": {"cpu": 64}}, "a trial asks for 64 CPU and 0 GPU"),
    ({"compare": {"cpu": 1000}}, "a comparison actor asks for 1000 CPU and 0 GPU (compare.cpu, compare.gpu)"),
])
def test_resources_no_node_can_give_fail_at_once_in_one_line(ray_local, tiny_spec, tmp_path, capsys, override, asked):
    rc = main(["run", str(tiny_spec(**override))])
    err = _one_line(capsys, rc)
    assert asked in err and "the largest node has 2 CPU and 0 GPU, and no autoscaler can add one" in err
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------------- damaged runs

def test_a_truncated_last_checkpoint_falls_back_to_the_one_before_and_says_so(ray_local, tiny_spec, tmp_path,
                                                                             capsys):
    from repsweep.orchestrator.training.trainable import STATE_FILE

    path = tiny_spec(grid={"depth": [8], "width": [1], "data_fraction": [1.0]},
                     training={"epochs": 2, "warmup_epochs": 1}, compare={"passes": 1, "probes": False})
    assert main(["run", str(path)]) == 0
    sweep = tmp_path / "results" / "tiny"
    (model,) = (sweep / "checkpoints").glob("*.pt")
    model.unlink()  # the model file is gone: the next run rebuilds it from the newest epoch checkpoint ...
    newest = sorted((sweep / "tune").glob(f"*/{model.stem}/checkpoint_*"))[-1]
    state = newest / STATE_FILE
    state.write_bytes(state.read_bytes()[:1000])  # ... which is cut off
    assert main(["resume", str(sweep)]) == 0
    trial = SweepStore(str(sweep)).read_part("trials", model.stem).iloc[0]
    assert trial["status"] == "done" and model.is_file()
    assert trial["error"].startswith("damaged checkpoint checkpoint_000001 (")  # (the error torch raised)
    assert trial["error"].endswith(") passed over; started over")  # the only earlier checkpoint (num_to_keep=1)
    assert main(["status", str(sweep)]) == 0
    assert "passed over; started over" in capsys.readouterr().out

"""A sweep over torchvision model names on a generated image folder streamed from disk, end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from repsweep.analysis.engine.stream import batches, in_order
from repsweep.orchestrator.cli import main
from repsweep.orchestrator.training.data import load_dataset
from repsweep.orchestrator.spec import DatasetSpec

from .conftest import table_rows, write_spec


def write_folder(root: Path, n_train: int = 10, n_test: int = 4, classes: int = 3, side: int = 40) -> None:
    """Coloured noise, one dominant channel per class, as PNG files in root/{train,test}/c<k>/."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for c in range(classes):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(n):
                a = (rng.random((side, side + 8, 3)) * 80).astype(np.uint8)
                a[..., c] += 120
                Image.fromarray(a).save(root / split / f"c{c}" / f"{i}.png")


def test_streamed_images_are_decoded_in_batches_reproducibly_and_never_held(tmp_path):
    write_folder(tmp_path)
    data = load_dataset(DatasetSpec("imagefolder", root=str(tmp_path), image_size=32))
    assert data.input_shape == (3, 32, 32) and len(data.x_train) == 30 and len(data.x_test) == 12
    assert not isinstance(data.x_train, torch.Tensor)  # files, not pixels
    held = torch.cat(list(batches(data.x_train, in_order(30, 8))))
    assert held.shape == (30, 3, 32, 32) and abs(float(held.mean())) < 0.05 and abs(float(held.std()) - 1) < 0.05
    crops = [torch.cat(list(batches(data.x_train.augmented(s), in_order(30, 8)))) for s in (1, 1, 2)]
    assert torch.equal(crops[0], crops[1]) and not torch.equal(crops[0], crops[2])  # seeded per epoch
    assert torch.equal(next(batches(data.x_train[torch.tensor([4, 7])], [torch.tensor([1])])), held[7:8])


def test_a_sweep_over_two_torchvision_models_streams_trains_compares_and_fills_every_table(ray_local, tmp_path,
                                                                                          capsys):
    write_folder(tmp_path / "images")
    spec = write_spec(tmp_path / "spec.yaml", name="streamed", storage=str(tmp_path / "results"),
                      model={"family": "torchvision"},
                      dataset={"name": "imagefolder", "root": str(tmp_path / "images"), "image_size": 32},
                      grid={"model_name": ["resnet18", "mobilenet_v3_small"], "seed": [0, 1]},
                      training={"epochs": 2, "batch_size": 10, "warmup_epochs": 1},
                      compare={"passes": 2, "batch_size": 8, "dominant": 3})
    assert main(["run", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "(1)" in out and "(6)" in out  # the findings, in words
    rows = table_rows(tmp_path / "results" / "streamed")
    # torchvision models have no block removal; dominant_overlap needs two seeds that both have a block
    empty_by_design = {"deletion", "dominant_overlap"}
    assert all(n > 0 for t, (n, _) in rows.items() if t not in empty_by_design), rows
    assert all(dup == 0 for _, dup in rows.values())
    from repsweep.analysis.tables.store import SweepStore

    trials = SweepStore(str(tmp_path / "results" / "streamed")).read_table("trials")
    assert sorted(trials["arch"]) == ["mobilenet_v3_small"] * 2 + ["resnet18"] * 2
    assert (trials["status"] == "done").all() and rows["predictions"][0] == 4 * 12

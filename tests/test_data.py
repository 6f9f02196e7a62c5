"""Datasets: digits split, CIFAR-format files from disk, ImageFolder, fractions, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from repsweep.orchestrator.training.data import augment, fraction_indices, load_dataset
from repsweep.orchestrator.spec import DatasetSpec, SpecError
from tests.conftest import write_cifar


def test_digits_split_is_fixed_stratified_and_standardised():
    d = load_dataset(DatasetSpec("digits"))
    assert d.x_train.shape == (1437, 1, 8, 8) and d.x_test.shape == (360, 1, 8, 8)
    assert d.num_classes == 10 and not d.flip
    counts = np.bincount(d.y_test.numpy())
    assert counts.min() >= 35 and counts.max() <= 37  # 10 classes of ~180, 20% held out each
    assert abs(d.x_train.mean().item()) < 1e-5 and abs(d.x_train.std().item() - 1) < 1e-2


@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_files_in_torchvision_format_are_read_from_root(tmp_path, hundred):
    write_cifar(tmp_path, hundred=hundred, classes=100 if hundred else 10)
    d = load_dataset(DatasetSpec("cifar100" if hundred else "cifar10", root=str(tmp_path)))
    assert d.x_train.shape == (100, 3, 32, 32) and d.x_test.shape == (30, 3, 32, 32)
    assert d.num_classes == (100 if hundred else 10) and d.flip
    assert d.y_train[:12].tolist() == [i % (100 if hundred else 10) for i in range(12)]


def test_cifar_missing_files_name_the_expected_place(tmp_path):
    with pytest.raises(SpecError, match=r"no cifar10 files in torchvision's format at '.*cifar-10-batches-py'"):
        load_dataset(DatasetSpec("cifar10", root=str(tmp_path)))


def test_cifar_damaged_file_is_a_clear_error(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(SpecError, match="data_batch_3. is not a cifar10 file"):
        load_dataset(DatasetSpec("cifar10", root=str(tmp_path)))


def test_imagefolder_reads_train_and_test_class_folders(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in [("train", 4), ("test", 2)]:
        for c in ["cat", "dog", "eel"]:
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / split / c / f"{i}.png")
    d = load_dataset(DatasetSpec("imagefolder", root=str(tmp_path), image_size=16))
    assert d.x_train.shape == (12, 3, 16, 16) and d.x_test.shape == (6, 3, 16, 16) and d.num_classes == 3
    with pytest.raises(SpecError, match="expected 'train/<class>/'"):
        load_dataset(DatasetSpec("imagefolder", root=str(tmp_path / "train"), image_size=16))


def test_fractions_are_stratified_seeded_and_nested():
    labels = np.repeat(np.arange(10), [50, 60, 70, 80, 90, 100, 110, 120, 130, 140])
    quarter, half, full = (fraction_indices(labels, f, seed=3) for f in (0.25, 0.5, 1.0))
    assert len(full) == len(labels)
    assert set(quarter) <= set(half) <= set(full)
    for c, n in enumerate([50, 60, 70, 80, 90, 100, 110, 120, 130, 140]):
        assert (labels[half] == c).sum() == round(0.5 * n)
        assert (labels[quarter] == c).sum() == round(0.25 * n)
    assert np.array_equal(half, fraction_indices(labels, 0.5, seed=3))
    assert not np.array_equal(half, fraction_indices(labels, 0.5, seed=4))


def test_augmentation_crops_and_flips_whole_batches_reproducibly():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    a = augment(x, pad=2, flip=True, generator=torch.Generator().manual_seed(0))
    b = augment(x, pad=2, flip=True, generator=torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    same = augment(x, pad=0, flip=False, generator=torch.Generator().manual_seed(0))
    assert torch.equal(same, x)
    # every output pixel is an input pixel of the same example and channel, or padding zero
    for i in range(2):
        for c in range(3):
            assert set(a[i, c].flatten().tolist()) <= set(x[i, c].flatten().tolist()) | {0.0}

"""Datasets as device-resident tensors, nested stratified fractions, batched augmentation.

- `digits`: scikit-learn's bundled 1,797 8x8 digit images (no download), with a fixed
  stratified split of 1,437 training and 360 test images.
- `cifar10` / `cifar100`: read from `root` in torchvision's on-disk format
  (`cifar-10-batches-py/` or `cifar-100-python/`) with an unpickler that admits only the
  dicts, lists, strings and NumPy arrays the format holds; nothing is downloaded.
- `imagefolder`: `root/train/<class>/*` and `root/test/<class>/*` (or `val/`), streamed from
  disk (`orchestrator/training/imagefolder.py`): decoded by DataLoader workers, never held whole.

Held images are standardised with the training set's per-channel mean and std and moved to the
training device once; augmentation (random crop with padding, horizontal flip) runs there on
whole batches, so the training loop does no per-image Python work. Streamed images get the
ImageNet recipe (random-resized crops while they are decoded, the flip on the device).
"""

from __future__ import annotations

import functools
import os
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from repsweep.orchestrator.training.imagefolder import ImageFiles, UnreadableImage, image_stats, list_split
from repsweep.orchestrator.spec import DatasetSpec, SpecError

DIGITS_TEST = 360  # held-out digits: 20% of 1,797, stratified, split seed 0


@dataclass
class Dataset:
    """A train/test split: images (N, C, H, W), standardised, held as float tensors or streamed
    from disk (`ImageFiles`), and int64 labels (always held)."""

    name: str
    x_train: torch.Tensor | ImageFiles
    y_train: torch.Tensor
    x_test: torch.Tensor | ImageFiles
    y_test: torch.Tensor
    num_classes: int
    flip: bool  # horizontal flips are label-preserving (not for digits)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # (C, H, W)

    def training_images(self, augment: bool, seed: int) -> tuple[torch.Tensor | ImageFiles, int]:
        """The training images one epoch reads, and the padding of the random crop left to `augment`
        on the device: H/8 for held images (4 px for CIFAR), 0 for streamed ones (cropped as decoded)."""
        if isinstance(self.x_train, ImageFiles):
            return (self.x_train.augmented(seed) if augment else self.x_train), 0
        return self.x_train, self.input_shape[1] // 8

    def to(self, device: torch.device | str) -> Dataset:
        return Dataset(self.name, self.x_train.to(device), self.y_train.to(device),
                       self.x_test.to(device), self.y_test.to(device), self.num_classes, self.flip)


# --------------------------------------------------------------------------- loading

@functools.lru_cache(maxsize=2)  # reused actors train many trials on one dataset
def load_dataset(spec: DatasetSpec) -> Dataset:
    """Load a dataset to CPU tensors; a missing or wrong root raises SpecError (one line)."""
    if spec.name == "digits":
        x_tr, y_tr, x_te, y_te, k = _digits()
    elif spec.name in ("cifar10", "cifar100"):
        x_tr, y_tr, x_te, y_te, k = _cifar(spec.name, _root(spec))
    else:
        return _imagefolder(_root(spec), spec.image_size)
    mean = x_tr.mean(axis=(0, 2, 3), keepdims=True)  # (1, C, 1, 1)
    std = x_tr.std(axis=(0, 2, 3), keepdims=True) + 1e-8
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return Dataset(spec.name, t(((x_tr - mean) / std).astype(np.float32)), t(y_tr.astype(np.int64)),
                   t(((x_te - mean) / std).astype(np.float32)), t(y_te.astype(np.int64)), k,
                   flip=spec.name != "digits")


def check_dataset(spec: DatasetSpec) -> None:
    """Fail early, before anything is written, when the dataset's files are not where expected."""
    if spec.name != "digits":
        load_dataset(spec)


def _root(spec: DatasetSpec) -> str:
    root = os.path.expanduser(spec.root or "")
    if not os.path.isdir(root):
        raise SpecError(f"dataset.root '{spec.root}' is not a folder; point it at the folder holding the {spec.name} files")
    return root


def _digits() -> tuple:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0)[:, None].astype(np.float64)  # (1797, 1, 8, 8), pixel values 0..16
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, d.target, test_size=DIGITS_TEST, stratify=d.target, random_state=0)
    return x_tr, y_tr, x_te, y_te, 10


_CIFAR = {  # torchvision's on-disk layout: folder, training files, test file, meta file, label keys
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta",
                "labels", "label_names"),
    "cifar100": ("cifar-100-python", ["train"], "test", "meta", "fine_labels", "fine_label_names"),
}
# what a CIFAR pickle may hold: dicts, lists, strings, numbers and NumPy arrays (their rebuilders)
_PICKLE_ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                   ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                   ("numpy._core.multiarray", "scalar")}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only the plain values and NumPy arrays the CIFAR format holds; anything else
    (a crafted file asking for os.system, say) is refused before it runs."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it asks to load '{module}.{name}', which CIFAR files never hold")


def _unpickle(path: str) -> dict:
    with open(path, "rb") as f:
        entry = _CifarUnpickler(f, encoding="latin1").load()
    if not isinstance(entry, dict):
        raise pickle.UnpicklingError(f"it holds a {type(entry).__name__}, not a dict")
    return entry


def _cifar(name: str, root: str) -> tuple:
    """Read CIFAR-10/100 in torchvision's pickled format, without running code from the files."""
    sub, train_files, test_file, meta_file, label_key, names_key = _CIFAR[name]
    folder = os.path.join(root, sub)
    expected = [*train_files, test_file, meta_file]
    missing = [f for f in expected if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise SpecError(f"dataset.root '{root}': no {name} files in torchvision's format at '{folder}' "
                        f"(missing {', '.join(missing)} of {', '.join(expected)})")

    def read(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for f in files:
            path = os.path.join(folder, f)
            try:
                entry = _unpickle(path)
                data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)  # (N, 3072) -> (N, C, H, W)
                labels = np.asarray(entry[label_key], dtype=np.int64)
                if len(labels) != len(data):
                    raise ValueError(f"{len(data)} images but {len(labels)} labels")
            except Exception as e:  # truncated, foreign or crafted: unpickling raises anything
                raise SpecError(f"dataset.root '{root}': '{path}' is not a {name} file ({type(e).__name__}: "
                                f"{str(e)[:160]}); replace it with the original archive's file") from e
            xs.append(data)
            ys.append(labels)
        return np.concatenate(xs).astype(np.float64) / 255.0, np.concatenate(ys)

    x_tr, y_tr = read(train_files)
    x_te, y_te = read([test_file])
    try:
        classes = len(_unpickle(os.path.join(folder, meta_file))[names_key])
    except Exception as e:
        raise SpecError(f"dataset.root '{root}': '{os.path.join(folder, meta_file)}' is not a {name} meta file "
                        f"({type(e).__name__}: {str(e)[:160]})") from e
    return x_tr, y_tr, x_te, y_te, classes


def _imagefolder(root: str, size: int) -> Dataset:
    """The folder's files and labels (images stay on disk), standardised by a sample's statistics."""
    test_dir = next((os.path.join(root, d) for d in ("test", "val") if os.path.isdir(os.path.join(root, d))), None)
    if not os.path.isdir(os.path.join(root, "train")) or test_dir is None:
        raise SpecError(f"dataset.root '{root}': expected 'train/<class>/' and 'test/<class>/' (or 'val/') folders of images")
    (train, y_tr, classes), (test, y_te, test_classes) = list_split(os.path.join(root, "train")), list_split(test_dir)
    for split, files in (("train", train), (test_dir, test)):
        if not files:
            raise SpecError(f"dataset.root '{root}': no images under '{os.path.join(root, split)}/<class>/'")
    if test_classes != classes:
        raise SpecError(f"dataset.root '{root}': train classes {classes} differ from test classes {test_classes}")
    try:
        mean, std = image_stats(train, size)
    except UnreadableImage as e:
        raise SpecError(f"dataset.root '{root}': {e}") from None
    return Dataset("imagefolder", ImageFiles(tuple(train), size, False, mean, std), torch.from_numpy(y_tr),
                   ImageFiles(tuple(test), size, False, mean, std), torch.from_numpy(y_te), len(classes), flip=True)


# ------------------------------------------------------------------------- fractions

def fraction_indices(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Stratified, seeded, nested subset of the training set (sorted indices).

    Each class's indices are shuffled once by `seed`; a fraction f keeps the first
    round(f * n_c) of every class c (at least one). Smaller fractions are prefixes of larger
    ones, so the 1/4 subset lies inside the 1/2 subset of the same seed.
    """
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        keep.append(idx[: max(1, round(fraction * len(idx)))])
    return np.sort(np.concatenate(keep))


# ---------------------------------------------------------------------- augmentation

def augment(x: torch.Tensor, *, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop of `pad` pixels' zero padding and optional horizontal flip, per example.

    x: (B, C, H, W) on any device; the random draws come from `generator` on the CPU.
    """
    b, _, h, w = x.shape
    if pad > 0:
        shift = torch.randint(0, 2 * pad + 1, (2, b), generator=generator).to(x.device)  # (2, B)
        xp = F.pad(x, (pad, pad, pad, pad))  # (B, C, H+2p, W+2p)
        rows = (torch.arange(h, device=x.device)[None] + shift[0][:, None])  # (B, H)
        cols = (torch.arange(w, device=x.device)[None] + shift[1][:, None])  # (B, W)
        batch = torch.arange(b, device=x.device)[:, None, None]  # (B, 1, 1)
        x = xp.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
        x = x.permute(0, 3, 1, 2)  # (B, C, H, W)
    if flip:
        mask = (torch.rand(b, generator=generator) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x

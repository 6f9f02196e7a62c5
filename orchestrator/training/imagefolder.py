"""Image folders streamed from disk: decoded by DataLoader worker processes, never held whole.

`root/train/<class>/*` and `root/test/<class>/*` (or `val/`), read as RGB. An `ImageFiles` is
a list of files with the recipe that decodes them, and acts where repsweep's code holds images
as a tensor: `len(x)`, `x.shape`, `x[idx]` (a lazy subset) and `x.to(device)`; the examples
themselves come only through `analysis.engine.stream.batches(x, index_batches)`, which calls
`ImageFiles.stream`: a DataLoader whose workers decode, crop and resize to uint8, the
training process moving each batch to its device and standardising it there.

The ImageNet recipe (He et al. 2016; torchvision's references): training images through a
random-resized crop (scale 0.08-1, aspect 3/4-4/3) to `image_size`, then a horizontal flip on
the device with the batch (`data.augment`); test images resized so their short side is
`image_size` x 256/224, then centre-cropped. Every crop is drawn from a seed per example and
per epoch, not from the worker's stream, so a trial's crops do not depend on how many workers
decode them. Images are standardised with per-channel mean and std of a seeded sample of 256
training images (test recipe).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

STATS_SAMPLE = 256  # training images whose mean and std standardise every image
RESIZE = 256 / 224  # test images: short side resized to image_size x this, then centre-cropped
EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class UnreadableImage(RuntimeError):
    """An image file that cannot be decoded; the message names it."""


def worker_context() -> multiprocessing.context.BaseContext:
    """How decoding workers start: forked from a fork server, a clean process that has imported
    torch, PIL and this module once, never from the process that streams. That process runs
    Ray's and torch's threads, and a child forked from it inherits their locks mid-use (a
    DataLoader worker died of a segmentation fault in CI that way)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "PIL.Image", __name__])
    return ctx


def loader_workers() -> int:
    """Worker processes a stream decodes with: the machine's CPUs less one, 1 to 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def list_split(folder: str) -> tuple[list[str], np.ndarray, list[str]]:
    """(files, labels, class names) of `folder/<class>/*`, sorted, as torchvision's ImageFolder finds them."""
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    files, labels = [], []
    for k, c in enumerate(classes):
        for root, _, names in sorted(os.walk(os.path.join(folder, c), followlinks=True)):
            for n in sorted(names):
                if n.lower().endswith(EXTENSIONS):
                    files.append(os.path.join(root, n))
                    labels.append(k)
    return files, np.asarray(labels, dtype=np.int64), classes


def _decode(path: str, size: int, crop: bool, seed: int) -> torch.Tensor:
    """One image as uint8 (3, size, size): random-resized crop (train) or resize and centre crop."""
    from torchvision.transforms import v2

    try:
        with Image.open(path) as im:
            img = im.convert("RGB")  # decoded here; cropped and resized by PIL (SIMD), then a tensor
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, ... for a damaged file
        raise UnreadableImage(f"image '{path}' cannot be read ({type(e).__name__}); remove or replace it") from None
    if crop:
        g = torch.Generator().manual_seed(seed)
        top, left, ch, cw = _crop_box(img.height, img.width, g)
        img = v2.functional.resized_crop(img, top, left, ch, cw, [size, size], antialias=True)
    else:
        img = v2.functional.center_crop(v2.functional.resize(img, round(size * RESIZE), antialias=True), [size, size])
    return v2.functional.pil_to_tensor(img)


def _crop_box(h: int, w: int, g: torch.Generator) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box (scale 0.08-1, ratio 3/4-4/3), drawn from `g`."""
    area, log_ratio = h * w, torch.log(torch.tensor([3 / 4, 4 / 3]))
    for _ in range(10):
        target = area * torch.empty(1).uniform_(0.08, 1.0, generator=g).item()
        ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=g)).item()
        cw, ch = round((target * ratio) ** 0.5), round((target / ratio) ** 0.5)
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
            return top, left, ch, cw
    side = min(h, w)  # fallback: the central square
    return (h - side) // 2, (w - side) // 2, side, side


class _Decoded(torch.utils.data.Dataset):
    """What a DataLoader worker runs: (file index, seed) -> uint8 image, or the error's message."""

    def __init__(self, files: list[str], size: int, crop: bool) -> None:
        self.files, self.size, self.crop = files, size, crop

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor | None, str]:
        i, seed = item
        try:
            return _decode(self.files[i], self.size, self.crop, seed), ""
        except UnreadableImage as e:
            return None, str(e)


def _collate(items: list[tuple[torch.Tensor | None, str]]) -> torch.Tensor | str:
    errors = [e for _, e in items if e]
    return errors[0] if errors else torch.stack([t for t, _ in items])


@dataclass(frozen=True)
class ImageFiles:
    """Images on disk, standing where a tensor (N, 3, size, size) of them would; see the module docstring."""

    files: tuple[str, ...]
    size: int
    crop: bool  # the training recipe (random-resized crops, `augmented`), else the test recipe
    mean: tuple[float, float, float]  # per channel, of pixel values in [0, 1]
    std: tuple[float, float, float]
    device: torch.device = torch.device("cpu")
    seed: int = 0  # of this epoch's crops (training recipe)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.files), 3, self.size, self.size)

    def __getitem__(self, idx: slice | torch.Tensor | np.ndarray) -> ImageFiles:
        """The subset at `idx` (a slice or indices), still on disk."""
        picked = self.files[idx] if isinstance(idx, slice) else tuple(self.files[i] for i in torch.as_tensor(idx).tolist())
        return dataclasses.replace(self, files=picked)

    def to(self, device: torch.device | str) -> ImageFiles:
        return dataclasses.replace(self, device=torch.device(device))

    def augmented(self, seed: int) -> ImageFiles:
        """The same files through the training recipe, their crops drawn from `seed` (one per epoch)."""
        return dataclasses.replace(self, crop=True, seed=seed)

    def stream(self, index_batches: Iterable[torch.Tensor], device: torch.device | None = None) -> Iterator[torch.Tensor]:
        """Each batch of indices decoded by worker processes, standardised float32 on `device`."""
        device = torch.device(device) if device is not None else self.device
        batches = [[(int(i), (self.seed * 1_000_003 + int(i)) % 2**63) for i in idx] for idx in index_batches]
        if not batches:
            return
        workers = min(loader_workers(), len(batches))
        loader = torch.utils.data.DataLoader(
            _Decoded(list(self.files), self.size, self.crop), batch_sampler=batches, num_workers=workers,
            collate_fn=_collate, pin_memory=device.type == "cuda", prefetch_factor=4,
            multiprocessing_context=worker_context())
        mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1) * 255  # of pixel values 0..255
        std = torch.tensor(self.std, device=device).view(1, 3, 1, 1) * 255
        for batch in loader:
            if isinstance(batch, str):
                raise UnreadableImage(batch)
            yield batch.to(device, non_blocking=True).float().sub_(mean).div_(std)  # two passes, in place


def image_stats(files: list[str], size: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (pixels in [0, 1]) of a seeded sample of STATS_SAMPLE of `files`."""
    pick = np.sort(np.random.default_rng(0).permutation(len(files))[:STATS_SAMPLE])
    sample = ImageFiles(tuple(files[i] for i in pick), size, False, (0.0,) * 3, (1.0,) * 3)  # as read: [0, 1]
    sums = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    count = 0
    for batch in sample.stream(torch.arange(len(pick)).split(64)):
        b = batch.double()
        sums += b.sum((0, 2, 3))
        squares += (b * b).sum((0, 2, 3))
        count += b.numel() // 3
    mean = sums / count
    std = (squares / count - mean * mean).clamp_min(0).sqrt() + 1e-8
    return tuple(mean.tolist()), tuple(std.tolist())

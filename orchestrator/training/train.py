"""Training one model: SGD with momentum, warm-up then cosine, on held or streamed data.

Plain PyTorch, no Ray: the Tune trainable (`orchestrator.training.trainable`) and the benchmarks both
call these functions. The final epoch is the model; the test set is only read at the end.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from repsweep.analysis.engine.stream import batches, in_order
from repsweep.models import RepresentationModel, get_family
from repsweep.orchestrator.training.data import Dataset, augment
from repsweep.orchestrator.training.imagefolder import ImageFiles
from repsweep.orchestrator.grid import TrialConfig


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build(trial: TrialConfig, data: Dataset, n_train: int, device: torch.device
          ) -> tuple[RepresentationModel, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Model (from its family), optimizer and per-step schedule for a trial, seeded by its seed."""
    torch.manual_seed(trial.seed)
    config = trial.model_config(data.input_shape[0], data.num_classes)
    model = get_family(config.family).build(config).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    t = trial.training
    opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum,
                          weight_decay=t.weight_decay, nesterov=False)
    steps_per_epoch = math.ceil(n_train / t.batch_size)
    epochs, warmup_epochs = t.epochs_for(n_train, len(data.y_train))  # a small subset may train more epochs
    warm = warmup_epochs * steps_per_epoch  # steps
    total = epochs * steps_per_epoch  # steps

    def lr_factor(step: int) -> float:  # linear warm-up, then cosine to zero (Loshchilov & Hutter 2017)
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1.0, total - warm)))

    return model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LambdaLR,
                data: Dataset, train_idx: torch.Tensor, *, trial: TrialConfig, epoch: int,
                augment_data: bool) -> tuple[float, float]:
    """One pass over the training subset; returns (mean loss, accuracy). Raises Diverged."""
    device = data.x_train.device
    epoch_seed = trial.seed * 1_000_003 + epoch
    gen = torch.Generator().manual_seed(epoch_seed)  # resumable: per-epoch stream
    order = train_idx[torch.randperm(len(train_idx), generator=gen).to(train_idx.device)]
    images, pad = data.training_images(augment_data, epoch_seed)  # pad: 4 px for 32x32 CIFAR, 1 for digits
    index_batches = list(order.split(trial.training.batch_size))
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for idx, x in zip(index_batches, batches(images, index_batches), strict=True):
        y = data.y_train[idx]
        if augment_data:
            x = augment(x, pad=pad, flip=data.flip, generator=gen)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if trial.training.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), trial.training.grad_clip)
        opt.step()
        sched.step()
        loss_sum += loss.detach() * len(idx)
        correct += (logits.argmax(1) == y).sum()
    mean_loss = loss_sum.item() / len(order)
    if not math.isfinite(mean_loss):
        raise Diverged(f"training loss became {mean_loss} in epoch {epoch + 1}; "
                       "lower training.lr or raise training.warmup_epochs")
    return mean_loss, correct.item() / len(order)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor | ImageFiles, y: torch.Tensor, batch: int = 1024
            ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Mean cross-entropy; per example the predicted class, its confidence (max softmax) and the
    probability given to the true class (softmax at y: a graded correctness, for models too
    accurate to err often enough to compare by their errors)."""
    model.eval()
    device = x.device
    losses, preds, confs, trues = [], [], [], []
    for s, xb in zip(range(0, len(x), batch), batches(x, in_order(len(x), batch)), strict=True):
        if device.type == "cuda":
            xb = xb.contiguous(memory_format=torch.channels_last)
        with _autocast(device):
            logits = model(xb).float()
        losses.append(F.cross_entropy(logits, y[s:s + batch], reduction="sum"))
        p = logits.softmax(1)
        conf, pred = p.max(1)
        preds.append(pred)
        confs.append(conf)
        trues.append(p.gather(1, y[s:s + batch, None])[:, 0])
    loss = torch.stack(losses).sum().item() / len(x)
    return loss, *(torch.cat(v).cpu().numpy() for v in (preds, confs, trues))

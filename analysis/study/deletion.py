"""Block deletion: test accuracy with each residual block removed in turn, no retraining.

Veit, Wilber & Belongie, "Residual Networks Behave Like Ensembles of Relatively Shallow
Networks" (NeurIPS 2016), and Nguyen, Raghu & Kornblith (ICLR 2021), section 5: removing a
block inside the block structure costs less accuracy than removing one outside it. Each
block's residual branch is removed and its shortcut kept (a projection shortcut keeps its
projection: `RepresentationModel.without_block`); the model is in eval mode, so BatchNorm uses
its running statistics. Cost: one forward pass of the test set per block.
"""

from __future__ import annotations

import pandas as pd
import torch

from repsweep.analysis.engine.stream import batches, in_order
from repsweep.models.interface import RepresentationModel


@torch.inference_mode()
def accuracy(model: RepresentationModel, x: torch.Tensor, y: torch.Tensor, batch: int = 1024) -> float:
    """Top-1 accuracy of `model` (eval mode) on examples x (N, ...) with labels y (N,)."""
    model.eval()
    index_batches = in_order(len(x), batch)
    correct = sum(int((model(xb).argmax(1) == y[idx.to(y.device)]).sum())
                  for idx, xb in zip(index_batches, batches(x, index_batches), strict=True))
    return correct / len(x)


def deletion_accuracy(model: RepresentationModel, x: torch.Tensor, y: torch.Tensor,
                      input_shape: tuple[int, ...]) -> pd.DataFrame:
    """One row per residual block: block (its layer name), layer (its index), accuracy, drop.

    drop = the intact model's accuracy minus the accuracy with that block removed.
    """
    layer_of = {i.layer_name: i.layer for i in model.layer_info(input_shape)}
    intact = accuracy(model, x, y)
    rows = [{"block": name, "layer": layer_of[name], "accuracy": acc, "drop": intact - acc}
            for name in model.residual_blocks() for acc in [accuracy(model.without_block(name), x, y)]]
    return pd.DataFrame(rows, columns=["block", "layer", "accuracy", "drop"]).assign(intact=intact)

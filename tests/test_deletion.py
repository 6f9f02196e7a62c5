"""Block deletion on networks whose answer is known: an exact-identity block, and one that matters."""

from __future__ import annotations

import torch

from repsweep.analysis.study.deletion import accuracy, deletion_accuracy
from repsweep.models import CifarResNet


def _data(n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_a_block_whose_branch_is_an_exact_identity_costs_nothing_and_one_that_matters_does():
    torch.manual_seed(0)
    model = CifarResNet(14, 1, in_channels=1, num_classes=10).eval()
    x, _ = _data()
    y = model(x).argmax(1)  # labels the intact model gets all right: accuracy 1.0
    with torch.no_grad():  # make stage1.block1's branch exactly zero: removing it changes nothing
        model.stages[0][1].bn2.weight.zero_()
        model.stages[0][1].bn2.bias.zero_()
        y = model(x).argmax(1)
    rows = deletion_accuracy(model, x, y, (1, 8, 8)).set_index("block")
    assert list(rows.index) == model.residual_blocks() and (rows["intact"] == 1.0).all()
    assert rows.loc["stage1.block1", "accuracy"] == 1.0 and rows.loc["stage1.block1", "drop"] == 0.0
    assert rows.loc["stage1.block1", "layer"] == 2  # stem, stage1.block0, stage1.block1
    assert rows["drop"].max() > 0.1  # some other block matters to this random network
    assert (rows["drop"] == rows["intact"] - rows["accuracy"]).all()


def test_accuracy_is_the_share_of_right_predictions_and_leaves_the_model_in_eval_mode():
    torch.manual_seed(1)
    model = CifarResNet(8, 1, in_channels=1, num_classes=10)
    x, y = _data(50)
    got = accuracy(model, x, y, batch=16)
    with torch.no_grad():
        assert got == int((model(x).argmax(1) == y).sum()) / len(y)
    assert not model.training

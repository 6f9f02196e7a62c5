"""Dominant datapoints on constructed cases: the ranking, seed overlap, and the block dissolving without them."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from repsweep.analysis.study.dominance import block_cka_without, block_dominant_set, dominant_overlap, jaccard
from repsweep.models import LayerInfo, RepresentationModel

BIG = [3, 50, 77, 140, 199]  # the planted dominant examples
WIDTH = 16  # features per layer


class PlantedBlock(RepresentationModel):
    """Layer 0: its own noise; layers 1-4 (the block): independent noise plus one huge shared
    direction on the examples whose marker input is set. Input columns: marker, 5 noise blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("direction", torch.randn(WIDTH, generator=torch.Generator().manual_seed(9)))

    def forward_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        marker = x[:, :1]  # (n, 1)
        noise = x[:, 1:].reshape(len(x), 5, WIDTH)  # (n, 5, WIDTH)
        return [noise[:, 0]] + [noise[:, i] + 30 * marker * self.direction for i in range(1, 5)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_layers(x)[-1]

    def layer_info(self, input_shape: tuple[int, ...]) -> list[LayerInfo]:
        return [LayerInfo(i, f"l{i}", "block", 1, i, WIDTH) for i in range(5)]

    def inference_copy(self) -> PlantedBlock:
        return copy.deepcopy(self).eval()

    def residual_blocks(self) -> list[str]:
        return []

    def without_block(self, name: str) -> PlantedBlock:
        raise ValueError(name)


def _probe(n: int = 240) -> torch.Tensor:
    x = torch.randn(n, 1 + 5 * WIDTH, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x[:, 0] = 0
    x[BIG, 0] = 1
    return x


def test_the_block_dissolves_without_its_dominant_examples_but_not_without_random_ones():
    model, x = PlantedBlock().double(), _probe()
    full = block_cka_without(model, x, 1, 4, [], batch_size=120, passes=3)
    without = block_cka_without(model, x, 1, 4, BIG, batch_size=120, passes=3)
    random = block_cka_without(model, x, 1, 4, [10, 20, 30, 40, 60], batch_size=120, passes=3)
    assert full["inside"] > 0.8 and random["inside"] > 0.8  # the block, with or without 5 ordinary examples
    assert abs(without["inside"]) < 0.1  # gone with the 5 dominant ones
    assert full["before"] < 0.3


def test_the_dominant_set_ranks_by_share_summed_over_the_blocks_layers():
    rows = pd.DataFrame({"layer": [1, 1, 2, 2, 3, 5], "example": [7, 8, 8, 9, 7, 1],
                         "pc1_share": [0.5, 0.25, 0.5, 0.125, 0.25, 0.9]})  # 7: 0.75, 8: 0.75, 9: 0.125
    assert block_dominant_set(rows, range(1, 4), k=3) == [7, 8, 9]  # a tie keeps the lower example first
    assert block_dominant_set(rows, range(5, 6), k=3) == [1]  # only that layer's rows count


def test_jaccard_and_the_overlap_of_two_seeds_sets():
    assert jaccard([1, 2, 3], [2, 3, 4]) == 0.5 and np.isnan(jaccard([], []))
    dominant = pd.DataFrame({
        "trial_id": ["a"] * 3 + ["b"] * 3 + ["c"] * 3, "layer": [2] * 9, "example": [1, 2, 3, 2, 3, 4, 7, 8, 9],
        "pc1_share": [0.3, 0.2, 0.1] * 3, "label": [0, 1, 1, 1, 1, 5, 0, 0, 0]})
    blocks = pd.DataFrame({"trial_id": ["a", "b", "c"], "start": [1, 1, 1], "end": [3, 3, 3]})
    trials = pd.DataFrame({"trial_id": ["a", "b", "c"], "arch": ["d56-w1", "d56-w1", "d20-w1"],
                           "data_fraction": [1.0, 1.0, 1.0], "seed": [0, 1, 0]})
    out = dominant_overlap(dominant, blocks, trials, k=3)
    assert len(out) == 1  # c has no other seed with a block
    row = out.iloc[0]
    assert (row["arch"], row["seed_a"], row["seed_b"], row["n"], row["shared"]) == ("d56-w1", 0, 1, 3, 2)
    assert row["jaccard"] == pytest.approx(0.5) and row["classes_a"][0] == 1 and row["classes_b"][0] == 1

"""Grid expansion: one `TrialConfig` per point of the spec's grid, with a stable trial id.

The trial id is derived from the configuration alone (never from Ray, the clock or Python's
salted `hash`): the same spec gives the same ids in any process on any machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import Any

from orchestrator.spec import AXES, DatasetSpec, SweepSpec, TrainingSpec


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial needs: its grid point, the training recipe and the data."""

    depth: int
    width: int
    data_fraction: float
    seed: int
    training: TrainingSpec
    dataset: DatasetSpec

    @property
    def trial_id(self) -> str:
        """Readable prefix plus a hash of every field that changes the trained model.

        The dataset root is left out: moving the data does not change the model.
        """
        identity = {a: getattr(self, a) for a in AXES}
        identity["training"] = dataclasses.asdict(self.training)
        identity["dataset"] = {k: v for k, v in dataclasses.asdict(self.dataset).items() if k != "root"}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
        return f"d{self.depth}-w{self.width}-f{self.data_fraction:g}-s{self.seed}-{digest}"

    @property
    def arch(self) -> str:
        return f"{self.depth}x{self.width}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialConfig:
        return cls(
            **{a: d[a] for a in AXES},
            training=TrainingSpec(**d["training"]),
            dataset=DatasetSpec(**d["dataset"]),
        )


def expand_grid(spec: SweepSpec) -> list[TrialConfig]:
    """All grid points, in axis order (depth, width, data_fraction, seed)."""
    axes = [getattr(spec.grid, a) for a in AXES]
    return [
        TrialConfig(**dict(zip(AXES, point)), training=spec.training, dataset=spec.dataset)
        for point in itertools.product(*axes)
    ]

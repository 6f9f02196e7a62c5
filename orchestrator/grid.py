"""Grid expansion: one `TrialConfig` per point of the spec's grid, with a stable trial id.

The trial id is derived from the configuration alone (never from Ray, the clock or Python's
salted `hash`): the same spec gives the same ids in any process on any machine. The trial's
configuration fills the `trials` table's configuration columns (`config_row`): the grid axes
and one column per field of the model, dataset and training sections, which the table lists
(analysis/tables/schemas.py: TRIAL_CONFIG; tests/test_grid.py fails, naming it, when a field added
to a section is not listed there).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from repsweep.analysis.tables.schemas import TableError
from repsweep.analysis.tables.store import SweepStore
from repsweep.models.interface import ModelConfig
from repsweep.models.registry import get_family
from repsweep.orchestrator.spec import (AXES, DatasetSpec, ModelSpec, SpecError, SweepSpec, TrainingSpec,
                                        plain_number, stored_spec)

if TYPE_CHECKING:
    from repsweep.analysis.present.report import Outline

# Section fields become columns named <prefix><field>; a field called `name` is the column
# `<section>` (dataset.name -> dataset). Grid axes are columns of their own name.
_SECTIONS = {"model": "model_", "dataset": "dataset_", "training": ""}


# fields added after sweeps were run: at these defaults they leave trial ids as they were
# (every model field but the family came with the families past CIFAR)
_ADDED_LATER = {"training": {"min_steps": 0, "budget": "epochs", "grad_clip": 0.0},
                "model": {f.name: f.default for f in dataclasses.fields(ModelSpec) if f.name != "family"}}


def _column(section: str, name: str) -> str:
    return section if name == "name" else _SECTIONS[section] + name


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial needs: its grid point, the model family, the training recipe, the data."""

    depth: float
    width: float
    data_fraction: float
    seed: int
    model: ModelSpec
    training: TrainingSpec
    dataset: DatasetSpec

    @property
    def trial_id(self) -> str:
        """Readable prefix plus a hash of every field that changes the trained model.

        The dataset root is left out: moving the data does not change the model.
        """
        identity = {a: getattr(self, a) for a in AXES}
        for axis in ("depth", "width"):  # integers before fractional multipliers existed: 20, not 20.0
            identity[axis] = plain_number(identity[axis])
        for section in ("model", "training"):
            later = _ADDED_LATER[section]
            identity[section] = {k: v for k, v in dataclasses.asdict(getattr(self, section)).items()
                                 if not (k in later and v == later[k])}
        identity["dataset"] = {k: v for k, v in dataclasses.asdict(self.dataset).items() if k != "root"}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.arch}-f{self.data_fraction:g}-s{self.seed}-{digest}"

    @property
    def arch(self) -> str:
        """The architecture's label, spelled by its family (e.g. 'd56-w2')."""
        return get_family(self.model.family).label(self.model_config(0, 0))

    def model_config(self, in_channels: int, num_classes: int) -> ModelConfig:
        """What the model family builds for this trial, on data of these shapes."""
        return ModelConfig(self.model.family, self.depth, self.width, in_channels, num_classes,
                           zero_init_residual=self.training.zero_init_residual, scale=self.model.scale,
                           name=self.model.name, tokens=self.model.tokens)

    @classmethod
    def config_columns(cls) -> list[tuple[str, Any]]:
        """(column, annotation) of every configuration value: the grid axes, then each section's fields."""
        hints = typing.get_type_hints(cls)
        columns = [(a, hints[a]) for a in AXES]
        for section in _SECTIONS:
            sub = typing.get_type_hints(hints[section])
            columns += [(_column(section, f.name), sub[f.name]) for f in dataclasses.fields(hints[section])]
        return columns

    def config_row(self) -> dict[str, Any]:
        """This trial's values of `config_columns`, by column."""
        row = {a: getattr(self, a) for a in AXES}
        for section in _SECTIONS:
            row.update({_column(section, k): v for k, v in dataclasses.asdict(getattr(self, section)).items()})
        return row

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialConfig:
        return cls(**{a: d[a] for a in AXES}, model=ModelSpec(**d["model"]),
                   training=TrainingSpec(**d["training"]), dataset=DatasetSpec(**d["dataset"]))


def expand_grid(spec: SweepSpec) -> list[TrialConfig]:
    """All grid points, in axis order (model_name, depth, width, data_fraction, seed), sub-grid after
    sub-grid; a point already listed by an earlier sub-grid is not listed again."""
    points = dict.fromkeys(point for g in spec.grid
                           for point in itertools.product(g.model_name or [spec.model.name], *(getattr(g, a) for a in AXES)))
    return [TrialConfig(**dict(zip(AXES, point[1:])), model=dataclasses.replace(spec.model, name=point[0]),
                        training=spec.training, dataset=spec.dataset) for point in points]


def outline(spec: SweepSpec) -> Outline:
    """What the spec plans, for the report's summary (analysis/present/report.py): its sub-grids, their trials."""
    from repsweep.analysis.present.report import Outline  # charts and their libraries: only when a report is made

    grids = [{a: v for a, v in dataclasses.asdict(g).items() if v is not None} for g in spec.grid]
    return Outline(spec.name, grids, len(expand_grid(spec)), spec.dataset.name, spec.training.epochs)


def stored_outline(location: str) -> Outline | None:
    """The outline of the spec stored with a sweep; None where there is none, or it cannot be read
    (the report is then drawn from the tables alone)."""
    try:
        return outline(stored_spec(SweepStore(location)))
    except (SpecError, TableError, OSError):
        return None

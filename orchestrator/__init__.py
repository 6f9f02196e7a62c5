"""Sweep orchestration: spec, grid, data, the Ray Tune training stage and the CLI."""

from repsweep.orchestrator.grid import TrialConfig, expand_grid
from repsweep.orchestrator.spec import SpecError, SweepSpec, load_spec

__all__ = ["SpecError", "SweepSpec", "TrialConfig", "expand_grid", "load_spec"]

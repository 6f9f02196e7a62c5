"""The sweep spec: typed dataclasses, one per concern, validated on load from YAML.

Every wrong field raises `SpecError` with one line naming the field, the value received and
what is allowed; unknown keys list the valid ones. Nothing is written before validation.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import stat
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from repsweep.analysis.study.findings_spec import FindingsSpec
from repsweep.analysis.tables.location import Location, parse_location
from repsweep.analysis.tables.schemas import GRID_AXES, TableError
from repsweep.analysis.tables.store import SweepStore
from repsweep.models.interface import ModelConfig
from repsweep.models.registry import FAMILIES, get_family

BUDGETS = ("epochs", "steps")  # training.budget: what a smaller data fraction keeps
DATASETS = ("digits", "cifar10", "cifar100", "imagefolder")
PAIR_KINDS = ("within", "cross_seed", "cross_arch", "all")


class SpecError(ValueError):
    """A sweep spec or a command's input is wrong; the message names the field and the fix."""


MAX_TRIALS = 10_000  # a Tune experiment of more trials is slow to start and to track: split the sweep
MAX_SPEC_BYTES = 1 << 20  # a spec is a small YAML file: 1 MiB at most
MAX_SEED = 2**31 - 1  # seeds NumPy, torch and the per-epoch stream (seed * 1,000,003 + epoch) all take
MAX_INT = 2**63 - 1  # the tables' int64 columns


def shorten(value: Any, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters: an error message stays one short line whatever the input."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _fail(name: str, value: Any, allowed: str) -> typing.NoReturn:
    raise SpecError(f"spec field '{name}': got {shorten(value)}, expected {allowed}")


def plain_number(x: float) -> float | int:
    """A whole number as an int (the grid's 20, not 20.0): in messages and in trial ids."""
    return int(x) if float(x).is_integer() else x


@dataclass(frozen=True)
class DatasetSpec:
    """Which data to train on and where it lies."""

    name: str = "digits"  # digits (bundled) | cifar10 | cifar100 | imagefolder
    root: str | None = None  # folder holding the files; required for all but digits
    image_size: int = 32  # imagefolder only: images are resized to this many pixels square
    augment: bool = True  # random crop (padding = size/8) and, except digits, horizontal flip

    def __post_init__(self) -> None:
        if self.name not in DATASETS:
            _fail("dataset.name", self.name, f"one of {', '.join(DATASETS)}")
        if self.name != "digits" and not self.root:
            _fail("dataset.root", self.root, f"the folder holding the {self.name} files")
        if not 4 <= self.image_size <= 512:  # 512 px: ImageFolder sets are held in memory whole
            _fail("dataset.image_size", self.image_size, "an integer from 4 to 512 (pixels)")


@dataclass(frozen=True)
class GridSpec:
    """The axes of one grid; each holds one value or a list. Its trials = their product.

    A spec's `grid` is one such mapping, or a list of them: the sweep is then the union of
    the sub-grids (e.g. a depth series at width 1 plus a width series at one depth), a point
    that two sub-grids share counted once.
    """

    # left out: the family's default (cifar_resnet 20 and 1, the others 1 and 1)
    depth: list[float] | None = None  # cifar_resnet: 6n+2 layers; imagenet_resnet: a multiplier; torchvision: 1
    width: list[float] | None = None  # a channel multiplier (cifar_resnet: 16k/32k/64k channels); torchvision: 1
    data_fraction: list[float] = field(default_factory=lambda: [1.0])  # of the training set
    seed: list[int] = field(default_factory=lambda: [0])  # init, data order, subset
    model_name: list[str] | None = None  # torchvision: several models in one sweep (left out: model.name)

    def __post_init__(self) -> None:
        for name in (*AXES, "model_name"):
            values = getattr(self, name)
            if values is None:  # left out (depth, width, model_name): filled in by SweepSpec
                continue
            if not values:
                _fail(f"grid.{name}", values, "at least one value")
            if len(set(values)) != len(values):
                _fail(f"grid.{name}", values, "distinct values")
        for f in self.data_fraction:
            if not 0 < f <= 1:
                _fail("grid.data_fraction", f, "a fraction in (0, 1]")
        for s in self.seed:
            if not 0 <= s <= MAX_SEED:
                _fail("grid.seed", s, f"an integer from 0 to {MAX_SEED:,}")
        for axis in ("depth", "width"):  # what each family builds is its own rule (SweepSpec checks it)
            for v in getattr(self, axis) or []:
                if not v > 0:
                    _fail(f"grid.{axis}", v, "a positive number")


AXES = GRID_AXES  # a trial's numeric grid point (its columns, its id): analysis/tables/schemas.py


@dataclass(frozen=True)
class ModelSpec:
    """Which model family the grid's depth and width build (models/registry.py), and its options."""

    family: str = "cifar_resnet"  # cifar_resnet (depth 6n+2, width k) | imagenet_resnet (multipliers of ResNet-50)
    scale: str = "stage3"  # imagenet_resnet: depth and width multiply stage 3 only (the paper's default) | all
    name: str = ""  # torchvision: the model's name in torchvision.models
    tokens: str = "mean"  # torchvision transformers: each token layer compared as its mean | cls | flatten

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            _fail("model.family", self.family, f"one of {', '.join(FAMILIES)}")
        family = FAMILIES[self.family]
        for f in dataclasses.fields(self):
            if f.name != "family" and f.name not in family.options and getattr(self, f.name) != f.default:
                _fail(f"model.{f.name}", getattr(self, f.name),
                      f"to be left out (model.family {self.family} does not use it)")


@dataclass(frozen=True)
class TrainingSpec:
    """SGD with momentum, linear warm-up then cosine decay to zero, stepped per batch."""

    epochs: int = 40  # passes over the (fraction of the) training set; the last epoch is the model
    batch_size: int = 128  # examples per SGD step
    lr: float = 0.1  # peak learning rate, reached after warm-up
    momentum: float = 0.9
    weight_decay: float = 5e-4  # L2 on all parameters
    warmup_epochs: float = 5.0  # linear warm-up; without it a deep, wide digits run diverged
    zero_init_residual: bool = False  # last BN of each block starts at gamma = 0 (a control)
    min_steps: int = 0  # SGD steps at least: a small data fraction trains more epochs (warm-up scaled alike),
    #                     so that it is trained, not cut short (40 epochs of 90 digits are 40 steps); 0: off
    budget: str = "epochs"  # what a data fraction keeps of the full data's training: "epochs" (as many passes
    #                         over less data, so 1/f fewer SGD steps) or "steps" (the SGD steps of `epochs`
    #                         passes over the whole training set, at every fraction)
    grad_clip: float = 0.0  # largest gradient norm of an SGD step (torch.nn.utils.clip_grad_norm_); 0: off. A
    #                         loss spike in a deep net can take one step so large that the network never recovers

    def epochs_for(self, n_train: int, n_full: int) -> tuple[int, float]:
        """(epochs, warm-up epochs) on a subset of n_train of the n_full training examples: `epochs`, or more
        where the budget is "steps" (the steps of `epochs` over all n_full) or min_steps asks for more."""
        steps_per_epoch = math.ceil(n_train / self.batch_size)
        steps = self.min_steps
        if self.budget == "steps":
            steps = max(steps, self.epochs * math.ceil(n_full / self.batch_size))
        epochs = max(self.epochs, math.ceil(steps / steps_per_epoch))
        return epochs, self.warmup_epochs * epochs / self.epochs

    def __post_init__(self) -> None:
        if self.epochs < 1:
            _fail("training.epochs", self.epochs, "an integer >= 1")
        if self.batch_size < 2:
            _fail("training.batch_size", self.batch_size, "an integer >= 2")
        if not self.lr > 0:
            _fail("training.lr", self.lr, "a positive number")
        if not 0 <= self.momentum < 1:
            _fail("training.momentum", self.momentum, "a number in [0, 1)")
        if self.weight_decay < 0:
            _fail("training.weight_decay", self.weight_decay, "a number >= 0")
        if not 0 <= self.warmup_epochs <= self.epochs:
            _fail("training.warmup_epochs", self.warmup_epochs, f"a number in [0, epochs={self.epochs}]")
        if not 0 <= self.min_steps <= 10**7:  # 10 million steps: days of a GPU for the smallest model
            _fail("training.min_steps", self.min_steps, "an integer from 0 (off) to 10,000,000")
        if self.budget not in BUDGETS:
            _fail("training.budget", self.budget, " or ".join(BUDGETS))
        if not 0 <= self.grad_clip <= 1e6:
            _fail("training.grad_clip", self.grad_clip, "a gradient norm > 0, or 0 (off)")


@dataclass(frozen=True)
class ResourcesSpec:
    """What one trial asks Ray for; fractional GPUs pack several trials on one device."""

    cpu: float = 1.0
    gpu: float = 0.0

    def __post_init__(self) -> None:
        if not self.cpu > 0:
            _fail("resources.cpu", self.cpu, "a positive number of CPUs")
        if self.gpu < 0 or (self.gpu > 1 and self.gpu != int(self.gpu)):
            _fail("resources.gpu", self.gpu, "0, a fraction in (0, 1], or a whole number of GPUs")


@dataclass(frozen=True)
class CompareSpec:
    """Which model pairs the comparison stage computes, and on what probe stream."""

    pairs: list[str] = field(default_factory=lambda: ["within", "cross_seed", "cross_arch"])
    probe_examples: int = 0  # test examples streamed through the models; 0 = the whole test set
    batch_size: int = 256  # minibatch n of the CKA estimator
    passes: int = 10  # shuffled passes over the probe set (the paper uses 10)
    group_size: int = 0  # models per tile side; 0 = chosen from memory
    gpu: float = 0.0  # GPUs per comparison actor (fractions allowed)
    cpu: float = 1.0  # CPUs per comparison actor
    max_actors: int = 16  # the pool asks for min(jobs, max_actors) actors; Ray places them
    pc1_cross: bool = False  # CKA without PC1 and PC1 cosines for cross-model pairs too (within: always)
    dominant: int = 20  # examples per layer recorded as its dominant datapoints (largest first-PC share)
    probes: bool = True  # linear probes of every layer of every model (a per-trial stage)
    deletion: bool = True  # test accuracy with each residual block removed (a per-trial stage)

    def __post_init__(self) -> None:
        for p in self.pairs:
            if p not in PAIR_KINDS:
                _fail("compare.pairs", p, f"a list of {', '.join(PAIR_KINDS)}")
        if self.probe_examples < 0 or 0 < self.probe_examples < 4:
            _fail("compare.probe_examples", self.probe_examples,
                  "0 (the whole test set) or an integer >= 4 (the estimator needs batches of n >= 4)")
        if self.batch_size < 8:
            _fail("compare.batch_size", self.batch_size,
                  "an integer >= 8 (a pass is cut into equal batches, each needs n >= 4)")
        if self.passes < 1:
            _fail("compare.passes", self.passes, "an integer >= 1")
        if self.group_size < 0:
            _fail("compare.group_size", self.group_size, "an integer >= 0 (0 = automatic)")
        if self.dominant < 1:
            _fail("compare.dominant", self.dominant, "an integer >= 1 (examples per layer)")
        if self.max_actors < 1:
            _fail("compare.max_actors", self.max_actors, "an integer >= 1")
        if self.gpu < 0 or not self.cpu > 0:
            _fail("compare.gpu" if self.gpu < 0 else "compare.cpu", (self.gpu, self.cpu), "gpu >= 0, cpu > 0")


@dataclass(frozen=True)
class SweepSpec:
    """A whole sweep: what to train, on what, with what, and where results go."""

    name: str
    model: ModelSpec = field(default_factory=ModelSpec)
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    grid: list[GridSpec] = field(default_factory=lambda: [GridSpec()])  # one grid, or a union of grids
    training: TrainingSpec = field(default_factory=TrainingSpec)
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    compare: CompareSpec = field(default_factory=CompareSpec)
    findings: FindingsSpec = field(default_factory=FindingsSpec)
    storage: str = "./repsweep-results"  # local folder or URI (s3://, gs://, file://)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", self.name):
            _fail("name", self.name, "1-64 letters, digits, '_', '.' or '-', starting alphanumeric")
        self.location  # noqa: B018 (parses storage: a bad one is refused before anything runs)
        if not self.grid:
            _fail("grid", self.grid, "a mapping of axes, or a list of such mappings (a union of grids)")
        family = get_family(self.model.family)
        d, w = family.default_arch
        object.__setattr__(self, "grid", [dataclasses.replace(g, depth=g.depth or [d], width=g.width or [w])
                                          for g in self.grid])  # the family's default where an axis is left out
        n_trials = sum(math.prod(len(getattr(g, a)) for a in AXES) * len(g.model_name or [0]) for g in self.grid)
        if n_trials > MAX_TRIALS:
            _fail("grid", f"{n_trials:,} trials", f"at most {MAX_TRIALS:,} trials per sweep; split it into several sweeps")
        channels, size = {"digits": (1, 8), "cifar10": (3, 32), "cifar100": (3, 32)}.get(
            self.dataset.name, (3, self.dataset.image_size))  # an image folder's images are read as RGB
        for g in self.grid:
            if g.model_name is not None and "name" not in family.options:
                _fail("grid.model_name", g.model_name, f"to be left out (model.family {family.name} has no model.name)")
            for name, depth, width in itertools.product(g.model_name or [self.model.name], g.depth, g.width):
                config = ModelConfig(family.name, depth, width, 0, 0, scale=self.model.scale, name=name,
                                     tokens=self.model.tokens)
                if problem := family.arch_problem(config):
                    where, allowed = problem  # "depth" or "width" (grid axes) or "model.<option>"
                    value = getattr(config, where.removeprefix("model."))
                    _fail(where if where.startswith("model.") else f"grid.{where}",
                          plain_number(value) if isinstance(value, float) else value,
                          f"{allowed} for model.family {family.name}")
                if wrong := family.input_problem(config, channels, size):
                    _fail("dataset.image_size" if self.dataset.name == "imagefolder" else "dataset.name",
                          size if self.dataset.name == "imagefolder" else self.dataset.name,
                          f"{wrong} for model.family {family.name} (this dataset's are {channels} x {size} x {size})")

    @property
    def location(self) -> Location:
        """Where this sweep's results live, <storage>/<name>, parsed (local paths made absolute)."""
        try:
            return parse_location(self.storage).join(self.name)
        except TableError as e:
            raise SpecError(str(e)) from None

    @property
    def sweep_uri(self) -> str:
        """Where this sweep's results live: <storage>/<name>, as a local path or a URI."""
        return self.location.uri

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------- loading

def _convert(tp: Any, value: Any, name: str) -> Any:
    """Check `value` against the annotation `tp`, converting where YAML is loose."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _convert(args[0], value, name)
    if origin is list:
        (item,) = typing.get_args(tp)
        values = value if isinstance(value, list) else [value]  # an axis may hold one value
        if len(values) > MAX_TRIALS:
            _fail(name, f"a list of {len(values):,} values", f"at most {MAX_TRIALS:,}")
        return [_convert(item, v, name) for v in values]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            _fail(name, value, "a mapping of " + ", ".join(f.name for f in dataclasses.fields(tp)))
        return _build(tp, value, name + ".")
    if tp is bool:
        if not isinstance(value, bool):
            _fail(name, value, "true or false")
        return value
    if tp is int:
        if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_INT:
            value = int(value)  # 1e3 epochs: scientific notation, a whole number
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(name, value, "an integer")
        if abs(value) > MAX_INT:
            _fail(name, value, "an integer the tables can store (|n| < 2^63)")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(name, value, "a number")
        if isinstance(value, int) and abs(value) > MAX_INT or not math.isfinite(value):
            _fail(name, value, "a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            _fail(name, value, "a string")
        return value
    raise AssertionError(f"unhandled annotation {tp} for {name}")


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in valid:
            name = str(key) if len(str(key)) <= 40 else str(key)[:37] + "..."
            raise SpecError(f"spec field '{prefix}{name}': unknown; valid fields are {', '.join(valid)}")
    required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    for key in required:
        if key not in data:
            raise SpecError(f"spec field '{prefix}{key}': missing; it is required")
    kwargs = {k: _convert(hints[k], v, prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except SpecError:
        raise
    except TypeError as e:  # a wrongly typed value slipped past a numeric comparison
        raise SpecError(f"spec section '{prefix.rstrip('.') or 'top level'}': {e}") from e
    except ValueError as e:  # a section defined where the spec's errors are not (analysis/study/findings_spec.py)
        raise SpecError(str(e)) from e


def spec_from_dict(data: Any) -> SweepSpec:
    """Validate a parsed YAML document and build the spec."""
    if not isinstance(data, dict):
        raise SpecError(f"spec: expected a mapping with fields name, dataset, grid, ...; got {type(data).__name__}")
    return _build(SweepSpec, data)


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, strict where YAML 1.1 surprises: no aliases (a spec never needs one,
    and an alias bomb, a few lines that expand to gigabytes, is refused before anything grows),
    no duplicate keys (YAML keeps the last one silently), and `1e-3` is a number (YAML 1.1 reads
    a float without a dot as a string; YAML 1.2 and every researcher read it as 0.001)."""

    yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise SpecError(f"YAML aliases (*name) are not allowed in a spec (line {mark.line + 1}); write the values out")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[str, int] = {}
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode):
                line = key.start_mark.line + 1
                if key.value in first:
                    raise SpecError(f"spec key {shorten(key.value, 40)} appears twice, at lines {first[key.value]} "
                                    f"and {line}; keep one")
                first[key.value] = line
        return super().construct_mapping(node, deep)


_SpecLoader.add_implicit_resolver(  # YAML 1.2's floats: 1e-3, 1E5, -2.5e+3 (the 1.1 forms still resolve first)
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def stored_spec(store: SweepStore, name: str = "spec.yaml") -> SweepSpec:
    """The spec a sweep's storage holds under `name`, validated as `parse_spec` does."""
    return parse_spec(store.read_bytes(name, max_bytes=MAX_SPEC_BYTES), store.uri_of(name))


def parse_spec(raw: bytes, where: str) -> SweepSpec:
    """Validate a spec from the bytes of a YAML file; `where` names it in errors."""
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(f"spec file '{where}' is {len(raw):,} bytes; a spec is a small YAML file (at most 1 MiB)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"spec file '{where}' is not UTF-8 text (byte {e.start}); save it as UTF-8 YAML") from e
    try:
        data = yaml.load(text, Loader=_SpecLoader)  # noqa: S506 (a SafeLoader)
    except SpecError as e:  # the loader's own refusals: aliases, duplicate keys
        raise SpecError(f"spec file '{where}': {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"spec file '{where}': not valid YAML{line}: {shorten(getattr(e, 'problem', None) or str(e))}") from e
    except RecursionError as e:
        raise SpecError(f"spec file '{where}': nested too deeply to be a spec") from e
    try:
        return spec_from_dict(data)
    except RecursionError as e:
        raise SpecError(f"spec file '{where}': nested too deeply to be a spec") from e


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec from a YAML file: measured before it is read, read up to the limit."""
    p = Path(path)
    shown = shorten(str(p))[1:-1]
    try:
        st = p.stat()
    except (OSError, ValueError):  # missing, unreadable folder, a NUL byte in the name
        raise SpecError(f"spec file '{shown}' not found; pass the path of a YAML sweep spec (see examples/)") from None
    if not stat.S_ISREG(st.st_mode):
        raise SpecError(f"spec file '{shown}' is not a regular file (a folder, a pipe or a device); pass the path "
                        f"of a YAML sweep spec")
    if st.st_size > MAX_SPEC_BYTES:
        raise SpecError(f"spec file '{shown}' is {st.st_size:,} bytes; a spec is a small YAML file (at most 1 MiB)")
    with p.open("rb") as f:
        return parse_spec(f.read(MAX_SPEC_BYTES + 1), str(p))  # it may have grown since: parse_spec says so

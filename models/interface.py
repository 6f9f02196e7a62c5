"""What a model family provides to repsweep: the written interface every family implements.

A family (`ModelFamily`) builds models from a `ModelConfig` and says which architectures it
can build; its models (`RepresentationModel`) expose the representations the analyses compare
and the surgery they need. `models/registry.py` names the families; nothing in repsweep looks
for a capability with `hasattr`: a family that does not implement a method here fails on
construction (abstract methods), and `tests/test_model_interface.py` runs every family through
the same checks.

    family = get_family("cifar_resnet")
    model = family.build(ModelConfig("cifar_resnet", depth=20, width=1, in_channels=3, num_classes=10))
    family.arch_problem(config)       # None, or the field it cannot build and what that field allows
    model.forward_layers(x)           # every captured representation, in layer_info order
    model.layer_info((3, 32, 32))     # what each one is: name, kind, stage, block, size
    model.inference_copy()            # an equivalent eval-only copy for fast probing
    model.residual_blocks()           # the blocks that can be removed ...
    model.without_block("stage2.block3")   # ... and a copy with one of them removed
"""

from __future__ import annotations

import dataclasses
from abc import ABC, ABCMeta, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    """Everything a family needs to build one model; saved in every model file."""

    family: str  # a name in models/registry.py
    depth: float  # the grid's depth axis (the family says what it means)
    width: float  # the grid's width axis: a channel multiplier
    in_channels: int  # of the data's images (0 where only the architecture is asked about)
    num_classes: int  # of the data's labels (0 likewise)
    zero_init_residual: bool = False  # each residual branch starts at zero (a control)
    scale: str = "stage3"  # imagenet_resnet: the stages depth and width multiply (stage3 | all)
    name: str = ""  # torchvision: the model's name in torchvision.models
    tokens: str = "mean"  # torchvision transformers: a token layer compared as its mean, class token or flattened

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class LayerInfo:
    """One captured representation: where it sits in the network and its flattened size."""

    layer: int  # position in forward_layers(), 0 = the first
    layer_name: str  # e.g. "stem", "stage2.block3", "pool", "logits"
    layer_kind: str  # "stem" | "block" | "pool" | "logits"
    stage: int  # 0 for the stem, 1.. for the stages, one past the last stage for pool and logits
    block: int  # index within the stage; 0 for stem, pool and logits
    dim: int  # flattened features per example (channels x height x width)
    tokens: str = ""  # a token layer (batch, tokens, dim): compared as their "mean", the "cls" token or "flatten"ed


class RepresentationModel(nn.Module, metaclass=ABCMeta):
    """A classifier whose hidden representations repsweep captures, compares and operates on."""

    @abstractmethod
    def forward_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every captured representation for a batch x (n, ...), in `layer_info` order; logits last."""

    @abstractmethod
    def layer_info(self, input_shape: tuple[int, ...]) -> list[LayerInfo]:
        """Metadata of every captured layer for one example of `input_shape`."""

    @abstractmethod
    def inference_copy(self) -> RepresentationModel:
        """An eval-only copy computing the same function (to float rounding), faster to probe.

        Its activations may use another memory layout (channels_last); the original is untouched.
        """

    @abstractmethod
    def residual_blocks(self) -> list[str]:
        """Layer names of the blocks `without_block` can remove (empty if the family has none)."""

    @abstractmethod
    def without_block(self, name: str) -> RepresentationModel:
        """A copy with block `name`'s residual branch removed; its shortcut is kept.

        Nothing is retrained. The copy has the same layers: at the removed block's place,
        forward_layers returns what its shortcut alone gives.
        """


def on_one_zero_example(model: nn.Module, input_shape: tuple[int, ...], forward: Any) -> Any:
    """forward(x) for one all-zero example of `input_shape` (the model's device and dtype), in eval
    mode without gradients; the model's training flag is restored. For sizes in `layer_info`."""
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        with torch.no_grad():
            return forward(torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)


class ModelFamily(ABC):
    """A kind of network: which architectures it builds, how to build and label them."""

    name: str  # its name in the spec's `model.family`
    min_image_size: int = 4  # the smallest height and width its models take (pixels)
    image_channels: int = 0  # the channels its models take (0: any)
    default_arch: tuple[float, float] = (1.0, 1.0)  # (depth, width) of a grid that names neither
    options: tuple[str, ...] = ()  # the ModelConfig fields past depth and width it reads (scale, name, tokens)

    @abstractmethod
    def arch_problem(self, config: ModelConfig) -> tuple[str, str] | None:
        """None if this family builds `config`'s architecture; else (field, what that field allows).

        Only the architecture is asked about: in_channels and num_classes may be 0.
        """

    def input_problem(self, config: ModelConfig, channels: int, size: int) -> str | None:
        """None if `config`'s model takes square images of `channels` x `size` pixels; else what it takes."""
        if self.image_channels and channels != self.image_channels:
            return f"images of {self.image_channels} channels"
        return None if size >= self.min_image_size else f"images of at least {self.min_image_size} px"

    @abstractmethod
    def build(self, config: ModelConfig) -> RepresentationModel:
        """A freshly initialised model (seed torch before calling, for a reproducible one)."""

    def label(self, config: ModelConfig) -> str:
        """The architecture's one spelling, used in trial ids, tables and charts: 'd56-w2'."""
        return f"d{config.depth:g}-w{config.width:g}"

"""The torchvision family: any classification model in `torchvision.models`, by name, built untrained.

Its captured layers are the outputs of its blocks, found from the module tree and read through
torchvision's feature extraction (`create_feature_extractor`, which traces the model with
torch.fx): a block is a module with submodules that sits in a container (nn.Sequential,
nn.ModuleList or nn.ModuleDict): a ResNet's `layer2.1`, a ConvNeXt's `features.3.0`, a ViT's
`encoder.layers.encoder_layer_4`, a MobileNet's `features.7`. A model with no such module (VGG,
AlexNet) has its containers' convolutions and linear layers instead. Its blocks' containers are its
stages, in order. Then come the input of the classifier (`pool`: the node before the output)
and the logits.

A transformer's token output (batch, tokens, dim) is compared as its mean over tokens, its class
token (the first) or flattened: the spec's `model.tokens`, recorded with each such layer
(`LayerInfo.tokens`). torchvision's ViTs take exactly their built image size (224 px). The
family has no block removal (its blocks are not all residual).
"""

from __future__ import annotations

import copy
from functools import lru_cache

import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from repsweep.models.interface import LayerInfo, ModelConfig, ModelFamily, RepresentationModel, on_one_zero_example

TOKENS = ("mean", "cls", "flatten")
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_NO_AUX = {"googlenet": {"aux_logits": False, "init_weights": True}, "inception_v3": {"aux_logits": False, "init_weights": True}}
MIN_IMAGE = 32  # every classification model in torchvision takes 32 px images, but the ViTs
VIT_IMAGE = 224  # torchvision builds its ViTs for 224 px images, and they take no other size


@lru_cache(maxsize=1)
def model_names() -> tuple[str, ...]:
    """The classification models torchvision builds (torchvision.models, not detection or video)."""
    return tuple(torchvision.models.list_models(module=torchvision.models))


def _blocks(net: nn.Module) -> list[tuple[str, str]]:
    """(module name, its container's name) of every block, in definition order."""
    found: list[tuple[str, str]] = []

    def visit(module: nn.Module, name: str) -> None:
        for child_name, child in module.named_children():
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, _CONTAINERS):
                visit(child, full)
            elif any(True for _ in child.children()):
                if isinstance(module, _CONTAINERS):
                    found.append((full, name))
                else:
                    visit(child, full)

    visit(net, "")
    if not found:  # a plain stack of layers (VGG, AlexNet): its containers' weighted layers
        found = [(n, n.rpartition(".")[0]) for n, m in net.named_modules()
                 if isinstance(m, (nn.Conv2d, nn.Linear)) and "." in n]
        found = found[:-1]  # the last is the classifier: the logits
    return found


class TorchvisionModel(RepresentationModel):
    """A torchvision classifier with its blocks' outputs captured through feature extraction."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        problem = FAMILY.arch_problem(config)
        if problem:
            raise ValueError(f"{problem[0]} must be {problem[1]}")
        self.name, self.tokens = config.name, config.tokens
        self.net = torchvision.models.get_model(config.name, weights=None, num_classes=config.num_classes,
                                                **_NO_AUX.get(config.name, {}))
        blocks = _blocks(self.net)
        nodes = get_graph_node_names(self.net)[1]  # eval-mode nodes, in execution order
        stages = list(dict.fromkeys(parent for _, parent in blocks))
        self._layers = [(name, "block", stages.index(parent) + 1, sum(p == parent for _, p in blocks[:i]))
                        for i, (name, parent) in enumerate(blocks)]
        self._layers += [(nodes[-2], "pool", len(stages) + 1, 0), (nodes[-1], "logits", len(stages) + 1, 0)]
        self._capture()

    def _capture(self) -> None:
        """The feature extractor over self.net (shares its modules; not a submodule of its own)."""
        extractor = create_feature_extractor(self.net, return_nodes={n: str(i) for i, (n, *_) in enumerate(self._layers)})
        object.__setattr__(self, "_extractor", extractor.train(self.training))

    def train(self, mode: bool = True) -> TorchvisionModel:
        super().train(mode)
        self._extractor.train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _reduce(self, t: torch.Tensor) -> torch.Tensor:
        if t.dim() != 3:  # not (batch, tokens, dim)
            return t
        if self.tokens == "mean":
            return t.mean(1)
        return t[:, 0] if self.tokens == "cls" else t.flatten(1)

    def forward_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every block's output (tokens reduced by model.tokens), the classifier's input, the logits."""
        out = self._extractor(x)
        return [self._reduce(out[str(i)]) for i in range(len(self._layers))]

    def layer_info(self, input_shape: tuple[int, int, int]) -> list[LayerInfo]:
        raw = on_one_zero_example(self, input_shape, self._extractor)
        return [LayerInfo(i, name, kind, stage, block, self._reduce(raw[str(i)])[0].numel(),
                          tokens=self.tokens if raw[str(i)].dim() == 3 else "")
                for i, (name, kind, stage, block) in enumerate(self._layers)]

    def inference_copy(self) -> TorchvisionModel:
        """An eval-mode copy (no BatchNorm folding: the blocks are arbitrary); channels_last for 4-D weights."""
        fast = copy.deepcopy(self).eval()
        return fast.to(memory_format=torch.channels_last)

    def residual_blocks(self) -> list[str]:
        return []

    def without_block(self, name: str) -> TorchvisionModel:
        raise ValueError(f"no residual block '{name}'; model.family torchvision removes no blocks")


class TorchvisionFamily(ModelFamily):
    """Classification models of torchvision.models by `model.name`; the grid's depth and width stay 1."""

    name = "torchvision"
    min_image_size = MIN_IMAGE
    image_channels = 3  # colour images: every stem takes 3 channels
    options = ("name", "tokens")

    def arch_problem(self, config: ModelConfig) -> tuple[str, str] | None:
        if config.name not in model_names():
            return "model.name", f"a classification model of torchvision.models ({', '.join(model_names()[:6])}, ...)"
        if config.tokens not in TOKENS:
            return "model.tokens", f"one of {', '.join(TOKENS)}"
        for axis in ("depth", "width"):
            if getattr(config, axis) != 1:
                return axis, "1 (the architecture is model.name's)"
        return None

    def input_problem(self, config: ModelConfig, channels: int, size: int) -> str | None:
        if config.name.startswith("vit_") and size != VIT_IMAGE:
            return f"{VIT_IMAGE} px images for {config.name} (torchvision builds its ViTs for that size only)"
        return super().input_problem(config, channels, size)

    def build(self, config: ModelConfig) -> TorchvisionModel:
        return TorchvisionModel(config)

    def label(self, config: ModelConfig) -> str:
        return config.name


FAMILY = TorchvisionFamily()

"""The model families a spec's `model.family` can name: the one place a new family is added."""

from __future__ import annotations

from repsweep.models import imagenet_resnet, resnet, torchvision_models
from repsweep.models.interface import ModelFamily

FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (resnet.FAMILY, imagenet_resnet.FAMILY, torchvision_models.FAMILY)}


def get_family(name: str) -> ModelFamily:
    """The family called `name`; ValueError listing the families if there is none."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; families are {', '.join(FAMILIES)}")
    return FAMILIES[name]

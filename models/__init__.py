"""Model families compared by repsweep, with named layer capture and size counts."""

from models.counting import count_flops, count_params
from models.resnet import CifarResNet, LayerInfo, cifar_resnet

__all__ = ["CifarResNet", "LayerInfo", "cifar_resnet", "count_flops", "count_params"]

"""Model families compared by repsweep: their written interface, the registry, model files.

`interface.py` says what a family provides; `registry.py` names the families: `resnet.py`
(CIFAR ResNets) and `imagenet_resnet.py` (bottleneck ResNet-50 and its scalings) share
`residual.py`; `files.py` saves and loads models of any family; `counting.py` counts
parameters and FLOPs.
"""

from repsweep.models.counting import count_flops, count_params
from repsweep.models.files import CheckpointError, model_bytes, model_from_bytes
from repsweep.models.imagenet_resnet import ImageNetResNet
from repsweep.models.interface import LayerInfo, ModelConfig, ModelFamily, RepresentationModel
from repsweep.models.registry import FAMILIES, get_family
from repsweep.models.resnet import CifarResNet

__all__ = ["FAMILIES", "CheckpointError", "CifarResNet", "ImageNetResNet", "LayerInfo", "ModelConfig", "ModelFamily",
           "RepresentationModel", "count_flops", "count_params", "get_family", "model_bytes",
           "model_from_bytes"]

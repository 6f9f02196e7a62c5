"""Model families compared by repsweep: their written interface, the registry, model files.

`interface.py` says what a family provides; `registry.py` names the families; `files.py`
saves and loads models of any family; `counting.py` counts parameters and FLOPs.
"""

from repsweep.models.counting import count_flops, count_params
from repsweep.models.files import CheckpointError, model_bytes, model_from_bytes
from repsweep.models.interface import LayerInfo, ModelConfig, ModelFamily, RepresentationModel
from repsweep.models.registry import FAMILIES, get_family
from repsweep.models.resnet import CifarResNet

__all__ = ["FAMILIES", "CheckpointError", "CifarResNet", "LayerInfo", "ModelConfig", "ModelFamily",
           "RepresentationModel", "count_flops", "count_params", "get_family", "model_bytes",
           "model_from_bytes"]

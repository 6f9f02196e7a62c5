"""Model files: a trained model as bytes and back, for any family in the registry.

A file holds tensors and plain values only (loadable with torch's weights_only=True): the
state dict, the `ModelConfig` it was built from, the input shape, and the caller's metadata
(the trial's configuration, for repsweep's own files).
"""

from __future__ import annotations

import io
from typing import Any

import torch

from repsweep.models.interface import ModelConfig, RepresentationModel
from repsweep.models.registry import get_family


class CheckpointError(RuntimeError):
    """A saved model cannot be read; the message names the file and how to recover."""


def model_bytes(model: RepresentationModel, config: ModelConfig, input_shape: tuple[int, ...],
                meta: dict[str, Any]) -> bytes:
    """A final model as bytes (see the module docstring)."""
    buf = io.BytesIO()
    torch.save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "model": config.to_dict(), "input_shape": list(input_shape), "meta": meta}, buf)
    return buf.getvalue()


def model_from_bytes(blob: bytes, where: str) -> tuple[RepresentationModel, dict[str, Any]]:
    """Rebuild a saved model in eval mode, and its file's contents but the weights.

    `where` (the file's URI) goes into the error if the file is damaged or foreign.
    """
    try:
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        config = ModelConfig(**state["model"])
        model = get_family(config.family).build(config)
        model.load_state_dict(state["state_dict"])
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise CheckpointError(
            f"checkpoint '{where}' is corrupt or not a repsweep model ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200] if str(e) else ''}); delete it and run "
            f"'repsweep resume <sweep>' to rebuild it from the trial's last checkpoint") from e
    return model.eval(), {"model": config, "input_shape": tuple(state["input_shape"]), "meta": state["meta"]}

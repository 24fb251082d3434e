"""Fingerprints of encoder weights: an index or embeddings folder records the one of the encoder that made it."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import PreTrainedModel
from transformers.utils import logging

logger = logging.get_logger(__name__)

# Config fields that change the vectors an encoder produces, hashed with the weights.
_FINGERPRINT_CONFIG_KEYS = ("pooling", "projection_dim", "normalize")


# --------------------------------------------------------------------------------------------------- fingerprints
def _fingerprint(config: dict, tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    digest = hashlib.sha256(json.dumps({k: config.get(k) for k in _FINGERPRINT_CONFIG_KEYS}).encode())
    for name, tensor in sorted(tensors, key=lambda item: item[0]):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def encoder_fingerprint(encoder: PreTrainedModel) -> str:
    """Hash of the weights and pooling config: the same vectors come out iff the fingerprints agree.

    An exported stand-in (`dpr_hf.export.ONNXEncoder`) has no torch weights; it carries its source's fingerprint.
    """
    recorded = getattr(encoder, "fingerprint", None)
    if isinstance(recorded, str):
        return recorded
    return _fingerprint(encoder.config.to_dict(), encoder.state_dict().items())


def pretrained_fingerprint(model_dir: str | os.PathLike) -> str:
    """`encoder_fingerprint` of a saved encoder folder, read from its safetensors files without building it."""
    model_dir = Path(model_dir)
    files = sorted(model_dir.glob("*.safetensors"))
    exported = (
        model_dir / "onnx_export.json"
    )  # an ONNX export (dpr_hf.export) records its source's fingerprint
    if not files and exported.is_file():
        return json.loads(exported.read_text())["fingerprint"]
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {model_dir}")
    config = json.loads((model_dir / "config.json").read_text())
    tensors = []
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            tensors.extend((key, handle.get_tensor(key)) for key in handle.keys())
    return _fingerprint(config, tensors)

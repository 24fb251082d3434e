"""Exports of trained dpr_hf models to other runtimes: sentence-transformers, and ONNX (run by ONNX Runtime or
OpenVINO through models that stand in for the torch ones). onnxruntime / openvino are optional extras."""

from .auto import BackendChoice, choose_backend
from .backends import BACKENDS, load_encoder, load_system
from .onnx import ONNXEncoder, ONNXReader, export_model_onnx, export_onnx, load_onnx_model
from .sentence_transformers import export_sentence_transformers, read_pair_settings

__all__ = [
    "BACKENDS",
    "BackendChoice",
    "ONNXEncoder",
    "ONNXReader",
    "choose_backend",
    "export_model_onnx",
    "export_onnx",
    "export_sentence_transformers",
    "load_encoder",
    "load_onnx_model",
    "load_system",
    "read_pair_settings",
]

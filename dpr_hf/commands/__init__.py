"""One module per `dpr-hf` sub-command: `add_arguments(parser)` and `run(args)`."""

from __future__ import annotations

import argparse


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """`--backend` and `--precision` of the commands that encode (see `dpr_hf.encoding.precision_context` and
    `dpr_hf.export.backends`)."""
    parser.add_argument(
        "--backend",
        choices=("torch", "onnx", "openvino"),
        default="torch",
        help="torch; onnx / openvino: the encoders' ONNX exports (given, or made once in ~/.cache/dpr_hf/onnx)",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf32", "bf16", "fp16", "int8"),
        default="fp32",
        help="fp32; torch: bf32 (CPU bf16 matmul math), bf16/fp16 autocast; onnx/openvino: int8 (dynamic)",
    )

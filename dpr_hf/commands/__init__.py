"""One module per `dpr-hf` sub-command: `add_arguments(parser)` and `run(args)`."""

from __future__ import annotations

import argparse
import os

BACKEND_CHOICES = ("auto", "torch", "onnx", "openvino")
BACKEND_ENV = "DPR_HF_BACKEND"


def _backend(value: str) -> str:
    """argparse applies this to the default too, so a bad $DPR_HF_BACKEND is a clear usage error."""
    if value not in BACKEND_CHOICES:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not one of {', '.join(BACKEND_CHOICES)} (the default comes from ${BACKEND_ENV} if set)"
        )
    return value


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """`--backend` and `--precision` of the commands that encode (see `dpr_hf.encoding.precision_context`,
    `dpr_hf.export.backends` and `dpr_hf.export.auto`). $DPR_HF_BACKEND pins the default backend (e.g. torch, for
    runs that must give the same bits on every machine)."""
    parser.add_argument(
        "--backend",
        type=_backend,
        default=os.environ.get(BACKEND_ENV, "auto"),
        metavar="{" + ",".join(BACKEND_CHOICES) + "}",
        help="auto (default, or $DPR_HF_BACKEND): the fastest backend on this machine whose embeddings stay within "
        "cosine 0.999 of torch fp32, measured once and cached in ~/.cache/dpr_hf; torch; onnx / openvino: the "
        "encoders' ONNX exports (given, or made once in ~/.cache/dpr_hf/onnx)",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf32", "bf16", "fp16", "int8"),
        default=None,
        help="default: fp32 (with --backend auto: fp32 or any faster precision that passes the guard); torch: "
        "bf32 (CPU bf16 matmul math), bf16/fp16 autocast; onnx/openvino: int8 (dynamic)",
    )

"""One module per `dpr-hf` sub-command: `add_arguments(parser)` and `run(args)`."""

from __future__ import annotations

import argparse


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """`--precision` of the commands that encode (see `dpr_hf.encoding.precision_context`)."""
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf32", "bf16", "fp16"),
        default="fp32",
        help="fp32; bf32 (CPU bf16 matmul math); bf16/fp16 autocast",
    )

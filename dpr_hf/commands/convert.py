"""Convert DPR checkpoints (transformers' DPR models, original facebookresearch/DPR files) to dpr_hf, or back.

The source kind is detected: a checkpoint file (original DPR bi-encoder or reader; torch pickles are read with
weights_only=True, safetensors also accepted), a transformers DPR folder or Hub id, or dpr_hf model folder(s).
"""

from __future__ import annotations

import argparse
import sys

from ..models.convert import convert


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="checkpoint file, model folder, Hub id, or folder of role subfolders")
    parser.add_argument(
        "dest", help="output folder (a bi-encoder gives question_encoder/ and passage_encoder/)"
    )
    parser.add_argument(
        "--to",
        choices=("dpr_hf", "transformers"),
        default="dpr_hf",
        help="dpr_hf (import, default) or transformers (export to DPRQuestionEncoder/DPRContextEncoder/DPRReader)",
    )
    parser.add_argument(
        "--backbone",
        help="config and tokenizer of an original DPR checkpoint (default: the one it names, e.g. bert-base-uncased)",
    )
    parser.add_argument("--tokenizer", help="tokenizer to save with the models instead of the source's")
    parser.add_argument("--overwrite", action="store_true", help="replace DEST if it exists")


def run(args: argparse.Namespace) -> int:
    try:
        written = convert(
            args.src,
            args.dest,
            to=args.to,
            backbone=args.backbone,
            tokenizer=args.tokenizer,
            overwrite=args.overwrite,
        )
    except FileExistsError as error:
        print(f"dpr-hf convert: error: {error}", file=sys.stderr)
        return 2
    for folder in written:
        print(folder)
    return 0

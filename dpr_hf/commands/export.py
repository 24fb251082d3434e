"""Export a trained encoder pair to another library: one sentence-transformers model (query/document routes).

`dpr-hf export PAIR OUT --to sentence-transformers` (PAIR: a `dpr-hf train-retriever` output or system folder).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pair", help="folder holding question_encoder/ and passage_encoder/")
    parser.add_argument("output", help="output folder")
    parser.add_argument(
        "--to",
        choices=("sentence-transformers",),
        required=True,
        help="sentence-transformers: one SentenceTransformer model, encode_query = E_Q, encode_document = E_P",
    )
    parser.add_argument(
        "--similarity",
        choices=("dot", "cosine"),
        help="model.similarity of the export (default: the pair's, from training_args.json or its configs)",
    )
    parser.add_argument(
        "--question-max-length", type=int, help="question tokens kept (default: the pair's, else 64)"
    )
    parser.add_argument(
        "--passage-max-length", type=int, help="passage tokens kept (default: the pair's, else 256)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")


def run(args: argparse.Namespace) -> int:
    from ..export import export_sentence_transformers

    written = (
        export_sentence_transformers(  # errors (an existing OUTPUT, a bad PAIR) are reported by dpr_hf.cli
            args.pair,
            args.output,
            similarity=args.similarity,
            question_max_length=args.question_max_length,
            passage_max_length=args.passage_max_length,
            overwrite=args.overwrite,
        )
    )
    print(written)
    return 0

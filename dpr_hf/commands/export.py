"""Export trained models to other runtimes: sentence-transformers (an encoder pair) or ONNX (encoders, reader).

`dpr-hf export PAIR OUT --to sentence-transformers`: one SentenceTransformer, encode_query = E_Q, encode_document
= E_P (PAIR: a `dpr-hf train-retriever` output or a system folder).
`dpr-hf export SRC OUT --to onnx [--quantize]`: `model.onnx` (+ `model_int8.onnx`) for each model in SRC (a model
folder, or the question_encoder/ passage_encoder/ reader/ of a pair or system folder), run by ONNX Runtime or
OpenVINO through `dpr_hf.export.load_onnx_model`.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="pair, system or model folder")
    parser.add_argument("output", help="output folder")
    parser.add_argument(
        "--to",
        choices=("sentence-transformers", "onnx"),
        required=True,
        help="sentence-transformers (an encoder pair as one model) or onnx (every model in SOURCE)",
    )
    parser.add_argument("--quantize", action="store_true", help="onnx: also write int8 model_int8.onnx")
    parser.add_argument(
        "--similarity",
        choices=("dot", "cosine"),
        help="sentence-transformers: model.similarity (default: the pair's, from training_args.json or configs)",
    )
    parser.add_argument(
        "--question-max-length",
        type=int,
        help="sentence-transformers: question tokens kept (default: the pair's, else 64)",
    )
    parser.add_argument(
        "--passage-max-length",
        type=int,
        help="sentence-transformers: passage tokens kept (default: the pair's, else 256)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")


def run(args: argparse.Namespace) -> int:
    # errors (an existing OUTPUT, a folder that is not a pair) are reported by dpr_hf.cli
    if args.to == "onnx":
        from ..export import export_onnx

        for folder in export_onnx(args.source, args.output, quantize=args.quantize, overwrite=args.overwrite):
            print(folder)
        return 0
    from ..export import export_sentence_transformers

    written = export_sentence_transformers(
        args.source,
        args.output,
        similarity=args.similarity,
        question_max_length=args.question_max_length,
        passage_max_length=args.passage_max_length,
        overwrite=args.overwrite,
    )
    print(written)
    return 0

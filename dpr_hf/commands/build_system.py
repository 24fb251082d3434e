"""Assemble a QA system folder from a trained pair, its index and optionally a reader and a BM25 index.

`dpr-hf build-system --pair DIR --index DIR [--reader DIR] [--bm25 DIR] [--retrieval-metrics FILE]
[--reader-metrics FILE] --output DIR` writes the folder `pipeline("open-domain-qa", model=DIR)` loads and
`dpr-hf push` publishes (the metrics files, from `evaluate-retrieval` / `evaluate-reader`, go into its model
cards). The index is checked against both encoders; the folder appears whole or not at all.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pair", required=True, help="retriever training folder (question_encoder/, passage_encoder/)"
    )
    parser.add_argument("--index", required=True, help="PassageIndex folder written by build-index")
    parser.add_argument("--reader", help="reader training folder (reader/) or reader model folder")
    parser.add_argument("--bm25", help="BM25 folder: enables hybrid retrieval (the default when given)")
    parser.add_argument("--retrieval-metrics", help="metrics.json of evaluate-retrieval, for the model cards")
    parser.add_argument("--reader-metrics", help="metrics.json of evaluate-reader, for the model cards")
    parser.add_argument(
        "--retriever", choices=("dense", "hybrid"), help="default retriever (hybrid when --bm25 is given)"
    )
    parser.add_argument("--num-passages", type=int, default=20, help="passages retrieved and read (20)")
    parser.add_argument("--output", required=True, help="system folder to write")


def run(args: argparse.Namespace) -> int:
    from ..pipelines.system import QASystem

    system = QASystem.from_components(
        args.pair,
        args.index,
        reader_dir=args.reader,
        bm25=args.bm25,
        retrieval_metrics=args.retrieval_metrics,
        reader_metrics=args.reader_metrics,
        retriever=args.retriever or ("hybrid" if args.bm25 else "dense"),
        num_passages=args.num_passages,
    )
    system.save_pretrained(args.output)
    parts = ["question_encoder", "passage_encoder", "index"]
    parts += [name for name, given in (("reader", args.reader), ("bm25", args.bm25)) if given]
    print(f"{args.output}: QA system with {', '.join(parts)} (default retriever {system.config.retriever})")
    return 0

"""Build a FAISS passage index folder (passages/, index.faiss, manifest.json) from `dpr-hf encode` output.

`dpr-hf build-index --embeddings DIR --output DIR [--factory Flat|HNSW32|IVF4096,PQ64|IVF4096,SQ8 ...]
[--keep-embeddings]`
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embeddings", required=True, help="folder written by `dpr-hf encode`")
    parser.add_argument("--output", required=True, help="index folder to write")
    parser.add_argument("--factory", default="Flat", help="FAISS index factory string (Flat = exact search)")
    parser.add_argument(
        "--train-size", type=int, help="random vectors to train IVF/PQ/SQ on (all up to 100K, or 50 per list)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the training sample (0)")
    parser.add_argument("--device", type=int, help="GPU id for faiss-gpu (default: CPU)")
    parser.add_argument(
        "--keep-embeddings",
        action="store_true",
        help="also keep the float32 vectors in passages/ (4 x dim bytes per passage), e.g. to train another "
        "IVF index from this folder later; by default they are stored once, in index.faiss",
    )


def run(args: argparse.Namespace) -> int:
    from ..index.passage_index import PassageIndex

    index = PassageIndex.from_embeddings(
        args.embeddings, factory=args.factory, train_size=args.train_size, seed=args.seed, device=args.device
    )
    index.save(args.output, keep_embeddings=args.keep_embeddings)
    print(f"indexed {len(index)} passages ({index.embedding_dim} dims, {index.factory}) into {args.output}")
    return 0

"""Encode a passage corpus with a passage encoder into a datasets folder with an `embeddings` column.

`dpr-hf encode --passage-encoder DIR --passages FILE|DATASET --output DIR` (under `accelerate launch`, each
process encodes its own shards; rerunning an interrupted job encodes only the missing shards).
"""

from __future__ import annotations

import argparse

from . import add_precision_argument

BATCH_SIZE = 64  # passages per forward pass unless given or streamed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--passage-encoder", required=True, help="passage encoder folder, or a pair/system folder holding one"
    )
    parser.add_argument(
        "--passages",
        required=True,
        help="DPR TSV, JSONL {id,title,text} (.gz ok), SQuAD JSON or datasets folder",
    )
    parser.add_argument("--split", help="split of a datasets folder or Hub dataset given as --passages")
    parser.add_argument(
        "--output", required=True, help="output folder (datasets save_to_disk + encoding.json)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"passages per forward pass (default {BATCH_SIZE}, or what --backend auto measured fastest on this "
        "CPU: e.g. 4 passages of 256 tokens per stream, one stream per thread); given, it runs in one stream",
    )
    parser.add_argument("--max-length", type=int, default=256, help="passage tokens kept (256)")
    parser.add_argument(
        "--shard-size", type=int, default=100_000, help="passages per resumable shard (100000)"
    )
    add_precision_argument(parser)


def run(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from ..data import load_passages
    from ..encoding import distributed_state, encode_corpus
    from ..export.backends import prepare_encoder
    from ..models.pair import encoder_dir

    path = encoder_dir(args.passage_encoder, "passage")
    state = distributed_state()
    # one process builds the datasets cache (and an on-demand ONNX export), the others reuse it
    with state.main_process_first():
        passages = load_passages(args.passages, split=args.split)
        prepared = prepare_encoder(
            path,
            "passage",
            backend=args.backend,
            precision=args.precision,
            num_texts=len(passages),
            max_length=args.max_length,
            batch_size=args.batch_size or BATCH_SIZE,
        )
    embeddings = encode_corpus(
        prepared.model,
        AutoTokenizer.from_pretrained(path),
        passages,
        args.output,
        shard_size=args.shard_size,
        max_length=args.max_length,
        encoder_name=str(path),
        **prepared.encode_kwargs(args.batch_size),
    )
    if state.is_main_process:
        print(f"encoded {len(embeddings)} passages into {args.output}")
    return 0

"""Build a FAISS passage index folder (passages/, index.faiss, manifest.json) from `dpr-hf encode` output.

`dpr-hf build-index --embeddings DIR --output DIR [--factory Flat|HNSW32|IVF4096,PQ64|IVF4096,SQ8 ...]
[--memory-budget 16GB] [--keep-embeddings] [--no-disk-check]`: with `--memory-budget` the planner picks the
factory for the corpus size and dimension (`--factory` still wins); the expected RAM, disk, build time and recall
are printed first, and a plan whose disk needs exceed the free space where `--output` goes is refused.
An on-disk IVF (`IVF4096,SQ8,OnDisk`, or the planner's pick when nothing fits in RAM) is built in
`<output>.ondisk-build/` beside the output, whose data file then moves into the index folder.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from ..index.planner import PlanError, parse_size, split_on_disk


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embeddings", required=True, help="folder written by `dpr-hf encode`")
    parser.add_argument("--output", required=True, help="index folder to write")
    parser.add_argument(
        "--factory",
        help="FAISS index factory string, an IVF one + ',OnDisk' to keep its lists in a memory-mapped file "
        "(default: Flat = exact search, or the planner's pick with --memory-budget)",
    )
    parser.add_argument(
        "--memory-budget",
        type=_size,
        help="RAM the index may use to build and search, e.g. 16GB or 16GiB: picks Flat / HNSW32 / IVF-SQ8 / "
        "IVF-PQ to fit, then IVF-SQ8 / IVF-PQ with their lists on disk, or refuses before building when none fits",
    )
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
    parser.add_argument(
        "--no-disk-check",
        action="store_true",
        help="build even when the planner's disk estimate exceeds the free space where --output goes",
    )


def run(args: argparse.Namespace) -> int:
    from ..encoding import EMBEDDINGS_COLUMN, load_embeddings
    from ..index.passage_index import PassageIndex
    from ..index.planner import check_free_disk, estimate, family_of, plan_index

    dataset, info = load_embeddings(args.embeddings)  # memory-mapped: only the sizes are read here
    dim = dataset.features[EMBEDDINGS_COLUMN].length
    if dim is None or dim < 1:
        dim = len(dataset[0][EMBEDDINGS_COLUMN])
    factory, output = args.factory or ("Flat" if args.memory_budget is None else None), Path(args.output)
    disk_folder = None if args.no_disk_check else output
    try:
        plan = None
        if args.memory_budget is not None:
            plan = plan_index(
                len(dataset),
                dim,
                args.memory_budget,
                factory=factory,
                output_dir=disk_folder,
                keep_embeddings=args.keep_embeddings,
            )
            factory = plan.factory
        elif family_of(factory) is not None:  # a factory the planner has estimates for: its disk checked too
            plan = estimate(factory, len(dataset), dim, keep_embeddings=args.keep_embeddings)
            if disk_folder is not None:
                check_free_disk(plan, disk_folder)
    except PlanError as error:
        print(f"dpr-hf build-index: error: {error}", file=sys.stderr)
        return 2
    if plan is not None:
        print(plan.describe(), flush=True)
    on_disk_dir = output.with_name(output.name + ".ondisk-build") if split_on_disk(factory)[1] else None
    index = PassageIndex.build(
        dataset,
        factory=factory,
        train_size=args.train_size,
        seed=args.seed,
        device=args.device,
        encoder_name=info.get("encoder_name"),
        encoder_fingerprint=info.get("encoder_fingerprint"),
        on_disk_dir=on_disk_dir,
    )
    index.save(output, keep_embeddings=args.keep_embeddings)
    if on_disk_dir is not None:  # save took its data file
        shutil.rmtree(on_disk_dir)
    print(f"indexed {len(index)} passages ({index.embedding_dim} dims, {index.factory}) into {args.output}")
    return 0

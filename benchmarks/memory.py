"""Bounded memory: peak RSS of encoding and indexing a 50K and a 200K passage corpus.

Each corpus size runs in its own process (peak RSS is a per-process high-water mark): `encode_corpus` in shards
of `--shard-size` passages to disk, then `PassageIndex.from_embeddings` (Flat) and `save`. The passages are
synthetic short texts and the encoder a tiny random BERT (2 layers, `--dim` hidden units) over MiniLM's real
vocabulary, so the run takes minutes on 2 cores; memory, not quality, is measured. What has to grow with the
corpus is the FAISS Flat index itself (N x dim x 4 bytes, held in RAM to search); everything else should not.

    python benchmarks/memory.py            # 50K and 200K, appends a section to benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import RUNS, base_model_dir, now, peak_rss_mb, record, table

WORK = RUNS / "memory"
WORDS = (
    "the a of river city war king music church school france paris london north south new old first great "
    "played born built known called population century empire island league station museum university"
).split()


def _current_rss_mb() -> float:
    """Resident memory now (Linux /proc), next to the peak from getrusage."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 2**20


def _corpus(n: int):
    """`n` synthetic 12-30 word passages, written to disk and memory-mapped (not held in RAM)."""
    from datasets import Dataset

    def rows():
        for i in range(n):
            words = [WORDS[(i * 7 + j * (i % 13 + 1)) % len(WORDS)] for j in range(12 + i % 19)]
            yield {"id": str(i), "title": f"Article {i // 50}", "text": " ".join(words)}

    path = WORK / f"corpus-{n}"
    if not path.exists():
        Dataset.from_generator(rows).save_to_disk(str(path))
    from datasets import load_from_disk

    return load_from_disk(str(path))


def worker(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoTokenizer, BertConfig

    from dpr_hf import PassageEncoder, PassageEncoderConfig
    from dpr_hf.indexing import PassageIndex, encode_corpus

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=args.dim,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * args.dim,
    )
    encoder = PassageEncoder(PassageEncoderConfig(encoder=config)).eval()
    passages = _corpus(args.passages)
    stages = {"start (model, tokenizer, memory-mapped corpus)": (_current_rss_mb(), peak_rss_mb())}

    out = WORK / f"run-{args.passages}"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    encode_corpus(
        encoder,
        tokenizer,
        passages,
        out / "embeddings",
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        max_length=args.max_length,
        show_progress=False,
    )
    encode_seconds = time.perf_counter() - started
    stages["after encode_corpus"] = (_current_rss_mb(), peak_rss_mb())
    started = time.perf_counter()
    index = PassageIndex.from_embeddings(out / "embeddings")
    index.save(out / "index")
    index_seconds = time.perf_counter() - started
    stages["after index build + save"] = (_current_rss_mb(), peak_rss_mb())
    print(
        json.dumps(
            {
                "passages": args.passages,
                "stages": stages,
                "encode_seconds": encode_seconds,
                "index_seconds": index_seconds,
                "index_vector_mb": len(index) * index.embedding_dim * 4 / 2**20,
            }
        )
    )
    shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50000,200000", help="corpus sizes, one process each")
    parser.add_argument("--shard-size", type=int, default=25_000, help="encode_corpus shard size (25000)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=32, help="passage tokens kept (32)")
    parser.add_argument("--dim", type=int, default=128, help="hidden size = embedding dim of the tiny BERT")
    parser.add_argument("--passages", type=int, help=argparse.SUPPRESS)  # worker mode
    parser.add_argument("--no-record", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args()
    if args.passages:
        worker(args)
        return

    started = now()
    WORK.mkdir(parents=True, exist_ok=True)
    results = []
    for size in [int(s) for s in args.sizes.split(",")]:
        command = [sys.executable, __file__, "--passages", str(size), "--shard-size", str(args.shard_size),
                   "--batch-size", str(args.batch_size), "--max-length", str(args.max_length), "--dim",
                   str(args.dim)]  # fmt: skip
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        if completed.returncode:
            sys.exit(f"worker for {size} passages failed:\n{completed.stderr[-3000:]}")
        results.append(json.loads(completed.stdout.strip().splitlines()[-1]))

    rows = []
    for result in results:
        for stage, (current, peak) in result["stages"].items():
            rows.append([f"{result['passages']:,}", stage, f"{current:.0f}", f"{peak:.0f}"])
    timing = [
        [
            f"{r['passages']:,}",
            f"{r['encode_seconds']:.0f}",
            f"{r['index_seconds']:.1f}",
            f"{r['index_vector_mb']:.1f}",
            f"{r['stages']['after index build + save'][1] - r['index_vector_mb']:.0f}",
        ]
        for r in results
    ]
    small, large = results[0], results[-1]
    growth = large["stages"]["after index build + save"][1] - small["stages"]["after index build + save"][1]
    encode_growth = large["stages"]["after encode_corpus"][1] - small["stages"]["after encode_corpus"][1]
    body = (
        f"Synthetic 12-30 word passages, tiny random BERT (2 layers, {args.dim} dims) over MiniLM's vocabulary, "
        f"max_length {args.max_length}, batch {args.batch_size}, `encode_corpus` shard size "
        f"{args.shard_size:,}, Flat index; one process per corpus size. RSS in MiB (current from /proc, peak "
        "from getrusage).\n\n"
        + table(["passages", "stage", "RSS now (MiB)", "peak RSS (MiB)"], rows)
        + "\n\n"
        + table(
            [
                "passages",
                "encode (s)",
                "index build + save (s)",
                "Flat vectors N x d x 4 (MiB)",
                "peak RSS - Flat vectors (MiB)",
            ],
            timing,
        )  # fmt: skip
        + f"\n\nFrom {small['passages']:,} to {large['passages']:,} passages the peak RSS of encoding grows by "
        f"{encode_growth:.0f} MiB and the peak of the whole job by {growth:.0f} MiB, of which "
        f"{large['index_vector_mb'] - small['index_vector_mb']:.0f} MiB are the Flat index's vectors (which a "
        "Flat index must hold in RAM). Bound: peak RSS <= peak at start + O(shard size x (dim + text)) for "
        "encoding + N x dim x 4 bytes for a Flat index (an IVF-PQ factory stores far fewer bytes per vector).\n"
    )
    if args.no_record:
        print(body)
    else:
        record("Bounded memory: encoding and indexing 50K vs 200K passages", body, False, started)


if __name__ == "__main__":
    main()

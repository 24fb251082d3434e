"""Bounded memory: peak RSS of encoding and indexing a 50K and a 200K passage corpus.

Each corpus size runs in its own process (peak RSS is a per-process high-water mark): `encode_corpus` in shards
of `--shard-size` passages to disk, then `PassageIndex.from_embeddings` (Flat) and `save`. The passages are
synthetic short texts and the encoder a tiny random BERT (2 layers, `--dim` hidden units) over MiniLM's real
vocabulary, so the run takes minutes on 2 cores; memory, not quality, is measured. What has to grow with the
corpus is the FAISS Flat index itself (N x dim x 4 bytes, held in RAM to search); everything else should not.

    python benchmarks/memory.py            # 50K and 200K, appends a section to benchmarks/RESULTS.md
    python benchmarks/memory.py --bm25     # BM25 indexing alone (`BM25Retriever.from_passages` + save)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import RUNS, base_model_dir, now, peak_rss_mb, record, table

WORK = RUNS / "memory"
WORDS = (
    "the a of river city war king music church school france paris london north south new old first great "
    "played born built known called population century empire island league station museum university"
).split()


def _rss_mb() -> dict[str, float]:
    """Resident memory now (Linux /proc/self/status): anonymous (heap, tensors, FAISS) and file-backed (pages of
    memory-mapped Arrow files, which the kernel can drop at any time)."""
    fields = dict(
        line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line
    )
    return {key: int(fields[key].split()[0]) / 1024 for key in ("RssAnon", "RssFile")}


class _Sampler(threading.Thread):
    """Samples /proc every 20 ms: the peak of anonymous memory, which getrusage's peak (anonymous + file pages
    of memory-mapped data) does not separate."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak_anon = 0.0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(0.02):
            self.peak_anon = max(self.peak_anon, _rss_mb()["RssAnon"])

    def snapshot(self) -> list[float]:
        now = _rss_mb()
        self.peak_anon = max(self.peak_anon, now["RssAnon"])
        return [now["RssAnon"], now["RssFile"], self.peak_anon, peak_rss_mb()]


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


def bm25_worker(args: argparse.Namespace) -> None:
    """Peak anonymous RSS of building and saving a BM25 index, with the count it should grow by: the score
    matrix's non-zero entries (one per distinct term of each passage)."""
    from dpr_hf.retrieval.bm25 import BM25Retriever

    passages = _corpus(args.passages)
    sampler = _Sampler()
    sampler.start()
    start = sampler.snapshot()
    started = time.perf_counter()
    retriever = BM25Retriever.from_passages(passages)
    retriever.save(WORK / f"bm25-{args.passages}")
    seconds = time.perf_counter() - started
    end = sampler.snapshot()
    entries = len(retriever.model.scores["data"])
    shutil.rmtree(WORK / f"bm25-{args.passages}", ignore_errors=True)
    print(
        json.dumps(
            {"passages": args.passages, "start": start, "end": end, "seconds": seconds, "entries": entries}
        )
    )


def bm25_report(results: list[dict]) -> str:
    rows = [
        [f"{r['passages']:,}", f"{r['seconds']:.1f}", f"{r['entries']:,}", f"{r['start'][0]:.0f}",
         f"{r['end'][2]:.0f}", f"{r['end'][2] - r['start'][0]:.0f}",
         f"{(r['end'][2] - r['start'][0]) * 2**20 / r['entries']:.1f}"]
        for r in results
    ]  # fmt: skip
    small, large = results[0], results[-1]
    growth = (large["end"][2] - small["end"][2]) * 2**20 / (large["entries"] - small["entries"])
    return (
        "Synthetic 12-30 word passages (as above), `BM25Retriever.from_passages` (tokenised 100K passages at a "
        "time into int32 token arrays) + `save`; one process per corpus size. MiB; entries = non-zero BM25 "
        "scores (one per distinct term of each passage).\n\n"
        + table(
            [
                "passages",
                "build + save (s)",
                "entries",
                "anon at start",
                "peak anon",
                "peak - start",
                "bytes per entry",
            ],
            rows,
        )  # fmt: skip
        + f"\n\nFrom {small['passages']:,} to {large['passages']:,} passages the peak grows by {growth:.0f} bytes "
        "per added entry. Bound: peak anonymous memory <= start + c x entries + one chunk's strings and token "
        "lists, with c the bytes per entry measured here (bm25s' score, document and term arrays, its sparse "
        "matrix conversion, and our 4-byte token ids).\n"
    )


def worker(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoTokenizer, BertConfig

    from dpr_hf import PassageEncoder, PassageEncoderConfig
    from dpr_hf.encoding import encode_corpus
    from dpr_hf.index.passage_index import PassageIndex

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
    sampler = _Sampler()
    sampler.start()
    stages = {"start (model, tokenizer, memory-mapped corpus)": sampler.snapshot()}

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
    stages["after encode_corpus"] = sampler.snapshot()
    started = time.perf_counter()
    index = PassageIndex.from_embeddings(out / "embeddings")
    index.save(out / "index")
    index_seconds = time.perf_counter() - started
    stages["after index build + save"] = sampler.snapshot()
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
    parser.add_argument("--bm25", action="store_true", help="measure BM25 indexing alone")
    parser.add_argument("--no-record", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args()
    if args.passages:
        (bm25_worker if args.bm25 else worker)(args)
        return

    started = now()
    WORK.mkdir(parents=True, exist_ok=True)
    results = []
    sizes = [int(s) for s in args.sizes.split(",")]
    for size in sizes:  # written first, in this process: the workers only memory-map them
        _corpus(size)
    for size in sizes:
        command = [sys.executable, __file__, "--passages", str(size), "--shard-size", str(args.shard_size),
                   "--batch-size", str(args.batch_size), "--max-length", str(args.max_length), "--dim",
                   str(args.dim)] + (["--bm25"] if args.bm25 else [])  # fmt: skip
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        if completed.returncode:
            sys.exit(f"worker for {size} passages failed:\n{completed.stderr[-3000:]}")
        results.append(json.loads(completed.stdout.strip().splitlines()[-1]))

    if args.bm25:
        body = bm25_report(results)
        title = f"Bounded memory: BM25 indexing {results[0]['passages']:,} vs {results[-1]['passages']:,} passages"
        print(body) if args.no_record else record(title, body, False, started)
        return
    rows = []
    for result in results:
        for stage, (anon, file, peak_anon, peak) in result["stages"].items():
            rows.append(
                [
                    f"{result['passages']:,}",
                    stage,
                    *(f"{value:.0f}" for value in (anon, file, peak_anon, peak)),
                ]
            )
    timing = [
        [
            f"{r['passages']:,}",
            f"{r['encode_seconds']:.0f}",
            f"{r['index_seconds']:.1f}",
            f"{r['index_vector_mb']:.1f}",
            f"{r['stages']['after index build + save'][2] - r['index_vector_mb']:.0f}",
        ]
        for r in results
    ]
    small, large = results[0], results[-1]

    def grows(stage: str, column: int) -> float:
        return large["stages"][stage][column] - small["stages"][stage][column]

    end, encoded = "after index build + save", "after encode_corpus"
    body = (
        f"Synthetic 12-30 word passages, tiny random BERT (2 layers, {args.dim} dims) over MiniLM's vocabulary, "
        f"max_length {args.max_length}, batch {args.batch_size}, `encode_corpus` shard size "
        f"{args.shard_size:,}, Flat index; one process per corpus size, corpora written beforehand. MiB: "
        "anonymous and file-backed RSS now (/proc/self/status), peak anonymous RSS (sampled every 20 ms), peak "
        "RSS (getrusage: anonymous + pages of memory-mapped Arrow files, which the kernel can drop).\n\n"
        + table(["passages", "stage", "anon now", "file-backed now", "peak anon", "peak RSS"], rows)
        + "\n\n"
        + table(
            [
                "passages",
                "encode (s)",
                "index build + save (s)",
                "Flat vectors N x d x 4 (MiB)",
                "peak anon - Flat vectors (MiB)",
            ],
            timing,
        )  # fmt: skip
        + f"\n\nFrom {small['passages']:,} to {large['passages']:,} passages: peak anonymous memory after "
        f"encoding grows by {grows(encoded, 2):.0f} MiB, after indexing by {grows(end, 2):.0f} MiB, of which "
        f"{large['index_vector_mb'] - small['index_vector_mb']:.0f} MiB are the Flat index's vectors (held in RAM "
        f"to search); the getrusage peak grows by {grows(end, 3):.0f} MiB, the rest being file pages of the "
        "memory-mapped passages and embeddings. Bound: anonymous memory <= start + O(shard size) for encoding "
        "+ N x dim x 4 bytes for a Flat index (IVF-PQ / SQ factories store fewer bytes per vector).\n"
    )
    if args.no_record:
        print(body)
    else:
        title = (
            f"Bounded memory: encoding and indexing {small['passages']:,} vs {large['passages']:,} passages"
        )
        record(title, body, False, started)


if __name__ == "__main__":
    main()

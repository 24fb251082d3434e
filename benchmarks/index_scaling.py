"""Build time, memory, search speed and recall of each FAISS index type through `PassageIndex.build`.

Checks the table in docs/indexing.md at 1M vectors (default 1,000,000 x 384, the MiniLM size). Vectors are
synthetic: a mixture of 1,000 Gaussian clusters, L2-normalised (like sentence embeddings), so recall is only
indicative; build time and memory do not depend on the data.

    python benchmarks/index_scaling.py [--num-vectors 1000000] [--dim 384] [--factories Flat HNSW32 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import psutil
import pyarrow as pa
from datasets import Dataset

from dpr_hf.index.passage_index import INDEX_FILE, PassageIndex


def synthetic_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((1_000, dim)).astype(np.float32)
    vectors = centers[rng.integers(0, len(centers), n)] + 0.5 * rng.standard_normal((n, dim)).astype(
        np.float32
    )
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num-vectors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--factories", nargs="+", default=["Flat", "IVF4096,SQ8", "IVF4096,PQ48", "HNSW32"])
    parser.add_argument("--num-queries", type=int, default=1_000)
    parser.add_argument("--output", type=Path, default=Path("runs/index_scaling/results.json"))
    args = parser.parse_args()

    # Queries come from the same clusters as the corpus (held-out draws), as questions do from its topics.
    vectors = synthetic_vectors(args.num_vectors + args.num_queries, args.dim, seed=0)
    vectors, queries = vectors[: args.num_vectors], vectors[args.num_vectors :]
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), args.dim)
    dataset = Dataset(pa.table({"embeddings": column}))
    exact = None
    report = {
        "num_vectors": args.num_vectors,
        "dim": args.dim,
        "threads": faiss.omp_get_max_threads(),
        "runs": [],
    }
    process = psutil.Process()
    for factory in args.factories:
        rss_before = process.memory_info().rss
        start = time.perf_counter()
        index = PassageIndex.build(dataset, factory=factory)
        build_s = time.perf_counter() - start
        rss_delta = process.memory_info().rss - rss_before
        with tempfile.TemporaryDirectory() as tmp:
            index.dataset.save_faiss_index("embeddings", os.path.join(tmp, INDEX_FILE))
            index_bytes = os.path.getsize(os.path.join(tmp, INDEX_FILE))
        start = time.perf_counter()
        _, found = index.faiss_index.search(queries, 100)
        search_ms = 1000 * (time.perf_counter() - start) / len(queries)
        if exact is None:
            exact = found if factory == "Flat" else np.argsort(-(queries @ vectors.T), axis=1)[:, :100]
        recall = float(
            np.mean([len(set(f[:10]) & set(e[:10])) / 10 for f, e in zip(found, exact, strict=True)])
        )
        run = {
            "factory": factory,
            "build_s": round(build_s, 1),
            "index_bytes": index_bytes,
            "bytes_per_vector": round(index_bytes / args.num_vectors, 1),
            "rss_delta_bytes": rss_delta,
            "search_ms_per_query_k100": round(search_ms, 3),
            "recall_at_10_vs_exact": round(recall, 4),
            "search_parameters": index.manifest["search_parameters"],
            "train_size": index.manifest["train_size"],
        }
        report["runs"].append(run)
        print(json.dumps(run), flush=True)
        del index
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

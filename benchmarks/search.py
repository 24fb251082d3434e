"""Search: dpr_hf `PassageIndex` (datasets + FAISS) vs raw FAISS on the same vectors, for Flat, HNSW32 and IVF-PQ.

    python benchmarks/search.py [--quick] [--sizes 100000,1000000] [--queries 1000] [--factories HNSW32,IVF]

Vectors: a seeded mixture of 1,000 Gaussian clusters in 384 dims, L2-normalised (clustered like real embeddings;
uniform noise would be unrealistically hard for HNSW/IVF). Both sides use the same factory string, training sample
(random rows, as `PassageIndex.build` draws them) and search knobs (efSearch=128, nprobe=32). Reported: build
time, queries/s at batch 1 and 128 for k=100 (both sides timed batch by batch in alternating order, best of up
to 9 passes within ~3 s), recall@100 against Flat, and bytes per passage.
"""

from __future__ import annotations

import argparse
import time

import common
import faiss
import numpy as np
import pyarrow as pa
from datasets import Dataset

from dpr_hf.index.passage_index import DEFAULT_SEARCH_PARAMETERS, PassageIndex

DIM, K = 384, 100


def clustered_vectors(count: int, seed: int, clusters: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(0).standard_normal((clusters, DIM), dtype=np.float32)
    vectors = centers[rng.integers(0, clusters, count)] + 0.7 * rng.standard_normal(
        (count, DIM), dtype=np.float32
    )
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def passages_with_embeddings(vectors: np.ndarray) -> Dataset:
    ids = pa.array([f"p{i}" for i in range(len(vectors))])
    texts = pa.array([f"passage {i}" for i in range(len(vectors))])
    embeddings = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), DIM)
    return Dataset(
        pa.table({"id": ids, "title": pa.array([""] * len(vectors)), "text": texts, "embeddings": embeddings})
    )


def factories(count: int) -> list[str]:
    nlist = 1024 if count <= 200_000 else 4096
    return ["Flat", "HNSW32", f"IVF{nlist},PQ64"]


def raw_faiss(vectors: np.ndarray, factory: str) -> faiss.Index:
    """What `PassageIndex.build` does, without datasets: same factory, training sample and search knobs."""
    index = faiss.index_factory(DIM, factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        ivf = faiss.try_extract_index_ivf(index)
        # As PassageIndex.build: no polysemous codes (search does not use them; they are slow to train).
        if isinstance(faiss.downcast_index(ivf), faiss.IndexIVFPQ):
            faiss.downcast_index(ivf).do_polysemous_training = False
        size = min(len(vectors), max(100_000, 50 * ivf.nlist))
        rows = np.sort(np.random.default_rng(0).choice(len(vectors), size=size, replace=False))
        index.train(vectors[rows])
    index.add(vectors)
    space = faiss.ParameterSpace()
    for family, parameters in DEFAULT_SEARCH_PARAMETERS.items():
        if family in factory:
            for name, value in parameters.items():
                space.set_index_parameter(index, name, value)
    return index


def queries_per_second(
    searches: dict, queries: np.ndarray, batch: int, budget_s: float = 3.0, max_passes: int = 9
) -> dict[str, tuple[float, list]]:
    """Queries/s and first-pass results of each search function. Each pass times them batch by batch in
    alternating order (A B, B A, ...), so drift falls on all alike; fast searches get more passes (until
    `budget_s` is spent) and the best pass counts, as timeit does: what is left is the code, not the noise."""
    best = dict.fromkeys(searches, float("inf"))
    results: dict[str, list] = {name: [] for name in searches}
    started, passes = time.perf_counter(), 0
    while passes == 0 or (passes < max_passes and time.perf_counter() - started < budget_s):
        seconds = dict.fromkeys(searches, 0.0)
        for number, begin in enumerate(range(0, len(queries), batch)):
            for name in list(searches) if number % 2 == 0 else list(reversed(searches)):
                start = time.perf_counter()
                found = searches[name](queries[begin : begin + batch])
                seconds[name] += time.perf_counter() - start
                if passes == 0:
                    results[name].append(found)
        best = {name: min(best[name], seconds[name]) for name in searches}
        passes += 1
    return {name: (len(queries) / best[name], results[name]) for name in searches}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100K vectors, 200 queries")
    parser.add_argument("--sizes", default="", help="comma-separated corpus sizes (default 100000,1000000)")
    parser.add_argument("--queries", type=int, default=0, help="queries (default 1000; quick 200)")
    parser.add_argument(
        "--factories",
        default="",
        help="HNSW32 and/or IVF (default both; Flat always runs: recall is against it)",
    )
    args = parser.parse_args()
    started = common.now()
    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else [100_000]
        if args.quick
        else [100_000, 1_000_000]
    )
    num_queries = args.queries or (200 if args.quick else 1000)
    queries = clustered_vectors(num_queries, seed=1)
    single = queries[: min(200, num_queries)]  # batch-1 searches are slow on Flat: time a subset
    rows = []
    for count in sizes:
        vectors = clustered_vectors(count, seed=2)
        dataset = passages_with_embeddings(vectors)
        truth = None
        for factory in factories(count):
            if (
                args.factories
                and factory != "Flat"
                and not factory.startswith(tuple(args.factories.split(",")))
            ):
                continue
            start = time.perf_counter()
            raw = raw_faiss(vectors, factory)
            raw_build = time.perf_counter() - start
            start = time.perf_counter()
            wrapped = PassageIndex.build(dataset, factory=factory)
            wrapped_build = time.perf_counter() - start

            def same_index_ids(q, wrapped=wrapped):  # raw FAISS on the very index PassageIndex searches
                return wrapped.faiss_index.search(q, K)[1]

            def wrapped_rows(q, wrapped=wrapped):
                return wrapped.search_rows(q, K)[1]

            def wrapped_passages(q, wrapped=wrapped):
                return [[int(hit["id"][1:]) for hit in hits] for hits in wrapped.search(q, K)]

            one = queries_per_second({"raw": same_index_ids, "rows": wrapped_rows}, single, 1)
            (raw_1, _), (rows_1, _) = one["raw"], one["rows"]
            many = queries_per_second(
                {"raw": same_index_ids, "rows": wrapped_rows, "passages": wrapped_passages}, queries, 128
            )
            (raw_128, _), (rows_128, rows_results) = many["raw"], many["rows"]
            passages_128, passage_results = many["passages"]
            # Raw FAISS's own build: does PassageIndex build the same index?
            found = raw.search(queries, K)[1]
            truth = found if factory == "Flat" else truth
            recall = {
                name: np.mean([len(set(a) & set(b)) / K for a, b in zip(result, truth, strict=True)])
                for name, result in (
                    ("faiss", found),
                    ("rows", np.concatenate(rows_results)),
                    ("passages", [r for batch in passage_results for r in batch]),
                )
            }
            index_bytes = faiss.serialize_index(raw).nbytes / count
            dataset_bytes = dataset.data.nbytes / count
            rows.append(
                [
                    f"{count:,}",
                    factory,
                    raw_build,
                    wrapped_build,
                    raw_1,
                    rows_1,
                    100 * (raw_1 / rows_1 - 1),
                    raw_128,
                    rows_128,
                    100 * (raw_128 / rows_128 - 1),
                    passages_128,
                    1e6 * (1 / passages_128 - 1 / rows_128) / K,
                    float(recall["faiss"]),
                    float(recall["rows"]),
                    float(recall["passages"]),
                    f"{index_bytes:.0f} + {dataset_bytes:.0f}",
                ]
            )
            print(rows[-1], flush=True)
            del raw, wrapped
    headers = [
        "vectors",
        "factory",
        "build s (FAISS)",
        "build s (PassageIndex)",
        "QPS b=1 (FAISS, same index)",
        "QPS b=1 (search_rows)",
        "overhead b=1 %",
        "QPS b=128 (FAISS, same index)",
        "QPS b=128 (search_rows)",
        "overhead b=128 %",
        "QPS b=128 (search, passage dicts)",
        "us per passage dict",
        "recall@100 (FAISS's own build)",
        "recall@100 (search_rows)",
        "recall@100 (search)",
        "bytes/passage (index + dataset)",
    ]
    body = "\n\n".join(
        [
            f"{DIM}-dim clustered synthetic vectors, {num_queries} queries (batch 1: the first {len(single)}), "
            "k=100, inner product. Like for like, `PassageIndex.search_rows` (datasets' `search_batch`: scores + "
            "row numbers) against raw FAISS `index.search` on the same FAISS index object, timed batch by batch in "
            "alternating order (best of up to 9 passes within ~3 s); the overhead columns are its extra time in % "
            "(goal <= 5%). Raw FAISS also builds its own index from the same vectors, for the build times and its "
            "recall. "
            "`PassageIndex.search` also fetches the passages from the Arrow "
            "table and returns one dict per hit (id, title, text, score): its cost is shown per returned passage. "
            "Recall is against raw FAISS Flat. Dataset bytes: id, a short text and the float32 embedding "
            "kept in the Arrow table (memory-mapped when loaded from disk).",
            common.table(headers, rows),
        ]
    )
    common.record("Search: PassageIndex vs raw FAISS", body, args.quick, started)


if __name__ == "__main__":
    main()

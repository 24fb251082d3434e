"""Calibrate and check the index planner (`dpr_hf.index.planner`): each family's build at N vectors, measured.

For Flat, HNSW32, IVF-SQ8 and IVF-PQ (the factories the planner picks for N x dim): build through
`PassageIndex.build`, save (vectors once, and with `keep_embeddings`), and record the build time, the anonymous
RSS peak of the build (and an on-disk build's peak disk), index.faiss and passages/ bytes per passage, and
recall@100 against exact search; beside each, the planner's estimate (its time rates come from such a run at 1M:
measured seconds / the work it counts; its recall from a table of such runs, interpolated in log10(N), with a note
saying measured / interpolated / extrapolated). Vectors: synthetic, 1,000 normalised Gaussian clusters
(benchmarks/index_scaling.py), queries held out from the same clusters; passages carry ~600 bytes of text like
DPR's 100-word passages.

    python benchmarks/index_planner.py [--num-vectors 100000] [--dim 384]
    python benchmarks/index_planner.py --families IVF-SQ8-OnDisk IVF-PQ-OnDisk   # lists in index.ivfdata
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from datasets import Dataset
from index_scaling import synthetic_vectors

from dpr_hf.index.passage_index import DATA_FILE, INDEX_FILE, PASSAGES_DIR, PassageIndex
from dpr_hf.index.planner import FAMILIES, ON_DISK_FAMILIES, estimate, factory_for, split_on_disk

WORDS = "the of and in to a was he for on is as by with his at from that it an were which are".split()


def _anon_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split("RssAnon:")[1].split()[0]) / 1024


def _folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder`, 0 when it is gone (files deleted while counted are left out)."""
    total = 0
    try:
        for path in folder.rglob("*"):
            try:
                total += path.stat().st_size if path.is_file() else 0
            except FileNotFoundError:
                continue
    except FileNotFoundError:
        pass
    return total


def _dataset(vectors: np.ndarray, path: Path) -> Dataset:
    """id, title, ~100-word text and the vectors, saved and memory-mapped as `dpr-hf encode` leaves them."""
    n, dim = vectors.shape
    rng = np.random.default_rng(1)
    words = np.array(WORDS)[rng.integers(0, len(WORDS), (1_000, 100))]
    texts = [" ".join(row) for row in words]
    table = pa.table(
        {
            "id": [str(i) for i in range(n)],
            "title": [f"Article {i // 20}" for i in range(n)],
            "text": [texts[i % len(texts)] for i in range(n)],
            "embeddings": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
        }
    )
    Dataset(table).save_to_disk(str(path))
    from datasets import load_from_disk

    return load_from_disk(str(path))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num-vectors", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--num-queries", type=int, default=200)
    parser.add_argument(
        "--families", nargs="+", default=list(FAMILIES), choices=[*FAMILIES, *ON_DISK_FAMILIES]
    )
    parser.add_argument("--output", type=Path, default=Path("runs/index_planner/results.json"))
    args = parser.parse_args()
    n, dim = args.num_vectors, args.dim
    vectors = synthetic_vectors(n + args.num_queries, dim, seed=0)
    vectors, queries = vectors[:n], np.ascontiguousarray(vectors[n:])
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :100]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="index_planner-", dir=args.output.parent))
    dataset = _dataset(vectors, work / "embeddings")
    del vectors
    report = {"num_vectors": n, "dim": dim, "runs": []}
    try:
        for family in args.families:
            factory = factory_for(family, n, dim)
            on_disk_dir = work / "ondisk-build" if split_on_disk(factory)[1] else None
            peak, peak_disk, done = [_anon_mb()], [0], threading.Event()
            base = peak[0]

            def sample(peak=peak, peak_disk=peak_disk, done=done, on_disk_dir=on_disk_dir):
                while not done.wait(0.02):
                    peak[0] = max(peak[0], _anon_mb())
                    if on_disk_dir is not None:  # shard files, then the merged lists beside them
                        peak_disk[0] = max(peak_disk[0], _folder_bytes(on_disk_dir))

            threading.Thread(target=sample, daemon=True).start()
            started = time.perf_counter()
            index = PassageIndex.build(dataset, factory=factory, on_disk_dir=on_disk_dir)
            build_s = time.perf_counter() - started
            done.set()
            _, found = index.search_rows(queries, 100)
            recall = float(np.mean([len(set(f) & set(e)) / 100 for f, e in zip(found, exact, strict=True)]))
            index.save(work / "once")
            index.save(work / "kept", keep_embeddings=True)
            planned = estimate(factory, n, dim)
            run = {
                "factory": factory,
                "build_s": round(build_s, 2),
                "planned_build_s": round(planned.build_seconds, 2),
                "build_peak_anon_mb": round(peak[0] - base, 1),
                "planned_build_ram_mb": round(planned.build_ram_bytes / 2**20, 1),
                "index_bytes_per_passage": round(os.path.getsize(work / "once" / INDEX_FILE) / n, 1),
                "planned_index_bytes_per_passage": round(planned.index_bytes / n, 1),
                "data_bytes_per_passage": round(
                    os.path.getsize(work / "once" / DATA_FILE) / n if on_disk_dir else 0.0, 1
                ),
                "planned_data_bytes_per_passage": round(planned.data_bytes / n, 1),
                "passages_bytes_per_passage": round(_folder_bytes(work / "once" / PASSAGES_DIR) / n, 1),
                "folder_bytes_per_passage": round(_folder_bytes(work / "once") / n, 1),
                "folder_bytes_per_passage_keep_embeddings": round(_folder_bytes(work / "kept") / n, 1),
                "recall_at_100_vs_flat": round(recall, 4),
                "planned_recall_at_100": round(planned.recall_at_100, 4),
                "planned_recall_basis": planned.recall_basis,
                "build_peak_disk_mb": round(peak_disk[0] / 2**20, 1),
                "planned_build_disk_mb": round(planned.build_disk_bytes / 2**20, 1),
                "search_parameters": index.manifest["search_parameters"],
            }
            report["runs"].append(run)
            print(json.dumps(run), flush=True)
            del index
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Pick a FAISS factory for a corpus size, a dimension and a memory budget, before anything is built.

RAM and disk come from FAISS's storage layout (bytes per vector per factory, exact for the serialised index);
build time from the work each build does (copying, graph insertion, k-means and list assignment), turned into
seconds by constants measured at 100K vectors; recall@100 against exact (Flat) search is the figure measured
there too (`benchmarks/index_planner.py`, see docs/indexing.md for the machine and the data).
An IVF factory with the `,OnDisk` suffix keeps its inverted lists in a memory-mapped data file (`index.ivfdata`):
RAM for the centroids and the list table only, the codes read from disk when a search touches their list.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# Bytes of a passage in passages/ besides its vector: id, title and ~100 words of text as Arrow strings (DPR's
# psgs_w100.tsv is 13 GB for 21M passages). Only the disk estimate uses it.
PASSAGE_BYTES = 620
ADD_BATCH = 10_000  # PassageIndex.build's vectors per FAISS add (HNSW: all at once)
HNSW_M = 32
# A Flat search scans every vector per query: past this size HNSW's graph search is preferred when it fits.
FLAT_MAX_PASSAGES = 1_000_000
IVF_NPROBE = 32  # PassageIndex's default search parameter for IVF
# Calibration: `python benchmarks/index_planner.py` at 100K x 384 synthetic vectors on the 2-core development box,
# shared with other jobs (docs/indexing.md): seconds per unit of each build's work, and recall@100 vs Flat at the
# default search parameters (efSearch 128, nprobe 32).
SECONDS_PER_FLAT_UNIT = 7.0e-8  # per n * d: Arrow -> numpy -> FAISS copies
SECONDS_PER_HNSW_UNIT = 2.2e-7  # per n * log2(n) * d: graph insertion
SECONDS_PER_IVF_FLOP = 9.1e-11  # coarse k-means and list assignment (BLAS inner products)
SECONDS_PER_PQ_FLOP = 5.5e-10  # PQ codebook k-means and encoding: 8-dim sub-vectors, far from BLAS speed
# Copies of the IVF training sample at the build's peak (measured): datasets' numpy rows, FAISS's training
# input and, for SQ8, the residuals it trains on.
IVF_SAMPLE_COPIES = {"IVF-SQ8": 3, "IVF-PQ": 2}
RECALL_AT_100 = {"Flat": 1.0, "HNSW": 0.989, "IVF-SQ8": 0.997, "IVF-PQ": 0.939}
FAMILIES = ("Flat", "HNSW", "IVF-SQ8", "IVF-PQ")
# On-disk IVF: the same index as its in-memory family (same search results), its lists in `index.ivfdata`.
ON_DISK_SUFFIX = ",OnDisk"
ON_DISK_FAMILIES = ("IVF-SQ8-OnDisk", "IVF-PQ-OnDisk")
ON_DISK_SHARD = 100_000  # vectors per shard index built in RAM, written, then merged into the data file
ON_DISK_LIST_BYTES = 24  # per list in index.faiss and in RAM: OnDiskOneList's size, capacity, offset
# Data written and read back by an on-disk build (shard files written, read by the merge, data file written), at
# an assumed 200 MB/s: not calibrated (a shared disk; a local SSD is faster).
ON_DISK_IO_PASSES = 3
DISK_BYTES_PER_SECOND = 200e6


class PlanError(ValueError):
    """No index of the known families fits the memory budget (or the one asked for does not)."""


@dataclass(frozen=True)
class IndexPlan:
    """One factory's expected cost for `num_passages` x `dim` vectors."""

    factory: str
    family: str
    num_passages: int
    dim: int
    search_ram_bytes: int  # resident while serving: the FAISS index
    build_ram_bytes: int  # peak while building: the index plus training sample or transient copy
    index_bytes: int  # index.faiss on disk
    disk_bytes: int  # the whole folder: index.faiss (+ index.ivfdata) + passages/ (texts, no vectors)
    build_seconds: float
    recall_at_100: float  # vs exact search, as measured at calibration
    data_bytes: int = 0  # index.ivfdata of an on-disk IVF (its inverted lists), 0 for in-memory indexes

    @property
    def ram_bytes(self) -> int:
        return max(self.search_ram_bytes, self.build_ram_bytes)

    def describe(self) -> str:
        search_ram = f"{_gb(self.search_ram_bytes)} to search"
        files = f"{_gb(self.index_bytes)} index.faiss"
        if self.data_bytes:
            search_ram += " (+ page cache for the lists a search reads)"
            files += f" + {_gb(self.data_bytes)} index.ivfdata"
        return (
            f"index plan for {self.num_passages:,} passages x {self.dim} dims: {self.factory}\n"
            f"  RAM: {search_ram}, {_gb(self.build_ram_bytes)} peak while building\n"
            f"  disk: {_gb(self.disk_bytes)} ({files} + passages/ texts)"
            + (
                f"; the build writes {_gb(2 * self.data_bytes)} (shards, then the merged lists)\n"
                if self.data_bytes
                else "\n"
            )
            + f"  build time: ~{_duration(self.build_seconds)} (calibrated on the 2-core development box)\n"
            f"  recall@100 vs Flat: ~{self.recall_at_100:.2f} (measured at 100K synthetic vectors)"
        )


def _gb(num_bytes: float) -> str:
    return f"{num_bytes / 1e9:.2f} GB"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def parse_size(text: str) -> int:
    """'16GB' -> 16e9 bytes, '16GiB' -> 16 * 2**30, '500MB', '2TB', or a plain byte count."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?)B?\s*", text, flags=re.IGNORECASE)
    if match is None:
        raise ValueError(f"not a size: {text!r} (use e.g. 16GB, 16GiB, 500MB)")
    value, prefix, binary = match.groups()
    power = "KMGT".find(prefix.upper()) + 1 if prefix else 0
    return int(float(value) * (1024 if binary else 1000) ** power)


def ivf_lists(num_passages: int) -> int:
    """FAISS's guideline, the low end (fewer lists train faster): a power of two near 4 * sqrt(n), at most 65,536,
    and at least 39 training vectors per list."""
    nlist = 2 ** round(math.log2(4 * math.sqrt(max(num_passages, 1))))
    return max(16, min(nlist, 65_536, 2 ** int(math.log2(max(num_passages // 39, 1)))))


def pq_subquantizers(dim: int) -> int:
    """One byte per 8 dimensions (96 for 768 dims, 48 for 384), the largest divisor of `dim` up to dim / 8."""
    return next(m for m in range(max(dim // 8, 1), 0, -1) if dim % m == 0)


def split_on_disk(factory: str) -> tuple[str, bool]:
    """('IVF1024,SQ8', True) for 'IVF1024,SQ8,OnDisk': the FAISS factory string, and whether its lists live on disk."""
    if factory.endswith(ON_DISK_SUFFIX):
        return factory[: -len(ON_DISK_SUFFIX)], True
    return factory, False


def factory_for(family: str, num_passages: int, dim: int) -> str:
    if family.endswith("-OnDisk"):
        return factory_for(family.removesuffix("-OnDisk"), num_passages, dim) + ON_DISK_SUFFIX
    if family == "Flat":
        return "Flat"
    if family == "HNSW":
        return f"HNSW{HNSW_M}"
    nlist = ivf_lists(num_passages)
    return f"IVF{nlist},SQ8" if family == "IVF-SQ8" else f"IVF{nlist},PQ{pq_subquantizers(dim)}"


def family_of(factory: str) -> str | None:
    """The planner's family of a factory string, None when it has no estimates for it."""
    base, on_disk = split_on_disk(factory)
    if on_disk:
        family = family_of(base)
        return f"{family}-OnDisk" if family in ("IVF-SQ8", "IVF-PQ") else None
    if factory == "Flat":
        return "Flat"
    if re.fullmatch(r"HNSW\d+(,Flat)?", factory):
        return "HNSW"
    if re.fullmatch(r"IVF\d+,SQ8", factory):
        return "IVF-SQ8"
    if re.fullmatch(r"IVF\d+,PQ\d+(x8)?", factory):
        return "IVF-PQ"
    return None


def _factory_numbers(factory: str) -> tuple[int, int]:
    """The first two numbers of a factory string: (nlist, PQ sub-quantizers or 0) for IVF, (M, 0) for HNSW."""
    numbers = [int(n) for n in re.findall(r"\d+", factory)]
    return (numbers + [0, 0])[0], (numbers + [0, 0])[1]


def training_sample(num_passages: int, nlist: int) -> int:
    """What PassageIndex.build trains IVF on: all vectors up to 100K, else 50 per list."""
    return min(max(100_000, 50 * nlist), num_passages)


def build_seconds(factory: str, num_passages: int, dim: int) -> float:
    """Expected build time: each family's work (copies, graph insertions, flops) times its measured rate."""
    n, d = num_passages, dim
    family = family_of(factory)
    base, on_disk = split_on_disk(factory)
    if on_disk and family is not None:  # the in-memory build's work, plus writing and merging the shards
        return (
            build_seconds(base, n, d) + ON_DISK_IO_PASSES * _list_bytes(factory, n, d) / DISK_BYTES_PER_SECOND
        )
    if family == "Flat":
        return n * d * SECONDS_PER_FLAT_UNIT
    if family == "HNSW":
        return n * math.log2(max(n, 2)) * d * SECONDS_PER_HNSW_UNIT
    if family is None:
        raise PlanError(f"no build estimate for factory {factory!r} (known: Flat, HNSW<M>, IVF<n>,SQ8|PQ<m>)")
    nlist, _ = _factory_numbers(factory)
    coarse = min(training_sample(n, nlist), 256 * nlist)  # FAISS k-means subsamples to 256 per centroid
    flops = 2 * coarse * nlist * d * 10  # 10 k-means iterations (IVF's default)
    flops += 2 * n * nlist * d  # assigning every vector to its list
    seconds = flops * SECONDS_PER_IVF_FLOP
    if family == "IVF-PQ":
        pq_flops = 2 * min(training_sample(n, nlist), 256 * 256) * 256 * d * 25  # codebooks: 25 iterations
        pq_flops += 2 * n * 256 * d  # encoding
        seconds += pq_flops * SECONDS_PER_PQ_FLOP
    return seconds


def _list_bytes(factory: str, num_passages: int, dim: int) -> int:
    """An IVF index's inverted lists: each vector's code (SQ8: d bytes, PQ: m) and its 8-byte id."""
    _, m = _factory_numbers(factory)
    code = dim if family_of(factory).startswith("IVF-SQ8") else m
    return (code + 8) * num_passages


def estimate(factory: str, num_passages: int, dim: int, passage_bytes: int = PASSAGE_BYTES) -> IndexPlan:
    """Expected RAM, disk, build time and recall of building `factory` over `num_passages` x `dim` vectors."""
    family = family_of(factory)
    if family is None:
        raise PlanError(
            f"no estimates for factory {factory!r} (known: Flat, HNSW<M>, IVF<n>,SQ8|PQ<m> and those +{ON_DISK_SUFFIX})"
        )
    n, d = num_passages, dim
    vector, data = 4 * d, 0
    if family == "Flat":
        index = vector * n
        build = index + 2 * ADD_BATCH * vector  # one batch as numpy and as FAISS's input copy
    elif family == "HNSW":
        m, _ = _factory_numbers(factory)
        # level 0: 2*M neighbour ids (4 B each); upper levels (1/M of the vectors) and the level table ~16 B
        index = (vector + 2 * m * 4 + 16) * n
        build = index + vector * n  # all vectors handed over in one add: one transient numpy copy
    else:
        base_family = family.removesuffix("-OnDisk")
        nlist, _ = _factory_numbers(factory)
        trained = vector * nlist + (
            2 * vector if base_family == "IVF-SQ8" else vector * 256
        )  # centroids, SQ/PQ
        lists = _list_bytes(factory, n, d)
        sample = IVF_SAMPLE_COPIES[base_family] * vector * training_sample(n, nlist)
        if family.endswith("-OnDisk"):
            # index.faiss: the trained parts and the list table; the lists go to index.ivfdata. The build holds
            # one shard's index at a time (the merge copies memory-mapped files: page cache, not process RAM).
            data = lists
            index = trained + ON_DISK_LIST_BYTES * nlist
            build = index + sample + lists * min(ON_DISK_SHARD, n) // n + 2 * ADD_BATCH * vector
        else:
            index = lists + trained
            build = index + sample + 2 * ADD_BATCH * vector
    return IndexPlan(
        factory=factory,
        family=family,
        num_passages=n,
        dim=d,
        search_ram_bytes=int(index),
        build_ram_bytes=int(build),
        index_bytes=int(index),
        disk_bytes=int(index + data + passage_bytes * n),
        build_seconds=float(build_seconds(factory, n, d)),
        recall_at_100=RECALL_AT_100[family.removesuffix("-OnDisk")],
        data_bytes=int(data),
    )


def plan_index(
    num_passages: int,
    dim: int,
    memory_budget_bytes: int,
    factory: str | None = None,
    passage_bytes: int = PASSAGE_BYTES,
) -> IndexPlan:
    """The index to build for `num_passages` x `dim` vectors within `memory_budget_bytes` of RAM.

    The most accurate family whose build peak and search RAM both fit: Flat (exact) up to 1M passages, then
    HNSW32 (fast approximate search; more RAM than Flat), Flat, IVF-SQ8, IVF-PQ; when none fits in RAM, IVF-SQ8
    then IVF-PQ with their lists on disk (`,OnDisk`). A `factory` given is kept (it wins) and only checked
    against the budget. Raises `PlanError` when nothing fits, even on disk.
    """
    if num_passages <= 0 or dim <= 0:
        raise ValueError(f"need passages and dims > 0, got {num_passages} x {dim}")
    if factory is not None:
        plan = estimate(factory, num_passages, dim, passage_bytes)
        if plan.ram_bytes > memory_budget_bytes:
            raise PlanError(
                f"{factory} over {num_passages:,} x {dim} needs {_gb(plan.ram_bytes)} of RAM, over the "
                f"{_gb(memory_budget_bytes)} budget (drop the budget to build it anyway)"
            )
        return plan
    order = ["Flat", "HNSW"] if num_passages <= FLAT_MAX_PASSAGES else ["HNSW", "Flat"]
    order += ["IVF-SQ8", "IVF-PQ", *ON_DISK_FAMILIES] if num_passages >= 39 * 16 else []
    plans = [estimate(factory_for(f, num_passages, dim), num_passages, dim, passage_bytes) for f in order]
    for plan in plans:
        if plan.ram_bytes <= memory_budget_bytes:
            return plan
    smallest = min(plans, key=lambda plan: plan.ram_bytes)
    raise PlanError(
        f"no index of {num_passages:,} x {dim} vectors fits {_gb(memory_budget_bytes)} of RAM, even with its lists "
        f"on disk: the smallest, "
        f"{smallest.factory}, needs {_gb(smallest.ram_bytes)} (a GPU or a machine with more RAM, or a smaller dim)"
    )

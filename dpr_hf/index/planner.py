"""Pick a FAISS factory for a corpus size, a dimension, a memory budget and the free disk, before anything is built.

RAM and disk come from FAISS's storage layout (bytes per vector per factory, exact for the serialised index);
build time from the work each build does (copying, graph insertion, k-means and list assignment), turned into
seconds by rates fitted to idle builds at 1M vectors; recall@100 against exact (Flat) search from a small table of
measured points per family, interpolated in log10(N) (`benchmarks/index_planner.py`, `benchmarks/search.py`; see
docs/indexing.md for the machine and the data).
An IVF factory with the `,OnDisk` suffix keeps its inverted lists in a memory-mapped data file (`index.ivfdata`):
RAM for the centroids and the list table only, the codes read from disk when a search touches their list.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

# Bytes of a passage in passages/ besides its vector: id, title and ~100 words of text as Arrow strings (DPR's
# psgs_w100.tsv is 13 GB for 21M passages). Only the disk estimate uses it.
PASSAGE_BYTES = 620
ADD_BATCH = 10_000  # PassageIndex.build's vectors per FAISS add (HNSW: all at once)
HNSW_M = 32
# Build RAM per vector beyond the index and the transient copy (FAISS's per-vector locks and level bookkeeping):
# the idle builds peaked 1.7 MiB over the estimate without it at 100K and 37.7 MiB at 1M (18 and 40 B per vector).
HNSW_BUILD_BYTES = 40
# A Flat search scans every vector per query: past this size HNSW's graph search is preferred when it fits.
FLAT_MAX_PASSAGES = 1_000_000
IVF_NPROBE = 32  # PassageIndex's default search parameter for IVF
IVF_KMEANS_ITERATIONS = 10  # FAISS's coarse quantizer (Level1Quantizer's cp.niter)
PQ_KMEANS_ITERATIONS = 25  # FAISS's PQ codebooks (ClusteringParameters' default niter)
KMEANS_POINTS_PER_CENTROID = 256  # FAISS k-means subsamples its input to this many points per centroid
PQ_CENTROIDS = 256  # 8-bit sub-quantizers
# Build-time rates, fitted to the idle 2-core development box (AMD EPYC, AVX2; fp32 matmul peak ~170 GFLOP/s),
# `python benchmarks/index_planner.py --num-vectors 1000000 --families IVF-SQ8 IVF-SQ8-OnDisk IVF-PQ IVF-PQ-OnDisk`
# (benchmarks/RESULTS.md, "Index planner checked at 1M vectors"), with the work counts of `build_seconds` at
# 1M x 384, nlist 4096, training sample S = 50 * 4096 = 204,800:
#   coarse k-means   2 * 204,800 * 4096 * 384 * 10                 = 6.442e12 flop
#   SQ8 residuals    2 * 204,800 * 4096 * 384 (training sample)   = 0.644e12
#   assignment       2 * 1,000,000 * 4096 * 384                    = 3.146e12   -> IVF4096,SQ8: 10.232e12 flop
#   IVF4096,SQ8 built in 68.0 s: 68.0 / 10.232e12 = 6.65e-12 s/flop (150 GFLOP/s, BLAS inner products)
#   IVF4096,PQ48: IVF part 6.442e12 + 2 * 65,536 * 4096 * 384 (PQ residuals: 65,536 = 256 x 256 sampled) + 3.146e12
#     = 9.794e12 flop x 6.65e-12 = 65.1 s; PQ part: codebooks 2 * 65,536 * 256 * 384 * 25 = 0.322e12, encoding
#     2 * 1,000,000 * 256 * 384 = 0.197e12, together 0.519e12 flop in 75.5 - 65.1 = 10.4 s: 2.0e-11 s/flop.
# The same formulas give 6.3 s and 12.9 s at 100K x 384 (IVF1024; measured 6.7 s and 12.1 s, load 2-4): the
# work counts hold; the earlier constants (9.1e-11, 5.5e-10) came from a 100K run on a box with load 7-12.
SECONDS_PER_IVF_FLOP = 6.65e-12  # coarse k-means, residuals and list assignment (BLAS inner products)
SECONDS_PER_PQ_FLOP = 2.0e-11  # PQ codebook k-means and encoding: 8-dim sub-vectors, far from BLAS speed
# Flat: 1M x 384 built in 3.1 s, idle, by `benchmarks/index_planner.py --num-vectors 1000000 --families Flat ...`
# (2026-12-03T18:05, from a memory-mapped folder, as build-index reads it): 3.1 / 384e6 (0.3 s at 100K, idle).
SECONDS_PER_FLAT_UNIT = 8.1e-9  # per n * d: Arrow -> numpy -> FAISS copies
# HNSW32: 1M x 384 built in one add in 154.3 s by the same idle run: 154.3 / (1e6 * log2(1e6) * 384). Its 100K run
# built in 8.3 s, where this rate says 12.9 s: the build grew 18.6x for 10x the vectors where n * log n says 12x,
# so past 1M this may still be low (n^1.27 would give 1.6x more at 21M). search.py's 1M build (107.4 s, noisier
# vectors) was faster: the graph's cost depends on the data.
SECONDS_PER_HNSW_UNIT = 2.0e-8  # per n * log2(n) * d: graph insertion
# Copies of the IVF training sample at the build's peak (measured): datasets' numpy rows, FAISS's training
# input and, for SQ8, the residuals it trains on.
IVF_SAMPLE_COPIES = {"IVF-SQ8": 3, "IVF-PQ": 2}
FAMILIES = ("Flat", "HNSW", "IVF-SQ8", "IVF-PQ")
# On-disk IVF: the same index as its in-memory family (same search results), its lists in `index.ivfdata`.
ON_DISK_SUFFIX = ",OnDisk"
ON_DISK_FAMILIES = ("IVF-SQ8-OnDisk", "IVF-PQ-OnDisk")
ON_DISK_SHARD = 100_000  # vectors per shard index built in RAM, written, then merged into the data file
ON_DISK_LIST_BYTES = 24  # per list in index.faiss and in RAM: OnDiskOneList's size, capacity, offset
LIST_SIZE_BYTES = 8  # per list in a serialised in-memory IVF (an on-disk build's shard file): its length
# Data written and read back by an on-disk build (shard files written, read by the merge, data file written), at
# an assumed 200 MB/s: not calibrated. At 1M x 384 the on-disk builds took 7-8 s less than their in-memory twins
# (the term says 1-6 s more): the page cache absorbed the 0.06-0.4 GB of lists; at 21M it may not.
ON_DISK_IO_PASSES = 3
DISK_BYTES_PER_SECOND = 200e6


@dataclass(frozen=True)
class RecallPoint:
    """One measured recall@100 vs Flat: the corpus size, the factory the planner picks there, its search
    parameters, and the command that measured it (benchmarks/RESULTS.md, docs/indexing.md)."""

    num_passages: int
    recall_at_100: float
    factory: str
    search: str
    command: str


_IVF_FAMILIES = "--families IVF-SQ8 IVF-SQ8-OnDisk IVF-PQ IVF-PQ-OnDisk"
_PLANNER_1M = f"python benchmarks/index_planner.py --num-vectors 1000000 {_IVF_FAMILIES}"
_PLANNER_100K = f"python benchmarks/index_planner.py (the 100K calibration run; IVF: {_IVF_FAMILIES})"
_PLANNER_20K = "python benchmarks/index_planner.py --num-vectors 20000 --families HNSW IVF-SQ8 IVF-PQ"
_PLANNER_300K = "python benchmarks/index_planner.py --num-vectors 300000 --families IVF-SQ8 IVF-PQ"
_PLANNER_1M_ALL = (
    "python benchmarks/index_planner.py --num-vectors 1000000 --families Flat HNSW IVF-SQ8 IVF-SQ8-OnDisk IVF-PQ "
    "IVF-PQ-OnDisk (2026-12-03T18:05, idle)"
)
# Measured recall@100 vs Flat per family (an on-disk IVF gives its in-memory twin's results), 384-dim synthetic
# clustered vectors, queries held out from the same clusters: a stress test with many near-ties, not a forecast
# for real embeddings. Past 100K IVF loses recall with N because nprobe stays 32 while nlist grows as 4 * sqrt(N)
# (PQ's 48 bytes per vector also tell fewer near-ties apart among more vectors). Below 100K recall is lower too on
# these vectors: with 20 vectors per cluster a query's top 100 spans several clusters, all near-ties.
RECALL_POINTS: dict[str, tuple[RecallPoint, ...]] = {
    "HNSW": (
        RecallPoint(20_000, 0.9163, "HNSW32", "efSearch 128", _PLANNER_20K),
        RecallPoint(100_000, 0.989, "HNSW32", "efSearch 128", _PLANNER_100K),
        RecallPoint(1_000_000, 0.9084, "HNSW32", "efSearch 128", _PLANNER_1M_ALL),
    ),
    "IVF-SQ8": (
        RecallPoint(20_000, 0.7744, "IVF512,SQ8", "nprobe 32", _PLANNER_20K),
        RecallPoint(100_000, 0.9967, "IVF1024,SQ8", "nprobe 32", _PLANNER_100K),
        RecallPoint(300_000, 0.9889, "IVF2048,SQ8", "nprobe 32", _PLANNER_300K),
        RecallPoint(1_000_000, 0.9855, "IVF4096,SQ8", "nprobe 32", _PLANNER_1M),
    ),
    "IVF-PQ": (
        RecallPoint(20_000, 0.5567, "IVF512,PQ48", "nprobe 32", _PLANNER_20K),
        RecallPoint(100_000, 0.9388, "IVF1024,PQ48", "nprobe 32", _PLANNER_100K),
        RecallPoint(300_000, 0.5816, "IVF2048,PQ48", "nprobe 32", _PLANNER_300K),
        RecallPoint(1_000_000, 0.3602, "IVF4096,PQ48", "nprobe 32", _PLANNER_1M),
    ),
}
RECALL_FLOOR = 0.8
"""Expected recall@100 under which a family is not picked over a later one in the order that fits and expects more.

Why: under 0.8 over a fifth of the passages exact search ranks in the top 100 are missing, so what the reader
sees depends more on the index than on the encoder; a slower (Flat) or on-disk (IVF-SQ8) index that fits loses
far less (0.99 at 1M). When every family that fits is below it, the one expecting most is still picked (a plan
beats a refusal), and its printed plan says it is below the floor.
"""


class PlanError(ValueError):
    """No index of the known families fits the memory budget or the free disk (or the one asked for does not)."""


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
    disk_bytes: int  # the folder: index.faiss (+ index.ivfdata) + passages/ (texts; vectors if kept)
    build_seconds: float
    recall_at_100: float  # vs exact search, at this N (see `recall_estimate`)
    recall_basis: str  # where recall_at_100 comes from: measured, interpolated or extrapolated
    data_bytes: int = 0  # index.ivfdata of an on-disk IVF (its inverted lists), 0 for in-memory indexes
    build_disk_bytes: int = 0  # an on-disk build's shard files + merged lists, before the folder is saved

    @property
    def ram_bytes(self) -> int:
        return max(self.search_ram_bytes, self.build_ram_bytes)

    @property
    def peak_disk_bytes(self) -> int:
        """Disk the build and save take at most: the on-disk build's files (gone before the save), or the folder."""
        return max(self.disk_bytes, self.build_disk_bytes)

    def describe(self) -> str:
        search_ram = f"{_size(self.search_ram_bytes)} to search"
        files = f"{_size(self.index_bytes)} index.faiss"
        if self.data_bytes:
            search_ram += " (+ page cache for the lists a search reads)"
            files += f" + {_size(self.data_bytes)} index.ivfdata"
        building = (
            f"; {_size(self.build_disk_bytes)} while building (shard files, then the merged lists)"
            if self.build_disk_bytes
            else ""
        )
        recall = f"  recall@100 vs Flat: ~{self.recall_at_100:.2f} ({self.recall_basis})"
        if self.recall_at_100 < RECALL_FLOOR:
            recall += (
                f"\n  below the planner's {RECALL_FLOOR:.2f} recall floor: measure it on your vectors, or give "
                "it more RAM or disk for a family that keeps more"
            )
        return (
            f"index plan for {self.num_passages:,} passages x {self.dim} dims: {self.factory}\n"
            f"  RAM: {search_ram}, {_size(self.build_ram_bytes)} peak while building\n"
            f"  disk: {_size(self.disk_bytes)} ({files} + passages/){building}\n"
            f"  build time: ~{_duration(self.build_seconds)} (rates of idle builds on the 2-core development box)\n"
            + recall
        )


def _size(num_bytes: float) -> str:
    """'64.62 GB', '50.33 MB', '10.00 KB': the largest unit the figure reaches, so small ones do not read 0.00 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.2f} {unit}"
    return f"{num_bytes:.0f} B"


def _count(num_passages: int) -> str:
    """100000 -> '100K', 1000000 -> '1M' (the sizes of the recall table)."""
    for size, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "K")):
        if num_passages >= size and num_passages % size == 0:
            return f"{num_passages // size}{suffix}"
    return f"{num_passages:,}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def interpolate_recall(points: tuple[RecallPoint, ...], num_passages: int) -> tuple[float, str]:
    """recall@100 at `num_passages` from measured points (sorted by size), and a note saying how it was obtained.

    Linear in log10(N) between two points; past the last point the line through the last two goes on, clipped to
    [0, 1] (and the note says it is an extrapolation); below the first point, that point's value (recall need not
    grow as N shrinks: see RECALL_POINTS), and the note says so. With one point, that value at every size.
    """
    first, last = points[0], points[-1]
    if len(points) == 1:
        return first.recall_at_100, f"measured at {_count(first.num_passages)} only"
    for point in points:
        if point.num_passages == num_passages:
            return point.recall_at_100, f"measured at {_count(num_passages)}"
    if num_passages < first.num_passages:
        return (
            first.recall_at_100,
            f"not measured below {_count(first.num_passages)}: the {_count(first.num_passages)} figure",
        )
    below, above = points[-2], last
    for left, right in zip(points, points[1:], strict=False):
        if left.num_passages < num_passages < right.num_passages:
            below, above = left, right
    slope = (above.recall_at_100 - below.recall_at_100) / math.log10(above.num_passages / below.num_passages)
    value = below.recall_at_100 + slope * math.log10(num_passages / below.num_passages)
    sizes = f"{_count(below.num_passages)} and {_count(above.num_passages)}"
    if num_passages < last.num_passages:
        return value, f"interpolated between the {sizes} measurements"
    return min(max(value, 0.0), 1.0), f"extrapolated from {sizes}, beyond the measured range"


def recall_estimate(family: str, num_passages: int) -> tuple[float, str]:
    """Expected recall@100 vs Flat of a family (an on-disk IVF: its in-memory twin's) at the planner's factory and
    default search parameters for `num_passages`, and where the figure comes from (`interpolate_recall`)."""
    base = family.removesuffix("-OnDisk")
    if base == "Flat":
        return 1.0, "exact search"
    value, basis = interpolate_recall(RECALL_POINTS[base], num_passages)
    return value, f"{basis}, synthetic 384-dim vectors"


def free_disk_bytes(folder: str | os.PathLike) -> tuple[Path, int]:
    """The nearest existing folder at or above `folder` (where it will be created) and its free bytes."""
    existing = Path(folder).absolute()
    while not existing.exists():
        existing = existing.parent
    return existing, shutil.disk_usage(existing).free


def check_free_disk(plan: IndexPlan, folder: str | os.PathLike, free_bytes: int | None = None) -> None:
    """Raise `PlanError` when the plan's peak disk does not fit the free space where `folder` will be written.

    `free_bytes`: that free space, when known otherwise (default: `shutil.disk_usage` of the nearest existing
    folder at or above `folder`).
    """
    existing, free = free_disk_bytes(folder)
    if free_bytes is not None:
        free = free_bytes
    if plan.peak_disk_bytes > free:
        raise PlanError(_disk_message(plan, folder, existing, free))


def _disk_message(plan: IndexPlan, folder: str | os.PathLike, existing: Path, free: int) -> str:
    return (
        f"{plan.factory} over {plan.num_passages:,} x {plan.dim} needs {_size(plan.peak_disk_bytes)} of disk for "
        f"{folder}, but {existing} has {_size(free)} free (free some space or write the index elsewhere; "
        "build-index --no-disk-check skips this check)"
    )


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
    sample = training_sample(n, nlist)
    # Coarse k-means on the sample (subsampled to 256 per centroid), 2 * d flops per vector-centroid pair.
    flops = 2 * min(sample, KMEANS_POINTS_PER_CENTROID * nlist) * nlist * d * IVF_KMEANS_ITERATIONS
    # The encoder trains on residuals: its training vectors (SQ8: the sample; PQ: 256 per codeword) are assigned
    # to lists.
    pq_sample = min(sample, KMEANS_POINTS_PER_CENTROID * PQ_CENTROIDS)
    flops += 2 * (pq_sample if family == "IVF-PQ" else sample) * nlist * d
    flops += 2 * n * nlist * d  # assigning every vector to its list
    seconds = flops * SECONDS_PER_IVF_FLOP
    if family == "IVF-PQ":
        pq_flops = (
            2 * pq_sample * PQ_CENTROIDS * d * PQ_KMEANS_ITERATIONS
        )  # the codebooks, all sub-quantizers
        pq_flops += 2 * n * PQ_CENTROIDS * d  # encoding
        seconds += pq_flops * SECONDS_PER_PQ_FLOP
    return seconds


def _list_bytes(factory: str, num_passages: int, dim: int) -> int:
    """An IVF index's inverted lists: each vector's code (SQ8: d bytes, PQ: m) and its 8-byte id."""
    _, m = _factory_numbers(factory)
    code = dim if family_of(factory).startswith("IVF-SQ8") else m
    return (code + 8) * num_passages


def estimate(
    factory: str,
    num_passages: int,
    dim: int,
    passage_bytes: int = PASSAGE_BYTES,
    keep_embeddings: bool = False,
) -> IndexPlan:
    """Expected RAM, disk, build time and recall of building `factory` over `num_passages` x `dim` vectors
    (`keep_embeddings`: the folder also keeps the float32 vectors in passages/)."""
    family = family_of(factory)
    if family is None:
        raise PlanError(
            f"no estimates for factory {factory!r} (known: Flat, HNSW<M>, IVF<n>,SQ8|PQ<m> and those +{ON_DISK_SUFFIX})"
        )
    n, d = num_passages, dim
    vector, data, build_disk = 4 * d, 0, 0
    if family == "Flat":
        index = vector * n
        build = index + 2 * ADD_BATCH * vector  # one batch as numpy and as FAISS's input copy
    elif family == "HNSW":
        m, _ = _factory_numbers(factory)
        # level 0: 2*M neighbour ids (4 B each); upper levels (1/M of the vectors) and the level table ~16 B
        index = (vector + 2 * m * 4 + 16) * n
        build = index + (vector + HNSW_BUILD_BYTES) * n  # one add: one transient numpy copy of the vectors
    else:
        base_family = family.removesuffix("-OnDisk")
        nlist, _ = _factory_numbers(factory)
        trained = vector * nlist + (
            2 * vector if base_family == "IVF-SQ8" else vector * PQ_CENTROIDS
        )  # centroids, SQ/PQ
        lists = _list_bytes(factory, n, d)
        sample = IVF_SAMPLE_COPIES[base_family] * vector * training_sample(n, nlist)
        if family.endswith("-OnDisk"):
            # index.faiss: the trained parts and the list table; the lists go to index.ivfdata. The build holds
            # one shard's index at a time (the merge copies memory-mapped files: page cache, not process RAM).
            data = lists
            index = trained + ON_DISK_LIST_BYTES * nlist
            build = index + sample + lists * min(ON_DISK_SHARD, n) // n + 2 * ADD_BATCH * vector
            # Each shard file is an in-memory IVF of its vectors (the trained parts again, its lists' lengths and
            # its lists); the merged data file is written beside them, then the shards are deleted.
            shards = math.ceil(n / ON_DISK_SHARD)
            build_disk = shards * (trained + LIST_SIZE_BYTES * nlist) + 2 * lists
        else:
            index = lists + trained
            build = index + sample + 2 * ADD_BATCH * vector
    recall, basis = recall_estimate(family, n)
    if family != "Flat" and factory != factory_for(
        family, n, d
    ):  # e.g. another nlist or PQ size via --factory
        basis += f"; measured with the planner's {factory_for(family, n, d)}, not {factory}"
    return IndexPlan(
        factory=factory,
        family=family,
        num_passages=n,
        dim=d,
        search_ram_bytes=int(index),
        build_ram_bytes=int(build),
        index_bytes=int(index),
        disk_bytes=int(index + data + (passage_bytes + (vector if keep_embeddings else 0)) * n),
        build_seconds=float(build_seconds(factory, n, d)),
        recall_at_100=recall,
        recall_basis=basis,
        data_bytes=int(data),
        build_disk_bytes=int(build_disk),
    )


def plan_index(
    num_passages: int,
    dim: int,
    memory_budget_bytes: int,
    factory: str | None = None,
    passage_bytes: int = PASSAGE_BYTES,
    output_dir: str | os.PathLike | None = None,
    free_bytes: int | None = None,
    keep_embeddings: bool = False,
) -> IndexPlan:
    """The index to build for `num_passages` x `dim` vectors within `memory_budget_bytes` of RAM.

    The order: Flat (exact) up to 1M passages, then HNSW32 (fast approximate search; more RAM than Flat), Flat,
    IVF-SQ8, IVF-PQ, then IVF-SQ8 and IVF-PQ with their lists on disk (`,OnDisk`). Of the plans whose build peak
    and search RAM fit (and, with `output_dir`, whose disk fits the free space there, or `free_bytes`), the first
    whose expected recall@100 at this size reaches RECALL_FLOOR; when none does, the one expecting most. A
    `factory` given is kept (it wins) and only checked against the budget and the disk. Raises `PlanError` when
    nothing fits, even on disk.
    """
    if num_passages <= 0 or dim <= 0:
        raise ValueError(f"need passages and dims > 0, got {num_passages} x {dim}")
    if factory is not None:
        plan = estimate(factory, num_passages, dim, passage_bytes, keep_embeddings)
        if plan.ram_bytes > memory_budget_bytes:
            raise PlanError(
                f"{factory} over {num_passages:,} x {dim} needs {_size(plan.ram_bytes)} of RAM, over the "
                f"{_size(memory_budget_bytes)} budget (drop the budget to build it anyway)"
            )
        if output_dir is not None:
            check_free_disk(plan, output_dir, free_bytes)
        return plan
    order = ["Flat", "HNSW"] if num_passages <= FLAT_MAX_PASSAGES else ["HNSW", "Flat"]
    order += ["IVF-SQ8", "IVF-PQ", *ON_DISK_FAMILIES] if num_passages >= 39 * 16 else []
    plans = [
        estimate(factory_for(f, num_passages, dim), num_passages, dim, passage_bytes, keep_embeddings)
        for f in order
    ]
    fitting = [plan for plan in plans if plan.ram_bytes <= memory_budget_bytes]
    if not fitting:
        smallest = min(plans, key=lambda plan: plan.ram_bytes)
        raise PlanError(
            f"no index of {num_passages:,} x {dim} vectors fits {_size(memory_budget_bytes)} of RAM, even with its "
            f"lists on disk: the smallest, {smallest.factory}, needs {_size(smallest.ram_bytes)} (a GPU or a machine "
            "with more RAM, or a smaller dim)"
        )
    if output_dir is not None:
        existing, free = free_disk_bytes(output_dir)
        free = free if free_bytes is None else free_bytes
        in_ram = fitting
        fitting = [plan for plan in in_ram if plan.peak_disk_bytes <= free]
        if not fitting:
            smallest = min(in_ram, key=lambda plan: plan.peak_disk_bytes)
            raise PlanError(
                f"no index that fits {_size(memory_budget_bytes)} of RAM fits the disk: "
                + _disk_message(smallest, output_dir, existing, free)
            )
    accurate = [plan for plan in fitting if plan.recall_at_100 >= RECALL_FLOOR]
    return accurate[0] if accurate else max(fitting, key=lambda plan: plan.recall_at_100)

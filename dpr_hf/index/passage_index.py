"""The FAISS passage index.

`PassageIndex` wraps `Dataset.add_faiss_index` (inner product, as DPR scores) and saves one folder whose manifest lets `load` refuse an
index that does not belong to the encoder or the passages it is used with. The folder stores each vector once, in
`index.faiss`: the float32 `embeddings` column stays out of `passages/` unless asked for (`keep_embeddings`).
An IVF factory with the `,OnDisk` suffix keeps its inverted lists in `index.ivfdata` beside it, memory-mapped.

Over ~400 lines on purpose: build, save and load of the three storage kinds (in memory, with raw vectors,
on disk) share the manifest checks.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import faiss
import numpy as np
from datasets import Dataset, load_from_disk
from datasets.search import FaissIndex
from faiss.contrib.ondisk import merge_ondisk
from transformers import PreTrainedModel
from transformers.utils import logging

from ..atomic import staged_folder
from ..encoding import EMBEDDINGS_COLUMN, load_embeddings
from ..models.errors import MismatchError
from ..models.fingerprints import encoder_fingerprint, pretrained_fingerprint
from ..models.pair import partner_passage_encoder_dir
from .planner import ON_DISK_SHARD, split_on_disk

logger = logging.get_logger(__name__)

MANIFEST_FILE = "manifest.json"
INDEX_FILE = "index.faiss"
DATA_FILE = "index.ivfdata"  # an on-disk IVF's inverted lists; index.faiss records its path (see `load`)
PASSAGES_DIR = "passages"
# 2: `passages/` holds the embeddings column only when the manifest's "embeddings_kept" says so (1: always).
MANIFEST_VERSION = 2
# Search-time knobs per index family: HNSW's default efSearch=16 loses recall, IVF's default nprobe=1 even more.
DEFAULT_SEARCH_PARAMETERS = {"HNSW": {"efSearch": 128}, "IVF": {"nprobe": 32}}


def _unindexed_copy(dataset: Dataset) -> Dataset:
    """The same rows as a new Dataset object with no FAISS index attached (the caller's dataset stays as it was).

    It keeps the fingerprint: without one, datasets hashes the whole table (every vector through pickle).
    """
    return Dataset(
        dataset.data,
        info=dataset.info.copy(),
        split=dataset.split,
        indices_table=dataset._indices,
        fingerprint=dataset._fingerprint,
    )


def _embedding_dim(dataset: Dataset) -> int:
    feature = dataset.features[EMBEDDINGS_COLUMN]
    length = getattr(feature, "length", -1)
    return length if length and length > 0 else len(dataset[0][EMBEDDINGS_COLUMN])


def _index_family(index: faiss.Index) -> str:
    """Coarse kind of a FAISS index, to tell whether a loaded file is what the manifest's factory builds."""
    concrete = faiss.downcast_index(index)  # a view: `index` must stay referenced, it owns the memory
    if faiss.try_extract_index_ivf(concrete) is not None:
        return "IVF"
    for family in (faiss.IndexHNSW, faiss.IndexFlat):
        if isinstance(concrete, family):
            return family.__name__
    return type(concrete).__name__


def _reserve_flat_codes(index: faiss.Index, count: int) -> None:
    """Allocate a Flat (or HNSW-Flat) index's vector array for `count` vectors before they are added in batches:
    left to grow, the array doubles, and each regrowth holds the old and the new array at once (up to 2x the
    vectors at the peak, and at the end for a corpus just past a doubling)."""
    concrete = faiss.downcast_index(index)  # views: `index` owns the memory
    if isinstance(concrete, faiss.IndexHNSW):
        concrete = faiss.downcast_index(concrete.storage)
    if isinstance(concrete, faiss.IndexFlatCodes) and concrete.ntotal == 0:
        concrete.codes.resize(count * concrete.code_size)
        concrete.codes.resize(0)  # a std::vector keeps its capacity when shrunk: later adds fill it in place


def _on_disk_lists(index: faiss.Index) -> faiss.OnDiskInvertedLists | None:
    """The on-disk inverted lists of an IVF index, None for an index held in RAM (a view: `index` owns them)."""
    ivf = faiss.try_extract_index_ivf(index)
    lists = faiss.downcast_InvertedLists(ivf.invlists) if ivf is not None else None
    return lists if isinstance(lists, faiss.OnDiskInvertedLists) else None


def _attach(dataset: Dataset, index: faiss.Index) -> None:
    """Attach an index that already holds the dataset's vectors (`add_faiss_index` would add them again)."""
    dataset._indexes[EMBEDDINGS_COLUMN] = FaissIndex(custom_index=index)


def _link_or_copy(data_file: BinaryIO, target: Path) -> None:
    """Save the open data file at `target`: a hard link to it wherever it is now (Linux's /proc/self/fd), so a
    file of tens of GB is not copied; a copy across filesystems, or when its last name is gone (a folder it was
    saved in has been renamed into another save, or deleted)."""
    try:
        os.link(f"/proc/self/fd/{data_file.fileno()}", target)
    except OSError:
        data_file.seek(0)
        with open(target, "wb") as out:
            shutil.copyfileobj(data_file, out, 16 * 2**20)


def _default_search_parameters(factory: str) -> dict[str, int]:
    parameters = {}
    for family, family_parameters in DEFAULT_SEARCH_PARAMETERS.items():
        if family in factory:
            parameters.update(family_parameters)
    return parameters


class PassageIndex:
    """Passages and a FAISS inner-product index over their embeddings.

    Build with `PassageIndex.build(dataset_with_embeddings, factory=...)`, save with `.save(dir)` (the vectors
    only in `index.faiss`, unless `keep_embeddings=True`), reload with
    `PassageIndex.load(dir, question_encoder=...)`, query with `.search(query_vectors, k)`.
    """

    def __init__(self, dataset: Dataset, manifest: dict[str, Any]):
        if not dataset.is_index_initialized(EMBEDDINGS_COLUMN):
            raise ValueError(
                "the dataset has no FAISS index on 'embeddings': use PassageIndex.build or .load"
            )
        self.dataset = dataset
        self.manifest = manifest
        # An on-disk index's data file, held open so that `save` finds it even after its folder moved.
        self._data_file: BinaryIO | None = None
        self._build_data_file: Path | None = None  # an on-disk build's data file, until `save` takes it over
        # Rows are read from a view without the index: datasets refuses most operations on an indexed dataset, and
        # `select_columns` deep-copies the dataset, FAISS index included (a second copy of every vector).
        self._passages = _unindexed_copy(dataset).select_columns(
            [c for c in dataset.column_names if c != EMBEDDINGS_COLUMN]
        )
        self.set_search_parameters(**manifest.get("search_parameters", {}))

    @property
    def faiss_index(self) -> faiss.Index:
        return self.dataset.get_index(EMBEDDINGS_COLUMN).faiss_index

    @property
    def embedding_dim(self) -> int:
        return int(self.manifest["embedding_dim"])

    @property
    def factory(self) -> str:
        return self.manifest["factory"]

    def __len__(self) -> int:
        return len(self.dataset)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(passages={len(self)}, dim={self.embedding_dim}, factory={self.factory!r})"
        )

    @classmethod
    def build(
        cls,
        dataset: Dataset,
        factory: str = "Flat",
        train_size: int | None = None,
        seed: int = 0,
        device: int | None = None,
        encoder_name: str | None = None,
        encoder_fingerprint: str | None = None,
        search_parameters: dict[str, int] | None = None,
        batch_size: int | None = None,
        on_disk_dir: str | os.PathLike | None = None,
    ) -> PassageIndex:
        """Index `dataset.embeddings` with the FAISS `factory` string and the inner product.

        Args:
            factory: "Flat" (exact), "HNSW32", "IVF4096,PQ64", "IVF4096,SQ8", ... (FAISS index factory); an IVF
                factory + ",OnDisk" (e.g. "IVF4096,SQ8,OnDisk") keeps the inverted lists in a memory-mapped file.
            train_size: vectors to train IVF/PQ/SQ indexes on, drawn at random with `seed` (datasets' own
                `train_size` takes the first rows, a biased sample for a corpus sorted by article).
                Default: all up to 100K, or 50 per IVF list if more.
            device: GPU id to train/search on (faiss-gpu), None for CPU.
            encoder_name / encoder_fingerprint: the passage encoder, recorded in the manifest for `load` checks.
            search_parameters: FAISS parameters such as {"efSearch": 128} or {"nprobe": 32}.
            batch_size: vectors per FAISS `add` call. Default 10K; for HNSW all of them in one call, as raw FAISS
                users do: FAISS builds a worse HNSW graph from several adds (recall@100 at 1M x 384: 0.875 from one
                add, 0.853 from 100K adds, 0.844 from 10K adds), at the cost of one transient copy of the vectors.
            on_disk_dir: for an ",OnDisk" factory, the folder (on a disk with room for twice the lists) that
                receives the shard files and the merged `index.ivfdata`; `save` then links or copies the data file
                into the index folder. Required: a default temporary folder may be RAM (tmpfs).
        """
        if EMBEDDINGS_COLUMN not in dataset.column_names:
            raise MismatchError(f"the dataset has no {EMBEDDINGS_COLUMN!r} column: encode it first")
        dataset = _unindexed_copy(dataset)
        dim = _embedding_dim(dataset)
        faiss_factory, on_disk = split_on_disk(factory)
        index = faiss.index_factory(dim, faiss_factory, faiss.METRIC_INNER_PRODUCT)
        if on_disk and faiss.try_extract_index_ivf(index) is None:
            raise ValueError(f"{factory!r}: only IVF indexes keep their inverted lists on disk")
        if on_disk and on_disk_dir is None:
            raise ValueError(
                f"{factory!r} writes its inverted lists to disk: pass on_disk_dir, a folder on a disk with room "
                "for twice the lists (`dpr-hf build-index` puts it beside --output)"
            )
        if batch_size is None:
            batch_size = len(dataset) if isinstance(faiss.downcast_index(index), faiss.IndexHNSW) else 10_000
        if index.is_trained and device is not None:  # built on the GPU by datasets
            dataset.add_faiss_index(
                column=EMBEDDINGS_COLUMN,
                metric_type=faiss.METRIC_INNER_PRODUCT,
                string_factory=factory,
                device=device,
                batch_size=batch_size,
            )
            train_size = 0
        else:
            if index.is_trained:
                train_size = 0
            else:
                index, train_size = cls._train(index, dataset, train_size, seed, device)
            if on_disk:
                _attach(dataset, cls._add_on_disk(index, dataset, Path(on_disk_dir), batch_size))
            else:
                _reserve_flat_codes(index, len(dataset))
                dataset.add_faiss_index(column=EMBEDDINGS_COLUMN, custom_index=index, batch_size=batch_size)
        manifest = {
            "format_version": MANIFEST_VERSION,
            "embedding_dim": dim,
            "factory": factory,
            "metric": "inner_product",
            "num_passages": len(dataset),
            "encoder_name": encoder_name,
            "encoder_fingerprint": encoder_fingerprint,
            "train_size": train_size,
            "search_parameters": search_parameters or _default_search_parameters(factory),
        }
        built = cls(dataset, manifest)
        if on_disk:
            built._build_data_file = Path(on_disk_dir) / DATA_FILE
            built._data_file = open(built._build_data_file, "rb")  # noqa: SIM115 (open as long as the index)
        return built

    @classmethod
    def from_embeddings(cls, path: str | os.PathLike, factory: str = "Flat", **kwargs) -> PassageIndex:
        """Build over an `encode_corpus` folder, taking the encoder name and fingerprint from it."""
        dataset, info = load_embeddings(path)
        kwargs.setdefault("encoder_name", info.get("encoder_name"))
        kwargs.setdefault("encoder_fingerprint", info.get("encoder_fingerprint"))
        return cls.build(dataset, factory=factory, **kwargs)

    @staticmethod
    def _add_on_disk(index: faiss.Index, dataset: Dataset, folder: Path, batch_size: int) -> faiss.Index:
        """Fill the trained, empty IVF `index` with on-disk lists: FAISS's recipe (`merge_ondisk`). Each shard of
        ON_DISK_SHARD vectors is added to a copy of the trained index in RAM and written out; the memory-mapped
        shards are then merged list by list into `folder/index.ivfdata`, sized exactly (adding to on-disk lists
        directly would grow them by doubling and relocating). Ids are the global row numbers, given per shard
        (`merge_ondisk`'s shift_ids offsets the last shard wrongly when shards differ in size, faiss 1.15)."""
        folder.mkdir(parents=True, exist_ok=True)
        shards = folder / "shards"
        shutil.rmtree(shards, ignore_errors=True)
        shards.mkdir()
        (folder / DATA_FILE).unlink(missing_ok=True)
        vectors = dataset.with_format("numpy", columns=[EMBEDDINGS_COLUMN])
        names = []
        for start in range(0, len(dataset), ON_DISK_SHARD):
            shard = faiss.clone_index(index)
            stop = min(start + ON_DISK_SHARD, len(dataset))
            for batch in range(start, stop, batch_size):
                end = min(batch + batch_size, stop)
                rows = np.ascontiguousarray(vectors[batch:end][EMBEDDINGS_COLUMN], dtype=np.float32)
                shard.add_with_ids(rows, np.arange(batch, end, dtype=np.int64))
            names.append(str(shards / f"{start:012d}.faiss"))
            faiss.write_index(shard, names[-1])
            del shard
        logger.info(f"merging {len(names)} shards into {folder / DATA_FILE}")
        merge_ondisk(index, names, str((folder / DATA_FILE).absolute()))
        shutil.rmtree(shards)
        return index

    @staticmethod
    def _train(
        index: faiss.Index, dataset: Dataset, train_size: int | None, seed: int, device: int | None
    ) -> tuple[faiss.Index, int]:
        ivf = faiss.try_extract_index_ivf(index)  # a view into `index`
        if ivf is not None and isinstance(faiss.downcast_index(ivf), faiss.IndexIVFPQ):
            # Polysemous codes only serve Hamming pre-filtering, which search does not use; training them is slow.
            faiss.downcast_index(ivf).do_polysemous_training = False
        if train_size is None:
            train_size = max(100_000, 50 * ivf.nlist) if ivf is not None else 100_000
        train_size = min(train_size, len(dataset))
        rows = np.sort(np.random.default_rng(seed).choice(len(dataset), size=train_size, replace=False))
        sample = np.asarray(
            dataset.with_format("numpy", columns=[EMBEDDINGS_COLUMN])[rows][EMBEDDINGS_COLUMN]
        )
        logger.info(f"training the FAISS index on {train_size} random vectors")
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        if device is None:
            index.train(sample)
            return index, train_size
        # k-means is the slow part: run it on the GPU, then add on CPU (datasets takes no device with custom_index).
        gpu_index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), device, index)
        gpu_index.train(sample)
        return faiss.index_gpu_to_cpu(gpu_index), train_size

    def set_search_parameters(self, **parameters: int) -> None:
        """Set FAISS search knobs (`efSearch`, `nprobe`, ...) and record them for `save`."""
        space = faiss.ParameterSpace()
        for name, value in parameters.items():
            space.set_index_parameter(self.faiss_index, name, value)
        self.manifest["search_parameters"] = {**self.manifest.get("search_parameters", {}), **parameters}

    @property
    def has_embeddings(self) -> bool:
        """Whether the raw float32 vectors are at hand (built here, or loaded from a folder saved with them)."""
        return EMBEDDINGS_COLUMN in self.dataset.column_names

    def embeddings(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """The passages' float32 vectors at these rows, `(len(rows), dim)`.

        From the `embeddings` column when it was kept; else from a Flat or HNSW-Flat index, which stores them
        exactly. Compressed indexes (IVF-PQ, SQ, ...) hold only approximations, so they refuse.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if self.has_embeddings:
            table = _unindexed_copy(self.dataset).with_format("numpy", columns=[EMBEDDINGS_COLUMN])
            return np.asarray(table[rows][EMBEDDINGS_COLUMN], dtype=np.float32).reshape(len(rows), -1)
        storage = faiss.downcast_index(self.faiss_index)  # views: the index owns the memory
        if isinstance(storage, faiss.IndexHNSW):
            storage = faiss.downcast_index(storage.storage)
        if not isinstance(storage, faiss.IndexFlat):
            raise ValueError(
                f"this {self.factory} index was saved without its raw vectors (keep_embeddings=False) and its "
                "codes are lossy: rebuild it from the `dpr-hf encode` folder, or save with keep_embeddings=True "
                "to re-train it later"
            )
        return storage.reconstruct_batch(rows)

    def save(self, path: str | os.PathLike, keep_embeddings: bool = False) -> None:
        """Write `passages/`, `index.faiss`, then `manifest.json`, in a temporary folder renamed at the end.

        The vectors are stored once, in `index.faiss`; `keep_embeddings=True` also keeps the float32 column in
        `passages/` (4 x dim bytes per passage), e.g. to train another IVF index from the folder later.
        """
        if keep_embeddings and not self.has_embeddings:
            raise ValueError(
                "keep_embeddings=True, but this index was loaded from a folder saved without its raw vectors"
            )
        if not keep_embeddings and not self._passages.column_names:
            raise ValueError(
                f"the passages have no column but {EMBEDDINGS_COLUMN!r}: nothing would identify them in the saved "
                "folder; add an 'id' column (or save with keep_embeddings=True)"
            )
        path = Path(path)
        with staged_folder(path, staging=path.with_name(path.name + ".tmp")) as tmp:
            # datasets refuses save_to_disk on a dataset with an index attached: save a copy without it.
            (_unindexed_copy(self.dataset) if keep_embeddings else self._passages).save_to_disk(
                str(tmp / PASSAGES_DIR)
            )
            if self._data_file is None:
                self.dataset.save_faiss_index(EMBEDDINGS_COLUMN, str(tmp / INDEX_FILE))
            else:  # index.faiss records the data file's path; `load` looks for it beside index.faiss instead
                _link_or_copy(self._data_file, tmp / DATA_FILE)
                faiss.write_index(self.faiss_index, str(tmp / INDEX_FILE))
            manifest = {
                **self.manifest,
                "format_version": MANIFEST_VERSION,
                "embeddings_kept": keep_embeddings,
            }
            (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        if (
            self._build_data_file is not None
        ):  # the saved folder has the data now: drop the build's name for it
            self._build_data_file.unlink(missing_ok=True)
            self._build_data_file = None

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        question_encoder: PreTrainedModel | None = None,
        passage_encoder: PreTrainedModel | None = None,
        device: int | None = None,
    ) -> PassageIndex:
        """Load a saved index, checking the manifest against the passages, the FAISS index and the encoders.

        The question encoder must produce vectors of the index's size; when it was loaded from a pair or system
        folder, the `passage_encoder/` beside it must be the one that encoded the passages (by fingerprint). A
        `passage_encoder` given directly is checked the same way. Raises `MismatchError` on any disagreement.
        """
        path = Path(path)
        manifest_file = path / MANIFEST_FILE
        if not manifest_file.exists():
            raise FileNotFoundError(
                f"{path} is not a PassageIndex folder: no {MANIFEST_FILE} (an unfinished save?)"
            )
        manifest = json.loads(manifest_file.read_text())
        version = manifest.get("format_version", 1)
        if version > MANIFEST_VERSION:
            raise MismatchError(
                f"{manifest_file} has format_version {version}; this dpr_hf reads up to {MANIFEST_VERSION}: "
                "upgrade dpr_hf"
            )
        dim, count, factory = manifest["embedding_dim"], manifest["num_passages"], manifest["factory"]

        dataset = load_from_disk(str(path / PASSAGES_DIR))
        if len(dataset) != count:
            raise MismatchError(f"{path}: {PASSAGES_DIR}/ has {len(dataset)} passages, the manifest {count}")
        kept = EMBEDDINGS_COLUMN in dataset.column_names
        if manifest.setdefault("embeddings_kept", kept) != kept:  # version 1 folders always kept them
            raise MismatchError(
                f"{path}: the manifest says the embeddings were {'' if manifest['embeddings_kept'] else 'not '}"
                f"kept, but {PASSAGES_DIR}/ {'has' if kept else 'lacks'} the {EMBEDDINGS_COLUMN!r} column"
            )
        if EMBEDDINGS_COLUMN in dataset.column_names and _embedding_dim(dataset) != dim:
            raise MismatchError(
                f"{path}: {PASSAGES_DIR}/ holds {_embedding_dim(dataset)}-dim embeddings, the manifest says {dim}"
            )
        data_file = None
        if split_on_disk(factory)[1]:
            data_file = cls._load_on_disk(path, dataset, device)
        else:
            try:
                dataset.load_faiss_index(EMBEDDINGS_COLUMN, str(path / INDEX_FILE), device=device)
            except ValueError as error:  # datasets' row-count check
                raise MismatchError(
                    f"{path}: {INDEX_FILE} does not fit the {count} passages: {error}"
                ) from error
        index = dataset.get_index(EMBEDDINGS_COLUMN).faiss_index
        if index.d != dim:
            raise MismatchError(f"{path}: {INDEX_FILE} holds {index.d}-dim vectors, the manifest says {dim}")
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise MismatchError(
                f"{path}: {INDEX_FILE} does not use the inner product (metric {index.metric_type})"
            )
        expected = _index_family(
            faiss.index_factory(dim, split_on_disk(factory)[0], faiss.METRIC_INNER_PRODUCT)
        )
        if device is None and _index_family(index) != expected:
            raise MismatchError(
                f"{path}: {INDEX_FILE} is an {_index_family(index)} index, the manifest's factory {factory!r} "
                f"builds an {expected} index"
            )
        if question_encoder is not None:
            cls._check_question_encoder(path, manifest, question_encoder)
        if passage_encoder is not None:
            cls._check_fingerprint(
                path, manifest, encoder_fingerprint(passage_encoder), passage_encoder.name_or_path
            )
        loaded = cls(dataset, manifest)
        loaded._data_file = data_file
        return loaded

    @staticmethod
    def _load_on_disk(path: Path, dataset: Dataset, device: int | None) -> BinaryIO:
        """Read an on-disk IVF and map its lists from `index.ivfdata` beside it, wherever the folder now is.

        index.faiss holds the data file's absolute path at save time; FAISS's IO_FLAG_ONDISK_SAME_DIR keeps only
        its name and looks in index.faiss's folder (taken without resolving links: in a Hub cache snapshot,
        index.faiss links into blobs/, the data file's link sits beside it).
        """
        if device is not None:
            raise ValueError(f"{path}: an on-disk index is searched on the CPU (its lists are memory-mapped)")
        data = path / DATA_FILE
        if not data.is_file():
            raise MismatchError(
                f"{path}: the manifest's factory keeps its inverted lists in {DATA_FILE}, missing"
            )
        # Read-only: FAISS otherwise maps the lists for writing, which fails on a read-only folder or mount.
        flags = faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY
        index = faiss.read_index(os.path.abspath(path / INDEX_FILE), flags)
        lists = _on_disk_lists(index)
        if lists is None:
            raise MismatchError(
                f"{path}: {INDEX_FILE} has no on-disk inverted lists, the manifest says it does"
            )
        if data.stat().st_size < lists.totsize:
            raise MismatchError(
                f"{path}: {DATA_FILE} has {data.stat().st_size} bytes, the lists in {INDEX_FILE} need "
                f"{lists.totsize} (a truncated copy?)"
            )
        if index.ntotal != len(dataset):
            raise MismatchError(
                f"{path}: {INDEX_FILE} holds {index.ntotal} vectors, {PASSAGES_DIR}/ has {len(dataset)} passages"
            )
        _attach(dataset, index)
        return open(data, "rb")  # noqa: SIM115 (open as long as the index)

    @staticmethod
    def _check_question_encoder(path: Path, manifest: dict, question_encoder: PreTrainedModel) -> None:
        name = question_encoder.name_or_path or type(question_encoder).__name__
        if question_encoder.config.embedding_dim != manifest["embedding_dim"]:
            raise MismatchError(
                f"question encoder {name} returns {question_encoder.config.embedding_dim}-dim vectors but the index "
                f"at {path} holds {manifest['embedding_dim']}-dim passage embeddings"
            )
        partner = partner_passage_encoder_dir(question_encoder)
        if partner is not None:
            PassageIndex._check_fingerprint(path, manifest, pretrained_fingerprint(partner), str(partner))

    @staticmethod
    def _check_fingerprint(path: Path, manifest: dict, fingerprint: str, name: str) -> None:
        recorded = manifest.get("encoder_fingerprint")
        if recorded is not None and recorded != fingerprint:
            raise MismatchError(
                f"the index at {path} was encoded with passage encoder {manifest.get('encoder_name')!r} "
                f"({recorded[:19]}...), not with {name!r} ({fingerprint[:19]}...): re-encode the passages "
                "with this model or use the matching question encoder"
            )

    def search_rows(self, query_vectors: np.ndarray, k: int = 100) -> tuple[np.ndarray, np.ndarray]:
        """Scores and row numbers `(queries, k)`, best first, row -1 past the last hit: FAISS's answer alone, for
        callers that fetch passages themselves (or only some of them, with `passages`)."""
        queries = np.ascontiguousarray(np.atleast_2d(query_vectors), dtype=np.float32)
        if queries.shape[1] != self.embedding_dim:
            raise MismatchError(f"queries have {queries.shape[1]} dims, the index {self.embedding_dim}")
        scores, rows = self.dataset.search_batch(EMBEDDINGS_COLUMN, queries, k=min(k, len(self)))
        return scores, rows

    def passages(self, rows: Sequence[int] | np.ndarray) -> list[dict]:
        """The passages (all columns but embeddings) at these row numbers, in one Arrow `take`.

        datasets' own row lookup slices the table once per row, which costs more than the FAISS search itself
        for a batch of queries.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if self._passages._indices is not None:  # a `select`ed or shuffled dataset: map to rows of the table
            rows = self._passages._indices.column(0).to_numpy()[rows]
        return self._passages.data.table.select(self._passages.column_names).take(rows).to_pylist()

    def search(self, query_vectors: np.ndarray, k: int = 100) -> list[list[dict]]:
        """Top-k passages per query row, best first: passage dicts (all columns but embeddings) + "score"."""
        scores, rows = self.search_rows(query_vectors, k)
        found = rows >= 0
        wanted, inverse = np.unique(rows[found], return_inverse=True)
        fetched = self.passages(wanted) if len(wanted) else []
        positions = np.full(rows.shape, -1, dtype=np.int64)
        positions[found] = inverse
        return [
            [{**fetched[i], "score": s} for s, i in zip(query_scores, query_positions, strict=True) if i >= 0]
            for query_scores, query_positions in zip(scores.tolist(), positions.tolist(), strict=True)
        ]

"""Corpus encoding and the FAISS passage index.

`encode_corpus` turns a passages dataset into a `datasets` dataset with an `embeddings` column, in shards that
survive interruption and split across `accelerate launch` processes. `PassageIndex` wraps
`Dataset.add_faiss_index` (inner product, as DPR scores) and saves one folder whose manifest lets `load` refuse an
index that does not belong to the encoder or the passages it is used with.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env
from datasets import Dataset, concatenate_datasets, load_from_disk
from safetensors import safe_open
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging

from .atomic import replace_folder
from .errors import MismatchError
from .tokenization import PASSAGE_MAX_LENGTH, format_passages

logger = logging.get_logger(__name__)

EMBEDDINGS_COLUMN = "embeddings"
ENCODING_FILE = "encoding.json"
MANIFEST_FILE = "manifest.json"
INDEX_FILE = "index.faiss"
PASSAGES_DIR = "passages"
MANIFEST_VERSION = 1
PRECISIONS = ("fp32", "bf32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Search-time knobs per index family: HNSW's default efSearch=16 loses recall, IVF's default nprobe=1 even more.
DEFAULT_SEARCH_PARAMETERS = {"HNSW": {"efSearch": 128}, "IVF": {"nprobe": 32}}
# Config fields that change the vectors an encoder produces, hashed with the weights.
_FINGERPRINT_CONFIG_KEYS = ("pooling", "projection_dim", "normalize")


# --------------------------------------------------------------------------------------------------- fingerprints
def _fingerprint(config: dict, tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    digest = hashlib.sha256(json.dumps({k: config.get(k) for k in _FINGERPRINT_CONFIG_KEYS}).encode())
    for name, tensor in sorted(tensors, key=lambda item: item[0]):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def encoder_fingerprint(encoder: PreTrainedModel) -> str:
    """Hash of the weights and pooling config: the same vectors come out iff the fingerprints agree."""
    return _fingerprint(encoder.config.to_dict(), encoder.state_dict().items())


def pretrained_fingerprint(model_dir: str | os.PathLike) -> str:
    """`encoder_fingerprint` of a saved encoder folder, read from its safetensors files without building it."""
    model_dir = Path(model_dir)
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {model_dir}")
    config = json.loads((model_dir / "config.json").read_text())
    tensors = []
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            tensors.extend((key, handle.get_tensor(key)) for key in handle.keys())
    return _fingerprint(config, tensors)


def _partner_passage_encoder_dir(question_encoder: PreTrainedModel) -> Path | None:
    """The `passage_encoder/` next to a question encoder loaded from a pair or system folder."""
    path = Path(str(getattr(question_encoder, "name_or_path", "") or ""))
    partner = path.parent / "passage_encoder"
    return partner if path.name == "question_encoder" and partner.is_dir() else None


def encoder_dir(path: str | os.PathLike, role: str) -> Path:
    """The `<role>_encoder/` folder of a pair or system folder, or `path` itself when it is an encoder folder."""
    path = Path(path)
    if (path / f"{role}_encoder" / "config.json").exists():
        return path / f"{role}_encoder"
    if (path / "config.json").exists():
        return path
    raise FileNotFoundError(
        f"{path} holds no {role} encoder (neither {role}_encoder/config.json nor config.json)"
    )


# ------------------------------------------------------------------------------------------------------- encoding
def distributed_state() -> PartialState:
    """Accelerate's process state; on machines without an accelerator, asked for CPU explicitly, since accelerate
    only detects a multi-process CPU run (`accelerate launch --multi_gpu` or `torchrun` there) when told cpu=True.
    """
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.accelerator.is_available())


def _length_order(titles: Sequence[str] | None, texts: Sequence[str]) -> np.ndarray:
    """Longest first, by characters: batches of similar length waste no padding, and an OOM shows at once."""
    lengths = np.fromiter((len(text) for text in texts), dtype=np.int64, count=len(texts))
    if titles is not None:
        lengths += np.fromiter((len(title or "") for title in titles), dtype=np.int64, count=len(texts))
    return np.argsort(-lengths, kind="stable")


@contextmanager
def precision_context(device: torch.device, precision: str | None) -> Iterator[None]:
    """The numerics of an encoding pass.

    "fp32" (or None): exact. "bf32": fp32 tensors throughout, but CPU matmuls use oneDNN's bf16 math with fp32
    accumulation (`torch.backends.mkldnn.matmul.fp32_precision`): embeddings within cosine 0.99999 of fp32, faster on
    CPUs with AVX512-BF16/AMX, unchanged elsewhere. "bf16"/"fp16": autocast (GPUs; bf16 is fastest on such CPUs too,
    at cosine ~0.9999).
    """
    if precision not in (None, *PRECISIONS):
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision in _AUTOCAST_DTYPES:
        with torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPES[precision]):
            yield
    elif precision == "bf32":
        if device.type != "cpu":
            raise ValueError(
                f"precision 'bf32' is oneDNN's CPU matmul mode; on {device.type} use bf16 or fp16"
            )
        matmul = torch.backends.mkldnn.matmul
        previous, matmul.fp32_precision = matmul.fp32_precision, "bf16"
        try:
            yield
        finally:
            matmul.fp32_precision = previous
    else:
        yield


@torch.inference_mode()
def encode_texts(
    encoder: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    titles: Sequence[str] | None,
    texts: Sequence[str],
    batch_size: int = 64,
    max_length: int = PASSAGE_MAX_LENGTH,
    precision: str | None = None,
    show_progress: bool = True,
) -> np.ndarray:
    """Passage embeddings `(len(texts), dim)` float32 in input order, computed in length-sorted batches."""
    device = encoder.device
    order = _length_order(titles, texts)
    embeddings = np.empty((len(texts), encoder.config.embedding_dim), dtype=np.float32)
    progress = tqdm(total=len(texts), desc="Encoding passages", unit="passage", disable=not show_progress)
    with precision_context(device, precision):
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            inputs = format_passages(
                tokenizer,
                [titles[i] for i in rows] if titles is not None else None,
                [texts[i] for i in rows],
                max_length=max_length,
            ).to(device)
            embeddings[rows] = encoder(**inputs).pooler_output.float().cpu().numpy()
            progress.update(len(rows))
    progress.close()
    return embeddings


def _embeddings_dataset(embeddings: np.ndarray) -> Dataset:
    """A one-column dataset of fixed-size float32 lists (what `add_faiss_index` reads), built without copies."""
    column = pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1)), embeddings.shape[1])
    return Dataset(pa.table({EMBEDDINGS_COLUMN: column}))


def _with_embeddings(passages: Dataset, embeddings: np.ndarray) -> Dataset:
    if EMBEDDINGS_COLUMN in passages.column_names:
        passages = passages.remove_columns(EMBEDDINGS_COLUMN)
    return concatenate_datasets([passages, _embeddings_dataset(embeddings)], axis=1)


def _passage_columns(passages: Dataset) -> tuple[list[str] | None, list[str]]:
    if "text" not in passages.column_names:
        raise ValueError(
            f"passages need a 'text' column (and optionally 'title'), got {passages.column_names}"
        )
    titles = passages["title"] if "title" in passages.column_names else None
    return (list(titles) if titles is not None else None), list(passages["text"])


def encode_passages(
    encoder: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    passages: Dataset | Sequence[dict],
    batch_size: int = 64,
    max_length: int = PASSAGE_MAX_LENGTH,
    precision: str | None = None,
    show_progress: bool = True,
) -> Dataset:
    """Passages plus an `embeddings` column, in memory and in corpus order (see `encode_corpus` for big corpora).

    Args:
        precision: None/"fp32", "bf32" (CPU), "bf16" or "fp16": see `precision_context`.
    """
    if not isinstance(passages, Dataset):
        passages = Dataset.from_list(list(passages))
    titles, texts = _passage_columns(passages)
    embeddings = encode_texts(
        encoder, tokenizer, titles, texts, batch_size, max_length, precision, show_progress=show_progress
    )
    return _with_embeddings(passages, embeddings)


def _atomic_save(dataset: Dataset, path: Path, extra: dict[str, dict] | None = None) -> None:
    """save_to_disk under a temporary name, plus JSON files, then rename: a folder either exists whole or not."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dataset.save_to_disk(str(tmp))
    for name, content in (extra or {}).items():
        (tmp / name).write_text(json.dumps(content, indent=2) + "\n")
    replace_folder(tmp, path)


def encode_corpus(
    encoder: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    passages: Dataset,
    output_dir: str | os.PathLike,
    shard_size: int = 100_000,
    batch_size: int = 64,
    max_length: int = PASSAGE_MAX_LENGTH,
    precision: str | None = None,
    encoder_name: str | None = None,
    show_progress: bool = True,
) -> Dataset:
    """Encode a corpus of any size to `output_dir` (a `save_to_disk` dataset with an `embeddings` column).

    The corpus is cut into shards of `shard_size` passages; under `accelerate launch` process `i` encodes shards
    `i, i + n, ...`. Finished shards are saved (atomically) in `<output_dir>.shards/`, so a rerun of an interrupted
    job encodes only the missing ones; at the end the main process merges them into `output_dir` (written under
    a temporary name, then renamed) with `encoding.json` (encoder name + fingerprint, read by `PassageIndex`).
    Memory holds one shard of embeddings and one batch of token tensors at a time.
    """
    state = distributed_state()
    output_dir = Path(output_dir)
    work_dir = output_dir.with_name(output_dir.name + ".shards")
    encoder = encoder.to(state.device).eval()
    fingerprint = encoder_fingerprint(encoder)
    plan = {
        "num_passages": len(passages),
        "shard_size": shard_size,
        "max_length": max_length,
        "embedding_dim": encoder.config.embedding_dim,
        "encoder_name": encoder_name or encoder.name_or_path or None,
        "encoder_fingerprint": fingerprint,
    }
    if (output_dir / ENCODING_FILE).exists():
        done = json.loads((output_dir / ENCODING_FILE).read_text())
        if all(done.get(key) == plan[key] for key in ("num_passages", "encoder_fingerprint", "max_length")):
            logger.info(f"{output_dir} already holds these embeddings; nothing to do")
            return load_from_disk(str(output_dir))
        raise FileExistsError(f"{output_dir} holds embeddings of another encoder or corpus; remove it first")
    if output_dir.is_file() or (output_dir.is_dir() and any(output_dir.iterdir())):
        raise FileExistsError(
            f"{output_dir} exists and holds no embeddings (no {ENCODING_FILE}); choose another output"
        )

    with state.main_process_first():
        plan_file = work_dir / "plan.json"
        if plan_file.exists():
            previous = json.loads(plan_file.read_text())
            # Everything but the name decides whether finished shards can be reused.
            changed = sorted(key for key in plan if key != "encoder_name" and previous.get(key) != plan[key])
            if changed:
                raise MismatchError(
                    f"{work_dir} holds shards of an earlier run with other {', '.join(changed)}; "
                    "delete that folder to start afresh"
                )
        elif state.is_main_process:
            work_dir.mkdir(parents=True, exist_ok=True)
            plan_file.write_text(json.dumps(plan, indent=2) + "\n")

    num_shards = max(1, -(-len(passages) // shard_size))
    shard_dirs = [work_dir / f"shard-{k:05d}-of-{num_shards:05d}" for k in range(num_shards)]
    todo = [
        k for k in range(state.process_index, num_shards, state.num_processes) if not shard_dirs[k].exists()
    ]
    logger.info(f"process {state.process_index}: {len(todo)} shard(s) to encode")
    for k in todo:
        shard = passages.select(range(k * shard_size, min((k + 1) * shard_size, len(passages))))
        titles, texts = _passage_columns(shard)
        embeddings = encode_texts(
            encoder,
            tokenizer,
            titles,
            texts,
            batch_size,
            max_length,
            precision,
            show_progress=show_progress and state.is_local_main_process,
        )
        _atomic_save(_with_embeddings(shard, embeddings), shard_dirs[k])
    state.wait_for_everyone()

    if state.is_main_process:
        merged = concatenate_datasets([load_from_disk(str(path)) for path in shard_dirs])
        _atomic_save(merged, output_dir, extra={ENCODING_FILE: plan})
        shutil.rmtree(work_dir)
    state.wait_for_everyone()
    return load_from_disk(str(output_dir))


def load_embeddings(path: str | os.PathLike) -> tuple[Dataset, dict]:
    """An `encode_corpus` folder: the dataset and its `encoding.json` ({} for a plain dataset with embeddings)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no embeddings folder at {path}")
    dataset = load_from_disk(str(path))
    if EMBEDDINGS_COLUMN not in dataset.column_names:
        raise MismatchError(f"{path} has no {EMBEDDINGS_COLUMN!r} column (columns: {dataset.column_names})")
    info_file = path / ENCODING_FILE
    return dataset, (json.loads(info_file.read_text()) if info_file.exists() else {})


# ---------------------------------------------------------------------------------------------------------- index
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


def _default_search_parameters(factory: str) -> dict[str, int]:
    parameters = {}
    for family, family_parameters in DEFAULT_SEARCH_PARAMETERS.items():
        if family in factory:
            parameters.update(family_parameters)
    return parameters


class PassageIndex:
    """Passages with their embeddings and a FAISS inner-product index over them.

    Build with `PassageIndex.build(dataset_with_embeddings, factory=...)`, save with `.save(dir)`, reload with
    `PassageIndex.load(dir, question_encoder=...)`, query with `.search(query_vectors, k)`.
    """

    def __init__(self, dataset: Dataset, manifest: dict[str, Any]):
        if not dataset.is_index_initialized(EMBEDDINGS_COLUMN):
            raise ValueError(
                "the dataset has no FAISS index on 'embeddings': use PassageIndex.build or .load"
            )
        self.dataset = dataset
        self.manifest = manifest
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
    ) -> PassageIndex:
        """Index `dataset.embeddings` with the FAISS `factory` string and the inner product.

        Args:
            factory: "Flat" (exact), "HNSW32", "IVF4096,PQ64", "IVF4096,SQ8", ... (FAISS index factory).
            train_size: vectors to train IVF/PQ/SQ indexes on, drawn at random with `seed` (datasets' own
                `train_size` takes the first rows, a biased sample for a corpus sorted by article).
                Default: all up to 100K, or 50 per IVF list if more.
            device: GPU id to train/search on (faiss-gpu), None for CPU.
            encoder_name / encoder_fingerprint: the passage encoder, recorded in the manifest for `load` checks.
            search_parameters: FAISS parameters such as {"efSearch": 128} or {"nprobe": 32}.
            batch_size: vectors per FAISS `add` call. Default 10K; for HNSW all of them in one call, as raw FAISS
                users do: FAISS builds a worse HNSW graph from several adds (recall@100 at 1M x 384: 0.875 from one
                add, 0.853 from 100K adds, 0.844 from 10K adds), at the cost of one transient copy of the vectors.
        """
        if EMBEDDINGS_COLUMN not in dataset.column_names:
            raise MismatchError(f"the dataset has no {EMBEDDINGS_COLUMN!r} column: encode it first")
        dataset = _unindexed_copy(dataset)
        dim = _embedding_dim(dataset)
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
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
        return cls(dataset, manifest)

    @classmethod
    def from_embeddings(cls, path: str | os.PathLike, factory: str = "Flat", **kwargs) -> PassageIndex:
        """Build over an `encode_corpus` folder, taking the encoder name and fingerprint from it."""
        dataset, info = load_embeddings(path)
        kwargs.setdefault("encoder_name", info.get("encoder_name"))
        kwargs.setdefault("encoder_fingerprint", info.get("encoder_fingerprint"))
        return cls.build(dataset, factory=factory, **kwargs)

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

    def save(self, path: str | os.PathLike) -> None:
        """Write `passages/`, `index.faiss`, then `manifest.json`, in a temporary folder renamed at the end."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        # datasets refuses save_to_disk on a dataset with an index attached: save a copy without it.
        _unindexed_copy(self.dataset).save_to_disk(str(tmp / PASSAGES_DIR))
        self.dataset.save_faiss_index(EMBEDDINGS_COLUMN, str(tmp / INDEX_FILE))
        (tmp / MANIFEST_FILE).write_text(json.dumps(self.manifest, indent=2) + "\n")
        replace_folder(tmp, path)

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
        dim, count, factory = manifest["embedding_dim"], manifest["num_passages"], manifest["factory"]

        dataset = load_from_disk(str(path / PASSAGES_DIR))
        if len(dataset) != count:
            raise MismatchError(f"{path}: {PASSAGES_DIR}/ has {len(dataset)} passages, the manifest {count}")
        if EMBEDDINGS_COLUMN in dataset.column_names and _embedding_dim(dataset) != dim:
            raise MismatchError(
                f"{path}: {PASSAGES_DIR}/ holds {_embedding_dim(dataset)}-dim embeddings, the manifest says {dim}"
            )
        try:
            dataset.load_faiss_index(EMBEDDINGS_COLUMN, str(path / INDEX_FILE), device=device)
        except ValueError as error:  # datasets' row-count check
            raise MismatchError(f"{path}: {INDEX_FILE} does not fit the {count} passages: {error}") from error
        index = dataset.get_index(EMBEDDINGS_COLUMN).faiss_index
        if index.d != dim:
            raise MismatchError(f"{path}: {INDEX_FILE} holds {index.d}-dim vectors, the manifest says {dim}")
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise MismatchError(
                f"{path}: {INDEX_FILE} does not use the inner product (metric {index.metric_type})"
            )
        expected = _index_family(faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT))
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
        return cls(dataset, manifest)

    @staticmethod
    def _check_question_encoder(path: Path, manifest: dict, question_encoder: PreTrainedModel) -> None:
        name = question_encoder.name_or_path or type(question_encoder).__name__
        if question_encoder.config.embedding_dim != manifest["embedding_dim"]:
            raise MismatchError(
                f"question encoder {name} returns {question_encoder.config.embedding_dim}-dim vectors but the index "
                f"at {path} holds {manifest['embedding_dim']}-dim passage embeddings"
            )
        partner = _partner_passage_encoder_dir(question_encoder)
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

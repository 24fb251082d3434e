"""The one batched encoder of texts (length-sorted batches, precision, CPU streams, progress) and corpus encoding.

`encode_corpus` turns a passages dataset into a `datasets` dataset with an `embeddings` column, in shards that
survive interruption and split across `accelerate launch` processes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env
from datasets import Dataset, concatenate_datasets, load_from_disk
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging

from .atomic import staged_folder
from .cpu_streams import StreamRace, map_in_streams
from .models.errors import MismatchError
from .models.fingerprints import encoder_fingerprint
from .models.tokenization import format_passages, format_questions

logger = logging.get_logger(__name__)

EMBEDDINGS_COLUMN = "embeddings"
ENCODING_FILE = "encoding.json"
MANIFEST_FILE = "manifest.json"
INDEX_FILE = "index.faiss"
PASSAGES_DIR = "passages"
MANIFEST_VERSION = 1
PRECISIONS = ("fp32", "bf32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
TOKENIZE_CHUNK = 4096  # texts per tokenizer call in `encode`
# Padded tokens each plan of a `StreamRace` reads timed: 64 passages of 256 tokens, ~2 s on 2 cores, where the two
# plans differ by 1.3-1.4x (docs/encoding.md)
RACE_TOKENS = 16_384


def distributed_state() -> PartialState:
    """Accelerate's process state; on machines without an accelerator, asked for CPU explicitly, since accelerate
    only detects a multi-process CPU run (`accelerate launch --multi_gpu` or `torchrun` there) when told cpu=True.
    """
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.accelerator.is_available())


def _token_ids(
    tokenizer: PreTrainedTokenizerBase,
    role: str,
    texts: Sequence[str],
    titles: Sequence[str | None] | None,
    max_length: int,
) -> tuple[list[np.ndarray], list[str]]:
    """Every text's token ids (int32, unpadded) as the encoder reads them, tokenised in chunks (one tokenizer
    call per chunk is cheaper than one per batch, and chunks keep the tokenizer's Python lists small), and the
    input names the encoder is given."""
    ids: list[np.ndarray] = []
    names: list[str] = []
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        chunk = texts[start : start + TOKENIZE_CHUNK]
        if role == "question":
            encoded = format_questions(
                tokenizer, chunk, max_length=max_length, padding=False, return_tensors=None
            )
        else:
            chunk_titles = titles[start : start + TOKENIZE_CHUNK] if titles is not None else None
            encoded = format_passages(
                tokenizer, chunk_titles, chunk, max_length=max_length, padding=False, return_tensors=None
            )
        ids += [np.asarray(row, dtype=np.int32) for row in encoded["input_ids"]]
        names = list(encoded.keys())
    return ids, names


def _padded_batch(ids: list[np.ndarray], names: list[str], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded `input_ids`, `attention_mask` and (all-zero, as DPR's) `token_type_ids`, as named."""
    length = max(len(row) for row in ids)
    input_ids = np.full((len(ids), length), pad_token_id, dtype=np.int64)
    attention_mask = np.zeros((len(ids), length), dtype=np.int64)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = row
        attention_mask[i, : len(row)] = 1
    arrays = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": np.zeros_like(input_ids),
    }
    return {name: torch.from_numpy(arrays[name]) for name in names if name in arrays}


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


def encode(
    encoder: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    titles: Sequence[str | None] | None = None,
    *,
    batch_size: int = 64,
    max_length: int | None = None,
    precision: str | None = None,
    streams: int = 1,
    race: StreamRace | None = None,
    show_progress: bool = False,
) -> np.ndarray:
    """Embeddings `(len(texts), dim)` float32 in input order: the one encoding loop of dpr_hf.

    Questions or passages, by the encoder's role (`titles` go with passages), formatted as in training, read at
    the encoder's trained `config.max_seq_length` unless `max_length` says otherwise, tokenised once, in batches
    sorted by token count (longest first: little padding, and an out-of-memory shows at once).

    `streams` > 1 (CPU only) runs that many batches at once, each on its share of torch's threads: on a small
    CPU, small batches on one thread each keep activations in cache and skip the threads' synchronisation after
    every small operation (2 cores: 1.3-1.4x one batch of 64 on both threads; docs/encoding.md). The same
    fp32 kernels run, so the embeddings are those of `streams=1` up to float rounding. `race` (instead of
    `streams` and `batch_size`): its two plans are timed on the run's first texts and the faster encodes the
    rest (see `StreamRace`; a run too short to race, or a race already decided, reads with its `plan()`).
    """
    role = encoder.config.role
    if role == "question" and titles is not None:
        raise ValueError("questions have no titles: pass titles=None with a question encoder")
    max_length = max_length or encoder.config.max_seq_length
    device = encoder.device
    if streams > 1 and device.type != "cpu":
        raise ValueError(f"streams > 1 runs batches in parallel on CPU threads; the encoder is on {device}")
    token_ids, names = _token_ids(tokenizer, role, texts, titles, max_length)
    # longest first, by tokens: batches of equal length waste no padding, and an out-of-memory shows at once
    lengths = np.fromiter(map(len, token_ids), dtype=np.int64, count=len(texts))
    order = np.argsort(-lengths, kind="stable")
    embeddings = np.empty((len(texts), encoder.config.embedding_dim), dtype=np.float32)
    progress = tqdm(total=len(texts), desc=f"Encoding {role}s", unit=role, disable=not show_progress)
    # autocast is per thread, so each stream enters it; bf32 is a process-wide switch, set once around all streams
    autocast = precision in _AUTOCAST_DTYPES

    def encode_batch(rows: np.ndarray) -> None:
        inputs = _padded_batch([token_ids[i] for i in rows], names, tokenizer.pad_token_id)
        with precision_context(device, precision) if autocast else nullcontext():
            inputs = {name: tensor.to(device) for name, tensor in inputs.items()}
            embeddings[rows] = encoder(**inputs).pooler_output.float().cpu().numpy()
        progress.update(len(rows))

    with precision_context(device, None if autocast else precision):
        if race is not None:
            if race.verdict is None:
                order = _race(race, order, lengths, encode_batch)
            streams, batch_size = race.plan()
        map_in_streams(encode_batch, _batches(order, batch_size), streams)
    progress.close()
    return embeddings


def _batches(rows: np.ndarray, size: int) -> list[np.ndarray]:
    return [rows[start : start + size] for start in range(0, len(rows), size)]


def _race(race: StreamRace, order: np.ndarray, lengths: np.ndarray, encode_batch) -> np.ndarray:
    """Encode the run's first texts with each of `race`'s plans, decide it, and return the rows left (all of
    `order` where the run is too short to race). Each plan reads one untimed round (its first calls allocate and
    pick kernels), then whole rounds until `RACE_TOKENS` padded tokens, timed; texts come longest first, so the
    plans read near-equal lengths, and time per padded token evens out the rest."""
    plans = {1: race.batch_size, race.streams: race.stream_batch_size}
    parts, start = [], 0
    for streams, size in plans.items():
        round_rows = size * streams
        warm = order[start : start + round_rows]
        timed_end = start + round_rows
        tokens = 0
        while tokens < RACE_TOKENS and timed_end < len(order):
            batch_rows = [order[i : i + size] for i in range(timed_end, timed_end + round_rows, size)]
            tokens += sum(len(rows) * int(lengths[rows].max()) for rows in batch_rows if len(rows))
            timed_end += round_rows
        if tokens < RACE_TOKENS:
            return order  # too short to race: the caller reads it all with the undecided plan
        parts.append((streams, size, warm, order[start + round_rows : timed_end], tokens))
        start = timed_end
    seconds_per_token = {}
    for streams, size, warm, timed, tokens in parts:
        map_in_streams(encode_batch, _batches(warm, size), streams)
        began = time.perf_counter()
        map_in_streams(encode_batch, _batches(timed, size), streams)
        seconds_per_token[streams] = (time.perf_counter() - began) / tokens
    race.decide(seconds_per_token)
    return order[start:]


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
    max_length: int | None = None,
    precision: str | None = None,
    show_progress: bool = True,
    streams: int = 1,
    race: StreamRace | None = None,
) -> Dataset:
    """Passages plus an `embeddings` column, in memory and in corpus order (see `encode_corpus` for big corpora).

    Args:
        precision: None/"fp32", "bf32" (CPU), "bf16" or "fp16": see `precision_context`.
        streams: batches encoded at once on CPU (see `encode`).
        race: plans to time on the first texts instead of `streams` and `batch_size` (see `encode`).
    """
    if not isinstance(passages, Dataset):
        passages = Dataset.from_list(list(passages))
    titles, texts = _passage_columns(passages)
    embeddings = encode(
        encoder,
        tokenizer,
        texts,
        titles,
        batch_size=batch_size,
        max_length=max_length,
        precision=precision,
        streams=streams,
        race=race,
        show_progress=show_progress,
    )
    return _with_embeddings(passages, embeddings)


def _atomic_save(dataset: Dataset, path: Path, extra: dict[str, dict] | None = None) -> None:
    """save_to_disk into a staged folder, plus JSON files: a folder either exists whole or not."""
    with staged_folder(path, staging=path.with_name(path.name + ".tmp")) as tmp:
        dataset.save_to_disk(str(tmp))
        for name, content in (extra or {}).items():
            (tmp / name).write_text(json.dumps(content, indent=2) + "\n")


def encode_corpus(
    encoder: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    passages: Dataset,
    output_dir: str | os.PathLike,
    shard_size: int = 100_000,
    batch_size: int = 64,
    max_length: int | None = None,
    precision: str | None = None,
    encoder_name: str | None = None,
    show_progress: bool = True,
    streams: int = 1,
    race: StreamRace | None = None,
) -> Dataset:
    """Encode a corpus of any size to `output_dir` (a `save_to_disk` dataset with an `embeddings` column).

    The corpus is cut into shards of `shard_size` passages; under `accelerate launch` process `i` encodes shards
    `i, i + n, ...`. Finished shards are saved (atomically) in `<output_dir>.shards/`, so a rerun of an interrupted
    job encodes only the missing ones; at the end the main process merges them into `output_dir` (written under
    a temporary name, then renamed) with `encoding.json` (encoder name + fingerprint, read by `PassageIndex`).
    Memory holds one shard of embeddings and token ids (int32) and one batch of token tensors at a time. A `race`
    is run on the first shard and its verdict kept for the rest.
    """
    state = distributed_state()
    output_dir = Path(output_dir)
    work_dir = output_dir.with_name(output_dir.name + ".shards")
    encoder = encoder.to(state.device).eval()
    max_length = max_length or encoder.config.max_seq_length
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
        show = show_progress and state.is_local_main_process
        encoded = encode_passages(
            encoder,
            tokenizer,
            shard,
            batch_size,
            max_length,
            precision,
            show_progress=show,
            streams=streams,
            race=race,
        )
        _atomic_save(encoded, shard_dirs[k])
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

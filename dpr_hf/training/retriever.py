"""Retriever (bi-encoder) training: DPR's in-batch negative NLL through the shared engine (`dpr_hf.training`).

`train_retriever(RetrieverArguments(...), TrainingArguments(...))` is what `dpr-hf train-retriever` runs. The
output folder holds `question_encoder/` and `passage_encoder/` (save_pretrained + tokenizer), `training_args.json`
and `metrics.json` (dev NLL, accuracy and DPR's average rank).

Over ~400 lines on purpose: GradCache's replay and the sharded dev evaluation both need the task's internals.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from ..data.collators import PassagePool, RetrieverCollator
from ..encoding import encode
from ..losses import gather_with_local_grad, in_batch_nll_loss, similarity_scores
from ..losses.retriever import SIMILARITIES
from ..models.modeling import PassageEncoder, QuestionEncoder
from ..models.pair import ENCODER_DIRS, EncoderPair
from .arguments import TrainingArguments, resolve_model_path, seeded_subset
from .engine import Trainer, TrainingTask


@dataclass
class RetrieverArguments:
    """Model, data and loss settings of retriever training (engine settings are in `TrainingArguments`)."""

    model_name_or_path: str = field(
        default="bert-base-uncased",
        metadata={
            "help": "Backbone (Hub id or folder; 'minilm' = the offline all-MiniLM-L6-v2) to build both encoders "
            "from, or a folder with question_encoder/ and passage_encoder/ to continue training."
        },
    )
    train_file: str = field(
        default="", metadata={"help": "Training data, any source of load_retriever_data."}
    )
    dev_file: str | None = field(default=None, metadata={"help": "Dev data for validation (optional)."})
    max_train_samples: int = field(default=0, metadata={"help": "Use a seeded random subset (0 = all)."})
    max_eval_samples: int = field(default=0, metadata={"help": "Use a seeded random dev subset (0 = all)."})
    pooling: str = field(default="cls", metadata={"help": "'cls' (DPR) or 'mean' (new encoders only)."})
    projection_dim: int = field(default=0, metadata={"help": "Linear projection size (0 = none; new only)."})
    question_max_length: int | None = field(
        default=None,
        metadata={
            "help": "Question tokens (default: the encoder config's max_seq_length, 64 for a new pair)."
        },
    )
    passage_max_length: int | None = field(
        default=None,
        metadata={
            "help": "Passage tokens (default: the encoder config's max_seq_length, 256 for a new pair)."
        },
    )
    num_hard_negatives: int = field(default=1, metadata={"help": "Hard negatives per question (DPR: 1)."})
    num_other_negatives: int = field(default=0, metadata={"help": "Other (random) negatives per question."})
    shuffle_positives: bool = field(default=False, metadata={"help": "Sample among positive_ctxs."})
    similarity: str | None = field(
        default=None,
        metadata={
            "help": "'dot' (DPR) or 'cosine' (sets the encoders' normalize=True); default: the pair's config "
            "(dot for a new pair)."
        },
    )
    temperature: float | None = field(
        default=None,
        metadata={"help": "Scores are divided by it; default: the pair's config (1.0 for a new pair)."},
    )
    gradient_cache_chunk_size: int = field(
        default=0,
        metadata={
            "help": "GradCache: encode in chunks of this many sequences (0 = off); memory ~ chunk size."
        },
    )
    eval_rank_hard_negatives: int = field(
        default=30,
        metadata={"help": "Hard negatives per dev question added to the average-rank pool (DPR: 30)."},
    )
    eval_rank_other_negatives: int = field(
        default=30, metadata={"help": "Other negatives per dev question added to the average-rank pool."}
    )
    eval_chunk_size: int = field(
        default=256,
        metadata={
            "help": "Dev questions scored against the average-rank pool at once (memory ~ this x pool)."
        },
    )

    def __post_init__(self):
        if self.similarity is not None and self.similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {self.similarity!r}")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.eval_chunk_size <= 0:
            raise ValueError(f"eval_chunk_size must be > 0, got {self.eval_chunk_size}")
        for name in ("question_max_length", "passage_max_length"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


def load_encoders(
    model_name_or_path: str, pooling: str = "cls", projection_dim: int = 0, normalize: bool = False
) -> tuple[QuestionEncoder, PassageEncoder, PreTrainedTokenizerBase]:
    """An encoder pair and its tokenizer: loaded from a pair folder (as saved), or built from a backbone (two
    copies, with the given options)."""
    path = resolve_model_path(model_name_or_path)
    if all((Path(path) / folder / "config.json").is_file() for folder in ENCODER_DIRS.values()):
        pair = EncoderPair.from_pretrained(path, dtype=torch.float32)
        return pair.question_encoder, pair.passage_encoder, pair.tokenizer
    options = {"pooling": pooling, "projection_dim": projection_dim, "normalize": normalize}
    return (
        QuestionEncoder.from_backbone(path, **options),
        PassageEncoder.from_backbone(path, **options),
        AutoTokenizer.from_pretrained(path),
    )


def configure_pair(
    args: RetrieverArguments, question_encoder: QuestionEncoder, passage_encoder: PassageEncoder
) -> RetrieverArguments:
    """Write the settings `args` states into the encoder configs (they travel with the saved pair) and return
    `args` completed from the configs: the configs own lengths, similarity and temperature; an argument given
    overrides them."""
    question_config, passage_config = question_encoder.config, passage_encoder.config
    for config, length in (
        (question_config, args.question_max_length),
        (passage_config, args.passage_max_length),
    ):
        if length is not None:
            config.max_seq_length = length
        if args.similarity is not None:
            config.normalize = args.similarity == "cosine"
        if args.temperature is not None:
            config.temperature = args.temperature
    scoring = [(c.similarity, c.temperature) for c in (question_config, passage_config)]
    if scoring[0] != scoring[1]:
        raise ValueError(
            f"the question and passage encoders score differently (similarity, temperature): {scoring}; "
            "set similarity and temperature"
        )
    return dataclasses.replace(
        args,
        question_max_length=question_config.max_seq_length,
        passage_max_length=passage_config.max_seq_length,
        similarity=question_config.similarity,
        temperature=question_config.temperature,
    )


def _chunks(features: dict[str, torch.Tensor], size: int) -> list[dict[str, torch.Tensor]]:
    count = next(iter(features.values())).shape[0]
    return [{k: v[i : i + size] for k, v in features.items()} for i in range(0, count, size)]


def _rng_state() -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None


@contextlib.contextmanager
def _replay_rng(state: tuple[torch.Tensor, list[torch.Tensor] | None]) -> Iterator[None]:
    """Re-run a forward pass with the random state of its first run (same dropout masks)."""
    cpu, cuda = state
    with torch.random.fork_rng(devices=range(len(cuda)) if cuda else []):
        torch.set_rng_state(cpu)
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
        yield


class RetrieverTask(TrainingTask):
    """DPR bi-encoder training: question and passage encoders, in-batch NLL over the global batch.

    `train_dataset` / `eval_dataset` are canonical retriever datasets (see `dpr_hf.data.load_retriever_data`).
    The encoders' configs own the lengths, similarity and temperature (`configure_pair`): the task trains and
    saves with them, so the saved pair is served as it was trained.
    """

    def __init__(
        self,
        args: RetrieverArguments,
        question_encoder: QuestionEncoder,
        passage_encoder: PassageEncoder,
        tokenizer: PreTrainedTokenizerBase,
        train_dataset,
        eval_dataset=None,
        seed: int = 42,
        eval_batch_size: int = 64,
        train_batch_size: int = 16,
    ):
        self.args = configure_pair(args, question_encoder, passage_encoder)
        self.question_encoder = question_encoder
        self.passage_encoder = passage_encoder
        self.tokenizer = tokenizer
        self._train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.seed = seed
        self.eval_batch_size = eval_batch_size
        self.train_batch_size = train_batch_size

    def models(self) -> dict[str, nn.Module]:
        return {"question_encoder": self.question_encoder, "passage_encoder": self.passage_encoder}

    def train_dataset(self):
        return self._train_dataset

    def data_collator(self) -> Callable:
        return RetrieverCollator(
            self.tokenizer,
            num_hard_negatives=self.args.num_hard_negatives,
            num_other_negatives=self.args.num_other_negatives,
            question_max_length=self.args.question_max_length,
            passage_max_length=self.args.passage_max_length,
            shuffle_positives=self.args.shuffle_positives,
            seed=self.seed,
        )

    def _loss(self, q_vectors: torch.Tensor, p_vectors: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        config = self.question_encoder.config
        # the encoders' outputs: already unit vectors when the pair scores by cosine; the passage keys mask a
        # paragraph that another process's batch holds too (batches of other collators may have none)
        return in_batch_nll_loss(
            q_vectors,
            p_vectors,
            batch["positive_idx"],
            config.similarity,
            config.temperature,
            normalized=True,
            passage_keys=batch.get("passage_keys"),
        )

    def compute_loss(self, models: dict[str, nn.Module], batch: dict[str, Any]) -> torch.Tensor:
        q_vectors = models["question_encoder"](**batch["question"]).pooler_output
        p_vectors = models["passage_encoder"](**batch["passage"]).pooler_output
        return self._loss(q_vectors, p_vectors, batch)

    def training_step(self, models: dict[str, nn.Module], batch: dict[str, Any], accelerator: Accelerator):
        """With `gradient_cache_chunk_size`, GradCache (Gao et al., 2021): encode in chunks without a graph, take
        the loss and its gradient w.r.t. the embeddings on the full batch, then re-encode chunk by chunk (same
        dropout) and back-propagate the cached embedding gradients. Same gradients, memory of one chunk: the
        gradients of the loss the first pass computed with the dropout masks it drew (one chunk: the plain step's),
        synced once per tower under DDP (chunk counts may differ between processes), within bf16's precision of the
        plain step under autocast (tests/test_exact_training.py)."""
        size = self.args.gradient_cache_chunk_size
        if size <= 0:
            return super().training_step(models, batch, accelerator)
        towers = [
            (models["question_encoder"], _chunks(batch["question"], size)),
            (models["passage_encoder"], _chunks(batch["passage"], size)),
        ]
        states, vectors = [], []
        with torch.no_grad():
            for model, chunks in towers:
                states.append([])
                outputs = []
                for chunk in chunks:
                    states[-1].append(_rng_state())
                    outputs.append(model(**chunk).pooler_output)
                vectors.append(torch.cat(outputs).detach().requires_grad_())
        loss = self._loss(vectors[0], vectors[1], batch)
        accelerator.backward(loss)  # gradients w.r.t. the embeddings only (scaled as the engine needs)
        for (model, chunks), tower_states, tower_vectors in zip(towers, states, vectors, strict=True):
            grads = tower_vectors.grad.split(size)
            for i, (chunk, state, grad) in enumerate(zip(chunks, tower_states, grads, strict=True)):
                # DDP: synchronise gradients once per tower, on its last chunk
                sync = contextlib.nullcontext() if i == len(chunks) - 1 else accelerator.no_sync(model)
                with _replay_rng(state), sync:
                    model(**chunk).pooler_output.backward(grad)
        return loss.detach()

    def evaluate(self, models: dict[str, nn.Module], accelerator: Accelerator) -> dict[str, float]:
        if self.eval_dataset is None:
            return {}
        # every process takes a share of the dev pool and of its questions
        return evaluate_dev_pool(
            models["question_encoder"],
            models["passage_encoder"],
            self.tokenizer,
            self.eval_dataset,
            args=self.args,
            batch_size=self.train_batch_size * accelerator.num_processes,  # the global batch, as in training
            encode_batch_size=self.eval_batch_size,
        )

    def save(self, models: dict[str, nn.Module], output_dir: Path) -> None:
        EncoderPair(models["question_encoder"], models["passage_encoder"], self.tokenizer).save_into(
            output_dir
        )


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def _encode_slice(encoder, tokenizer, texts, titles, start, end, dim, **options) -> np.ndarray:
    if start >= end:
        return np.empty((0, dim), dtype=np.float32)
    return encode(encoder, tokenizer, texts[start:end], titles[start:end] if titles else None, **options)


@torch.no_grad()
def evaluate_dev_pool(
    question_encoder: QuestionEncoder,
    passage_encoder: PassageEncoder,
    tokenizer: PreTrainedTokenizerBase,
    dataset,
    args: RetrieverArguments | None = None,
    batch_size: int = 16,
    encode_batch_size: int = 64,
) -> dict[str, float]:
    """DPR's two validations on a canonical retriever dataset.

    - `loss` / `accuracy`: in-batch NLL and top-1 accuracy over groups of `batch_size` questions (each with its
      positive and the first `num_hard_negatives`/`num_other_negatives` negatives), as in training. Questions are
      grouped in a fixed shuffled order, since consecutive questions of SQuAD-style files share their paragraph.
    - `average_rank`: 0-based rank of each positive among all passages of the dev pool (every positive plus
      `eval_rank_hard_negatives`/`eval_rank_other_negatives` negatives per question), averaged (DPR's
      `validate_average_rank`). Lower is better.

    Scored as the pair's configs say (similarity, temperature); read at the lengths of `args`, else the configs'.
    Memory is bounded: the pool's vectors plus `args.eval_chunk_size` x pool scores at a time, never the full
    questions x pool matrix. Under `torch.distributed` every process calls it: each encodes a slice of the pool
    (gathered into every process) and scores its share of the question groups; the sums are all-reduced, so
    every process returns the metrics of the whole dev set.
    """
    args = args or RetrieverArguments()
    config = question_encoder.config
    world_size, rank = _world()
    examples = [dataset[i] for i in range(len(dataset))]
    selector = RetrieverCollator(
        tokenizer, args.num_hard_negatives, args.num_other_negatives, shuffle_negatives=False
    )
    pool = PassagePool()
    positives, batch_negatives = [], []
    for example in examples:
        positive, negatives = selector.select(example)
        positives.append(pool.add(positive))
        batch_negatives.append([pool.add(p) for p in negatives])
        hard = example.get("hard_negative_ctxs") or []
        for passage in hard[: args.eval_rank_hard_negatives]:
            pool.add(passage)
        for passage in (example.get("negative_ctxs") or [])[: args.eval_rank_other_negatives]:
            pool.add(passage)

    device, dim = passage_encoder.device, passage_encoder.config.embedding_dim
    start, end = (len(pool.passages) * r // world_size for r in (rank, rank + 1))
    local_passages = _encode_slice(
        passage_encoder,
        tokenizer,
        [p["text"] for p in pool.passages],
        [p.get("title") or "" for p in pool.passages],
        start,
        end,
        dim,
        batch_size=encode_batch_size,
        max_length=args.passage_max_length,
    )
    p_vectors, _ = gather_with_local_grad(torch.from_numpy(local_passages).to(device))

    order = list(range(len(examples)))
    random.Random(0).shuffle(order)
    groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)][rank::world_size]
    questions = [i for group in groups for i in group]  # this process's share, group by group
    q_vectors = torch.from_numpy(
        _encode_slice(
            question_encoder,
            tokenizer,
            [examples[i]["question"] for i in questions],
            None,
            0,
            len(questions),
            dim,
            batch_size=encode_batch_size,
            max_length=args.question_max_length,
        )
    ).to(device)

    def scores(rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        # scored as the pair scores (its configs), on the encoders' outputs: unit vectors for cosine
        return similarity_scores(rows, columns, config.similarity, config.temperature, normalized=True)

    rank_sum = 0
    chunk = args.eval_chunk_size
    for i in range(0, len(questions), chunk):
        chunk_scores = scores(q_vectors[i : i + chunk], p_vectors)
        targets = torch.tensor([positives[q] for q in questions[i : i + chunk]], device=device)
        rank_sum += (chunk_scores > chunk_scores.gather(1, targets[:, None])).sum().item()

    total_loss, correct, row = 0.0, 0, 0
    for group in groups:
        columns = sorted({positives[i] for i in group} | {n for i in group for n in batch_negatives[i]})
        column_of = {c: j for j, c in enumerate(columns)}
        target = torch.tensor([column_of[positives[i]] for i in group], device=device)
        logits = scores(q_vectors[row : row + len(group)], p_vectors[columns])
        row += len(group)
        total_loss += F.cross_entropy(logits, target, reduction="sum").item()
        correct += (logits.argmax(dim=1) == target).sum().item()

    totals = torch.tensor([total_loss, correct, rank_sum], dtype=torch.float64, device=device)
    if world_size > 1:
        torch.distributed.all_reduce(totals)
    total_loss, correct, rank_sum = totals.tolist()
    return {
        "loss": total_loss / len(examples),
        "accuracy": correct / len(examples),
        "average_rank": rank_sum / len(examples),
        "num_questions": len(examples),
        "num_passages": len(pool.passages),
    }


def train_retriever(args: RetrieverArguments, training_args: TrainingArguments) -> dict[str, Any]:
    """Train an encoder pair as configured; returns the final metrics (also in OUT/metrics.json)."""
    from ..data import load_retriever_data

    if not args.train_file:
        raise ValueError("train_file is required")
    train = seeded_subset(load_retriever_data(args.train_file), args.max_train_samples, training_args.seed)
    dev = load_retriever_data(args.dev_file) if args.dev_file else None
    if dev is not None:
        dev = seeded_subset(dev, args.max_eval_samples, training_args.seed)
    torch.manual_seed(training_args.seed)  # the projection layer's init, if any
    question_encoder, passage_encoder, tokenizer = load_encoders(
        args.model_name_or_path, args.pooling, args.projection_dim
    )
    task = RetrieverTask(
        args,
        question_encoder,
        passage_encoder,
        tokenizer,
        train,
        dev,
        seed=training_args.seed,
        eval_batch_size=training_args.per_device_eval_batch_size,
        train_batch_size=training_args.per_device_train_batch_size,
    )
    return Trainer(task, training_args).train()

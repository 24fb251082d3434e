"""Batches for retriever training: canonical examples -> question batch + passage batch + positive indices."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from ..models.tokenization import PASSAGE_MAX_LENGTH, QUESTION_MAX_LENGTH, format_passages, format_questions


def seeded_rng(seed: int, epoch: int, question: str) -> random.Random:
    """The sampler of one question's passages in one epoch: independent of global random state and of batch
    order, so a resumed run (or another process) draws exactly the same passages."""
    digest = hashlib.sha256(f"{seed}\0{epoch}\0{question}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def _passage_key(passage: dict) -> tuple[str, ...]:
    """Identity of a passage within a batch: its id, or its title and text when it has none."""
    return (
        ("id", passage["id"]) if passage.get("id") else ("text", passage.get("title") or "", passage["text"])
    )


def passage_key_hash(passage: dict) -> int:
    """`_passage_key` as a signed 64-bit integer, the same in every process and run (unlike Python's salted
    `hash`), so the loss can recognise one paragraph held by two processes."""
    digest = hashlib.blake2b("\x1f".join(_passage_key(passage)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


class PassagePool:
    """Passages in first-seen order, each once: a paragraph shared by two questions is encoded once, and a
    question's positive is never among its own negatives."""

    def __init__(self) -> None:
        self.passages: list[dict] = []
        self._index: dict[tuple[str, ...], int] = {}

    def add(self, passage: dict) -> int:
        """The passage's position in the pool (added if new)."""
        key = _passage_key(passage)
        if key not in self._index:
            self._index[key] = len(self.passages)
            self.passages.append(passage)
        return self._index[key]


@dataclass
class RetrieverCollator:
    """DPR's bi-encoder batch: each question with one positive, `num_hard_negatives` hard negatives and
    `num_other_negatives` other negatives; all passages of the batch are candidates for every question.

    A passage occurring twice in a batch (two questions on the same paragraph, or a hard negative that is another
    question's positive) is encoded once, so a question's positive never appears among its own negatives.
    Negatives are sampled from a generator seeded by (seed, epoch, question), so batches do not depend on global
    random state and a resumed run sees the same batches. As in DPR, a question without hard negatives takes its
    other negatives in their place.

    Args:
        tokenizer: the encoders' tokenizer.
        num_hard_negatives / num_other_negatives: negatives per question (DPR: 1 BM25 hard negative, 0 other).
        question_max_length / passage_max_length: truncation lengths in tokens.
        shuffle_positives: sample the positive among `positive_ctxs` (DPR's default uses `positive_ctxs[0]`).
        shuffle_negatives: sample negatives at random (training); False takes the first ones (evaluation).
        seed: seed of the sampling.

    Returns a dict: `question` and `passage` (dicts of `input_ids`, `attention_mask`, `token_type_ids`),
    `positive_idx` (index of each question's positive among the batch's passages) and `passage_keys` (each
    passage's `passage_key_hash`, with which the loss masks a paragraph that another process's batch holds too).
    """

    tokenizer: PreTrainedTokenizerBase
    num_hard_negatives: int = 1
    num_other_negatives: int = 0
    question_max_length: int = QUESTION_MAX_LENGTH
    passage_max_length: int = PASSAGE_MAX_LENGTH
    shuffle_positives: bool = False
    shuffle_negatives: bool = True
    seed: int = 42
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw different negatives (and positives, if shuffled) every epoch."""
        self.epoch = epoch

    def _pick(self, rng: random.Random, passages: Sequence[dict], count: int, shuffle: bool) -> list[dict]:
        if count <= 0 or not passages:
            return []
        return rng.sample(list(passages), min(count, len(passages))) if shuffle else list(passages[:count])

    def select(self, example: dict[str, Any]) -> tuple[dict, list[dict]]:
        """The positive and the negatives of one example (what DPR's `create_biencoder_input` picks)."""
        if not example["positive_ctxs"]:
            raise ValueError(f"question {example['question']!r} has no positive passage")
        rng = seeded_rng(self.seed, self.epoch, example["question"])
        positive = (
            rng.choice(example["positive_ctxs"]) if self.shuffle_positives else example["positive_ctxs"][0]
        )
        hard = example.get("hard_negative_ctxs") or example.get("negative_ctxs") or []
        negatives = self._pick(rng, hard, self.num_hard_negatives, self.shuffle_negatives)
        other = example.get("negative_ctxs") or []
        negatives += self._pick(rng, other, self.num_other_negatives, self.shuffle_negatives)
        return positive, negatives

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        pool = PassagePool()
        positive_idx = []
        for example in examples:
            positive, negatives = self.select(example)
            positive_idx.append(pool.add(positive))
            for negative in negatives:
                pool.add(negative)
        passages = pool.passages
        questions = format_questions(
            self.tokenizer, [e["question"] for e in examples], max_length=self.question_max_length
        )
        contexts = format_passages(
            self.tokenizer,
            [p.get("title") or "" for p in passages],
            [p["text"] for p in passages],
            max_length=self.passage_max_length,
        )
        return {
            "question": dict(questions),
            "passage": dict(contexts),
            "positive_idx": torch.tensor(positive_idx, dtype=torch.long),
            "passage_keys": torch.tensor([passage_key_hash(p) for p in passages], dtype=torch.long),
        }

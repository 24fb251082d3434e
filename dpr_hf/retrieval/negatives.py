"""Hard-negative mining: the top-ranked passages for a question that do not answer it.

DPR trained with BM25 hard negatives (top BM25 passages without an answer, by `has_answer`); a second round of
training can mine with the trained dense retriever instead. The gold passage is never a negative: it is left
out by id and by text (the same paragraph can sit in the corpus under another id).
"""

from __future__ import annotations

import uuid
from typing import Any

import datasets
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data import RETRIEVER_FEATURES
from ..evaluation.metrics import has_answer
from .base import Retriever
from .bm25 import BM25Retriever
from .dense import DenseRetriever


def _text_key(text: str) -> str:
    return " ".join(text.split()).casefold()


def select_negatives(
    answers: list[str],
    positives: list[dict[str, Any]],
    ranked: list[dict[str, Any]],
    num_negatives: int,
    match: str = "string",
) -> list[dict[str, str]]:
    """The first `num_negatives` ranked passages that contain no answer and are neither a positive nor a
    repeat (compared by id and by whitespace/case-normalised text), as `{id, title, text}` dicts."""
    seen_ids = {passage["id"] for passage in positives}
    seen_texts = {_text_key(passage["text"]) for passage in positives}
    negatives = []
    for passage in ranked:
        if len(negatives) == num_negatives:
            break
        key = _text_key(passage["text"])
        if passage["id"] in seen_ids or key in seen_texts or has_answer(answers, passage["text"], mode=match):
            continue
        seen_ids.add(passage["id"])
        seen_texts.add(key)
        negatives.append({"id": passage["id"], "title": passage.get("title") or "", "text": passage["text"]})
    return negatives


def _mine_batch(
    batch: dict[str, list], retriever: Retriever, num_negatives: int, depth: int, match: str
) -> dict[str, list]:
    ranked = retriever.search(list(batch["question"]), depth)
    batch["hard_negative_ctxs"] = [
        select_negatives(answers, positives, hits, num_negatives, match)
        for answers, positives, hits in zip(batch["answers"], batch["positive_ctxs"], ranked, strict=True)
    ]
    return batch


def mine_hard_negatives(
    data: datasets.Dataset,
    retriever: Retriever,
    num_negatives: int = 30,
    depth: int = 100,
    match: str = "string",
    batch_size: int = 256,
) -> datasets.Dataset:
    """Replace `hard_negative_ctxs` of canonical retriever data (`dpr_hf.data.load_retriever_data`) with the
    top passages from `retriever.search` (searched `depth` deep) that pass `select_negatives`.

    A question may get fewer than `num_negatives` when the top `depth` holds too few passages without an answer.
    `match` is `has_answer`'s mode ("string", or "regex" for pattern answers such as CuratedTREC's).
    """
    if num_negatives < 1 or depth < 1:
        raise ValueError(f"num_negatives and depth must be positive, got {num_negatives} and {depth}")
    missing = [column for column in RETRIEVER_FEATURES if column not in data.column_names]
    if missing:
        raise ValueError(f"data lacks the retriever columns {missing}: load it with load_retriever_data")
    return data.map(
        _mine_batch,
        batched=True,
        batch_size=batch_size,
        fn_kwargs={"retriever": retriever, "num_negatives": num_negatives, "depth": depth, "match": match},
        features=data.features,
        # hashing the retriever (a whole index) for a cache key would be slow; a fresh key means no stale reuse
        new_fingerprint=uuid.uuid4().hex,
        desc="Mining hard negatives",
    )


def mine_bm25_negatives(
    data: datasets.Dataset,
    passages: datasets.Dataset | BM25Retriever,
    num_negatives: int = 30,
    depth: int = 100,
    **kwargs: Any,
) -> datasets.Dataset:
    """DPR's hard negatives: BM25 over `passages` (a corpus, or an already built `BM25Retriever`)."""
    retriever = passages if isinstance(passages, BM25Retriever) else BM25Retriever.from_passages(passages)
    return mine_hard_negatives(data, retriever, num_negatives=num_negatives, depth=depth, **kwargs)


def mine_dense_negatives(
    data: datasets.Dataset,
    question_encoder: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    index: Any,
    num_negatives: int = 30,
    depth: int = 100,
    **kwargs: Any,
) -> datasets.Dataset:
    """Hard negatives from a trained dense retriever: `index` is a `dpr_hf.index.PassageIndex` encoded by the
    passage encoder that was trained with `question_encoder` (checked by `DenseRetriever`)."""
    retriever = DenseRetriever(question_encoder, tokenizer, index)
    return mine_hard_negatives(data, retriever, num_negatives=num_negatives, depth=depth, **kwargs)

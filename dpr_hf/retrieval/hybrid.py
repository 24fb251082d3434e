"""Hybrid retrieval: the DPR paper's BM25 + λ·dense fusion, or reciprocal-rank fusion (RRF)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import Retriever

FUSIONS = ("linear", "rrf")


def _ranked(scores: dict[str, float], passages: dict[str, dict], k: int) -> list[dict]:
    # Ties broken by passage id, so the fused order never depends on dict or thread order.
    order = sorted(scores, key=lambda pid: (-scores[pid], pid))[:k]
    return [{**passages[pid], "score": scores[pid]} for pid in order]


def _passages(*hit_lists: Sequence[dict]) -> dict[str, dict]:
    return {
        hit["id"]: {key: value for key, value in hit.items() if key != "score"}
        for hits in reversed(hit_lists)
        for hit in hits
    }


def linear_fusion(
    sparse: Sequence[dict], dense: Sequence[dict], weight: float = 1.1, k: int = 100
) -> list[dict]:
    """Rerank the union of two hit lists by `sparse_score + weight * dense_score` (DPR paper, section 5.1).

    A passage missing from one list gets that list's lowest score (0 when the list is empty): it ranked below
    everything the list returned, and that is all we know. This is the convention of Pyserini's reproduction of
    the DPR hybrid (Ma et al., 2021); the paper itself does not say.
    """
    sparse_scores = {hit["id"]: hit["score"] for hit in sparse}
    dense_scores = {hit["id"]: hit["score"] for hit in dense}
    sparse_floor = min(sparse_scores.values(), default=0.0)
    dense_floor = min(dense_scores.values(), default=0.0)
    scores = {
        pid: sparse_scores.get(pid, sparse_floor) + weight * dense_scores.get(pid, dense_floor)
        for pid in sparse_scores.keys() | dense_scores.keys()
    }
    return _ranked(scores, _passages(sparse, dense), k)


def reciprocal_rank_fusion(hit_lists: Sequence[Sequence[dict]], k: int = 100, rrf_k: int = 60) -> list[dict]:
    """Score each passage by `sum(1 / (rrf_k + rank))` over the lists it appears in (Cormack et al., 2009).

    Only ranks count, so no score scales need matching; `rrf_k=60` is the paper's constant.
    """
    scores: dict[str, float] = {}
    for hits in hit_lists:
        for rank, hit in enumerate(hits, start=1):
            scores[hit["id"]] = scores.get(hit["id"], 0.0) + 1.0 / (rrf_k + rank)
    return _ranked(scores, _passages(*hit_lists), k)


class HybridRetriever:
    """Fuses a sparse (BM25) and a dense retriever over the same passage ids.

    Args:
        sparse: e.g. `BM25Retriever`; dense: e.g. `DenseRetriever` (any object with `.search(questions, k)`).
        weight: λ in `BM25 + λ·dense/τ` (the paper's 1.1, tuned on NQ dev for DPR's dot product, τ = 1). τ is
            `dense.temperature` when the dense retriever has one (the temperature its pair was trained with),
            else 1: weighing the pair's own logits keeps λ = 1.1 sound for a cosine pair trained at τ = 0.05,
            whose raw scores (-1..1) would otherwise barely move BM25's (benchmarks/RESULTS.md).
        fusion: "linear" (the paper's) or "rrf" (reciprocal rank fusion).
        depth: how many hits to take from each retriever before fusing (at least k; the paper used 2000).
        rrf_k: RRF's rank offset.
    """

    def __init__(
        self,
        sparse: Retriever,
        dense: Retriever,
        weight: float = 1.1,
        fusion: str = "linear",
        depth: int = 200,
        rrf_k: int = 60,
    ):
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.sparse, self.dense = sparse, dense
        self.weight, self.fusion, self.depth, self.rrf_k = weight, fusion, depth, rrf_k
        self.dense_weight = weight / getattr(dense, "temperature", 1.0)

    def search(
        self, questions: Sequence[str], k: int = 100, question_vectors: Any | None = None
    ) -> list[list[dict]]:
        """Top-k fused passages per question, best first: `{id, title, text, score}` with the fused score.

        `question_vectors`: the questions already encoded for the dense retriever (which must then accept them).
        """
        questions = list(questions)
        depth = max(k, self.depth)
        sparse_hits = self.sparse.search(questions, depth)
        if question_vectors is None:
            dense_hits = self.dense.search(questions, depth)
        else:
            dense_hits = self.dense.search(questions, depth, question_vectors=question_vectors)
        if self.fusion == "rrf":
            return [
                reciprocal_rank_fusion([s, d], k=k, rrf_k=self.rrf_k)
                for s, d in zip(sparse_hits, dense_hits, strict=True)
            ]
        return [
            linear_fusion(s, d, self.dense_weight, k) for s, d in zip(sparse_hits, dense_hits, strict=True)
        ]

"""DenseRetriever over a PassageIndex, and the hybrid fusions (DPR's linear BM25 + λ·dense, and RRF)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset

from dpr_hf import QuestionEncoder, QuestionEncoderConfig, format_questions
from dpr_hf.encoding import encode_passages
from dpr_hf.index.passage_index import PassageIndex
from dpr_hf.models.errors import MismatchError
from dpr_hf.retrieval import (
    BM25Retriever,
    DenseRetriever,
    HybridRetriever,
    linear_fusion,
    reciprocal_rank_fusion,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "The Normans were the people who gave their name to Normandy, a region in France.",
    "Rollo agreed to swear fealty to King Charles III of West Francia.",
    "The Norman dynasty had a major political, cultural and military impact on medieval Europe.",
    "Computational complexity theory classifies problems according to their inherent difficulty.",
    "A Turing machine is a mathematical model of a general computing machine.",
    "The Amazon rainforest covers most of the Amazon basin of South America.",
    "Deforestation of the rainforest accelerated in the 1970s.",
    "Southern California is home to Los Angeles, the second largest city in the United States.",
    "The Rhine flows from the Swiss Alps to the North Sea.",
    "Oxygen is a chemical element with symbol O and atomic number 8.",
]
QUESTIONS = [
    "Who gave their name to Normandy?",
    "What is a Turing machine?",
    "Where does the Rhine flow?",
    "What is the atomic number of oxygen?",
    "Which city is the second largest in the United States?",
]


@pytest.fixture
def passages() -> Dataset:
    return Dataset.from_dict(
        {"id": [f"p{i}" for i in range(len(TEXTS))], "title": [""] * len(TEXTS), "text": TEXTS}
    )


@pytest.fixture
def dense(passages, tiny_question_encoder, tiny_passage_encoder, tokenizer) -> DenseRetriever:
    index = PassageIndex.build(
        encode_passages(tiny_passage_encoder, tokenizer, passages, show_progress=False)
    )
    return DenseRetriever(tiny_question_encoder, tokenizer, index, batch_size=2)


def test_dense_search_is_the_dot_product_ranking(dense, tiny_question_encoder, tokenizer, passages):
    results = dense.search(QUESTIONS, k=4)
    with torch.no_grad():
        questions = tiny_question_encoder(**format_questions(tokenizer, QUESTIONS)).pooler_output.numpy()
    embeddings = np.asarray(dense.index.dataset.with_format("numpy")["embeddings"])
    scores = questions @ embeddings.T
    for row, hits in enumerate(results):
        best = np.argsort(-scores[row])[:4]
        assert [hit["id"] for hit in hits] == [f"p{i}" for i in best]
        np.testing.assert_allclose([hit["score"] for hit in hits], scores[row, best], rtol=1e-4)
        assert hits[0]["text"] == TEXTS[best[0]]
    assert dense.search([], k=3) == []


def test_dense_retriever_refuses_encoder_of_other_dim(dense, tiny_bert_config, tokenizer):
    other = QuestionEncoder(QuestionEncoderConfig(encoder=tiny_bert_config, projection_dim=16))
    with pytest.raises(MismatchError, match="16-dim vectors"):
        DenseRetriever(other, tokenizer, dense.index)


def _hits(*pairs):
    return [{"id": pid, "title": "", "text": pid, "score": score} for pid, score in pairs]


def test_linear_fusion_scores_the_union_and_fills_missing_with_the_lists_lowest():
    sparse = _hits(("a", 12.0), ("b", 10.0), ("c", 7.0))
    dense = _hits(("c", 80.0), ("d", 78.0), ("a", 70.0))
    fused = linear_fusion(sparse, dense, weight=1.1, k=10)
    expected = {"a": 12 + 1.1 * 70, "b": 10 + 1.1 * 70, "c": 7 + 1.1 * 80, "d": 7 + 1.1 * 78}
    assert [hit["id"] for hit in fused] == sorted(expected, key=lambda pid: -expected[pid])
    assert {hit["id"]: hit["score"] for hit in fused} == pytest.approx(expected)
    assert linear_fusion(sparse, [], k=2) == _hits(("a", 12.0), ("b", 10.0))


def test_reciprocal_rank_fusion_uses_ranks_only():
    fused = reciprocal_rank_fusion(
        [_hits(("a", 9.0), ("b", 1.0)), _hits(("b", 0.9), ("c", 0.1))], k=3, rrf_k=60
    )
    assert [hit["id"] for hit in fused] == ["b", "a", "c"]
    assert fused[0]["score"] == pytest.approx(1 / 62 + 1 / 61)
    # Ties are broken by id, never by input order.
    assert [h["id"] for h in reciprocal_rank_fusion([_hits(("y", 1.0)), _hits(("x", 1.0))])] == ["x", "y"]


@pytest.fixture(scope="module")
def squad_paragraphs() -> tuple[Dataset, list[str]]:
    """The quickstart SQuAD dev subset: 97 real paragraphs and their first 20 questions."""
    with gzip.open(REPO_ROOT / "data" / "quickstart" / "squad-dev-subset.json.gz", "rt") as handle:
        articles = json.load(handle)["data"]
    paragraphs = [p for article in articles for p in article["paragraphs"]]
    passages = Dataset.from_dict(
        {
            "id": [f"p{i}" for i in range(len(paragraphs))],
            "title": [""] * len(paragraphs),
            "text": [p["context"] for p in paragraphs],
        }
    )
    return passages, [qa["question"] for p in paragraphs for qa in p["qas"]][:20]


@pytest.mark.parametrize("fusion", ["linear", "rrf"])
def test_hybrid_is_deterministic_and_differs_from_both_inputs(
    squad_paragraphs, tiny_question_encoder, tiny_passage_encoder, tokenizer, fusion
):
    passages, questions = squad_paragraphs
    index = PassageIndex.build(
        encode_passages(tiny_passage_encoder, tokenizer, passages, show_progress=False)
    )
    dense = DenseRetriever(tiny_question_encoder, tokenizer, index)
    bm25 = BM25Retriever.from_passages(passages)
    bm25_hits, dense_hits = bm25.search(questions, 10), dense.search(questions, 10)
    # λ puts the random encoder's narrow score range on BM25's scale, so that both lists shape the fusion.
    weight = np.std([h["score"] for hits in bm25_hits for h in hits]) / np.std(
        [h["score"] for hits in dense_hits for h in hits]
    )
    hybrid = HybridRetriever(bm25, dense, weight=float(weight), fusion=fusion, depth=10)
    first, second = hybrid.search(questions, k=10), hybrid.search(questions, k=10)
    assert first == second

    def ranking(results):
        return [[hit["id"] for hit in hits] for hits in results]

    assert ranking(first) != ranking(bm25_hits) and ranking(first) != ranking(dense_hits)
    assert all(len(hits) == 10 for hits in first)
    assert all(set(hit) == {"id", "title", "text", "score"} for hits in first for hit in hits)


def test_hybrid_rejects_unknown_fusion(passages, dense):
    with pytest.raises(ValueError, match="fusion must be one of"):
        HybridRetriever(BM25Retriever.from_passages(passages), dense, fusion="max")


def test_hybrid_weighs_the_dense_scores_on_the_pairs_logit_scale(passages, dense):
    """λ applies to score/τ: a pair trained at τ = 0.05 with λ = 1.1 fuses as a τ = 1 pair with λ = 22."""
    bm25 = BM25Retriever.from_passages(passages)
    plain = HybridRetriever(bm25, dense, weight=22.0, depth=10).search(QUESTIONS, k=10)
    dense.question_encoder.config.temperature = 0.05
    scaled = HybridRetriever(bm25, dense, weight=1.1, depth=10)
    assert scaled.dense_weight == pytest.approx(22.0)
    fused = scaled.search(QUESTIONS, k=10)
    assert [[h["id"] for h in hits] for hits in fused] == [[h["id"] for h in hits] for hits in plain]
    np.testing.assert_allclose(
        [h["score"] for hits in fused for h in hits], [h["score"] for hits in plain for h in hits], rtol=1e-6
    )


def test_encoder_config_refuses_a_non_positive_temperature():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        QuestionEncoderConfig(temperature=0.0)

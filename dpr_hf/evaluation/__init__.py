"""Evaluation: DPR's answer matching and top-k accuracy, IR metrics, EM/F1, and the retrieval/reader evaluators."""

from .metrics import (
    answer_hits,
    exact_match_score,
    f1_score,
    gold_recall,
    has_answer,
    mrr_at_k,
    ndcg_at_k,
    normalize_answer,
    simple_tokenize,
    top_k_accuracy,
    top_k_curve,
)

__all__ = [
    "answer_hits",
    "exact_match_score",
    "f1_score",
    "gold_recall",
    "has_answer",
    "mrr_at_k",
    "ndcg_at_k",
    "normalize_answer",
    "simple_tokenize",
    "top_k_accuracy",
    "top_k_curve",
]

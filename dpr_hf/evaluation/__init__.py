"""Evaluation: DPR's answer matching and top-k accuracy, IR metrics (pytrec_eval), EM/F1, and the evaluators."""

from .ir_metrics import ir_metrics
from .metrics import (
    answer_hits,
    exact_match_score,
    f1_score,
    gold_recall,
    has_answer,
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
    "ir_metrics",
    "normalize_answer",
    "simple_tokenize",
    "top_k_accuracy",
    "top_k_curve",
]

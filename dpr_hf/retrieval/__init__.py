"""Retrievers with one interface: `.search(questions, k) -> list[list[{id, title, text, score}]]`, best first."""

from .base import Retriever
from .bm25 import BM25Retriever
from .dense import DenseRetriever
from .hybrid import HybridRetriever, linear_fusion, reciprocal_rank_fusion

__all__ = [
    "BM25Retriever",
    "DenseRetriever",
    "HybridRetriever",
    "Retriever",
    "linear_fusion",
    "reciprocal_rank_fusion",
]

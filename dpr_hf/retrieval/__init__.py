"""Retrievers with one interface: `.search(questions, k) -> list[list[{id, title, text, score}]]`, best first."""

from .dense import DenseRetriever

__all__ = ["DenseRetriever"]

"""The one interface every retriever (dense, BM25, hybrid) offers, and the one that mining and evaluation need."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class Retriever(Protocol):
    """Anything with `.search(questions, k)`: per question, up to `k` `{id, title, text, score}` dicts, best first."""

    def search(self, questions: Sequence[str], k: int) -> list[list[dict[str, Any]]]: ...

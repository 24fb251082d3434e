"""BM25 over a passage corpus with bm25s: the sparse baseline of the DPR paper and the source of hard negatives.

Passages are indexed as "title text" (as Pyserini's DPR Wikipedia index); the defaults k1=0.9, b=0.4 are
Anserini's, which the DPR paper's BM25 numbers used. Tokens: lower-cased words of 2+ characters without English
stopwords (no stemming: bm25s' stemmer needs PyStemmer, which is not a dependency).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import bm25s
import datasets
import numpy as np
from bm25s.tokenization import Tokenizer

from ..atomic import staged_folder
from ..models.errors import MismatchError

CONFIG_NAME = "bm25_config.json"
PASSAGES_DIR = "passages"
MODEL_DIR = "model"
TOKEN_PATTERN = r"(?u)\b\w\w+\b"


def _passage_strings(passages: datasets.Dataset) -> list[str]:
    titles = passages["title"] if "title" in passages.column_names else [""] * len(passages)
    return [
        f"{title} {text}" if title else text for title, text in zip(titles, passages["text"], strict=True)
    ]


class BM25Retriever:
    """Sparse retrieval: `.search(questions, k)` -> for each question, up to k `{id, title, text, score}` dicts,
    best first. Build with `BM25Retriever.from_passages(passages)`; `.save(dir)` / `BM25Retriever.load(dir)`
    store only JSON, `.npy` arrays (no pickle) and the passages as a datasets folder."""

    def __init__(self, k1: float = 0.9, b: float = 0.4, method: str = "lucene", stopwords: str = "en"):
        self.k1, self.b, self.method, self.stopwords = k1, b, method, stopwords
        self.tokenizer = Tokenizer(lower=True, splitter=TOKEN_PATTERN, stopwords=stopwords)
        self.model: bm25s.BM25 | None = None
        self.passages: datasets.Dataset | None = None

    @classmethod
    def from_passages(cls, passages: datasets.Dataset, **kwargs: Any) -> BM25Retriever:
        """Index a corpus with columns `id`, `text` and optionally `title` (see `dpr_hf.data.load_passages`)."""
        return cls(**kwargs).build(passages)

    def build(self, passages: datasets.Dataset) -> BM25Retriever:
        if len(passages) == 0:
            raise ValueError("cannot build a BM25 index over an empty corpus")
        missing = [column for column in ("id", "text") if column not in passages.column_names]
        if missing:
            raise ValueError(f"passages lack the columns {missing} (has {passages.column_names})")
        self.tokenizer.reset_vocab()
        token_ids = self.tokenizer.tokenize(_passage_strings(passages), return_as="ids", show_progress=False)
        self.model = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        self.model.index((token_ids, self.tokenizer.get_vocab_dict()), show_progress=False)
        self.passages = passages.select_columns(
            [c for c in ("id", "title", "text") if c in passages.column_names]
        )
        return self

    def __len__(self) -> int:
        return 0 if self.passages is None else len(self.passages)

    def search(self, questions: list[str], k: int) -> list[list[dict[str, Any]]]:
        """Top-k passages for each question, best first; fewer when fewer passages share a term with it."""
        if self.model is None or self.passages is None:
            raise ValueError("the BM25 index is empty: call build(passages) or BM25Retriever.load(dir) first")
        if not questions:
            return []
        k = min(k, len(self.passages))
        query_ids = self.tokenizer.tokenize(
            list(questions), update_vocab=False, return_as="ids", show_progress=False
        )
        documents, scores = self.model.retrieve(query_ids, k=k, show_progress=False, n_threads=0)
        rows = self.passages[np.asarray(documents).reshape(-1).tolist()]
        has_title = "title" in rows
        results = []
        for q in range(len(questions)):
            hits = []
            for rank in range(k):
                score, flat = float(scores[q, rank]), q * k + rank
                if score > 0:  # as Lucene: a passage sharing no term with the question is not retrieved
                    title = rows["title"][flat] if has_title else ""
                    hits.append(
                        {"id": rows["id"][flat], "title": title, "text": rows["text"][flat], "score": score}
                    )
            results.append(hits)
        return results

    def _config(self) -> dict[str, Any]:
        return {
            "k1": self.k1,
            "b": self.b,
            "method": self.method,
            "stopwords": self.stopwords,
            "token_pattern": TOKEN_PATTERN,
            "num_passages": len(self),
            "bm25s_version": bm25s.__version__,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the index folder atomically: built in a temp folder beside `path`, then renamed into place.

        An existing folder is replaced only when it is a BM25 folder (it has `bm25_config.json`)."""
        if self.model is None or self.passages is None:
            raise ValueError("nothing to save: the BM25 index is empty")
        path = Path(path)
        if path.exists() and any(path.iterdir()) and not (path / CONFIG_NAME).is_file():
            raise FileExistsError(f"{path} exists and is not a BM25 index folder; refusing to overwrite it")
        with staged_folder(path) as staging:
            self.model.save(staging / MODEL_DIR, show_progress=False)
            self.tokenizer.save_vocab(staging / MODEL_DIR)
            self.passages.save_to_disk(str(staging / PASSAGES_DIR))
            (staging / CONFIG_NAME).write_text(json.dumps(self._config(), indent=2), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = False) -> BM25Retriever:
        """Load a folder written by `save`; `mmap=True` memory-maps the score arrays for big corpora."""
        path = Path(path)
        if not (path / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{path}: not a BM25 index folder (no {CONFIG_NAME})")
        config = json.loads((path / CONFIG_NAME).read_text(encoding="utf-8"))
        retriever = cls(
            k1=config["k1"], b=config["b"], method=config["method"], stopwords=config["stopwords"]
        )
        retriever.model = bm25s.BM25.load(
            path / MODEL_DIR, mmap=mmap, allow_pickle=False, show_progress=False
        )
        retriever.tokenizer.load_vocab(path / MODEL_DIR)
        retriever.passages = datasets.load_from_disk(str(path / PASSAGES_DIR))
        num_docs = retriever.model.scores["num_docs"]
        if not len(retriever.passages) == num_docs == config["num_passages"]:
            raise MismatchError(
                f"{path}: {len(retriever.passages)} passages, {num_docs} indexed documents and "
                f"{config['num_passages']} in {CONFIG_NAME} do not agree"
            )
        return retriever

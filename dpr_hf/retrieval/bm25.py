"""BM25 over a passage corpus with bm25s: the sparse baseline of the DPR paper and the source of hard negatives.

Passages are indexed as "title text" (as Pyserini's DPR Wikipedia index); the defaults k1=0.9, b=0.4 are
Anserini's, which the DPR paper's BM25 numbers used. Tokens: lower-cased words of 2+ characters without English
stopwords, optionally stemmed (`stemmer="english"`: PyStemmer's Snowball stemmers, as bm25s uses them; Lucene's
BM25 in the DPR paper stems with Porter), recorded with the index so that questions are stemmed the same way.

Built in bounded memory: the corpus is turned into strings and tokenised `TOKENIZE_CHUNK` passages at a time, and
the token ids are kept as int32 arrays (4 bytes a token, not a Python list of ints at ~36), which bm25s reads
passage by passage while it builds its score matrix.
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import bm25s
import datasets
import numpy as np
from bm25s.tokenization import Tokenized, Tokenizer

from ..atomic import staged_folder
from ..models.errors import MismatchError

CONFIG_NAME = "bm25_config.json"
PASSAGES_DIR = "passages"
MODEL_DIR = "model"
TOKEN_PATTERN = r"(?u)\b\w\w+\b"
TOKENIZE_CHUNK = 100_000  # passages turned into strings and tokenised at once


def _passage_strings(batch: dict[str, list]) -> list[str]:
    titles = batch.get("title") or [""] * len(batch["text"])
    return [f"{title} {text}" if title else text for title, text in zip(titles, batch["text"], strict=True)]


def _stemmer(language: str | None):
    """PyStemmer's Snowball stemmer for `language` ("english", ...), or None for no stemming."""
    if language is None:
        return None
    try:
        import Stemmer
    except ImportError as error:
        raise ImportError(
            "stemming needs PyStemmer: pip install 'dpr-hf[bm25-stem]' (or PyStemmer)"
        ) from error
    if language not in Stemmer.algorithms():
        raise ValueError(f"no PyStemmer stemmer {language!r}; known: {', '.join(Stemmer.algorithms())}")
    return Stemmer.Stemmer(language)


class _TokenIds(Sequence):
    """Every passage's token ids, stored as one int32 array per tokenised chunk plus offsets; read back (by bm25s,
    which walks the corpus three times while indexing) as one short list per passage."""

    def __init__(self) -> None:
        self._chunks: list[tuple[np.ndarray, np.ndarray]] = []
        self._starts: list[int] = []  # first passage of each chunk
        self._length = 0

    def append_chunk(self, docs: list[list[int]]) -> None:
        offsets = np.zeros(len(docs) + 1, dtype=np.int64)
        np.cumsum([len(doc) for doc in docs], out=offsets[1:])
        flat = np.fromiter(itertools.chain.from_iterable(docs), dtype=np.int32, count=int(offsets[-1]))
        self._chunks.append((flat, offsets))
        self._starts.append(self._length)
        self._length += len(docs)

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[list[int]]:
        for flat, offsets in self._chunks:
            bounds = offsets.tolist()
            for begin, end in zip(bounds[:-1], bounds[1:], strict=True):
                yield flat[begin:end].tolist()

    def __getitem__(self, row: int) -> list[int]:  # type: ignore[override]
        if not -self._length <= row < self._length:
            raise IndexError(row)
        row %= self._length
        chunk = bisect.bisect_right(self._starts, row) - 1
        flat, offsets = self._chunks[chunk]
        local = row - self._starts[chunk]
        return flat[offsets[local] : offsets[local + 1]].tolist()


class BM25Retriever:
    """Sparse retrieval: `.search(questions, k)` -> for each question, up to k `{id, title, text, score}` dicts,
    best first. Build with `BM25Retriever.from_passages(passages)`; `.save(dir)` / `BM25Retriever.load(dir)`
    store only JSON, `.npy` arrays (no pickle) and the passages as a datasets folder."""

    def __init__(
        self,
        k1: float = 0.9,
        b: float = 0.4,
        method: str = "lucene",
        stopwords: str = "en",
        stemmer: str | None = None,
        n_threads: int = -1,
    ):
        """`stemmer`: a PyStemmer language ("english") or None; `n_threads`: threads that score a batch of
        questions (-1: one per CPU core, 0: the calling thread only)."""
        self.k1, self.b, self.method, self.stopwords = k1, b, method, stopwords
        self.stemmer, self.n_threads = stemmer, n_threads
        self.tokenizer = Tokenizer(
            lower=True, splitter=TOKEN_PATTERN, stopwords=stopwords, stemmer=_stemmer(stemmer)
        )
        self.model: bm25s.BM25 | None = None
        self.passages: datasets.Dataset | None = None

    @classmethod
    def from_passages(cls, passages: datasets.Dataset, **kwargs: Any) -> BM25Retriever:
        """Index a corpus with columns `id`, `text` and optionally `title` (see `dpr_hf.data.load_passages`)."""
        return cls(**kwargs).build(passages)

    def build(self, passages: datasets.Dataset, chunk_size: int = TOKENIZE_CHUNK) -> BM25Retriever:
        """Index `passages`, tokenising `chunk_size` of them at a time (the memory bound of the strings)."""
        if len(passages) == 0:
            raise ValueError("cannot build a BM25 index over an empty corpus")
        missing = [column for column in ("id", "text") if column not in passages.column_names]
        if missing:
            raise ValueError(f"passages lack the columns {missing} (has {passages.column_names})")
        self.tokenizer.reset_vocab()
        token_ids = _TokenIds()
        columns = [c for c in ("title", "text") if c in passages.column_names]
        for batch in passages.select_columns(columns).iter(batch_size=chunk_size):
            strings = _passage_strings(batch)
            token_ids.append_chunk(
                self.tokenizer.tokenize(strings, update_vocab=True, return_as="ids", show_progress=False)
            )
        self.model = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        # bm25s takes any `.ids` / `.vocab` object; its (ids, vocab) tuple form insists on a list of lists.
        self.model.index(Tokenized(ids=token_ids, vocab=self.tokenizer.get_vocab_dict()), show_progress=False)
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
        documents, scores = self.model.retrieve(query_ids, k=k, show_progress=False, n_threads=self.n_threads)
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
            "stemmer": self.stemmer,
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
    def load(cls, path: str | os.PathLike, mmap: bool = False, n_threads: int = -1) -> BM25Retriever:
        """Load a folder written by `save`; `mmap=True` memory-maps the score arrays for big corpora. Questions
        are stemmed with the index's stemmer (none for folders saved before stemming existed)."""
        path = Path(path)
        if not (path / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{path}: not a BM25 index folder (no {CONFIG_NAME})")
        config = json.loads((path / CONFIG_NAME).read_text(encoding="utf-8"))
        retriever = cls(
            k1=config["k1"],
            b=config["b"],
            method=config["method"],
            stopwords=config["stopwords"],
            stemmer=config.get("stemmer"),
            n_threads=n_threads,
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

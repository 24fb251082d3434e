"""BM25 with and without English stemming on SQuAD-open: top-1/5/20 (has_answer), build and search time.

Corpus: every SQuAD v1.1 train + dev-a paragraph (19,961); questions: dev-a (5,665), as benchmarks/retrieval_quality.

    python benchmarks/bm25_stemming.py
"""

from __future__ import annotations

import json
import time

from common import open_squad

from dpr_hf.evaluation.metrics import has_answer
from dpr_hf.retrieval.bm25 import BM25Retriever


def main() -> None:
    corpus, questions = open_squad()
    for stemmer in (None, "english"):
        started = time.perf_counter()
        retriever = BM25Retriever.from_passages(corpus, stemmer=stemmer)
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        results = retriever.search(questions["question"], k=20)
        search_s = time.perf_counter() - started
        top_k = {
            k: round(
                100
                * sum(
                    any(has_answer(answers, hit["text"]) for hit in hits[:k])
                    for hits, answers in zip(results, questions["answers"], strict=True)
                )
                / len(questions),
                2,
            )
            for k in (1, 5, 20)
        }
        row = {
            "stemmer": stemmer,
            "top_k": top_k,
            "build_s": round(build_s, 1),
            "search_s": round(search_s, 1),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

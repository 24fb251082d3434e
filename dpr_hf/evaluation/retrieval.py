"""Retrieval evaluation: run a retriever over questions, score it as DPR does, write DPR's results JSON.

The results file (`results.json`: `question`, `answers`, `ctxs: [{id, title, text, score, has_answer}]`) is
the reader's input; `metrics.json` holds top-k accuracy (percent), gold-passage recall and, given relevance
judgements, MRR@10 / nDCG@10.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
from datasets import Dataset
from tqdm.auto import tqdm

from ..atomic import staged_file
from ..models.errors import DPRDataError
from ..retrieval.base import Retriever
from .metrics import answer_hits, gold_recall, mrr_at_k, ndcg_at_k, top_k_accuracy, top_k_curve

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)

DEFAULT_KS = (1, 5, 20, 100)


@dataclass
class RetrievalEvaluation:
    """What `evaluate_retriever` returns: per-question results (DPR format), metrics and the top-k curve."""

    results: list[dict]
    metrics: dict[str, float | int]
    curve: list[float] = field(default_factory=list)


def load_qrels(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """BEIR qrels TSV (`query-id  corpus-id  score`, header line) -> {question id: {passage id: relevance}}."""
    qrels: dict[str, dict[str, float]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        rows = csv.reader(handle, delimiter="\t")
        for number, row in enumerate(rows, start=1):
            if number == 1 and row and row[0] == "query-id":
                continue
            if len(row) != 3:
                raise DPRDataError(
                    f"expected 3 tab-separated fields, got {len(row)}", path=path, record=number
                )
            try:
                qrels.setdefault(row[0], {})[row[1]] = float(row[2])
            except ValueError as error:
                raise DPRDataError(f"relevance {row[2]!r} is not a number", path, number, "score") from error
    return qrels


def retrieve(
    retriever: Retriever,
    questions: Sequence[str],
    k: int = 100,
    batch_size: int = 256,
    show_progress: bool = True,
) -> list[list[dict]]:
    """`retriever.search` over many questions in batches, with a progress bar."""
    retrieved: list[list[dict]] = []
    progress = tqdm(total=len(questions), desc="Retrieving", unit="question", disable=not show_progress)
    for start in range(0, len(questions), batch_size):
        batch = list(questions[start : start + batch_size])
        retrieved.extend(retriever.search(batch, k))
        progress.update(len(batch))
    progress.close()
    return retrieved


def evaluate_retriever(
    retriever: Retriever,
    questions: Dataset,
    top_k: int = 100,
    ks: Sequence[int] = DEFAULT_KS,
    match: str = "string",
    qrels: dict[str, dict[str, float]] | None = None,
    batch_size: int = 256,
    show_progress: bool = True,
) -> RetrievalEvaluation:
    """Retrieve `top_k` passages for every question (columns of `dpr_hf.data.load_questions`) and score them.

    Args:
        ks: cut-offs for `top_k` / `gold_recall_k` metrics (those above `top_k` are left out).
        match: "string" (DPR's `has_answer`) or "regex" (answers are patterns, CuratedTREC).
        qrels: relevance judgements {question id: {passage id: grade}} for MRR@10 and nDCG@10.
    """
    retrieved = retrieve(retriever, questions["question"], top_k, batch_size, show_progress)
    return score_retrieval(questions, retrieved, top_k, ks, match, qrels)


def score_retrieval(
    questions: Dataset,
    retrieved: Sequence[Sequence[dict]],
    top_k: int = 100,
    ks: Sequence[int] = DEFAULT_KS,
    match: str = "string",
    qrels: dict[str, dict[str, float]] | None = None,
) -> RetrievalEvaluation:
    """Score given hit lists (one per question, best first) the way `evaluate_retriever` does."""
    ks = sorted({k for k in ks if k <= top_k} | {top_k})
    retrieved = [list(passages[:top_k]) for passages in retrieved]
    answers = questions["answers"]
    hits = answer_hits(retrieved, answers, mode=match)
    retrieved_ids = [[passage["id"] for passage in passages] for passages in retrieved]
    metrics: dict[str, float | int] = {**top_k_accuracy(hits, ks)}
    gold_ids = questions["gold_passage_id"] if "gold_passage_id" in questions.column_names else None
    if gold_ids is not None:
        metrics.update(gold_recall(retrieved_ids, gold_ids, ks))
    if qrels is not None:
        judged = [
            (ids, qrels[qid]) for ids, qid in zip(retrieved_ids, questions["id"], strict=True) if qid in qrels
        ]
        metrics["mrr_10"] = mrr_at_k([ids for ids, _ in judged], [rel for _, rel in judged], k=10)
        metrics["ndcg_10"] = ndcg_at_k([ids for ids, _ in judged], [rel for _, rel in judged], k=10)
        metrics["num_judged_questions"] = len(judged)
    metrics["num_questions"] = len(questions)

    results = []
    for row, passages, question_hits in zip(questions, retrieved, hits, strict=True):
        record = {"id": row.get("id"), "question": row["question"], "answers": row["answers"]}
        if row.get("gold_passage_id"):
            record["gold_passage_id"] = row["gold_passage_id"]
        record["ctxs"] = [
            {
                "id": passage["id"],
                "title": passage.get("title", ""),
                "text": passage["text"],
                "score": float(passage["score"]),
                "has_answer": hit,
            }
            for passage, hit in zip(passages, question_hits, strict=True)
        ]
        results.append(record)
    return RetrievalEvaluation(results, metrics, top_k_curve(hits, top_k))


def _write_json(content, path: Path) -> None:
    with staged_file(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        json.dump(content, handle, ensure_ascii=False, indent=1 if isinstance(content, list) else 2)
        handle.write("\n")


def plot_top_k_curves(curves: dict[str, Sequence[float]], path: str | os.PathLike, title: str = "") -> None:
    """Top-k accuracy against k (log scale) for one or more retrievers, as in the DPR paper's figure 1."""
    figure, axes = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        axes.plot(range(1, len(curve) + 1), curve, label=name)
    axes.set(xscale="log", xlabel="k (passages retrieved)", ylabel="top-k accuracy (%)", title=title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def save_retrieval_evaluation(
    evaluation: RetrievalEvaluation,
    output_dir: str | os.PathLike,
    name: str = "retriever",
    write_results: bool = True,
) -> Path:
    """Write `results.json` (unless `write_results=False`: it holds every passage text), `metrics.json` and
    `top_k_curve.png` into `output_dir`, each file atomically."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if write_results:
        _write_json(evaluation.results, output_dir / "results.json")
    _write_json(evaluation.metrics, output_dir / "metrics.json")
    if evaluation.curve:
        plot_top_k_curves({name: evaluation.curve}, output_dir / "top_k_curve.png")
    return output_dir

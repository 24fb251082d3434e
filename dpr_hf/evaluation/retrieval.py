"""Retrieval evaluation: run a retriever over questions, score it as DPR does, write DPR's results JSON.

The results file (`results.json`: `question`, `answers`, `ctxs: [{id, title, text, score, has_answer}]`) is
the reader's input; `metrics.json` holds top-k accuracy (percent, over the questions with answers), gold-passage
recall and, given relevance judgements (qrels), nDCG / Recall / MRR@10 / MAP@100 from pytrec_eval.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
from datasets import Dataset
from tqdm.auto import tqdm

from ..atomic import staged_file
from ..data.beir import load_qrels  # noqa: F401  (its home before BEIR support; commands import it here)
from ..models.errors import DPRDataError
from ..retrieval.base import Retriever
from .ir_metrics import ir_metrics
from .metrics import answer_hits, gold_recall, top_k_accuracy, top_k_curve

logger = logging.getLogger(__name__)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)

DEFAULT_KS = (1, 5, 20, 100)


@dataclass
class RetrievalEvaluation:
    """What `evaluate_retriever` returns: per-question results (DPR format), metrics and the top-k curve."""

    results: list[dict]
    metrics: dict[str, float | int]
    curve: list[float] = field(default_factory=list)


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
        qrels: relevance judgements {question id: {passage id: grade}} for the IR metrics (`ir_metrics`).
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
    question_ids = questions["id"]
    answered = [row for row, question_answers in enumerate(answers) if question_answers]
    metrics: dict[str, float | int] = {}
    # top-k accuracy measures only questions with answers: one without would read as a miss that was measured
    if answered:
        metrics.update(top_k_accuracy([hits[row] for row in answered], ks))
        metrics["num_questions_with_answers"] = len(answered)
    gold_ids = (
        questions["gold_passage_id"] if "gold_passage_id" in questions.column_names else [""] * len(hits)
    )
    metrics.update(gold_recall(retrieved_ids, gold_ids, ks))
    judged: set[str] = set()
    if qrels is not None:
        judged = {qid for qid in question_ids if qid in qrels}
        if not judged:
            raise DPRDataError(
                f"no question id has judgements in the qrels (questions: {question_ids[:1]}, ...; qrels:"
                f" {list(qrels)[:1]}, ...): check that both come from the same dataset",
                "qrels",
            )
        ranked = {qid: ids for qid, ids in zip(question_ids, retrieved_ids, strict=True) if qid in judged}
        metrics.update(ir_metrics(ranked, qrels, depth=top_k))
        metrics["num_judged_questions"] = len(judged)
    unmeasured = sum(
        not question_answers and not gold and qid not in judged
        for qid, question_answers, gold in zip(question_ids, answers, gold_ids, strict=True)
    )
    if unmeasured:
        logger.warning(
            "%d of %d questions have no answers, gold passage id or relevance judgement: they are in the results"
            " but in no metric",
            unmeasured,
            len(question_ids),
        )
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
    curve = top_k_curve([hits[row] for row in answered], top_k) if answered else []
    return RetrievalEvaluation(results, metrics, curve)


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

"""End-to-end reader evaluation: exact match and F1 of the predicted answer when reading the top-n passages.

The prediction at threshold n is the best answer of the first n retrieved passages under the reader's answer
ranking (`dpr_hf.reader.decoding.rank_answers`, as the pipeline answers); EM/F1 use SQuAD's normalisation.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ..atomic import staged_file
from ..models.errors import MismatchError
from ..models.modeling import ExtractiveReader
from ..reader.decoding import check_reader_tokenizer, rank_answers, score_passages
from .metrics import exact_match_score, f1_score

logger = logging.getLogger(__name__)

DEFAULT_TOP_N = (1, 5, 20, 50)


def evaluate_reader(
    reader: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[dict],
    top_n: Sequence[int] = DEFAULT_TOP_N,
    max_answer_length: int = 10,
    max_length: int | None = None,
    batch_size: int = 32,
    questions_per_step: int = 16,
    show_progress: bool = True,
    ranking: str | None = None,
    retriever_weight: float = 0.0,
    retriever_temperature: float = 1.0,
) -> tuple[dict, list[dict]]:
    """EM/F1 (percent) at each top-n threshold over rows `{question, answers, ctxs}` (a reader `Dataset` works).

    Returns `({"em": {"n": ...}, "f1": {"n": ...}, "num_questions": N}, predictions)`; each prediction row holds
    the question, its answers and, per threshold, the predicted answer with its passage.
    """
    top_n = sorted({int(n) for n in top_n})
    if not top_n or top_n[0] < 1:
        raise ValueError(f"top-n thresholds must be positive integers, got {top_n}")
    em = {n: 0.0 for n in top_n}
    f1 = {n: 0.0 for n in top_n}
    predictions = []
    with tqdm(total=len(examples), desc="Reading", unit="question", disable=not show_progress) as progress:
        for begin in range(0, len(examples), questions_per_step):
            rows = [examples[i] for i in range(begin, min(begin + questions_per_step, len(examples)))]
            passages = [list(row["ctxs"])[: top_n[-1]] for row in rows]
            readings = score_passages(
                reader,
                tokenizer,
                [row["question"] for row in rows],
                passages,
                max_answer_length=max_answer_length,
                num_spans=1,
                max_length=max_length,
                batch_size=batch_size,
            )
            for row, row_passages, row_readings in zip(rows, passages, readings, strict=True):
                by_n = {}
                for n in top_n:
                    ranked = rank_answers(
                        row_readings[:n],
                        row_passages[:n],
                        ranking=ranking,
                        retriever_weight=retriever_weight,
                        retriever_temperature=retriever_temperature,
                    )
                    if ranked:
                        passage = ranked[0]["passage"]
                        rank = next(p for p in range(n) if row_passages[p]["id"] == passage["id"]) + 1
                        prediction = {
                            **ranked[0],
                            "passage": {"id": passage["id"], "title": passage["title"], "rank": rank},
                        }
                    else:
                        prediction = {
                            "answer": "",
                            "score": None,
                            "start": None,
                            "end": None,
                            "relevance": None,
                        }
                    em[n] += exact_match_score(prediction["answer"], row["answers"])
                    f1[n] += f1_score(prediction["answer"], row["answers"])
                    by_n[str(n)] = prediction
                predictions.append(
                    {
                        "id": row.get("id", ""),
                        "question": row["question"],
                        "answers": list(row["answers"]),
                        "predictions": by_n,
                    }
                )
            progress.update(len(rows))
    count = len(predictions)
    metrics = {
        "em": {str(n): 100.0 * em[n] / max(count, 1) for n in top_n},
        "f1": {str(n): 100.0 * f1[n] / max(count, 1) for n in top_n},
        "num_questions": count,
    }
    return metrics, predictions


def load_reader(path: str | os.PathLike) -> tuple[ExtractiveReader, PreTrainedTokenizerBase]:
    """A reader and its tokenizer from a reader folder or a system folder (which holds `reader/`)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such model folder")
    folder = path / "reader" if (path / "reader" / "config.json").is_file() else path
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{path}: neither a reader folder nor a system folder with reader/ (no config.json)"
        )
    model = AutoModel.from_pretrained(folder, dtype=torch.float32)
    if not isinstance(model, ExtractiveReader):
        raise MismatchError(f"{folder} holds a {type(model).__name__}, not an ExtractiveReader")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    # A tokenizer swapped in the folder is refused before any data is read.
    check_reader_tokenizer(model, tokenizer)
    return model, tokenizer


def write_json(data: object, path: Path) -> None:
    """Write JSON atomically: a reader of `path` never sees half a file."""
    with staged_file(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def evaluate_reader_on_results(
    model: str | os.PathLike,
    retrieval_results: str | os.PathLike,
    output_dir: str | os.PathLike,
    top_n: Sequence[int] = DEFAULT_TOP_N,
    max_answer_length: int = 10,
    max_length: int | None = None,
    batch_size: int = 32,
    max_questions: int = 0,
    seed: int = 42,
    retriever_weight: float = 0.0,
    retriever_temperature: float = 1.0,
) -> dict:
    """`dpr-hf evaluate-reader`: read a retrieval-results JSON, write `metrics.json` and `predictions.json`.

    `max_questions` > 0 reads a seeded sample of that many questions (drawn as training's `max_eval_samples`).
    """
    from ..data.reader import load_reader_data
    from ..training.arguments import seeded_subset

    if max_questions < 0:
        raise ValueError(f"max_questions must be >= 0 (0: every question), got {max_questions}")
    reader, tokenizer = load_reader(model)
    reader.to("cuda" if torch.cuda.is_available() else "cpu")
    examples = seeded_subset(load_reader_data(retrieval_results), max_questions, seed)
    metrics, predictions = evaluate_reader(
        reader,
        tokenizer,
        examples,
        top_n=top_n,
        max_answer_length=max_answer_length,
        max_length=max_length,
        batch_size=batch_size,
        retriever_weight=retriever_weight,
        retriever_temperature=retriever_temperature,
    )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(predictions, output_dir / "predictions.json")
    write_json(metrics, output_dir / "metrics.json")
    logger.info(
        "reader EM %s, F1 %s over %d questions", metrics["em"], metrics["f1"], metrics["num_questions"]
    )
    return metrics

"""Evaluation questions: SQuAD JSON, DPR's qas TSV/CSV, JSONL, DPR retriever JSON, `datasets` datasets."""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets

from ..models.errors import DPRDataError
from ._io import iter_delimited, iter_jsonl, load_records, read_json
from .schema import (
    QUESTION_FEATURES,
    Where,
    get_answers,
    get_id,
    get_string,
    normalize_passages,
    require_mapping,
)
from .squad import is_squad, iter_answerable, iter_squad


def load_questions(
    source: str | os.PathLike | datasets.Dataset | datasets.DatasetDict, split: str | None = None
) -> datasets.Dataset:
    """Load questions as a `Dataset` with columns `id`, `question`, `answers: list[str]`, `gold_passage_id`.

    Sources: SQuAD JSON (gold = the paragraph's id as in `load_passages`; unanswerable v2.0 questions are
    skipped and counted), DPR's qas TSV/CSV (question, then a JSON or Python list of answers, read with
    `json`/`ast.literal_eval`, never `eval`), JSONL `{id?, question, answers?, gold_passage_id?}` or BEIR's
    queries (`_id`, `text`), DPR
    retriever JSON/JSONL (gold = first positive), a `Dataset`, a `save_to_disk` folder or a Hub name.
    `gold_passage_id` is "" when unknown; a missing id is the record number (in SQuAD `f"{a}-{p}-{q}"`, its
    article, paragraph and question index). Ids are unique, as predictions and evaluation key on them: a
    repeated one raises `DPRDataError` naming both records.
    """
    return load_records(
        source,
        split,
        kind="questions",
        required=(("question", "text"),),
        features=QUESTION_FEATURES,
        normalize_batch=_normalize_batch,
        readers={".tsv": _read_qas, ".csv": _read_qas, ".jsonl": _read_jsonl, ".json": _read_json},
        id_note="a question without id is numbered by its record",
    )


def normalize_question(record: Any, where: Where) -> dict[str, Any]:
    """A question record (ours or DPR's retriever format) in canonical form."""
    record = require_mapping(record, where)
    gold = get_id(record, ("gold_passage_id",), where)
    if gold is None and record.get("positive_ctxs"):
        gold = normalize_passages(record["positive_ctxs"], where, "positive_ctxs", required=True)[0]["id"]
    identifier = get_id(record, ("id", "_id"), where)
    # BEIR's queries.jsonl holds the question as `text`
    text_key = "question" if "question" in record or "text" not in record else "text"
    return {
        "id": identifier if identifier is not None else str(where.record),
        "question": get_string(record, text_key, where, non_empty=True),
        "answers": get_answers(record, where),
        "gold_passage_id": gold or "",
    }


def _normalize_batch(batch: dict[str, list], indices: list[int], name: str) -> dict[str, list]:
    rows = [
        normalize_question({column: values[row] for column, values in batch.items()}, Where(name, index + 1))
        for row, index in enumerate(indices)
    ]
    return {column: [row[column] for row in rows] for column in QUESTION_FEATURES}


def parse_answer_list(text: str, where: Where) -> list[str]:
    """DPR's qas answer column: a JSON list, or a Python literal list (original DPR used `eval`; we do not)."""
    try:
        answers = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, nested too deeply, an integer too long
        try:
            answers = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise where.error(f"not a JSON or Python list of answers: {text[:80]!r}", "answers") from None
    if not isinstance(answers, (list, tuple)) or not all(isinstance(answer, str) for answer in answers):
        raise where.error(f"expected a list of answer strings, got {text[:80]!r}", "answers")
    return list(answers)


def _read_qas(path: str, report: list[str]) -> Iterator[tuple[int, dict]]:
    for number, fields in iter_delimited(path):
        if not fields:
            continue
        if number == 1 and [field.strip().lower() for field in fields[:2]] == ["question", "answers"]:
            continue
        where = Where(path, number)
        if len(fields) < 2:
            raise where.error("expected a question and a list of answers", "answers")
        if not fields[0].strip():
            raise where.error("must not be empty", "question")
        yield (
            number,
            {
                "id": fields[2] if len(fields) > 2 and fields[2] else str(number),
                "question": fields[0],
                "answers": parse_answer_list(fields[1], where),
                "gold_passage_id": "",
            },
        )


def _read_jsonl(path: str, report: list[str]) -> Iterator[tuple[int, dict]]:
    for number, record in iter_jsonl(path):
        yield number, normalize_question(record, Where(path, number))


def _read_json(path: str, report: list[str]) -> Iterator[tuple[int | str, dict]]:
    document = read_json(path)
    if is_squad(document):
        for paragraph, question in iter_answerable(iter_squad(document, Path(path)), path, report):
            yield (
                question.record,
                {
                    "id": question.id,
                    "question": question.question,
                    "answers": question.answers,
                    "gold_passage_id": paragraph.passage["id"],
                },
            )
        return
    if not isinstance(document, list):
        raise DPRDataError(
            f"expected a list of question records or a SQuAD object with 'data', got {type(document).__name__}",
            path,
        )
    for number, record in enumerate(document, start=1):
        yield number, normalize_question(record, Where(path, number))

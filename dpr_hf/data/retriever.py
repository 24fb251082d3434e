"""Retriever training data: DPR's JSON/JSONL, SQuAD JSON and `datasets` datasets -> one canonical `Dataset`."""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import datasets

from ..models.errors import DPRDataError
from ._io import (
    base_suffix,
    build_dataset,
    file_fingerprint,
    iter_jsonl,
    read_json,
    require_columns,
    resolve_source,
)
from .schema import CTX_FIELDS, RETRIEVER_FEATURES, Where, normalize_retriever_record
from .squad import is_squad, iter_answerable, iter_squad

logger = logging.getLogger(__name__)


def load_retriever_data(
    source: str | os.PathLike | datasets.Dataset | datasets.DatasetDict, split: str | None = None
) -> datasets.Dataset:
    """Load retriever training data into the canonical schema.

    Columns: `question: str`, `answers: list[str]`, `positive_ctxs`, `negative_ctxs`, `hard_negative_ctxs`
    (lists of `{"id", "title", "text"}`). Sources: DPR retriever JSON (a list of records) or JSONL, SQuAD JSON
    (plain or `.gz`; the gold paragraph is the positive, unanswerable v2.0 questions are skipped), a `Dataset`,
    a `save_to_disk` folder or a Hub dataset name with those columns (`split` picks a split).

    Records without a positive are skipped with a warning giving their number, as DPR does; malformed records
    raise `DPRDataError` naming the file, the record and the field.
    """
    resolved = resolve_source(source, split)
    if not isinstance(resolved, Path):
        return _from_dataset(*resolved)
    kind = "jsonl" if base_suffix(resolved) == ".jsonl" else "json"
    if base_suffix(resolved) not in (".json", ".jsonl"):
        raise DPRDataError("retriever data must be DPR JSON/JSONL or SQuAD JSON", resolved)
    generator = _generate_jsonl if kind == "jsonl" else _generate_json
    return build_dataset(
        generator, RETRIEVER_FEATURES, file_fingerprint(f"retriever-{kind}", resolved), path=str(resolved)
    )


def _report_skipped(report: list[str], path: Any, no_positive: int) -> None:
    if no_positive:
        report.append(f"{path}: skipped {no_positive} records without a positive passage")


def _generate_records(records: Iterable[tuple[int, Any]], path: str, report: list[str]) -> Iterator[dict]:
    """DPR records, numbered from 1, in canonical form; those without a positive are skipped and counted."""
    skipped = 0
    for number, record in records:
        example = normalize_retriever_record(record, Where(path, number))
        if example is None:
            skipped += 1
        else:
            yield example
    _report_skipped(report, path, skipped)


def _generate_jsonl(path: str, report: list[str]) -> Iterator[dict]:
    yield from _generate_records(iter_jsonl(path), path, report)


def _generate_json(path: str, report: list[str]) -> Iterator[dict]:
    document = read_json(path)
    if is_squad(document):
        yield from _generate_squad(document, path, report)
        return
    if not isinstance(document, list):
        raise DPRDataError(
            f"expected a list of DPR records or a SQuAD object with 'data', got {type(document).__name__}",
            path,
        )
    yield from _generate_records(enumerate(document, start=1), path, report)


def _generate_squad(document: Any, path: str, report: list[str]) -> Iterator[dict]:
    for paragraph, question in iter_answerable(iter_squad(document, Path(path)), path, report):
        yield {
            "question": question.question,
            "answers": question.answers,
            "positive_ctxs": [paragraph.passage],
            "negative_ctxs": [],
            "hard_negative_ctxs": [],
        }


def _normalize_batch(batch: dict[str, list], indices: list[int], name: str) -> dict[str, list]:
    examples = {column: [] for column in RETRIEVER_FEATURES}
    for row, index in enumerate(indices):
        record = {column: values[row] for column, values in batch.items()}
        example = normalize_retriever_record(record, Where(name, index + 1))
        if example is not None:
            for column in examples:
                examples[column].append(example[column])
    return examples


def _from_dataset(dataset: datasets.Dataset, name: str) -> datasets.Dataset:
    require_columns(dataset, name, ("question", "positive_ctxs"))
    normalized = dataset.map(
        _normalize_batch,
        batched=True,
        with_indices=True,
        fn_kwargs={"name": name},
        remove_columns=dataset.column_names,
        features=RETRIEVER_FEATURES,
        desc="Validating retriever data",
    )
    skipped: list[str] = []
    _report_skipped(skipped, name, len(dataset) - len(normalized))
    for message in skipped:
        logger.warning(message)
    return normalized


def _dpr_ctx(passage: dict) -> dict:
    return {"passage_id": passage["id"], "title": passage["title"], "text": passage["text"]}


def _dpr_record(example: dict) -> dict:
    record = {"question": example["question"], "answers": list(example["answers"])}
    for field in CTX_FIELDS:
        record[field] = [_dpr_ctx(ctx) for ctx in example.get(field) or []]
    return record


def save_retriever_json(dataset: datasets.Dataset, path: str | os.PathLike) -> Path:
    """Write canonical retriever data in DPR's retriever JSON (a list; `.jsonl` writes one record a line).

    Passage ids are written as DPR's `passage_id`, so the file is read by the original DPR tools and by
    `load_retriever_data` alike. `.gz` compresses. The file appears atomically (written to a temp name first).
    """
    path = Path(path)
    missing = [
        column for column in ("question", "answers", "positive_ctxs") if column not in dataset.column_names
    ]
    if missing:
        raise DPRDataError(f"dataset lacks retriever columns {missing}", "dataset", field=missing[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    lines = base_suffix(path) == ".jsonl"
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(temporary, "wt", encoding="utf-8") as handle:
            if not lines:
                handle.write("[\n")
            for number, example in enumerate(dataset):
                text = json.dumps(_dpr_record(example), ensure_ascii=False)
                if lines:
                    handle.write(text + "\n")
                else:
                    handle.write((",\n" if number else "") + text)
            if not lines:
                handle.write("\n]\n")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path

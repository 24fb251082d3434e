"""Passage corpora: DPR's passage TSV, JSONL, SQuAD paragraphs, DPR retriever JSON ctxs, `datasets` datasets.

Also `split_documents`, which cuts whole documents into DPR's 100-word passages.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import datasets

from ..errors import DPRDataError
from ._io import (
    iter_delimited,
    iter_jsonl,
    load_records,
    read_json,
    require_columns,
)
from .schema import CTX_FIELDS, PASSAGE_FEATURES, Where, normalize_passage, require_mapping
from .squad import is_squad, iter_squad


def load_passages(
    source: str | os.PathLike | datasets.Dataset | datasets.DatasetDict, split: str | None = None
) -> datasets.Dataset:
    """Load a passage corpus as a `Dataset` with columns `id`, `title`, `text` (all strings).

    Sources: DPR's passage TSV (`id`, `text`, `title` header row; `.tsv`/`.csv`, optionally `.gz`), JSONL
    `{id?, title?, text}`, SQuAD JSON (one passage per paragraph), DPR retriever JSON (its distinct ctxs), a
    `Dataset`, a `save_to_disk` folder or a Hub dataset name. A passage without id gets a stable hash id.
    """
    return load_records(
        source,
        split,
        kind="passages",
        required=("text",),
        features=PASSAGE_FEATURES,
        normalize_batch=_normalize_batch,
        generators={
            ".tsv": _generate_tsv,
            ".csv": _generate_tsv,
            ".jsonl": _generate_jsonl,
            ".json": _generate_json,
        },
    )


def _normalize_batch(batch: dict[str, list], indices: list[int], name: str) -> dict[str, list]:
    rows = [
        normalize_passage(
            {column: values[row] for column, values in batch.items()}, Where(name, index + 1), "row"
        )
        for row, index in enumerate(indices)
    ]
    return {column: [row[column] for row in rows] for column in PASSAGE_FEATURES}


def _generate_tsv(path: str, report: list[str]) -> Iterator[dict]:
    rows = iter_delimited(path)
    header = next(rows, None)
    if header is None:
        raise DPRDataError("empty passage file (expected an 'id', 'text', 'title' header row)", path, 1)
    _, columns = header
    positions = {name.strip().lower(): i for i, name in enumerate(columns)}
    for required in ("id", "text"):
        if required not in positions:
            raise DPRDataError(f"header row {columns} lacks the {required!r} column", path, 1, required)
    title_at = positions.get("title")
    for number, fields in rows:
        if not fields:
            continue
        if len(fields) != len(columns):
            raise DPRDataError(
                f"expected {len(columns)} fields like the header, got {len(fields)}", path, number
            )
        yield {
            "id": fields[positions["id"]],
            "title": fields[title_at] if title_at is not None else "",
            "text": fields[positions["text"]],
        }


def _generate_jsonl(path: str, report: list[str]) -> Iterator[dict]:
    for number, record in iter_jsonl(path):
        yield normalize_passage(record, Where(path, number), "passage")


def _generate_json(path: str, report: list[str]) -> Iterator[dict]:
    document = read_json(path)
    if is_squad(document):
        for paragraph in iter_squad(document, Path(path)):
            yield paragraph.passage
        return
    if not isinstance(document, list):
        raise DPRDataError(
            f"expected a list of DPR records or a SQuAD object with 'data', got {type(document).__name__}",
            path,
        )
    seen: set[str] = set()
    for number, record in enumerate(document, start=1):
        where = Where(path, number)
        record = require_mapping(record, where)
        for field in CTX_FIELDS:
            ctxs = record.get(field) or []
            if not isinstance(ctxs, list):
                raise where.error(f"expected a list of passages, got {type(ctxs).__name__}", field)
            for i, ctx in enumerate(ctxs):
                passage = normalize_passage(ctx, where, f"{field}[{i}]")
                if passage["id"] not in seen:
                    seen.add(passage["id"])
                    yield passage


def _split_batch(batch: dict[str, list], words: int) -> dict[str, list]:
    out: dict[str, list] = {"id": [], "title": [], "text": []}
    for doc_id, title, text in zip(batch["id"], batch["title"], batch["text"], strict=True):
        tokens = text.split()
        for part, start in enumerate(range(0, len(tokens), words)):
            out["id"].append(f"{doc_id}-{part}")
            out["title"].append(title)
            out["text"].append(" ".join(tokens[start : start + words]))
    return out


def split_documents(dataset: datasets.Dataset, words: int = 100) -> datasets.Dataset:
    """Cut documents (`id`, `title`, `text`) into consecutive passages of `words` whitespace words, as DPR's
    Wikipedia corpus; passage `i` of document `d` has id `f"{d}-{i}"` and keeps the document's title."""
    if words < 1:
        raise ValueError(f"words must be positive, got {words}")
    require_columns(dataset, "dataset", ("id", "title", "text"))
    return dataset.map(
        _split_batch,
        batched=True,
        fn_kwargs={"words": words},
        remove_columns=dataset.column_names,
        features=PASSAGE_FEATURES,
        desc=f"Splitting into {words}-word passages",
    )

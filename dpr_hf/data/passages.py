"""Passage corpora: DPR's passage TSV, JSONL, SQuAD paragraphs, DPR retriever JSON ctxs, `datasets` datasets.

Also `split_documents`, which cuts whole documents into DPR's 100-word passages.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import datasets

from ..models.errors import DPRDataError
from ._io import iter_delimited, iter_jsonl, load_records, read_json, require_columns
from .schema import CTX_FIELDS, PASSAGE_FEATURES, Where, normalize_passage, require_mapping
from .squad import is_squad, iter_squad


def load_passages(
    source: str | os.PathLike | datasets.Dataset | datasets.DatasetDict, split: str | None = None
) -> datasets.Dataset:
    """Load a passage corpus as a `Dataset` with columns `id`, `title`, `text` (all strings).

    Sources: DPR's passage TSV (`id`, `text`, `title` header row; `.tsv`/`.csv`, optionally `.gz`), JSONL
    `{id?, title?, text}` (BEIR's `corpus.jsonl`: `_id` is the id), SQuAD JSON (one passage per paragraph),
    DPR retriever JSON (its distinct ctxs), a `Dataset`, a `save_to_disk` folder or a Hub dataset name. A
    passage without id gets a stable hash id. Ids are unique: a repeated one raises `DPRDataError` naming both records (in DPR retriever JSON the same
    passage may recur under one id, but not another passage).
    """
    return load_records(
        source,
        split,
        kind="passages",
        required=("text",),
        features=PASSAGE_FEATURES,
        normalize_batch=_normalize_batch,
        readers={".tsv": _read_tsv, ".csv": _read_tsv, ".jsonl": _read_jsonl, ".json": _read_json},
        id_note="a passage without id gets a hash of its title and text",
    )


def _normalize_batch(batch: dict[str, list], indices: list[int], name: str) -> dict[str, list]:
    rows = [
        normalize_passage(
            {column: values[row] for column, values in batch.items()}, Where(name, index + 1), "row"
        )
        for row, index in enumerate(indices)
    ]
    return {column: [row[column] for row in rows] for column in PASSAGE_FEATURES}


def _read_tsv(path: str, report: list[str]) -> Iterator[tuple[int, dict]]:
    rows = iter_delimited(path)
    header = next(rows, None)
    if header is None:
        raise DPRDataError("empty passage file (expected an 'id', 'text', 'title' header row)", path, 1)
    _, columns = header
    positions = {name.strip().lower(): i for i, name in enumerate(columns)}
    if "id" not in positions and "_id" in positions:  # BEIR's corpus column name
        positions["id"] = positions["_id"]
    for required in ("id", "text"):
        if required not in positions:
            raise DPRDataError(
                f"header row {repr(columns)[:200]} lacks the {required!r} column", path, 1, required
            )
    title_at = positions.get("title")
    for number, fields in rows:
        if not fields:
            continue
        if len(fields) != len(columns):
            raise DPRDataError(
                f"expected {len(columns)} fields like the header, got {len(fields)}", path, number
            )
        title = fields[title_at] if title_at is not None else ""
        yield number, {"id": fields[positions["id"]], "title": title, "text": fields[positions["text"]]}


def _read_jsonl(path: str, report: list[str]) -> Iterator[tuple[int, dict]]:
    for number, record in iter_jsonl(path):
        yield number, normalize_passage(record, Where(path, number), "passage")


def _read_json(path: str, report: list[str]) -> Iterator[tuple[int | str, dict]]:
    document = read_json(path)
    if is_squad(document):
        for paragraph in iter_squad(document, Path(path)):
            yield paragraph.record, paragraph.passage
        return
    if not isinstance(document, list):
        raise DPRDataError(
            f"expected a list of DPR records or a SQuAD object with 'data', got {type(document).__name__}",
            path,
        )
    # id -> (record, field, hash of title and text) where the id was first seen
    seen: dict[str, tuple[int, str, int]] = {}
    for number, record in enumerate(document, start=1):
        where = Where(path, number)
        record = require_mapping(record, where)
        for field in CTX_FIELDS:
            ctxs = record.get(field) or []
            if not isinstance(ctxs, list):
                raise where.error(f"expected a list of passages, got {type(ctxs).__name__}", field)
            for i, ctx in enumerate(ctxs):
                passage = normalize_passage(ctx, where, f"{field}[{i}]")
                content = hash((passage["title"], passage["text"]))
                known = seen.get(passage["id"])
                if known is None:
                    seen[passage["id"]] = (number, f"{field}[{i}]", content)
                    yield number, passage
                elif known[2] != content:
                    key = next(key for key in ("id", "passage_id", "_id") if ctx.get(key) is not None)
                    raise where.error(
                        f"passage id {passage['id'][:80]!r} is already the id of another passage (record"
                        f" {known[0]}, {known[1]}): same id, different title or text",
                        f"{field}[{i}].{key}",
                    )


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

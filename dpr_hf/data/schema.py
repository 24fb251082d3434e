"""The canonical schema every loader produces, and the validation that turns raw records into it.

A passage is `{"id": str, "title": str, "text": str}` everywhere. Validation is done in Python before Arrow sees
a record, so a wrong type is reported as a `DPRDataError` naming the field, not as a pyarrow cast error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from datasets import Features, List, Value

from ..models.errors import DPRDataError

PASSAGE = {"id": Value("string"), "title": Value("string"), "text": Value("string")}
PASSAGE_FEATURES = Features(PASSAGE)
RETRIEVER_FEATURES = Features(
    {
        "question": Value("string"),
        "answers": List(Value("string")),
        "positive_ctxs": List(PASSAGE),
        "negative_ctxs": List(PASSAGE),
        "hard_negative_ctxs": List(PASSAGE),
    }
)
QUESTION_FEATURES = Features(
    {
        "id": Value("string"),
        "question": Value("string"),
        "answers": List(Value("string")),
        "gold_passage_id": Value("string"),
    }
)
CTX_FIELDS = ("positive_ctxs", "negative_ctxs", "hard_negative_ctxs")


def passage_id(title: str, text: str) -> str:
    """A stable id for a passage that has none: the same title and text always give the same id."""
    return "sha1-" + hashlib.sha1(f"{title}\x1f{text}".encode()).hexdigest()[:20]


class Where:
    """Where a record came from, so every error raised while validating it names file, record and field."""

    def __init__(self, path: Any, record: int | str | None):
        self.path, self.record = path, record

    def error(self, message: str, field: str | None = None) -> DPRDataError:
        return DPRDataError(message, self.path, self.record, field)


def require_mapping(value: Any, where: Where, field: str | None = None) -> Mapping:
    if not isinstance(value, Mapping):
        raise where.error(f"expected a JSON object, got {type(value).__name__}", field)
    return value


def get_string(
    record: Mapping, key: str, where: Where, field: str | None = None, *, required=True, non_empty=False
) -> str:
    """`record[key]` as a string: missing/None is "" when optional; numbers are not silently accepted."""
    field = field or key
    value = record.get(key)
    if value is None:
        if required:
            raise where.error("missing required field", field)
        return ""
    if not isinstance(value, str):
        raise where.error(f"expected a string, got {type(value).__name__}", field)
    if non_empty and not value.strip():
        raise where.error("must not be empty", field)
    return value


def get_id(record: Mapping, keys: tuple[str, ...], where: Where, field_prefix: str = "") -> str | None:
    """The first present id among `keys` as a string (DPR writes some ids as integers)."""
    for key in keys:
        value = record.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise where.error(
                f"expected a string or integer id, got {type(value).__name__}", field_prefix + key
            )
        return str(value)
    return None


def get_answers(record: Mapping, where: Where, key: str = "answers") -> list[str]:
    """A list of answer strings; absent means no known answer (retriever pairs without answers exist)."""
    value = record.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise where.error(f"expected a list of strings, got {type(value).__name__}", key)
    for position, answer in enumerate(value):
        if not isinstance(answer, str):
            raise where.error(f"expected a string, got {type(answer).__name__}", f"{key}[{position}]")
    return list(value)


def normalize_passage(ctx: Any, where: Where, field: str) -> dict[str, str]:
    """A DPR ctx (`passage_id` or `id`, optional `title`, `text`) or a BEIR corpus record (`_id`, `title`,
    `text`) as a canonical passage dict."""
    ctx = require_mapping(ctx, where, field)
    text = get_string(ctx, "text", where, f"{field}.text")
    title = get_string(ctx, "title", where, f"{field}.title", required=False)
    identifier = get_id(ctx, ("id", "passage_id", "_id"), where, f"{field}.")
    return {
        "id": identifier if identifier is not None else passage_id(title, text),
        "title": title,
        "text": text,
    }


def normalize_passages(value: Any, where: Where, field: str, *, required: bool) -> list[dict[str, str]]:
    if value is None:
        if required:
            raise where.error("missing required field", field)
        return []
    if not isinstance(value, list):
        raise where.error(f"expected a list of passages, got {type(value).__name__}", field)
    return [normalize_passage(ctx, where, f"{field}[{i}]") for i, ctx in enumerate(value)]


def normalize_retriever_record(record: Any, where: Where) -> dict[str, Any] | None:
    """A DPR retriever-training record in canonical form, or None when it has no positive (DPR drops those)."""
    record = require_mapping(record, where)
    example = {
        "question": get_string(record, "question", where, non_empty=True),
        "answers": get_answers(record, where),
    }
    for field in CTX_FIELDS:
        example[field] = normalize_passages(
            record.get(field), where, field, required=field == "positive_ctxs"
        )
    return example if example["positive_ctxs"] else None

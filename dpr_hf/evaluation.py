"""Answer matching and metrics: DPR's `has_answer` for retrieval, SQuAD exact match / F1 for the reader."""

from __future__ import annotations

import collections
import re
import string
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

import regex

# DrQA's SimpleTokenizer: runs of letters/digits/marks, or any other single non-space, non-control character.
_SIMPLE_TOKEN = regex.compile(
    r"([\p{L}\p{N}\p{M}]+)|([^\p{Z}\p{C}])", flags=regex.IGNORECASE | regex.UNICODE | regex.MULTILINE
)


def _normalize_unicode(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def simple_tokenize(text: str) -> list[str]:
    """Lower-cased DrQA simple tokens of the NFD-normalised text."""
    return [match.group().lower() for match in _SIMPLE_TOKEN.finditer(_normalize_unicode(text))]


@lru_cache(maxsize=4096)
def _answer_tokens(answer: str) -> tuple[str, ...]:
    return tuple(simple_tokenize(answer))


@lru_cache(maxsize=1024)
def _answer_pattern(answer: str) -> re.Pattern:
    return re.compile(answer, flags=re.IGNORECASE | re.UNICODE | re.MULTILINE)


def has_answer(answers: Sequence[str], text: str, mode: str = "string") -> bool:
    """DPR's `has_answer`: does any answer occur in the passage text?

    mode "string": the answer's token sequence occurs in the text's (tokenised, lower-cased, NFD-normalised).
    mode "regex": each answer is a pattern searched in the NFD-normalised text (CuratedTREC-style answers).
    """
    if mode == "regex":
        normalized = _normalize_unicode(text)
        return any(_answer_pattern(answer).search(normalized) is not None for answer in answers)
    if mode != "string":
        raise ValueError(f"has_answer mode must be 'string' or 'regex', got {mode!r}")
    tokens = simple_tokenize(text)
    for answer in answers:
        needle = _answer_tokens(answer)
        if not needle:
            continue
        width = len(needle)
        if any(tuple(tokens[i : i + width]) == needle for i in range(len(tokens) - width + 1)):
            return True
    return False


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, ground_truths: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised ground truth (SQuAD EM)."""
    normalized = normalize_answer(prediction)
    return float(any(normalized == normalize_answer(truth) for truth in ground_truths))


def _f1(prediction: str, truth: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = collections.Counter(predicted) & collections.Counter(expected)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(expected)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, ground_truths: Sequence[str]) -> float:
    """Best token-level F1 of the prediction against any ground truth (SQuAD F1)."""
    return max((_f1(prediction, truth) for truth in ground_truths), default=0.0)

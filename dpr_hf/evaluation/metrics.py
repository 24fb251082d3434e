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


# ------------------------------------------------------------------------------------------- retrieval metrics
def _contains_tokens(tokens: list[str], needle: tuple[str, ...]) -> bool:
    width, first = len(needle), needle[0]
    return any(token == first and tuple(tokens[i : i + width]) == needle for i, token in enumerate(tokens))


def answer_hits(
    retrieved: Sequence[Sequence[dict]], answers: Sequence[Sequence[str]], mode: str = "string"
) -> list[list[bool]]:
    """`has_answer` of every retrieved passage (its "text"), per question: the input of `top_k_accuracy`.

    Same result as calling `has_answer` on each, but each distinct passage is tokenised once (100 passages for
    each of thousands of questions come from a much smaller set).
    """
    if mode != "string":
        return [
            [has_answer(question_answers, passage["text"], mode) for passage in passages]
            for passages, question_answers in zip(retrieved, answers, strict=True)
        ]
    tokens_of: dict[str, list[str]] = {}
    hits = []
    for passages, question_answers in zip(retrieved, answers, strict=True):
        needles = [needle for needle in map(_answer_tokens, question_answers) if needle]
        question_hits = []
        for passage in passages:
            tokens = tokens_of.get(passage["text"])
            if tokens is None:
                tokens = tokens_of[passage["text"]] = simple_tokenize(passage["text"])
            question_hits.append(any(_contains_tokens(tokens, needle) for needle in needles))
        hits.append(question_hits)
    return hits


def top_k_curve(hits: Sequence[Sequence[bool]], max_k: int) -> list[float]:
    """Top-k accuracy in percent for k = 1..max_k: share of questions with an answer in their first k passages."""
    if not hits:
        return [0.0] * max_k
    answered_at = [0] * (max_k + 1)  # questions whose first hit is at rank k (1-based)
    for question_hits in hits:
        first = next((rank for rank, hit in enumerate(question_hits[:max_k], start=1) if hit), None)
        if first is not None:
            answered_at[first] += 1
    curve, answered = [], 0
    for k in range(1, max_k + 1):
        answered += answered_at[k]
        curve.append(100.0 * answered / len(hits))
    return curve


def top_k_accuracy(hits: Sequence[Sequence[bool]], ks: Sequence[int] = (1, 5, 20, 100)) -> dict[str, float]:
    """DPR's retrieval metric, in percent: `{"top_k": share of questions answered in the top k}` for each k."""
    curve = top_k_curve(hits, max(ks))
    return {f"top_{k}": curve[k - 1] for k in ks}


def gold_recall(
    retrieved_ids: Sequence[Sequence[str]], gold_ids: Sequence[str], ks: Sequence[int] = (1, 5, 20, 100)
) -> dict[str, float]:
    """Percent of questions whose gold passage is in the top k, over the questions that have one ("" = none).

    Stricter than top-k accuracy: short answers (years, numbers) occur in many passages besides the gold one.
    """
    pairs = [(ids, gold) for ids, gold in zip(retrieved_ids, gold_ids, strict=True) if gold]
    if not pairs:
        return {}
    ranks = [list(ids).index(gold) + 1 if gold in ids else None for ids, gold in pairs]
    return {
        f"gold_recall_{k}": 100.0 * sum(rank is not None and rank <= k for rank in ranks) / len(pairs)
        for k in ks
    }

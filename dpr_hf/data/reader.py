"""Reader data: questions with ranked passages -> tokenised (positive, negatives) examples with answer spans.

The canonical reader dataset is DPR's retrieval-results format, one row per question: `id`, `question`,
`answers`, `ctxs` (passages `{"id", "title", "text", "score", "has_answer"}` in retrieval order). Training
takes the passages that contain an answer as positives (at most 20, as DPR) and the others as negatives; every
occurrence of an answer in a positive is located on the tokens through the fast tokenizer's character offsets
(answers are never re-tokenised, so "1" cannot match inside "1990"). Questions, passages and answers that
cannot be used are counted and reported, never dropped silently.

Over ~400 lines on purpose: loading, span location and collation of the one reader-data format.
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from datasets import Features, List, Value
from transformers import PreTrainedTokenizerBase

from ..evaluation.metrics import has_answer
from ..models.errors import DPRDataError
from ..models.tokenization import READER_MAX_LENGTH, encode_reader_inputs
from ._io import base_suffix, build_dataset, file_fingerprint, read_json, resolve_source
from .collators import seeded_rng
from .schema import Where, get_answers, get_id, get_string, normalize_passage, require_mapping
from .squad import is_squad, iter_answerable, iter_squad

logger = logging.getLogger(__name__)

CTX = {
    "id": Value("string"),
    "title": Value("string"),
    "text": Value("string"),
    "score": Value("float32"),
    "has_answer": Value("bool"),
}
READER_FEATURES = Features(
    {"id": Value("string"), "question": Value("string"), "answers": List(Value("string")), "ctxs": List(CTX)}
)
TOKENIZED_FEATURES = Features(
    {
        "question": Value("string"),
        "answers": List(Value("string")),
        "positive_input_ids": List(List(Value("int32"))),
        "positive_span_mask": List(List(Value("int8"))),
        "positive_starts": List(List(Value("int32"))),
        "positive_ends": List(List(Value("int32"))),
        # negatives stay text: the collator tokenises the few it draws (a question has up to `max_negatives`)
        "negative_titles": List(Value("string")),
        "negative_texts": List(Value("string")),
        "num_positives": Value("int32"),
        "num_unlocated": Value("int32"),
    }
)


def load_reader_data(
    source: str | os.PathLike | datasets.Dataset,
    retrieval_results: str | os.PathLike | None = None,
    num_retrieved: int = 50,
    gold_positive: bool = True,
) -> datasets.Dataset:
    """Load reader data as rows `{id, question, answers, ctxs}` (ctxs in retrieval order).

    Sources:
    - DPR retrieval-results JSON (`dpr-hf evaluate-retrieval`'s `results.json`: a list of `{question, answers,
      ctxs: [{id, title, text, score, has_answer}]}`); a missing `has_answer` is computed with DPR's
      `has_answer` on the passage text.
    - SQuAD JSON (plain or .gz), so a reader can be fine-tuned on one's own SQuAD-style data. Passages are the
      top `num_retrieved` of `retrieval_results` (matched by question id, else question text) or, without it,
      of BM25 over the file's paragraphs. With `gold_positive` (training) the gold paragraph is the only
      positive, put first, and retrieved passages containing an answer are left out (neither clearly right nor
      wrong); without it (evaluation) the retrieved passages are kept in order, `has_answer` by string match.
      Unanswerable (v2.0) questions are skipped with a warning.
    - A `Dataset` (or `save_to_disk` folder) with those columns.

    Malformed records raise `DPRDataError` naming the file, record and field.
    """
    resolved = resolve_source(source)
    if not isinstance(resolved, Path):
        dataset, name = resolved
        return build_dataset(
            _generate_rows, READER_FEATURES, f"reader-{dataset._fingerprint}", records=dataset, path=name
        )
    if base_suffix(resolved) != ".json":
        raise DPRDataError("reader data must be DPR retrieval-results JSON or SQuAD JSON", resolved)
    options = {"results": retrieval_results, "num_retrieved": num_retrieved, "gold_positive": gold_positive}
    if retrieval_results is not None:
        options["results_fingerprint"] = file_fingerprint("reader-results", retrieval_results)
    return build_dataset(
        _generate_from_file,
        READER_FEATURES,
        file_fingerprint("reader-json", resolved, **options),
        path=str(resolved),
        retrieval_results=None if retrieval_results is None else str(retrieval_results),
        num_retrieved=num_retrieved,
        gold_positive=gold_positive,
    )


def _normalize_ctx(ctx: Any, answers: list[str], where: Where, field: str) -> dict:
    passage = normalize_passage(ctx, where, field)
    score = ctx.get("score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float, str))):
        raise where.error(f"expected a number, got {type(score).__name__}", f"{field}.score")
    try:
        score = None if score is None else float(score)
    except ValueError:
        raise where.error(f"expected a number, got {score!r}", f"{field}.score") from None
    found = ctx.get("has_answer")
    if found is not None and not isinstance(found, bool):
        raise where.error(f"expected true or false, got {type(found).__name__}", f"{field}.has_answer")
    if found is None:
        found = has_answer(answers, passage["text"])
    return {**passage, "score": score, "has_answer": found}


def normalize_reader_record(record: Any, where: Where) -> dict:
    """One retrieval-results record in canonical form (raises `DPRDataError` naming the bad field)."""
    record = require_mapping(record, where)
    answers = get_answers(record, where)
    ctxs = record.get("ctxs")
    if not isinstance(ctxs, list):
        message = "missing required field" if ctxs is None else f"expected a list, got {type(ctxs).__name__}"
        raise where.error(message, "ctxs")
    return {
        "id": get_id(record, ("id", "qid"), where) or "",
        "question": get_string(record, "question", where, non_empty=True),
        "answers": answers,
        "ctxs": [_normalize_ctx(ctx, answers, where, f"ctxs[{i}]") for i, ctx in enumerate(ctxs)],
    }


def _generate_rows(records: Any, path: str) -> Iterator[dict]:
    for number, record in enumerate(records, start=1):
        yield normalize_reader_record(record, Where(path, number))


def _generate_from_file(
    path: str, retrieval_results: str | None, num_retrieved: int, gold_positive: bool, report: list[str]
) -> Iterator[dict]:
    document = read_json(path)
    if is_squad(document):
        yield from _generate_squad(document, path, retrieval_results, num_retrieved, gold_positive, report)
    elif isinstance(document, list):
        yield from _generate_rows(document, path)
    else:
        raise DPRDataError(
            f"expected a list of retrieval results or a SQuAD object with 'data', got {type(document).__name__}",
            path,
        )


def _generate_squad(
    document: Any,
    path: str,
    retrieval_results: str | None,
    num_retrieved: int,
    gold_positive: bool,
    report: list[str],
) -> Iterator[dict]:
    paragraphs = list(iter_squad(document, Path(path)))
    questions = [
        (paragraph.passage, question) for paragraph, question in iter_answerable(paragraphs, path, report)
    ]
    # Retrieve a few more than needed: gold_positive leaves out the gold and answer-bearing passages.
    depth = num_retrieved + 10 if gold_positive else num_retrieved
    if retrieval_results is None:
        retrieved = _bm25_passages(
            [paragraph.passage for paragraph in paragraphs], [q.question for _, q in questions], depth
        )
    else:
        retrieved = _results_passages(retrieval_results, [q for _, q in questions])
    for (gold, question), ctxs in zip(questions, retrieved, strict=True):
        if gold_positive:
            negatives = [
                {**ctx, "has_answer": False}
                for ctx in ctxs
                if ctx["id"] != gold["id"] and not has_answer(question.answers, ctx["text"])
            ]
            ctxs = [{**gold, "score": None, "has_answer": True}] + negatives[:num_retrieved]
        else:
            ctxs = [
                {**ctx, "has_answer": has_answer(question.answers, ctx["text"])}
                for ctx in ctxs[:num_retrieved]
            ]
        yield {"id": question.id, "question": question.question, "answers": question.answers, "ctxs": ctxs}


def _bm25_passages(corpus: list[dict], questions: list[str], k: int) -> list[list[dict]]:
    from ..retrieval.bm25 import BM25Retriever

    retriever = BM25Retriever.from_passages(datasets.Dataset.from_list(corpus))
    return [
        [{**hit, "score": float(hit["score"])} for hit in hits] for hits in retriever.search(questions, k)
    ]


def _results_passages(path: str, questions: Sequence[Any]) -> list[list[dict]]:
    """Retrieved passages per SQuAD question from a results JSON, by question id or else by question text."""
    document = read_json(path)
    if not isinstance(document, list):
        raise DPRDataError(f"expected a list of retrieval results, got {type(document).__name__}", path)
    by_id, by_text = {}, {}
    for number, record in enumerate(document, start=1):
        row = normalize_reader_record(record, Where(path, number))
        if row["id"]:
            by_id[row["id"]] = row["ctxs"]
        by_text[row["question"]] = row["ctxs"]
    found = []
    for question in questions:
        ctxs = by_id.get(question.id, by_text.get(question.question))
        if ctxs is None:
            raise DPRDataError(
                f"no retrieval results for question {question.id!r} ({question.question!r})", path
            )
        found.append([{key: value for key, value in ctx.items() if key != "has_answer"} for ctx in ctxs])
    return found


def locate_answer_spans(
    text: str,
    answers: Sequence[str],
    text_offsets: Sequence[tuple[int, int]],
    span_mask: Sequence[int],
    max_n_answers: int = 10,
) -> list[tuple[int, int]]:
    """Token spans `(start, end)` (inclusive) of every answer occurrence in the tokenised passage text.

    Occurrences are found case-insensitively in the text and kept when they begin and end on token boundaries
    inside the (possibly truncated) passage tokens; at most `max_n_answers`, in answer then text order.
    """
    starts, ends = {}, {}
    for index, ((start, end), allowed) in enumerate(zip(text_offsets, span_mask, strict=True)):
        if allowed:
            starts.setdefault(start, index)
            ends[end] = index
    spans: list[tuple[int, int]] = []
    for answer in answers:
        answer = answer.strip()
        if not answer:
            continue
        for match in re.finditer(re.escape(answer), text, flags=re.IGNORECASE):
            span = (starts.get(match.start()), ends.get(match.end()))
            if None not in span and span not in spans:
                spans.append(span)
                if len(spans) == max_n_answers:
                    return spans
    return spans


@dataclass
class ReaderDataStats:
    """What happened to the questions and positives while building reader training examples."""

    questions: int = 0
    kept: int = 0
    without_positive: int = 0  # no passage contains an answer: nothing to learn a span from
    unlocated_positives: int = 0  # positives whose answer is in no window read, or not on token boundaries
    unlocated_questions: int = 0  # questions whose positives were all unlocated

    def report(self, name: str) -> None:
        skipped = self.without_positive + self.unlocated_questions
        if skipped or self.unlocated_positives:
            logger.warning(
                "%s: kept %d of %d questions; skipped %d without a positive passage and %d whose answers could "
                "not be located in any positive (%d positives had no locatable answer span)",
                name,
                self.kept,
                self.questions,
                self.without_positive,
                self.unlocated_questions,
                self.unlocated_positives,
            )

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _tokenize_batch(
    batch: dict[str, list],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    max_n_answers: int,
    max_positives: int,
    max_negatives: int,
    stride: int,
) -> dict[str, list]:
    pairs = []  # (row, positive ctx): only positives are tokenised here, to locate their answer spans
    out = {
        column: [[] for _ in batch["question"]]
        for column in TOKENIZED_FEATURES
        if column.startswith(("positive", "negative"))
    }
    for row, ctxs in enumerate(batch["ctxs"]):
        pairs += [(row, ctx) for ctx in ctxs if ctx["has_answer"]][:max_positives]
        negatives = [ctx for ctx in ctxs if not ctx["has_answer"]][:max_negatives]
        out["negative_titles"][row] = [ctx["title"] or "" for ctx in negatives]
        out["negative_texts"][row] = [ctx["text"] for ctx in negatives]
    encoded = encode_reader_inputs(
        tokenizer,
        [batch["question"][row] for row, _ in pairs],
        [ctx["title"] for _, ctx in pairs],
        [ctx["text"] for _, ctx in pairs],
        max_length=max_length,
        stride=stride,
    )
    windows_of: list[list[int]] = [[] for _ in pairs]
    for window, pair in enumerate(encoded.get("overflow_to_sample_mapping", range(len(pairs)))):
        windows_of[pair].append(window)
    out["num_positives"] = [0] * len(batch["question"])
    out["num_unlocated"] = [0] * len(batch["question"])
    for index, (row, ctx) in enumerate(pairs):
        out["num_positives"][row] += 1
        for window in windows_of[index]:  # the first window that holds an answer
            input_ids, span_mask = encoded["input_ids"][window], encoded["span_mask"][window]
            spans = locate_answer_spans(
                ctx["text"], batch["answers"][row], encoded["text_offsets"][window], span_mask, max_n_answers
            )
            if spans:
                break
        else:
            out["num_unlocated"][row] += 1
            continue
        out["positive_input_ids"][row].append(input_ids)
        out["positive_span_mask"][row].append(span_mask)
        out["positive_starts"][row].append([start for start, _ in spans])
        out["positive_ends"][row].append([end for _, end in spans])
    return {"question": batch["question"], "answers": batch["answers"], **out}


def tokenize_reader_data(
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int = READER_MAX_LENGTH,
    max_n_answers: int = 10,
    max_positives: int = 20,
    max_negatives: int = 50,
    num_proc: int | None = None,
    stride: int | None = None,
) -> tuple[datasets.Dataset, ReaderDataStats]:
    """Tokenise reader data for training: per question, located positives and negatives.

    A positive longer than `max_length` is read in windows overlapping by `stride` tokens (default a quarter of
    `max_length`; 0: cut at `max_length`) and kept as the first window that holds an answer, so an answer past
    the cut is still learned from. Negatives are tokenised later, by the collator, cut at `max_length`.
    Returns the questions that have at least one positive with a located answer span, and the counts of what
    was left out (also logged as a warning).
    """
    tokenized = dataset.map(
        _tokenize_batch,
        batched=True,
        batch_size=64,
        num_proc=num_proc,
        remove_columns=dataset.column_names,
        features=TOKENIZED_FEATURES,
        fn_kwargs={
            "tokenizer": tokenizer,
            "max_length": max_length,
            "max_n_answers": max_n_answers,
            "max_positives": max_positives,
            "max_negatives": max_negatives,
            "stride": max_length // 4 if stride is None else stride,
        },
        desc="Tokenising reader data",
    )
    counts = tokenized.select_columns(["num_positives", "num_unlocated"]).to_dict()
    stats = ReaderDataStats(questions=len(tokenized))
    for positives, unlocated in zip(counts["num_positives"], counts["num_unlocated"], strict=True):
        stats.unlocated_positives += unlocated
        if positives == 0:
            stats.without_positive += 1
        elif unlocated == positives:
            stats.unlocated_questions += 1
    usable = [
        row
        for row, (p, u) in enumerate(zip(counts["num_positives"], counts["num_unlocated"], strict=True))
        if p > u
    ]
    stats.kept = len(usable)
    stats.report(getattr(dataset, "_fingerprint", "reader data"))
    return tokenized.select(usable), stats


@dataclass
class ReaderCollator:
    """Batches tokenised questions as `(questions, passages, seq_len)` tensors with the positive at index 0.

    With `shuffle` (training) the positive is drawn at random among a question's positives and the negatives
    are a random subset, as DPR does, from a generator seeded by (seed, epoch, question): batches do not depend
    on global random state, so a resumed run sees the same ones. Without `shuffle` the first ones are taken.
    Questions with fewer passages than `passages_per_question` get padding passages, masked by `passage_mask`.
    The drawn negatives are tokenised here, at `max_length` (the length the positives were tokenised at).
    """

    tokenizer: PreTrainedTokenizerBase
    passages_per_question: int = 24
    max_length: int = READER_MAX_LENGTH
    max_n_answers: int = 10
    shuffle: bool = True
    seed: int = 42
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw other positives and negatives every epoch."""
        self.epoch = epoch

    def _pick(self, rng: random.Random, count: int, size: int) -> list[int]:
        return rng.sample(range(count), min(count, size)) if self.shuffle else list(range(min(count, size)))

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        rows = []  # per question: list of (input_ids, span_mask), positive first
        spans = []
        drawn = []  # (row, question, title, text) of every drawn negative, tokenised in one call below
        for row, feature in enumerate(features):
            rng = seeded_rng(self.seed, self.epoch, feature["question"])
            positive = self._pick(rng, len(feature["positive_input_ids"]), 1)[0]
            negatives = self._pick(rng, len(feature["negative_texts"]), self.passages_per_question - 1)
            rows.append([(feature["positive_input_ids"][positive], feature["positive_span_mask"][positive])])
            drawn += [
                (row, feature["question"], feature["negative_titles"][i], feature["negative_texts"][i])
                for i in negatives
            ]
            starts, ends = feature["positive_starts"][positive], feature["positive_ends"][positive]
            spans.append((starts[: self.max_n_answers], ends[: self.max_n_answers]))
        if drawn:
            rows_of, questions, titles, texts = zip(*drawn, strict=True)
            encoded = encode_reader_inputs(
                self.tokenizer, questions, titles, texts, max_length=self.max_length
            )
            for row, ids, mask in zip(rows_of, encoded["input_ids"], encoded["span_mask"], strict=True):
                rows[row].append((ids, mask))
        n_questions, n_passages = len(rows), max(len(passages) for passages in rows)
        seq_len = max(len(ids) for passages in rows for ids, _ in passages)
        input_ids = torch.full(
            (n_questions, n_passages, seq_len), self.tokenizer.pad_token_id, dtype=torch.long
        )
        attention_mask = torch.zeros((n_questions, n_passages, seq_len), dtype=torch.long)
        span_mask = torch.zeros((n_questions, n_passages, seq_len), dtype=torch.long)
        passage_mask = torch.zeros((n_questions, n_passages), dtype=torch.long)
        # A padding passage is "[CLS] [SEP]": an all-masked row would make attention softmax NaN.
        input_ids[:, :, 0], input_ids[:, :, 1] = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        attention_mask[:, :, :2] = 1
        for q, passages in enumerate(rows):
            for p, (ids, mask) in enumerate(passages):
                input_ids[q, p, : len(ids)] = torch.tensor(ids)
                attention_mask[q, p, : len(ids)] = 1
                span_mask[q, p, : len(mask)] = torch.tensor(mask)
                passage_mask[q, p] = 1
        start_positions = torch.zeros((n_questions, self.max_n_answers), dtype=torch.long)
        end_positions = torch.zeros((n_questions, self.max_n_answers), dtype=torch.long)
        answer_mask = torch.zeros((n_questions, self.max_n_answers), dtype=torch.long)
        for q, (starts, ends) in enumerate(spans):
            start_positions[q, : len(starts)] = torch.tensor(starts, dtype=torch.long)
            end_positions[q, : len(ends)] = torch.tensor(ends, dtype=torch.long)
            answer_mask[q, : len(starts)] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "span_mask": span_mask,
            "passage_mask": passage_mask,
            "start_positions": start_positions,
            "end_positions": end_positions,
            "answer_mask": answer_mask,
        }

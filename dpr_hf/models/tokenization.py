"""Input formatting shared by training, encoding and serving, so every path tokenises the same way."""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Sequence
from operator import itemgetter

from transformers import BatchEncoding, PreTrainedTokenizerBase

from .configuration import DEFAULT_MAX_SEQ_LENGTHS, READER_MAX_SEQ_LENGTH

# Defaults where no model config is at hand; a model's `config.max_seq_length` overrides them.
QUESTION_MAX_LENGTH = DEFAULT_MAX_SEQ_LENGTHS["question"]
PASSAGE_MAX_LENGTH = DEFAULT_MAX_SEQ_LENGTHS["passage"]
READER_MAX_LENGTH = READER_MAX_SEQ_LENGTH
# tokenizer -> (len(tokenizer), fingerprint): hashing a 30K vocabulary takes tens of ms, too slow for every read.
_FINGERPRINTS: weakref.WeakKeyDictionary[PreTrainedTokenizerBase, tuple[int, str]] = (
    weakref.WeakKeyDictionary()
)


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Hash of the vocabulary (every token with its id, added tokens included), recorded in a model's config so
    that a tokenizer of the same size and padding id but other ids (another WordPiece vocabulary) is refused.
    Unchanged by save/load; recomputed when tokens are added."""
    size = len(tokenizer)
    cached = _FINGERPRINTS.get(tokenizer)
    if cached is None or cached[0] != size:
        vocab = sorted(tokenizer.get_vocab().items(), key=itemgetter(1))
        digest = hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()
        cached = _FINGERPRINTS[tokenizer] = (size, f"sha256:{digest}")
    return cached[1]


def format_questions(
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[str],
    max_length: int = QUESTION_MAX_LENGTH,
    padding: bool | str = True,
    return_tensors: str | None = "pt",
) -> BatchEncoding:
    """Tokenise questions for `QuestionEncoder` as `[CLS] question [SEP]`."""
    return tokenizer(
        list(questions),
        max_length=max_length,
        truncation=True,
        padding=padding,
        return_tensors=return_tensors,
    )


def format_passages(
    tokenizer: PreTrainedTokenizerBase,
    titles: Sequence[str | None] | None,
    texts: Sequence[str],
    max_length: int = PASSAGE_MAX_LENGTH,
    padding: bool | str = True,
    return_tensors: str | None = "pt",
) -> BatchEncoding:
    """Tokenise passages for `PassageEncoder` as `[CLS] title [SEP] text [SEP]`, or `[CLS] text [SEP]` untitled.

    Segment ids are all zero, as in the original DPR (transformers' DPR tokenizer sets the text to 1). The form is
    chosen per passage, as DPR did, so a passage encodes the same whatever else is in the batch.
    """
    texts = list(texts)
    titles = [t or "" for t in titles] if titles is not None else [""] * len(texts)
    if len(titles) != len(texts):
        raise ValueError(f"got {len(titles)} titles for {len(texts)} passage texts")
    titled = [i for i, title in enumerate(titles) if title]
    untitled = [i for i, title in enumerate(titles) if not title]
    features: list[dict] = [{} for _ in texts]
    for indices, pairs in (
        (titled, ([titles[i] for i in titled], [texts[i] for i in titled])),
        (untitled, ([texts[i] for i in untitled],)),
    ):
        if not indices:
            continue
        encoded = tokenizer(*pairs, max_length=max_length, truncation=True)
        for row, i in enumerate(indices):
            features[i] = {key: values[row] for key, values in encoded.items()}
            if "token_type_ids" in features[i]:
                features[i]["token_type_ids"] = [0] * len(features[i]["token_type_ids"])
    pad_to = max_length if padding == "max_length" else None
    return tokenizer.pad(features, padding=padding, max_length=pad_to, return_tensors=return_tensors)


def encode_reader_inputs(
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[str],
    titles: Sequence[str | None],
    texts: Sequence[str],
    max_length: int = READER_MAX_LENGTH,
    stride: int = 0,
) -> BatchEncoding:
    """Tokenise (question, passage) pairs for `ExtractiveReader`, without padding (lists, one row per pair).

    Besides `input_ids` and `attention_mask`, each row has `span_mask` (1 on passage-text tokens, the only
    tokens an answer may start or end on) and `text_offsets` (character offsets of each token in the passage
    text; (0, 0) elsewhere). Only the passage is truncated to `max_length`. `word_ids(i)` stays available.

    `stride` > 0 reads each passage in windows of `max_length` tokens that overlap by `stride` tokens (the
    tokenizer's overflowing tokens), so no part of a long passage is cut off: rows are then windows, and
    `overflow_to_sample_mapping` gives each window's pair. Windows after the first start inside the passage.
    """
    if not tokenizer.is_fast:
        raise ValueError(
            "the reader needs a fast tokenizer (offset mappings locate answers in the passage text)"
        )
    if not len(questions) == len(titles) == len(texts):
        raise ValueError(
            f"got {len(questions)} questions, {len(titles)} titles and {len(texts)} passage texts"
        )
    questions = _truncate_questions(tokenizer, questions, min(QUESTION_MAX_LENGTH, max_length // 2))
    # The second segment is "title [SEP] text": the tokenizer's own pair template adds [CLS]/[SEP] around it, and
    # the text starts at a known character position, which tells title tokens from text tokens.
    separator = f" {tokenizer.sep_token} "
    titles = [title or "" for title in titles]
    seconds = [f"{title}{separator}{text}" for title, text in zip(titles, texts, strict=True)]
    encoded = tokenizer(
        list(questions),
        seconds,
        max_length=max_length,
        truncation="only_second",
        return_offsets_mapping=True,
        return_token_type_ids=False,
        **({"stride": stride, "return_overflowing_tokens": True} if stride else {}),
    )
    pair_of = encoded.get("overflow_to_sample_mapping", range(len(seconds)))
    span_masks, text_offsets = [], []
    for row, (pair, offsets) in enumerate(zip(pair_of, encoded["offset_mapping"], strict=True)):
        text_start = len(titles[pair]) + len(separator)
        sequence_ids = encoded.sequence_ids(row)
        mask, row_offsets = [], []
        for sequence_id, (start, end) in zip(sequence_ids, offsets, strict=True):
            in_text = sequence_id == 1 and start >= text_start and end > start
            mask.append(int(in_text))
            row_offsets.append((start - text_start, end - text_start) if in_text else (0, 0))
        span_masks.append(mask)
        text_offsets.append(row_offsets)
    del encoded["offset_mapping"]
    encoded["span_mask"] = span_masks
    encoded["text_offsets"] = text_offsets
    return encoded


def _truncate_questions(
    tokenizer: PreTrainedTokenizerBase, questions: Sequence[str], max_tokens: int
) -> list[str]:
    """Cut each question after its first `max_tokens` tokens, as the question encoder reads no more either: a
    question longer than the reader's input would leave no room for the passage (the tokenizer then fails).
    Each distinct question is tokenised once: a question comes once per passage read."""
    distinct = list(dict.fromkeys(questions))
    offsets = tokenizer(
        distinct,
        add_special_tokens=False,
        truncation=True,
        max_length=max_tokens + 1,  # one more tells a question that was cut from one that just fits
        return_offsets_mapping=True,
    )["offset_mapping"]
    cut = {
        question: question if len(spans) <= max_tokens else question[: spans[max_tokens - 1][1]]
        for question, spans in zip(distinct, offsets, strict=True)
    }
    return [cut[question] for question in questions]

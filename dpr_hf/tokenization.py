"""Input formatting shared by training, encoding and serving, so every path tokenises the same way."""

from __future__ import annotations

from collections.abc import Sequence

from transformers import BatchEncoding, PreTrainedTokenizerBase

QUESTION_MAX_LENGTH = 64
PASSAGE_MAX_LENGTH = 256


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
    """Tokenise passages for `PassageEncoder` as `[CLS] title [SEP] text [SEP]`.

    Segment ids are all zero, as in the original DPR (transformers' DPR tokenizer sets the text to 1). When no
    passage has a title, the input is `[CLS] text [SEP]`.
    """
    texts = list(texts)
    titles = [t or "" for t in titles] if titles is not None else [""] * len(texts)
    if len(titles) != len(texts):
        raise ValueError(f"got {len(titles)} titles for {len(texts)} passage texts")
    pairs = (titles, texts) if any(titles) else (texts,)
    encoded = tokenizer(
        *pairs, max_length=max_length, truncation=True, padding=padding, return_tensors=return_tensors
    )
    if "token_type_ids" in encoded:
        token_types = encoded["token_type_ids"]
        encoded["token_type_ids"] = token_types * 0 if return_tensors else [[0] * len(t) for t in token_types]
    return encoded

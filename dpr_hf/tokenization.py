"""Input formatting shared by training, encoding and serving, so every path tokenises the same way."""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Sequence
from operator import itemgetter

from transformers import BatchEncoding, PreTrainedTokenizerBase

QUESTION_MAX_LENGTH = 64
PASSAGE_MAX_LENGTH = 256
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

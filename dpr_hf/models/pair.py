"""The folder layout of a question/passage encoder pair."""

from __future__ import annotations

import os
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging

from .modeling import PassageEncoder, QuestionEncoder

logger = logging.get_logger(__name__)


def partner_passage_encoder_dir(question_encoder: PreTrainedModel) -> Path | None:
    """The `passage_encoder/` next to a question encoder loaded from a pair or system folder."""
    path = Path(str(getattr(question_encoder, "name_or_path", "") or ""))
    partner = path.parent / "passage_encoder"
    return partner if path.name == "question_encoder" and partner.is_dir() else None


def encoder_dir(path: str | os.PathLike, role: str) -> Path:
    """The `<role>_encoder/` folder of a pair or system folder, or `path` itself when it is an encoder folder."""
    path = Path(path)
    if (path / f"{role}_encoder" / "config.json").exists():
        return path / f"{role}_encoder"
    if (path / "config.json").exists():
        return path
    raise FileNotFoundError(
        f"{path} holds no {role} encoder (neither {role}_encoder/config.json nor config.json)"
    )


# ------------------------------------------------------------------------------ a pair folder, whole (training)
def is_encoder_pair(path: str | os.PathLike) -> bool:
    """Whether `path` is a local pair (or system) folder: `question_encoder/` and `passage_encoder/` models."""
    return all((Path(path) / f"{role}_encoder" / "config.json").is_file() for role in ("question", "passage"))


def load_encoder_pair(
    path: str | os.PathLike, **kwargs
) -> tuple[QuestionEncoder, PassageEncoder, PreTrainedTokenizerBase]:
    """The question encoder, passage encoder and tokenizer of a pair folder; `kwargs` go to `from_pretrained`."""
    path = Path(path)
    if not is_encoder_pair(path):
        raise FileNotFoundError(
            f"{path} is not an encoder pair folder (question_encoder/ and passage_encoder/)"
        )
    return (
        QuestionEncoder.from_pretrained(path / "question_encoder", **kwargs),
        PassageEncoder.from_pretrained(path / "passage_encoder", **kwargs),
        AutoTokenizer.from_pretrained(path / "question_encoder"),
    )


def save_encoder_pair(
    question_encoder: PreTrainedModel,
    passage_encoder: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    path: str | os.PathLike,
) -> None:
    """Write a pair folder (each tower with the shared tokenizer), the layout `load_encoder_pair` reads."""
    for name, model in (("question_encoder", question_encoder), ("passage_encoder", passage_encoder)):
        model.save_pretrained(Path(path) / name)
        tokenizer.save_pretrained(Path(path) / name)

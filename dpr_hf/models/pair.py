"""The folder layout of a question/passage encoder pair."""

from __future__ import annotations

import os
from pathlib import Path

from transformers import PreTrainedModel
from transformers.utils import logging

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

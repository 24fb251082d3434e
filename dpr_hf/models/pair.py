"""The question/passage encoder pair and its folder layout: the one place that knows where a pair keeps its towers.

A pair folder holds `question_encoder/` and `passage_encoder/` (each a model folder with its tokenizer), as
`train-retriever` writes it. A QA system folder keeps its towers in the sub-folders its `config.json` names
(`question_encoder`, `passage_encoder`, by default the pair's own names); a single encoder folder is one role.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ..atomic import staged_folder
from .modeling import PassageEncoder, QuestionEncoder

ROLES = ("question", "passage")
ENCODER_DIRS = {"question": "question_encoder", "passage": "passage_encoder"}
_ENCODER_CLASSES = {"question": QuestionEncoder, "passage": PassageEncoder}
_SYSTEM_MODEL_TYPE = "dpr_hf_qa_system"  # QASystemConfig.model_type; models/ does not import the pipelines
_ROLE_MODEL_TYPES = {"dpr_hf_question_encoder": "question", "dpr_hf_passage_encoder": "passage"}


def _config(path: Path) -> dict[str, Any]:
    file = path / "config.json"
    return json.loads(file.read_text()) if file.is_file() else {}


@dataclass
class EncoderPair:
    """E_Q and E_P with their tokenizers; either tower may be absent (a serving system without `passage_encoder/`,
    or an encoder folder of one role)."""

    question_encoder: QuestionEncoder | None = None
    passage_encoder: PassageEncoder | None = None
    question_tokenizer: PreTrainedTokenizerBase | None = None
    passage_tokenizer: PreTrainedTokenizerBase | None = None

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase | None:
        """The question tokenizer (a trained pair shares one), else the passage tokenizer."""
        return self.question_tokenizer or self.passage_tokenizer

    @staticmethod
    def encoder_dir(path: str | os.PathLike, role: str) -> Path:
        """The folder of the `role` encoder in a pair folder, a system folder or an encoder folder of that role."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        path = Path(path)
        config = _config(path)
        if config.get("model_type") == _SYSTEM_MODEL_TYPE:
            subfolder = config.get(ENCODER_DIRS[role])
            if not subfolder or not (path / subfolder / "config.json").is_file():
                raise FileNotFoundError(f"the QA system at {path} holds no {role} encoder ({subfolder!r})")
            return path / subfolder
        if (path / ENCODER_DIRS[role] / "config.json").is_file():
            return path / ENCODER_DIRS[role]
        if config:
            found = _ROLE_MODEL_TYPES.get(config.get("model_type"))
            if found is not None and found != role:
                raise FileNotFoundError(f"{path} is a {found} encoder, not a {role} encoder")
            return path
        raise FileNotFoundError(
            f"{path} holds no {role} encoder (neither {ENCODER_DIRS[role]}/config.json nor config.json)"
        )

    @classmethod
    def roles_in(cls, path: str | os.PathLike) -> list[str]:
        """The roles whose encoder a folder holds (`encoder_dir` finds them)."""
        found = []
        for role in ROLES:
            try:
                cls.encoder_dir(path, role)
            except FileNotFoundError:
                continue
            found.append(role)
        return found

    @staticmethod
    def partner_dir(question_encoder: PreTrainedModel) -> Path | None:
        """The passage encoder folder beside a question encoder loaded from a pair or system folder, if any."""
        path = Path(str(getattr(question_encoder, "name_or_path", "") or ""))
        partner = path.parent / ENCODER_DIRS["passage"]
        return partner if path.name == ENCODER_DIRS["question"] and partner.is_dir() else None

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, roles: Sequence[str] | None = None, **model_kwargs: Any
    ) -> EncoderPair:
        """Load the `roles` towers (default: every tower the folder holds) from a pair, system or encoder folder.

        `model_kwargs` (`dtype`, `device_map`, ...) go to each model's `from_pretrained`.
        """
        if roles is None:
            roles = cls.roles_in(path)
            if not roles:
                cls.encoder_dir(path, ROLES[0])  # raises the error that says what is missing
        pair = cls()
        for role in roles:
            folder = cls.encoder_dir(path, role)
            model = _ENCODER_CLASSES[role].from_pretrained(folder, **model_kwargs).eval()
            # With the model's config given, AutoTokenizer does not read config.json, whose auto_map would ask
            # for trust_remote_code where dpr_hf is not installed.
            tokenizer = AutoTokenizer.from_pretrained(folder, config=model.config)
            setattr(pair, f"{role}_encoder", model)
            setattr(pair, f"{role}_tokenizer", tokenizer)
        return pair

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write a pair folder (each tower with its tokenizer) atomically: a staged folder replaces `path` whole."""
        with staged_folder(path) as tmp:
            self.save_into(tmp)

    def save_into(self, folder: Path) -> None:
        """Write the towers present into `folder` in the pair layout, without staging (for a caller that stages
        a bigger folder, such as a QA system)."""
        for role in ROLES:
            model = getattr(self, f"{role}_encoder")
            if model is None:
                continue
            tokenizer = getattr(self, f"{role}_tokenizer") or self.tokenizer
            if tokenizer is None:
                raise ValueError(f"the {role} encoder has no tokenizer to save with it")
            model.save_pretrained(folder / ENCODER_DIRS[role])
            tokenizer.save_pretrained(folder / ENCODER_DIRS[role])


def _has_role(path: str | os.PathLike, role: str) -> bool:
    try:
        EncoderPair.encoder_dir(path, role)
    except FileNotFoundError:
        return False
    return True


def encoder_dir(path: str | os.PathLike, role: str) -> Path:
    """The `role` encoder folder of a pair, system or encoder folder (see `EncoderPair.encoder_dir`)."""
    return EncoderPair.encoder_dir(path, role)


def partner_passage_encoder_dir(question_encoder: PreTrainedModel) -> Path | None:
    """The `passage_encoder/` next to a question encoder loaded from a pair or system folder."""
    return EncoderPair.partner_dir(question_encoder)

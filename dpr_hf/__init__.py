"""dpr_hf: Dense Passage Retrieval (Karpukhin et al., 2020) as transformers models.

Importing the package registers the models with the Auto classes (and saves them with their code, so a folder
also loads with `trust_remote_code=True` where dpr_hf is not installed).
"""

from transformers import AutoConfig, AutoModel

from .configuration import (
    DPREncoderConfig,
    ExtractiveReaderConfig,
    PassageEncoderConfig,
    QuestionEncoderConfig,
)
from .modeling import (
    DPREncoder,
    EncoderOutput,
    ExtractiveReader,
    PassageEncoder,
    QuestionEncoder,
    ReaderOutput,
)
from .tokenization import format_passages, format_questions

__version__ = "0.1.0"

for _config_class, _model_class in (
    (QuestionEncoderConfig, QuestionEncoder),
    (PassageEncoderConfig, PassageEncoder),
    (ExtractiveReaderConfig, ExtractiveReader),
):
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
    AutoModel.register(_config_class, _model_class, exist_ok=True)
    _config_class.register_for_auto_class()
    _model_class.register_for_auto_class("AutoModel")

__all__ = [
    "DPREncoder",
    "DPREncoderConfig",
    "EncoderOutput",
    "ExtractiveReader",
    "ExtractiveReaderConfig",
    "PassageEncoder",
    "PassageEncoderConfig",
    "QuestionEncoder",
    "QuestionEncoderConfig",
    "ReaderOutput",
    "format_passages",
    "format_questions",
]

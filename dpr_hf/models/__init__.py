"""The three models and what defines them: configs, modeling, input formatting, fingerprints, the pair.

`configuration.py`, `modeling.py` and `errors.py` are copied next to every saved model (`register_for_auto_class`),
so `AutoModel.from_pretrained(folder, trust_remote_code=True)` works where dpr_hf is not installed: they import
only each other (single-dot imports) and transformers. See docs/architecture.md.
"""

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
from .pair import EncoderPair
from .tokenization import encode_reader_inputs, format_passages, format_questions, tokenizer_fingerprint

__all__ = [
    "DPREncoder",
    "DPREncoderConfig",
    "EncoderOutput",
    "EncoderPair",
    "ExtractiveReader",
    "ExtractiveReaderConfig",
    "PassageEncoder",
    "PassageEncoderConfig",
    "QuestionEncoder",
    "QuestionEncoderConfig",
    "ReaderOutput",
    "encode_reader_inputs",
    "format_passages",
    "format_questions",
    "tokenizer_fingerprint",
]

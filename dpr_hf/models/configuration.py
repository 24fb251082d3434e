"""Configs for the DPR encoders and reader.

Each config wraps the config of any transformers encoder backbone (BERT by default) under the key `encoder`.
This module is copied next to saved models (``register_for_auto_class``), so it imports nothing from dpr_hf.
"""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

POOLINGS = ("cls", "mean")
ROLES = ("question", "passage")
DEFAULT_MAX_SEQ_LENGTHS = {"question": 64, "passage": 256}
READER_MAX_SEQ_LENGTH = 350


class DPREncoderConfig(PreTrainedConfig):
    """Shared fields of the question and passage encoder configs.

    Args:
        encoder: config (or dict) of the backbone encoder, e.g. a `BertConfig`.
        role: "question" or "passage"; fixed by the subclass.
        pooling: "cls" (the [CLS] vector, as in the paper) or "mean" (masked mean of the last hidden states).
        projection_dim: size of a linear projection on top of the pooled vector; 0 means none (as DPR).
        normalize: L2-normalise embeddings (off by default: DPR scores with the raw dot product).
        temperature: the temperature the pair was trained with (its logits were `E_Q·E_P / temperature`). Hybrid
            retrieval weighs dense scores on that logit scale, so one fusion weight suits dot and cosine pairs.
        max_seq_length: tokens the encoder reads (and was trained at); encoding, retrieval and serving use it unless
            told otherwise. None: the role's default, 64 for questions and 256 for passages (configs saved before
            this field existed load with those, the lengths they were served at).
    """

    model_type = "dpr_hf_encoder"
    sub_configs_defaults = {"encoder": SubConfigSpec(config_class=AutoConfig, model_type="bert")}

    encoder: PreTrainedConfig | dict | None = None
    role: str = "question"
    pooling: str = "cls"
    projection_dim: int = 0
    normalize: bool = False
    temperature: float = 1.0
    max_seq_length: int | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.max_seq_length is None:
            self.max_seq_length = DEFAULT_MAX_SEQ_LENGTHS.get(self.role, 256)
        if self.max_seq_length <= 0:
            raise ValueError(f"max_seq_length must be > 0, got {self.max_seq_length}")
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.projection_dim < 0:
            raise ValueError(f"projection_dim must be >= 0 (0 = no projection), got {self.projection_dim}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    @property
    def hidden_size(self) -> int:
        return self.encoder.hidden_size

    @property
    def similarity(self) -> str:
        """How the pair scores: "cosine" when embeddings are normalised, else DPR's "dot" product."""
        return "cosine" if self.normalize else "dot"

    @property
    def embedding_dim(self) -> int:
        """Size of the vectors the encoder returns (and the index stores)."""
        return self.projection_dim or self.encoder.hidden_size


class QuestionEncoderConfig(DPREncoderConfig):
    """Config of `QuestionEncoder` (E_Q)."""

    model_type = "dpr_hf_question_encoder"
    role: str = "question"


class PassageEncoderConfig(DPREncoderConfig):
    """Config of `PassageEncoder` (E_P)."""

    model_type = "dpr_hf_passage_encoder"
    role: str = "passage"


class ExtractiveReaderConfig(PreTrainedConfig):
    """Config of `ExtractiveReader`: a backbone encoder plus span and relevance heads.

    Args:
        encoder: config (or dict) of the backbone encoder.
        tokenizer_fingerprint: `dpr_hf.tokenization.tokenizer_fingerprint` of the tokenizer the reader was
            built and trained with, so that reading with another vocabulary is refused; None (readers saved
            before it was recorded, or built without a tokenizer) skips that check.
        max_seq_length: tokens of one `[CLS] question [SEP] title [SEP] passage` input, as trained; reading uses it
            unless told otherwise.
    """

    model_type = "dpr_hf_reader"
    sub_configs_defaults = {"encoder": SubConfigSpec(config_class=AutoConfig, model_type="bert")}

    encoder: PreTrainedConfig | dict | None = None
    tokenizer_fingerprint: str | None = None
    max_seq_length: int = READER_MAX_SEQ_LENGTH

    @property
    def hidden_size(self) -> int:
        return self.encoder.hidden_size

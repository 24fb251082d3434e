"""The DPR models: `QuestionEncoder` (E_Q), `PassageEncoder` (E_P) and `ExtractiveReader`.

sim(q, p) = E_Q(q) . E_P(p). Each model wraps any transformers encoder backbone built from `config.encoder`.
This module is copied next to saved models (``register_for_auto_class``): it imports only from `.configuration`,
`.errors` and transformers, so a folder loads with ``trust_remote_code=True`` where dpr_hf is not installed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration import (
    DPREncoderConfig,
    ExtractiveReaderConfig,
    PassageEncoderConfig,
    QuestionEncoderConfig,
)
from .errors import MismatchError


@dataclass
class EncoderOutput(ModelOutput):
    """Output of a DPR encoder.

    Args:
        pooler_output: `(batch, embedding_dim)` embeddings, the vectors compared by dot product.
        last_hidden_state: `(batch, seq_len, hidden)` last layer of the backbone.
        hidden_states: all layers, when `output_hidden_states=True`.
        attentions: attention maps, when `output_attentions=True`.
    """

    pooler_output: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class ReaderOutput(ModelOutput):
    """Output of `ExtractiveReader`; leading dims follow the input (`(n,)` or `(questions, passages)`).

    Args:
        start_logits / end_logits: `(..., seq_len)` span boundary logits per token.
        relevance_logits: `(...)` passage relevance logit from the [CLS] vector.
    """

    start_logits: torch.FloatTensor | None = None
    end_logits: torch.FloatTensor | None = None
    relevance_logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


def _build_backbone(config) -> PreTrainedModel:
    """The backbone without its pooler head: DPR pools itself, and an unused head breaks DDP."""
    backbone = AutoModel.from_config(config)
    if getattr(backbone, "pooler", None) is not None:
        backbone.pooler = None
    return backbone


def _backbone_inputs(input_ids, attention_mask, token_type_ids, inputs_embeds) -> dict:
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "inputs_embeds": inputs_embeds}
    if token_type_ids is not None:
        inputs["token_type_ids"] = token_type_ids
    return inputs


class DPRPreTrainedModel(PreTrainedModel):
    """Common loading/initialisation behaviour of the three dpr_hf models."""

    base_model_prefix = "encoder"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # The backbone's pooler is dropped on purpose (DPR pools itself), so checkpoints that carry its weights
    # (transformers' DPR, original DPR, plain BERT) load without an UNEXPECTED report.
    _keys_to_ignore_on_load_unexpected = [r"(^|\.)pooler\."]

    def _init_weights(self, module: nn.Module) -> None:
        # The backbone initialises its own modules (transformers dispatches to sub-models); these are our heads.
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=getattr(self.config.encoder, "initializer_range", 0.02))
            if module.bias is not None:
                init.zeros_(module.bias)

    @classmethod
    def from_backbone(cls, name_or_path: str, **config_kwargs):
        """Build the model around pretrained backbone weights (Hub id or folder, e.g. `bert-base-uncased`).

        Config options (`pooling`, `projection_dim`, `normalize`) go in `config_kwargs`; the tokenizer is loaded
        separately with `AutoTokenizer.from_pretrained(name_or_path)` and saved next to the model.
        """
        backbone = AutoModel.from_pretrained(name_or_path, dtype=torch.float32)
        model = cls(cls.config_class(encoder=backbone.config.to_dict(), **config_kwargs))
        state = {k: v for k, v in backbone.state_dict().items() if not k.startswith("pooler.")}
        missing, unexpected = model.encoder.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"backbone {name_or_path!r} does not fit {cls.__name__}: missing {missing}, unexpected {unexpected}"
            )
        model.config.encoder._name_or_path = str(name_or_path)
        return model


class DPREncoder(DPRPreTrainedModel):
    """One tower of the bi-encoder: backbone + pooling (+ optional projection and L2 normalisation)."""

    config_class = DPREncoderConfig
    role: str = ""

    def __init__(self, config: DPREncoderConfig):
        super().__init__(config)
        if self.role and config.role != self.role:
            raise MismatchError(
                f"this checkpoint is a {config.role} encoder, not a {self.role} encoder: load it with "
                f"{config.role.capitalize()}Encoder.from_pretrained (or AutoModel.from_pretrained)"
            )
        self.encoder = _build_backbone(config.encoder)
        self.projection = (
            nn.Linear(config.hidden_size, config.projection_dim) if config.projection_dim else None
        )
        self.post_init()

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    def pool(self, last_hidden_state: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if self.config.pooling == "cls":
            return last_hidden_state[:, 0]
        if attention_mask is None:
            return last_hidden_state.mean(dim=1)
        mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
        return (last_hidden_state * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> EncoderOutput | tuple:
        outputs = self.encoder(
            **_backbone_inputs(input_ids, attention_mask, token_type_ids, inputs_embeds),
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
            **kwargs,
        )
        pooled = self.pool(outputs.last_hidden_state, attention_mask)
        if self.projection is not None:
            pooled = self.projection(pooled)
        if self.config.normalize:
            pooled = nn.functional.normalize(pooled, p=2, dim=-1)
        result = EncoderOutput(
            pooler_output=pooled,
            last_hidden_state=outputs.last_hidden_state,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return result if return_dict is not False else result.to_tuple()


class QuestionEncoder(DPREncoder):
    """E_Q: encodes questions (formatted with `dpr_hf.format_questions`)."""

    config_class = QuestionEncoderConfig
    role = "question"


class PassageEncoder(DPREncoder):
    """E_P: encodes passages as `title [SEP] text` (formatted with `dpr_hf.format_passages`)."""

    config_class = PassageEncoderConfig
    role = "passage"


class ExtractiveReader(DPRPreTrainedModel):
    """DPR's reader over `[CLS] question [SEP] title [SEP] passage`: span logits per token, relevance from [CLS].

    Accepts `(n, seq_len)` or `(questions, passages, seq_len)` inputs; outputs keep the leading dims.
    """

    config_class = ExtractiveReaderConfig

    def __init__(self, config: ExtractiveReaderConfig):
        super().__init__(config)
        self.encoder = _build_backbone(config.encoder)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.qa_classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ReaderOutput | tuple:
        reference = input_ids if input_ids is not None else inputs_embeds[..., 0]
        leading = reference.shape[:-1]

        def flat(t):
            return None if t is None else t.reshape(-1, *t.shape[len(leading) :])

        outputs = self.encoder(
            **_backbone_inputs(
                flat(input_ids), flat(attention_mask), flat(token_type_ids), flat(inputs_embeds)
            ),
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
            **kwargs,
        )
        sequence = outputs.last_hidden_state
        start_logits, end_logits = self.qa_outputs(sequence).unbind(dim=-1)
        relevance = self.qa_classifier(sequence[:, 0]).squeeze(-1)
        seq_len = sequence.shape[1]
        result = ReaderOutput(
            start_logits=start_logits.reshape(*leading, seq_len),
            end_logits=end_logits.reshape(*leading, seq_len),
            relevance_logits=relevance.reshape(leading),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return result if return_dict is not False else result.to_tuple()

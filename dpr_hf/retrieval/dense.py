"""Dense retrieval: encode questions with E_Q, search the passage index by inner product."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..encoding import encode
from ..index.passage_index import PassageIndex
from ..models.errors import MismatchError
from ..models.pair import EncoderPair


class DenseRetriever:
    """DPR retrieval: top-k passages by E_Q(q) . E_P(p) from a `PassageIndex`.

    Args:
        question_encoder: the question tower whose vectors fit the index (checked).
        tokenizer: its tokenizer.
        index: passages encoded by the matching passage encoder.
        batch_size: questions encoded (and searched) at once.
        max_length: question tokens read; default the encoder's trained `config.max_seq_length`.
        precision: None/"fp32", "bf32" (CPU), "bf16" or "fp16" for the question encoder (`precision_context`).
        streams, encode_batch_size: CPU streams and questions per forward pass of `encode` (default one stream
            of `batch_size`): the plan `--backend auto` measured (`dpr_hf.export.prepare_encoder`).
    """

    def __init__(
        self,
        question_encoder: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        index: PassageIndex,
        batch_size: int = 128,
        max_length: int | None = None,
        precision: str | None = None,
        streams: int = 1,
        encode_batch_size: int | None = None,
    ):
        if question_encoder.config.embedding_dim != index.embedding_dim:
            raise MismatchError(
                f"question encoder returns {question_encoder.config.embedding_dim}-dim vectors, "
                f"the index holds {index.embedding_dim}-dim passage embeddings"
            )
        self.question_encoder = question_encoder.eval()
        self.tokenizer = tokenizer
        self.index = index
        self.batch_size = batch_size
        self.max_length = max_length
        self.precision = precision
        self.streams, self.encode_batch_size = streams, encode_batch_size

    @classmethod
    def from_pretrained(
        cls, model_dir: str | os.PathLike, index_dir: str | os.PathLike, **kwargs
    ) -> DenseRetriever:
        """Question encoder from a pair/system/encoder folder plus a saved index, checked to belong together."""
        pair = EncoderPair.from_pretrained(model_dir, roles=("question",))
        index = PassageIndex.load(index_dir, question_encoder=pair.question_encoder)
        return cls(pair.question_encoder, pair.question_tokenizer, index, **kwargs)

    @property
    def temperature(self) -> float:
        """The pair's training temperature: `score / temperature` is on the scale of the logits it learned."""
        return self.question_encoder.config.temperature

    def encode_questions(self, questions: Sequence[str]) -> np.ndarray:
        """Question vectors `(len(questions), dim)` float32."""
        return encode(
            self.question_encoder,
            self.tokenizer,
            list(questions),
            batch_size=self.encode_batch_size or self.batch_size,
            max_length=self.max_length,
            precision=self.precision,
            streams=self.streams,
        )

    def search(
        self, questions: Sequence[str], k: int = 100, question_vectors: np.ndarray | None = None
    ) -> list[list[dict]]:
        """Top-k passages per question, best first: `{id, title, text, score}` dicts.

        `question_vectors`: the questions already encoded by this encoder (a pipeline's forward pass).
        """
        questions = list(questions)
        if not questions:
            return []
        return self.index.search(
            self.encode_questions(questions) if question_vectors is None else question_vectors, k
        )

"""transformers pipelines over a `QASystem`: `open-domain-qa` (retrieve + read) and `dense-retrieval`.

`import dpr_hf` registers both tasks, so `pipeline("open-domain-qa", model=folder_or_repo)` loads a whole system
in one line (`AutoModel` resolves a system folder to `QASystem`). A saved system also carries this module, listed
under `custom_pipelines` (flattened by `remote_code.py`), so `pipeline(model=folder_or_repo, trust_remote_code=True)`
works without dpr_hf: import dpr_hf modules relatively, from the module that defines a name.

As transformers' pipelines: `preprocess` tokenises the question (at the question encoder's trained length),
`_forward` runs the models (question encoder, index search, reader; the reader's inputs are tokenised there, as
they are the passages just retrieved), `postprocess` decodes answer spans and ranks them.
"""

from __future__ import annotations

from typing import Any

from transformers import Pipeline, PreTrainedModel, PreTrainedTokenizerBase

from ..index.passage_index import PassageIndex
from ..models.tokenization import format_questions
from ..reader.decoding import decode_passage, rank_answers, run_reader
from .system import RETRIEVERS, QASystem


def _check_questions(questions: Any) -> list[str] | str:
    """Refuse what is not a non-empty question string (or a non-empty list of them) before any work is done."""
    batch = questions if isinstance(questions, (list, tuple)) else [questions]
    if isinstance(questions, (list, tuple)) and not questions:
        raise ValueError("got an empty list of questions: pass a question string or a non-empty list of them")
    for position, question in enumerate(batch):
        where = f"question {position}" if isinstance(questions, (list, tuple)) else "the question"
        if not isinstance(question, str):
            raise ValueError(f"{where} must be a string, got {type(question).__name__}: {question!r}")
        if not question.strip():
            raise ValueError(f"{where} is empty: nothing to search for")
    return list(questions) if isinstance(questions, tuple) else questions


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _retriever_name(value: Any) -> str:
    if value not in RETRIEVERS:
        raise ValueError(f"retriever must be one of {RETRIEVERS}, got {value!r}")
    return value


class _SystemPipeline(Pipeline):
    """Shared set-up: the pipeline's `model` is a `QASystem`, loaded from a path or assembled from parts."""

    _load_tokenizer = False
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False

    def __init__(
        self,
        model: QASystem | PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase | None = None,
        index: PassageIndex | None = None,
        reader: PreTrainedModel | None = None,
        reader_tokenizer: PreTrainedTokenizerBase | None = None,
        bm25: Any | None = None,
        **kwargs,
    ):
        # A QASystem loaded as remote code is a different class object than this module's: tell the two kinds of
        # model apart by the one a system is not.
        if isinstance(model, PreTrainedModel):
            missing = [name for name, part in (("tokenizer", tokenizer), ("index", index)) if part is None]
            if missing:
                raise ValueError(
                    f"model is a {type(model).__name__}, not a QASystem: pass the question encoder's parts "
                    f"{missing} too (or model=<system folder or repo id>)"
                )
            model = QASystem(
                question_encoder=model,
                question_tokenizer=tokenizer,
                index=index,
                reader=reader,
                reader_tokenizer=reader_tokenizer or (tokenizer if reader is not None else None),
                bm25=bm25,
            )
        super().__init__(model=model.eval(), tokenizer=model.question_tokenizer, **kwargs)

    def __call__(self, questions: str | list[str], **kwargs):
        """Answer one question (a list of results) or a list of them (one list per question, same order)."""
        return super().__call__(_check_questions(questions), **kwargs)

    def preprocess(self, question: str) -> dict[str, Any]:
        """The question and its tokens, as its encoder was trained to read them (batched by transformers' collator)."""
        encoder = self.model.question_encoder
        tokens = format_questions(self.model.question_tokenizer, [question], encoder.config.max_seq_length)
        return {"question": question, **tokens}

    def _retrieve(
        self, model_inputs: dict[str, Any], k: int | None = None, retriever: str | None = None
    ) -> tuple[list[str], list[list[dict]]]:
        """Encode the tokenised questions and search: the questions (one, or a collated batch) and their passages."""
        questions = model_inputs["question"]
        questions = [questions] if isinstance(questions, str) else list(questions)
        tokens = {key: value for key, value in model_inputs.items() if key != "question"}
        vectors = self.model.question_encoder(**tokens).pooler_output.float().cpu().numpy()
        return questions, self.model.retrieve(questions, k, retriever, question_vectors=vectors)


class OpenDomainQAPipeline(_SystemPipeline):
    """Question(s) -> answers extracted from retrieved passages.

    Call parameters: `top_k` answers per question, `num_passages` retrieved and read, `max_answer_length` tokens,
    `retriever` ("dense", "bm25" or "hybrid"), `return_passages`. Each answer is `{"answer", "score", "start", "end",
    "relevance", "passage": {"id", "title", "text", "score"}}` (plus `span_score` and `log_prob`), best first:
    `score` is the answer's probability among the passages read (`dpr_hf.reader.decoding.rank_answers`),
    `start`/`end` are character offsets in the passage text; with `return_passages=True` a question gets
    `{"answers": [...], "passages": [...]}`.
    Defaults come from the system's config. Safe to call from several threads at once.
    """

    def __init__(self, model: QASystem | PreTrainedModel, **kwargs):
        super().__init__(model, **kwargs)
        if self.model.reader is None:
            raise ValueError(
                "open-domain-qa needs a reader: the system has none (use the dense-retrieval task)"
            )

    def _sanitize_parameters(
        self,
        top_k: int | None = None,
        num_passages: int | None = None,
        max_answer_length: int | None = None,
        retriever: str | None = None,
        return_passages: bool | None = None,
    ):
        forward, postprocess = {}, {}
        if num_passages is not None:
            forward["k"] = _positive_int("num_passages", num_passages)
        if retriever is not None:
            forward["retriever"] = _retriever_name(retriever)
        if top_k is not None:
            postprocess["top_k"] = _positive_int("top_k", top_k)
        if max_answer_length is not None:
            postprocess["max_answer_length"] = _positive_int("max_answer_length", max_answer_length)
        if return_passages is not None:
            postprocess["return_passages"] = bool(return_passages)
        return {}, forward, postprocess

    def _forward(self, model_inputs: dict[str, Any], **parameters) -> dict[str, Any]:
        questions, passages = self._retrieve(model_inputs, **parameters)
        logits = run_reader(self.model.reader, self.model.reader_tokenizer, questions, passages)
        # Batch-major lists, unwrapped for a single question (what transformers' batching hands back per item).
        single = isinstance(model_inputs["question"], str)
        return {
            "passages": passages[0] if single else passages,
            "logits": logits[0] if single else logits,
            "retriever": parameters.get("retriever"),
        }

    def postprocess(
        self,
        model_outputs: dict[str, Any],
        top_k: int | None = None,
        max_answer_length: int | None = None,
        return_passages: bool = False,
    ) -> list[dict] | dict[str, list[dict]]:
        config = self.model.config
        passages = model_outputs["passages"]
        readings = [
            decode_passage(logits, passage["text"], max_answer_length or config.max_answer_length)
            for logits, passage in zip(model_outputs["logits"], passages, strict=True)
        ]
        answers = rank_answers(
            readings,
            passages,
            top_k=top_k or config.top_k,
            retriever_weight=config.retriever_weight,
            retriever_temperature=self.model.retriever_temperature(model_outputs["retriever"]),
        )
        return {"answers": answers, "passages": passages} if return_passages else answers


class DenseRetrievalPipeline(_SystemPipeline):
    """Question(s) -> the `top_k` passages `{"id", "title", "text", "score"}` retrieved, best first.

    Call parameters: `top_k` (default: the system's `num_passages`), `retriever` ("dense", "bm25" or
    "hybrid").
    """

    def _sanitize_parameters(self, top_k: int | None = None, retriever: str | None = None):
        forward = {}
        if top_k is not None:
            forward["k"] = _positive_int("top_k", top_k)
        if retriever is not None:
            forward["retriever"] = _retriever_name(retriever)
        return {}, forward, {}

    def _forward(self, model_inputs: dict[str, Any], **parameters) -> dict[str, Any]:
        _, passages = self._retrieve(model_inputs, **parameters)
        return {"passages": passages[0] if isinstance(model_inputs["question"], str) else passages}

    def postprocess(self, model_outputs: dict[str, Any]) -> list[dict]:
        return model_outputs["passages"]


def register_tasks() -> None:
    """Register `open-domain-qa` and `dense-retrieval` with transformers' pipeline registry (done on import)."""
    from transformers import AutoModel
    from transformers.pipelines import PIPELINE_REGISTRY

    PIPELINE_REGISTRY.register_pipeline(
        "open-domain-qa", pipeline_class=OpenDomainQAPipeline, pt_model=AutoModel, type="text"
    )
    PIPELINE_REGISTRY.register_pipeline(
        "dense-retrieval", pipeline_class=DenseRetrievalPipeline, pt_model=AutoModel, type="text"
    )


register_tasks()

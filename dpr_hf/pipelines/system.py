"""One open-domain QA system: the two encoders, the reader, the passage index (and BM25) in one folder or Hub repo.

Layout: `question_encoder/`, `passage_encoder/` (optional at serving time), `reader/`, `index/` (a `PassageIndex`
folder), optional `bm25/`, `metrics/` and `training_args/` (what the model cards report), optional `examples.json`
(example questions, e.g. from the evaluation data, that `dpr-hf demo` offers), and `config.json` (`QASystemConfig`)
tying them. `save_pretrained` also writes this module and every module it imports, flattened, into
the folder (`remote_code.py`), so `pipeline(model=folder_or_repo, trust_remote_code=True)` works where dpr_hf is not
installed: import dpr_hf modules relatively, from the module that defines a name.

Over ~400 lines on purpose: it is flattened into saved folders for trust_remote_code, so it stays one unit.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
from torch import nn
from transformers import AutoTokenizer, PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging

from ..atomic import staged_folder
from ..encoding import encode
from ..index.passage_index import PassageIndex
from ..models.errors import MismatchError
from ..models.modeling import ExtractiveReader
from ..models.pair import ENCODER_DIRS, EncoderPair
from ..reader.decoding import DEFAULT_RETRIEVER_WEIGHT, check_reader_tokenizer, read
from ..retrieval.dense import DenseRetriever
from ..retrieval.hybrid import HybridRetriever
from .remote_code import write_remote_code

logger = logging.get_logger(__name__)

FORMAT_VERSION = 1
RETRIEVERS = ("dense", "bm25", "hybrid")
REMOTE_TASK = "open-domain-qa-remote-code"
# part -> its default sub-folder (config.json may name another)
PARTS = {name: name for name in ("question_encoder", "passage_encoder", "reader", "index", "bm25")}
METRICS = ("retrieval", "reader")
TRAINING_RUNS = ("retriever", "reader")
_HUB_KWARGS = ("revision", "token", "cache_dir", "local_files_only", "force_download")
# Set by transformers' AutoModel / pipeline() when they delegate loading here; meaningless for a system.
_LOADER_KWARGS = (
    "_from_auto",
    "_from_pipeline",
    "trust_remote_code",
    "adapter_kwargs",
    "code_revision",
    "config",
)


class QASystemConfig(PreTrainedConfig):
    """Ties the parts of a QA system folder together and holds its serving defaults.

    Args:
        format_version: layout version; a folder from a newer dpr_hf is refused.
        question_encoder / passage_encoder / reader / index / bm25: sub-folder of each part (`passage_encoder`
            and `bm25` may be None: not shipped).
        embedding_dim: size of the vectors the index holds and the question encoder returns.
        retriever: default retriever, "dense", "bm25" or "hybrid" (BM25 + `hybrid_lambda` * dense score over the
            union of both top lists, as in the DPR paper); "bm25" and "hybrid" need `bm25`.
        num_passages: passages retrieved per question and read.
        top_k: answers returned per question.
        max_answer_length: longest answer span, in tokens.
        hybrid_lambda: λ in hybrid retrieval, `BM25 + λ·dense/τ` with τ the pair's training temperature (DPR: 1.1).
        retriever_weight: weight of the retriever's logit (dense: score / τ; BM25 and hybrid: the score, a sum of
            logits already) added to the reader's relevance logit when answers are ranked across passages
            (docs/reader.md).
    """

    model_type = "dpr_hf_qa_system"

    format_version: int = FORMAT_VERSION
    question_encoder: str = "question_encoder"
    passage_encoder: str | None = "passage_encoder"
    reader: str = "reader"
    index: str = "index"
    bm25: str | None = None
    embedding_dim: int = 0
    retriever: str = "dense"
    num_passages: int = 20
    top_k: int = 1
    max_answer_length: int = 10
    hybrid_lambda: float = 1.1
    retriever_weight: float = DEFAULT_RETRIEVER_WEIGHT

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.format_version > FORMAT_VERSION:
            raise MismatchError(
                f"this QA system has format version {self.format_version}, newer than this code reads "
                f"({FORMAT_VERSION}): upgrade dpr-hf"
            )
        if self.retriever not in RETRIEVERS:
            raise ValueError(f"retriever must be one of {RETRIEVERS}, got {self.retriever!r}")


class QASystem(nn.Module):
    """Retriever + reader + passage index answering questions end to end; the model behind the QA pipelines.

    It is an `nn.Module` so `.to(device)` / `.eval()` move and switch all the networks at once, and it is what
    `AutoModel.from_pretrained(system_folder)` returns, which lets `pipeline("open-domain-qa", model=folder)`
    load a whole system from one path.
    """

    config_class = QASystemConfig
    input_modalities = ("text",)  # read by transformers' Pipeline
    _auto_class: str | None = None

    def __init__(
        self,
        question_encoder: PreTrainedModel,
        question_tokenizer: PreTrainedTokenizerBase,
        index: PassageIndex,
        reader: PreTrainedModel | None = None,
        reader_tokenizer: PreTrainedTokenizerBase | None = None,
        passage_encoder: PreTrainedModel | None = None,
        passage_tokenizer: PreTrainedTokenizerBase | None = None,
        bm25: Any | None = None,
        config: QASystemConfig | None = None,
        metrics: dict[str, dict] | None = None,
        training_args: dict[str, dict] | None = None,
        examples: Sequence[str] | None = None,
    ):
        super().__init__()
        if reader is not None and reader_tokenizer is None:
            raise ValueError("a reader needs its tokenizer: pass reader_tokenizer")
        self.question_encoder = question_encoder
        self.passage_encoder = passage_encoder
        self.reader = reader
        self.index = index
        self.bm25 = bm25
        self.question_tokenizer = question_tokenizer
        self.passage_tokenizer = passage_tokenizer or (
            question_tokenizer if passage_encoder is not None else None
        )
        self.reader_tokenizer = reader_tokenizer
        self.config = config = config or QASystemConfig()
        config.embedding_dim = question_encoder.config.embedding_dim
        config.passage_encoder = (
            (config.passage_encoder or PARTS["passage_encoder"]) if passage_encoder is not None else None
        )
        config.reader = (config.reader or PARTS["reader"]) if reader is not None else None
        config.bm25 = (config.bm25 or PARTS["bm25"]) if bm25 is not None else None
        if config.retriever != "dense" and bm25 is None:
            raise ValueError(
                f"the default retriever is {config.retriever!r} but the system has no BM25 index"
            )
        self.metrics = dict(metrics or {})
        self.training_args = dict(training_args or {})
        self.examples = _check_examples(examples or [])
        unknown = (set(self.metrics) - set(METRICS)) | (set(self.training_args) - set(TRAINING_RUNS))
        if unknown:
            raise ValueError(
                f"unknown metrics/training_args keys {sorted(unknown)}: use {METRICS} / {TRAINING_RUNS}"
            )
        dim = config.embedding_dim
        if index.embedding_dim != dim:
            raise MismatchError(
                f"the question encoder returns {dim}-dim vectors but the index holds {index.embedding_dim}-dim ones"
            )
        if passage_encoder is not None and passage_encoder.config.embedding_dim != dim:
            raise MismatchError(
                f"the passage encoder returns {passage_encoder.config.embedding_dim}-dim vectors, "
                f"the question encoder {dim}-dim"
            )
        if reader is not None:
            check_reader_tokenizer(reader, reader_tokenizer)
        self._retrievers: tuple[tuple, dict[str, Any]] | None = None  # see `retriever`

    @property
    def encoders(self) -> EncoderPair:
        """The system's question (and passage) encoder with their tokenizers."""
        return EncoderPair(
            self.question_encoder, self.passage_encoder, self.question_tokenizer, self.passage_tokenizer
        )

    @property
    def device(self) -> torch.device:
        return self.question_encoder.device

    @property
    def dtype(self) -> torch.dtype:
        return self.question_encoder.dtype

    def can_generate(self) -> bool:
        """Asked by transformers' Pipeline: extractive QA generates nothing."""
        return False

    @classmethod
    def register_for_auto_class(cls, auto_class: str = "AutoModel") -> None:
        """Called by transformers' AutoModel when it loads this class as remote code."""
        cls._auto_class = auto_class if isinstance(auto_class, str) else auto_class.__name__

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        with_passage_encoder: bool = True,
        with_reader: bool = True,
        dtype: str | torch.dtype | None = None,
        device_map: Any = None,
        **kwargs,
    ) -> QASystem:
        """Load a system from a folder or a Hub repo id (downloaded once with `snapshot_download`, offline from
        the cache with `HF_HUB_OFFLINE=1`).

        Args:
            with_passage_encoder: also load `passage_encoder/`; answering questions does not need it (in a
                pipeline: `model_kwargs={"with_passage_encoder": False}` saves its memory).
            with_reader: also load `reader/`; retrieval alone does not need it.
            dtype / device_map: passed to each model's `from_pretrained`.
            kwargs: Hub options (`revision`, `token`, `cache_dir`, `local_files_only`, `force_download`).
        """
        hub_kwargs = {key: kwargs.pop(key) for key in _HUB_KWARGS if key in kwargs}
        for key in _LOADER_KWARGS:
            kwargs.pop(key, None)
        # AutoModel (transformers >= 5.25) always passes these two; only their defaults mean anything here.
        if kwargs.pop("subfolder", None):
            raise ValueError(
                f"{pretrained_model_name_or_path}: a QA system is loaded from its folder or repo root, not a subfolder"
            )
        if kwargs.pop("proxies", None):
            raise ValueError(
                "QASystem.from_pretrained takes no proxies: set HTTPS_PROXY for the Hub download instead"
            )
        if kwargs:
            raise TypeError(f"QASystem.from_pretrained got unexpected arguments {sorted(kwargs)}")
        folder = Path(pretrained_model_name_or_path)
        if not folder.is_dir():
            try:
                folder = Path(snapshot_download(str(pretrained_model_name_or_path), **hub_kwargs))
            except LocalEntryNotFoundError as error:  # offline and not in the cache: say which system
                raise FileNotFoundError(
                    f"{pretrained_model_name_or_path} is neither a local folder nor in the Hub cache: {error}"
                ) from error
            except HFValidationError as error:  # a path that does not exist, say: no Hub id looks like that
                raise FileNotFoundError(
                    f"{pretrained_model_name_or_path} is neither a local folder nor a Hub repo id"
                ) from error
        if not (folder / "config.json").exists():
            raise FileNotFoundError(
                f"{pretrained_model_name_or_path} is not a QA system folder: no config.json"
            )
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        if model_type != QASystemConfig.model_type:
            raise MismatchError(
                f"{folder} holds a {model_type!r} model, not a QA system ({QASystemConfig.model_type})"
            )
        config = QASystemConfig.from_json_file(str(folder / "config.json"))
        if not with_passage_encoder:
            config.passage_encoder = None
        if not with_reader:
            config.reader = None
        parts = cls.part_dirs(folder, config)
        model_kwargs = {"dtype": dtype, "device_map": device_map}
        roles = ("question", "passage") if parts["passage_encoder"] is not None else ("question",)
        pair = EncoderPair.from_pretrained(folder, roles=roles, **model_kwargs)
        reader = None
        if parts["reader"] is not None:
            reader = ExtractiveReader.from_pretrained(parts["reader"], **model_kwargs).eval()
        bm25 = _load_bm25(parts["bm25"]) if parts["bm25"] is not None else None
        if bm25 is None:
            config.retriever = "dense"
        return cls(
            question_encoder=pair.question_encoder,
            question_tokenizer=pair.question_tokenizer,
            index=PassageIndex.load(
                parts["index"], question_encoder=pair.question_encoder, passage_encoder=pair.passage_encoder
            ),
            reader=reader,
            reader_tokenizer=_tokenizer(parts["reader"], reader) if reader is not None else None,
            passage_encoder=pair.passage_encoder,
            passage_tokenizer=pair.passage_tokenizer,
            bm25=bm25,
            config=config,
            metrics=_read_json_folder(folder / "metrics"),
            training_args=_read_json_folder(folder / "training_args"),
            examples=_read_examples(folder / "examples.json"),
        )

    @staticmethod
    def part_dirs(folder: str | os.PathLike, config: QASystemConfig | None = None) -> dict[str, Path | None]:
        """Where a system folder keeps each part (`question_encoder`, `passage_encoder`, `reader`, `index`,
        `bm25`; None: not shipped), as its `config.json` (or `config`) names them; a named part must exist."""
        folder = Path(folder)
        if config is None:
            if not is_system_folder(folder):
                raise FileNotFoundError(
                    f"{folder} is not a QA system folder (no {QASystemConfig.model_type} config)"
                )
            config = QASystemConfig.from_json_file(str(folder / "config.json"))
        parts = {}
        for name in PARTS:
            subfolder = getattr(config, name)
            if subfolder is not None and not (folder / subfolder).is_dir():
                raise FileNotFoundError(
                    f"{folder}: config.json names {name} folder {subfolder!r}, which is missing"
                )
            parts[name] = folder / subfolder if subfolder is not None else None
        return parts

    @classmethod
    def part_dir(cls, folder: str | os.PathLike, name: str) -> Path | None:
        """Part `name` inside `folder`: where a system's config.json puts it, else its default sub-folder in a
        folder laid out like a system (assembled by hand); None where there is none."""
        folder = Path(folder)
        if is_system_folder(folder):
            return cls.part_dirs(folder)[name]
        default = folder / PARTS[name]
        return default if default.is_dir() else None

    @classmethod
    def from_components(
        cls,
        retriever_dir: str | os.PathLike,
        index: str | os.PathLike | PassageIndex,
        reader_dir: str | os.PathLike | None = None,
        bm25: str | os.PathLike | Any | None = None,
        retrieval_metrics: str | os.PathLike | dict | None = None,
        reader_metrics: str | os.PathLike | dict | None = None,
        examples: Sequence[str] | None = None,
        **config_kwargs,
    ) -> QASystem:
        """Assemble a system from training outputs; `.save_pretrained(dir)` on the result writes the system folder.

        Args:
            retriever_dir: retriever training folder (an `EncoderPair` folder with `training_args.json`).
            index: a saved `PassageIndex` folder (checked against both encoders) or a loaded index.
            reader_dir: reader training folder (`reader/`, `training_args.json`) or the reader model folder.
            bm25: a saved `BM25Retriever` folder (or a loaded one), enabling hybrid retrieval.
            retrieval_metrics / reader_metrics: `metrics.json` of `evaluate-retrieval` / `evaluate-reader`
                (path or dict), reported in the model cards.
            examples: example questions saved with the system (`examples.json`), offered by `dpr-hf demo`.
            config_kwargs: `QASystemConfig` serving defaults (`num_passages`, `retriever`, `hybrid_lambda`, ...).
        """
        retriever_dir = Path(retriever_dir)
        pair = EncoderPair.from_pretrained(retriever_dir, roles=("question", "passage"))
        if not isinstance(index, PassageIndex):
            index = PassageIndex.load(
                index, question_encoder=pair.question_encoder, passage_encoder=pair.passage_encoder
            )
        training_args = {"retriever": retriever_dir / "training_args.json"}
        reader = reader_model_dir = None
        if reader_dir is not None:
            reader_dir = Path(reader_dir)
            nested = reader_dir / "reader"
            reader_model_dir = nested if (nested / "config.json").exists() else reader_dir
            reader = ExtractiveReader.from_pretrained(reader_model_dir).eval()
            training_args["reader"] = reader_dir / "training_args.json"
        metrics = {"retrieval": retrieval_metrics, "reader": reader_metrics}
        return cls(
            question_encoder=pair.question_encoder,
            question_tokenizer=pair.question_tokenizer,
            index=index,
            reader=reader,
            reader_tokenizer=_tokenizer(reader_model_dir, reader) if reader is not None else None,
            passage_encoder=pair.passage_encoder,
            passage_tokenizer=pair.passage_tokenizer,
            bm25=_load_bm25(Path(bm25)) if isinstance(bm25, (str, os.PathLike)) else bm25,
            config=QASystemConfig(**config_kwargs),
            metrics={name: _as_dict(value) for name, value in metrics.items() if value is not None},
            training_args={name: _as_dict(file) for name, file in training_args.items() if file.exists()},
            examples=examples,
        )

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write the system folder atomically: everything goes to a temporary sibling renamed at the end."""
        config = self.config
        with staged_folder(save_directory) as tmp:
            # The towers go in the pair layout, and the config names those folders.
            self.encoders.save_into(tmp)
            config.question_encoder = ENCODER_DIRS["question"]
            config.passage_encoder = ENCODER_DIRS["passage"] if self.passage_encoder is not None else None
            if self.reader is not None:
                self.reader.save_pretrained(tmp / config.reader)
                self.reader_tokenizer.save_pretrained(tmp / config.reader)
            self.index.save(tmp / config.index)
            if self.bm25 is not None:
                self.bm25.save(tmp / config.bm25)
            for folder, files in (("metrics", self.metrics), ("training_args", self.training_args)):
                for name, content in files.items():
                    (tmp / folder).mkdir(exist_ok=True)
                    (tmp / folder / f"{name}.json").write_text(json.dumps(content, indent=2) + "\n")
            if self.examples:
                (tmp / "examples.json").write_text(
                    json.dumps(self.examples, indent=2, ensure_ascii=False) + "\n"
                )
            write_remote_code(tmp)
            config.auto_map = {"AutoConfig": "system.QASystemConfig", "AutoModel": "system.QASystem"}
            config.custom_pipelines = {
                REMOTE_TASK: {"impl": "pipeline.OpenDomainQAPipeline", "pt": ["AutoModel"], "type": "text"}
            }
            config.save_pretrained(tmp)  # config.json last: a folder without it is an unfinished save

    def push_to_hub(self, repo_id: str, **kwargs) -> dict[str, str]:
        """Save the system to a temporary folder and upload it with its model cards (see `dpr_hf.hub.push_system`)."""
        try:
            from dpr_hf.hub import push_system
        except ImportError as error:
            raise ImportError(
                "pushing a QA system renders its model cards with dpr_hf: pip install dpr-hf"
            ) from error
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "system"
            self.save_pretrained(folder)
            return push_system(folder, repo_id, **kwargs)

    def encode_questions(self, questions: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """E_Q(q) for each question, `(len(questions), embedding_dim)` float32 on CPU, read at the question
        encoder's trained length."""
        return torch.from_numpy(
            encode(self.question_encoder, self.question_tokenizer, list(questions), batch_size=batch_size)
        )

    def retriever(self, name: str | None = None) -> DenseRetriever | HybridRetriever | Any:
        """The system's "dense" or "hybrid" retriever (default: the config's), built once and rebuilt only when
        the question encoder, its tokenizer, the index, the BM25 index or `hybrid_lambda` change."""
        name = name or self.config.retriever
        if name not in RETRIEVERS:
            raise ValueError(f"retriever must be one of {RETRIEVERS}, got {name!r}")
        if name != "dense" and self.bm25 is None:
            raise ValueError(
                f"{name} retrieval needs a BM25 index, and this system has none (no bm25/ folder)"
            )
        parts = (
            self.question_encoder,
            self.question_tokenizer,
            self.index,
            self.bm25,
            self.config.hybrid_lambda,
        )
        built = self._retrievers
        if built is None or built[0] != parts:
            dense = DenseRetriever(self.question_encoder, self.question_tokenizer, self.index)
            hybrid = None
            if self.bm25 is not None:
                hybrid = HybridRetriever(self.bm25, dense, weight=self.config.hybrid_lambda)
            # One assignment: threads see the old pair or the new one, never half of each.
            built = self._retrievers = (parts, {"dense": dense, "hybrid": hybrid, "bm25": self.bm25})
        return built[1][name]

    def retrieve(
        self,
        questions: Sequence[str],
        k: int | None = None,
        retriever: str | None = None,
        question_vectors: np.ndarray | None = None,
    ) -> list[list[dict]]:
        """Top-k passages per question (`{id, title, text, score}`), best first, by dot product or hybrid score.

        `question_vectors`: the questions already encoded (a pipeline's forward pass), else they are encoded here.
        """
        chosen = self.retriever(retriever)
        if not questions:
            return []
        if chosen is self.bm25:
            return chosen.search(list(questions), k or self.config.num_passages)
        return chosen.search(
            list(questions), k or self.config.num_passages, question_vectors=question_vectors
        )

    def answer(
        self,
        questions: Sequence[str],
        top_k: int | None = None,
        num_passages: int | None = None,
        max_answer_length: int | None = None,
        retriever: str | None = None,
    ) -> tuple[list[list[dict]], list[list[dict]]]:
        """Retrieve then read: per question, the answers (best first) and the passages they were read from."""
        passages = self.retrieve(questions, num_passages, retriever)
        if self.reader is None:
            raise ValueError(
                "this system has no reader (loaded with with_reader=False?): it can only retrieve"
            )
        answers = read(
            self.reader,
            self.reader_tokenizer,
            list(questions),
            passages,
            max_answer_length=max_answer_length or self.config.max_answer_length,
            top_k=top_k or self.config.top_k,
            retriever_weight=self.config.retriever_weight,
            retriever_temperature=self.retriever_temperature(retriever),
        )
        return answers, passages

    def retriever_temperature(self, retriever: str | None = None) -> float:
        """What divides a passage's retrieval score to give the retriever's logit: the dense pair's training
        temperature; 1 for BM25 and hybrid scores."""
        if (retriever or self.config.retriever) == "dense":
            return self.question_encoder.config.temperature
        return 1.0


def is_system_folder(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds a QA system (its config.json is a `QASystemConfig`)."""
    file = Path(folder) / "config.json"
    return file.is_file() and json.loads(file.read_text()).get("model_type") == QASystemConfig.model_type


def _check_examples(examples: Sequence[str], source: str = "examples") -> list[str]:
    if isinstance(examples, str) or not isinstance(examples, Sequence):
        raise ValueError(f"{source} must be a list of question strings, got {type(examples).__name__}")
    for position, question in enumerate(examples):
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"{source}: example {position} is not a non-empty question string: {question!r}")
    return list(examples)


def _read_examples(file: Path) -> list[str] | None:
    if not file.exists():
        return None
    try:
        examples = json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{file} is not valid JSON: {error}") from error
    return _check_examples(examples, str(file))


def _tokenizer(path: Path, model: PreTrainedModel) -> PreTrainedTokenizerBase:
    # With the model's config given, AutoTokenizer does not load config.json, whose auto_map would ask for
    # trust_remote_code where dpr_hf is not installed.
    return AutoTokenizer.from_pretrained(path, config=model.config)


def _as_dict(source: str | os.PathLike | dict) -> dict:
    return dict(source) if isinstance(source, dict) else json.loads(Path(source).read_text())


def _read_json_folder(folder: Path) -> dict[str, dict]:
    return {file.stem: json.loads(file.read_text()) for file in sorted(folder.glob("*.json"))}


def _load_bm25(path: Path) -> Any | None:
    """The BM25 index, or None where dpr_hf (which implements it) is not installed: dense retrieval still works."""
    try:
        from dpr_hf.retrieval import BM25Retriever
    except ImportError:
        logger.warning(
            f"{path}: retrieval is dense only, hybrid's BM25 index needs dpr_hf (pip install dpr-hf)"
        )
        return None
    return BM25Retriever.load(path)

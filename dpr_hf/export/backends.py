"""Load an encoder for a runtime backend: the torch model, or its ONNX export run by ONNX Runtime or OpenVINO.

Every backend's model is called the same way (`model(**inputs).pooler_output`), so `dpr_hf.encoding.encode`,
`encode_corpus` and `DenseRetriever` take any of them unchanged.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers.utils import logging

from ..cpu_streams import StreamRace
from ..errors import MismatchError

logger = logging.get_logger(__name__)

BACKENDS = ("torch", "onnx", "openvino")
# Precisions each backend offers; torch's are applied while encoding (`precision_context`), int8 at load time.
BACKEND_PRECISIONS = {
    "torch": ("fp32", "bf32", "bf16", "fp16"),
    "onnx": ("fp32", "int8"),
    "openvino": ("fp32", "int8"),
}


def cache_dir() -> Path:
    """dpr_hf's cache: $DPR_HF_CACHE, default ~/.cache/dpr_hf (ONNX exports, the `auto` backend's choices)."""
    return Path(os.environ.get("DPR_HF_CACHE", Path.home() / ".cache" / "dpr_hf"))


def onnx_cache_dir() -> Path:
    """Where ONNX exports made on demand are kept, one folder per source fingerprint ($DPR_HF_CACHE/onnx)."""
    return cache_dir() / "onnx"


def _onnx_cache_folder(model_dir: Path) -> Path:
    from ..models.fingerprints import pretrained_fingerprint

    # Two towers may hold the same weights (a pair made from one base model): the model type (question /
    # passage encoder, reader) is part of the key, or one tower's export would stand in for the other.
    model_type = json.loads((model_dir / "config.json").read_text()).get("model_type", "model")
    return onnx_cache_dir() / f"{pretrained_fingerprint(model_dir).split(':')[-1][:32]}-{model_type}"


def cached_onnx_export(model_dir: str | os.PathLike, quantized: bool = False) -> Path | None:
    """The fp32 (or int8) ONNX export of `model_dir` if one exists already (it is one, or it is in the cache)."""
    from .onnx import INFO_FILE, INT8_FILE, ONNX_FILE

    model_dir = Path(model_dir)
    folder = model_dir if (model_dir / INFO_FILE).is_file() else _onnx_cache_folder(model_dir)
    return folder if (folder / (INT8_FILE if quantized else ONNX_FILE)).is_file() else None


def onnx_export_of(model_dir: str | os.PathLike, quantized: bool = False) -> Path:
    """`model_dir` itself when it is an ONNX export; otherwise its export in `onnx_cache_dir()`, made once."""
    from .onnx import INFO_FILE, INT8_FILE, ONNX_FILE, export_onnx

    model_dir = Path(model_dir)
    if (model_dir / INFO_FILE).is_file():
        return model_dir
    folder = _onnx_cache_folder(model_dir)
    if not (folder / (INT8_FILE if quantized else ONNX_FILE)).is_file():
        export_onnx(model_dir, folder, quantize=quantized, overwrite=True)
    return folder


@dataclass(frozen=True)
class PreparedEncoder:
    """An encoder ready for `dpr_hf.encoding.encode`, with how to call it: `precision` (None: applied at load
    time), `streams` and `batch_size` (auto's streamed plan, else the run's batch size it was given; None:
    `DEFAULT_BATCH`)."""

    model: Any
    precision: str | None
    streams: int = 1
    batch_size: int | None = None
    race: StreamRace | None = None

    def encode_kwargs(self, batch_size: int | None = None) -> dict:
        """`encode`'s precision / streams / batch_size (and `race`, where auto left one stream against CPU
        streams to time on the run itself): an explicit `batch_size` wins and then runs unstreamed (auto's
        streams were measured at its own batch size)."""
        from .auto import DEFAULT_BATCH

        if batch_size is not None:
            return {"precision": self.precision, "streams": 1, "batch_size": batch_size}
        kwargs = {
            "precision": self.precision,
            "streams": self.streams,
            "batch_size": self.batch_size or DEFAULT_BATCH,
        }
        return kwargs if self.race is None else {**kwargs, "race": self.race}


def prepare_encoder(
    path: str | os.PathLike,
    role: str,
    backend: str = "torch",
    precision: str | None = None,
    *,
    num_texts: int | None = None,
    max_length: int | None = None,
    batch_size: int | None = None,
) -> PreparedEncoder:
    """`load_encoder`, plus the plan `backend="auto"` measured (streams, batch size) for a run of `num_texts`
    texts at `max_length` tokens in batches of `batch_size` (each None where not known; `batch_size` is also
    the plan's batch size wherever it runs unstreamed)."""
    from .auto import AUTO, resolve_backend

    if backend != AUTO:
        return PreparedEncoder(*_load_encoder(path, role, backend, precision), batch_size=batch_size)
    backend, precision, choice = resolve_backend(
        path, role, precision, num_texts=num_texts, max_length=max_length, batch_size=batch_size
    )
    logger.warning(choice.describe())
    model, precision = _load_encoder(path, role, backend, precision)
    plan_batch = choice.batch_size if choice.streams > 1 else batch_size
    return PreparedEncoder(model, precision, choice.streams, plan_batch, race=choice.race)


def load_encoder(path: str | os.PathLike, role: str, backend: str = "torch", precision: str | None = None):
    """The `role` ("question" / "passage") encoder of `path` (encoder, pair or system folder, or an ONNX export
    of one) for `backend`. Returns `(model, precision)`: the precision left for `encode` to apply (torch's), or
    None where the backend applied it at load time (int8 picks the quantised ONNX model).

    `backend="auto"` picks the fastest backend on this machine whose embeddings stay within cosine 0.999 of
    torch fp32, measured once and cached (`dpr_hf.export.auto`), and logs one line saying what and why; its
    streamed plan needs `prepare_encoder`, which also says how to call `encode`."""
    prepared = prepare_encoder(path, role, backend, precision)
    return prepared.model, prepared.precision


def _load_encoder(path: str | os.PathLike, role: str, backend: str, precision: str | None):
    from ..models.modeling import PassageEncoder, QuestionEncoder
    from ..models.pair import encoder_dir
    from .auto import AUTO
    from .onnx import load_onnx_model

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {(*BACKENDS, AUTO)}, got {backend!r}")
    precision = precision or "fp32"
    if precision not in BACKEND_PRECISIONS[backend]:
        raise MismatchError(
            f"precision {precision!r} is not offered by the {backend} backend (it has {BACKEND_PRECISIONS[backend]})"
        )
    folder = encoder_dir(path, role)
    if backend == "torch":
        cls = QuestionEncoder if role == "question" else PassageEncoder
        return cls.from_pretrained(folder), precision
    quantized = precision == "int8"
    model = load_onnx_model(onnx_export_of(folder, quantized), quantized=quantized, backend=backend)
    if getattr(model.config, "role", None) != role:
        raise MismatchError(f"{folder} holds no {role} encoder")
    model.name_or_path = str(folder)  # the folder it stands for: index checks find its partner tower there
    return model, None


def load_system(folder: str | os.PathLike, backend: str = "torch", precision: str | None = None, **kwargs):
    """A `QASystem` whose question encoder and reader run on `backend` (for `pipeline("open-domain-qa",
    model=load_system(folder, "onnx"))`); the index, BM25 and tokenizers are the folder's. `kwargs` go to
    `QASystem.from_pretrained` (Hub options, `with_reader`)."""
    from ..pipelines import QASystem
    from .onnx import load_onnx_model

    if backend not in BACKENDS:  # "auto" is the encoders' alone: its cosine guard says nothing about answers
        raise ValueError(f"a system's backend must be one of {BACKENDS}, got {backend!r}")
    system = QASystem.from_pretrained(folder, with_passage_encoder=False, **kwargs)
    if backend == "torch":
        if precision not in (None, "fp32"):
            raise MismatchError("a torch system answers in fp32: load it with dtype=... for other precisions")
        return system
    question_dir = Path(
        system.question_encoder.name_or_path
    )  # the resolved local folder (a Hub snapshot too)
    question_encoder, _ = load_encoder(question_dir, "question", backend=backend, precision=precision)
    reader = None
    if system.reader is not None:
        reader_dir = Path(system.reader.name_or_path)
        quantized = precision == "int8"
        reader = load_onnx_model(onnx_export_of(reader_dir, quantized), quantized=quantized, backend=backend)
        reader.name_or_path = str(reader_dir)
    return QASystem(
        question_encoder=question_encoder,
        question_tokenizer=system.question_tokenizer,
        index=system.index,
        reader=reader,
        reader_tokenizer=system.reader_tokenizer,
        bm25=system.bm25,
        config=system.config,
        metrics=system.metrics,
        training_args=system.training_args,
    )

"""ONNX export of the encoders and the reader, and ONNX Runtime / OpenVINO models that stand in for the torch ones.

`export_onnx(src, out)` writes, per model, `model.onnx` (fp32, dynamic batch and sequence length), optionally
`model_int8.onnx` (onnxruntime's dynamic int8 quantisation, per-channel weights), the model's `config.json`, its
tokenizer, and `onnx_export.json` (the source weights' fingerprint, so embeddings computed with the ONNX model
match an index built with the torch one). `load_onnx_model(folder)` returns an `ONNXEncoder` / `ONNXReader`: called
like the torch model (`model(**inputs).pooler_output`; `.start_logits` / `.end_logits` / `.relevance_logits`),
with the attributes dpr_hf's encoding and reading loops use (`config`, `device`, `eval()`), so either can be
passed where a torch model is expected. `backend="openvino"` compiles the same ONNX file with OpenVINO.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel

from ..atomic import replace_folder
from ..errors import MismatchError

ONNX_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"
INFO_FILE = "onnx_export.json"
BACKENDS = ("onnx", "openvino")
MODEL_DIRS = ("question_encoder", "passage_encoder", "reader")
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
ENCODER_OUTPUTS = ("pooler_output",)
READER_OUTPUTS = ("start_logits", "end_logits", "relevance_logits")


def _require(module: str, extra: str) -> Any:
    """Import an optional dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"{module} is needed here: pip install 'dpr-hf[{extra}]'") from error


class _Exportable(nn.Module):
    """The model as a function of positional tensors to a tuple of tensors: what the ONNX exporter traces."""

    def __init__(self, model: PreTrainedModel, input_names: tuple[str, ...], output_names: tuple[str, ...]):
        super().__init__()
        self.model, self.input_names, self.output_names = model, input_names, output_names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(**dict(zip(self.input_names, inputs, strict=True)))
        return tuple(outputs[name] for name in self.output_names)


def _input_names(model: PreTrainedModel) -> tuple[str, ...]:
    """The backbone's inputs among input_ids / attention_mask / token_type_ids (not every backbone has segments)."""
    accepted = inspect.signature(model.encoder.forward).parameters
    return tuple(name for name in INPUT_NAMES if name in accepted)


def _example_inputs(model: PreTrainedModel, names: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
    """Two rows of 8 tokens, the second padded: sizes above 1 keep the exporter from fixing batch or length."""
    vocab = model.config.encoder.vocab_size
    generator = torch.Generator().manual_seed(0)
    values = {
        "input_ids": torch.randint(1, vocab, (2, 8), generator=generator),
        "attention_mask": torch.tensor([[1] * 8, [1] * 5 + [0] * 3]),
        "token_type_ids": torch.zeros(2, 8, dtype=torch.long),
    }
    return tuple(values[name] for name in names)


def _quantize(fp32_path: Path, int8_path: Path) -> None:
    """Dynamic int8: weights quantised per output channel (per-tensor scales lose too much: cosine ~0.93 on
    MiniLM), activations per batch at run time."""
    quantization = _require("onnxruntime.quantization", "onnx")
    quantization.quantize_dynamic(
        fp32_path, int8_path, weight_type=quantization.QuantType.QInt8, per_channel=True
    )


def export_model_onnx(
    model: PreTrainedModel,
    output_dir: str | os.PathLike,
    tokenizer=None,
    quantize: bool = False,
    overwrite: bool = False,
) -> Path:
    """Export one dpr_hf model (QuestionEncoder, PassageEncoder or ExtractiveReader) to `output_dir`.

    The folder appears whole or not at all. `quantize` adds `model_int8.onnx` next to the fp32 model. The model
    is put in eval mode (and fp32) for the export.
    """
    from ..models.fingerprints import encoder_fingerprint

    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir} exists (pass overwrite=True / --overwrite to replace it)")
    is_encoder = hasattr(model.config, "role")
    output_names = ENCODER_OUTPUTS if is_encoder else READER_OUTPUTS
    input_names = _input_names(model)
    model = model.float().eval()
    exportable = _Exportable(model, input_names, output_names).eval()  # eval: the exporter restores this mode
    tmp = output_dir.with_name(f".{output_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _require("onnxscript", "onnx")  # torch's ONNX exporter is built on it
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")}
    with torch.no_grad():
        torch.onnx.export(
            exportable,
            _example_inputs(model, input_names),
            str(tmp / ONNX_FILE),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_shapes=(tuple(dims for _ in input_names),),  # one entry: forward(*inputs)
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    if quantize:
        _quantize(tmp / ONNX_FILE, tmp / INT8_FILE)
    model.config.save_pretrained(tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    info = {
        "source": str(model.name_or_path or ""),
        "fingerprint": encoder_fingerprint(model),
        "inputs": list(input_names),
        "outputs": list(output_names),
        "int8": quantize,
    }
    (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    replace_folder(tmp, output_dir)
    return output_dir


def _model_dirs(source: Path) -> dict[str, Path]:
    """`{name: folder}` of the models in `source`: a model folder, or a pair / system / training folder."""
    if (source / "config.json").is_file() and not any((source / name).is_dir() for name in MODEL_DIRS):
        return {"": source}
    found = {name: source / name for name in MODEL_DIRS if (source / name / "config.json").is_file()}
    if not found:
        raise FileNotFoundError(
            f"{source} holds no dpr_hf model: no config.json, and none of {', '.join(MODEL_DIRS)} with one"
        )
    return found


def export_onnx(
    source: str | os.PathLike, output_dir: str | os.PathLike, quantize: bool = False, overwrite: bool = False
) -> list[Path]:
    """Export every model in `source` (one model folder, or the question_encoder/ passage_encoder/ reader/ of a
    pair or system folder, each to the same name under `output_dir`). Returns the folders written."""
    from transformers import AutoModel  # dpr_hf's models are registered with it (dpr_hf/__init__.py)

    source, output_dir = Path(source), Path(output_dir)
    models = _model_dirs(source)
    targets = {name: output_dir / name if name else output_dir for name in models}
    existing = [str(target) for target in targets.values() if target.exists()]
    if existing and not overwrite:  # checked before anything is written
        raise FileExistsError(
            f"{', '.join(existing)} exist(s) (pass overwrite=True / --overwrite to replace)"
        )
    written = []
    for name, folder in models.items():
        model = AutoModel.from_pretrained(folder, dtype=torch.float32)
        if not hasattr(model.config, "role") and not hasattr(model, "qa_outputs"):
            raise MismatchError(f"{folder} holds a {type(model).__name__}, not a dpr_hf encoder or reader")
        tokenizer = (
            AutoTokenizer.from_pretrained(folder) if (folder / "tokenizer_config.json").is_file() else None
        )
        written.append(export_model_onnx(model, targets[name], tokenizer, quantize=quantize, overwrite=True))
    return written


# ---------------------------------------------------------------------------------------------------- runtime
class _Session:
    """One compiled model: ONNX Runtime's CPU session, or OpenVINO's compiled model of the same ONNX file."""

    def __init__(self, path: Path, backend: str, num_threads: int):
        self.backend = backend
        if backend == "onnx":
            onnxruntime = _require("onnxruntime", "onnx")
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
            self.session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
            self.input_names = [node.name for node in self.session.get_inputs()]
        elif backend == "openvino":
            openvino = _require("openvino", "openvino")
            core = openvino.Core()
            self.session = core.compile_model(
                str(path), "CPU", {"INFERENCE_NUM_THREADS": num_threads, "INFERENCE_PRECISION_HINT": "f32"}
            )
            self.input_names = [node.get_any_name() for node in self.session.inputs]
        else:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")

    def run(self, feed: dict[str, np.ndarray], output_names: tuple[str, ...]) -> list[np.ndarray]:
        if self.backend == "onnx":
            return self.session.run(list(output_names), feed)
        results = self.session(feed)
        return [results[self.session.output(name)] for name in output_names]


class ONNXModel:
    """Inference-only stand-in for a dpr_hf torch model, on CPU, fp32 outputs (torch tensors)."""

    output_names: tuple[str, ...] = ()
    training = False

    def __init__(
        self, folder: str | os.PathLike, quantized: bool = False, backend: str = "onnx", num_threads=None
    ):
        self.folder = Path(folder)
        path = self.folder / (INT8_FILE if quantized else ONNX_FILE)
        if not path.is_file():
            hint = " (export with quantize=True / --quantize)" if quantized else ""
            raise FileNotFoundError(f"no {path.name} in {self.folder}{hint}")
        self.config = AutoConfig.from_pretrained(self.folder)
        self.info = json.loads((self.folder / INFO_FILE).read_text())
        self.quantized, self.backend = quantized, backend
        self.name_or_path = str(self.folder)
        self._session = _Session(path, backend, num_threads or torch.get_num_threads())

    @property
    def fingerprint(self) -> str:
        """The torch weights' `encoder_fingerprint`: an index of their embeddings accepts this model."""
        return self.info["fingerprint"]

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def to(self, device: Any) -> ONNXModel:
        if torch.device(device).type != "cpu":
            raise ValueError(f"{self.backend} models run on the CPU, not {device}")
        return self

    def eval(self) -> ONNXModel:
        return self

    def train(self, mode: bool = True) -> ONNXModel:
        if mode:
            raise ValueError(f"{self.backend} models are for inference only")
        return self

    def _run(self, **inputs: torch.Tensor | None) -> list[torch.Tensor]:
        reference = inputs["input_ids"]
        feed = {}
        for name in self._session.input_names:
            value = inputs.get(name)
            if value is None:  # the torch models default these the same way
                value = (
                    torch.ones_like(reference) if name == "attention_mask" else torch.zeros_like(reference)
                )
            feed[name] = value.detach().cpu().numpy().astype(np.int64, copy=False)
        return [torch.from_numpy(np.asarray(out)) for out in self._session.run(feed, self.output_names)]


class ONNXEncoder(ONNXModel):
    """A question or passage encoder: `model(input_ids=..., attention_mask=...).pooler_output`."""

    output_names = ENCODER_OUTPUTS

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, **kwargs):
        from .. import EncoderOutput

        (pooled,) = self._run(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        )
        return EncoderOutput(pooler_output=pooled)


class ONNXReader(ONNXModel):
    """The extractive reader: `(n, seq)` or `(questions, passages, seq)` inputs, outputs keeping those dims."""

    output_names = READER_OUTPUTS

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, **kwargs):
        from .. import ReaderOutput

        leading = input_ids.shape[:-1]

        def flat(tensor):
            return None if tensor is None else tensor.reshape(-1, tensor.shape[-1])

        start, end, relevance = self._run(
            input_ids=flat(input_ids),
            attention_mask=flat(attention_mask),
            token_type_ids=flat(token_type_ids),
        )
        return ReaderOutput(
            start_logits=start.reshape(*leading, -1),
            end_logits=end.reshape(*leading, -1),
            relevance_logits=relevance.reshape(leading),
        )


def load_onnx_model(
    folder: str | os.PathLike, quantized: bool = False, backend: str = "onnx", num_threads: int | None = None
) -> ONNXEncoder | ONNXReader:
    """The exported model in `folder` (written by `export_onnx`), run by ONNX Runtime or OpenVINO.

    `num_threads` defaults to torch's thread count, so a backend swap does not also change the parallelism.
    """
    folder = Path(folder)
    if not (folder / INFO_FILE).is_file():
        raise FileNotFoundError(
            f"{folder} is not an ONNX export of dpr_hf (no {INFO_FILE}); see `dpr-hf export`"
        )
    outputs = tuple(json.loads((folder / INFO_FILE).read_text())["outputs"])
    cls = ONNXEncoder if outputs == ENCODER_OUTPUTS else ONNXReader
    return cls(folder, quantized=quantized, backend=backend, num_threads=num_threads)

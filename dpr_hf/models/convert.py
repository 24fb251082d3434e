"""Conversion between dpr_hf models and existing DPR checkpoints, so trained DPR models need no retraining.

Sources:
- transformers' DPR models (`DPRQuestionEncoder`, `DPRContextEncoder`, `DPRReader`): a saved folder or a Hub id
  such as `facebook/dpr-question_encoder-single-nq-base`. Loaded with `from_pretrained(key_mapping=...)`.
- original facebookresearch/DPR training checkpoints: one bi-encoder file (`question_model.*`, `ctx_model.*`) or
  a reader file (`encoder.*`, `qa_outputs.*`, `qa_classifier.*`). Those were `torch.save` pickles: they are read
  only with `torch.load(weights_only=True)` (tensors and plain containers, no code), or from safetensors. They
  carry no model config, so the backbone (config + tokenizer) comes from `backbone` or the checkpoint's
  `encoder_params["pretrained_model_cfg"]` (e.g. `bert-base-uncased`).
Unused `*.pooler.dense.*` and legacy `position_ids` entries are ignored; DPR's `encode_proj` becomes `projection`.
Weights are copied unchanged, so outputs are identical for the same input ids, attention mask and token types.

Token types: dpr_hf assumes the original DPR convention, segment ids all zero for `title [SEP] text` passages
(`format_passages`). transformers' `DPRContextEncoderTokenizer` gives the text segment id 1 instead; the released
`facebook/dpr-ctx_encoder-*` weights come from original checkpoints trained with zeros.

Over ~400 lines on purpose: one converter per checkpoint source, all mapping onto the same three models.
"""

from __future__ import annotations

import logging
import pickle
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertTokenizer,
    DPRConfig,
    DPRContextEncoder,
    DPRQuestionEncoder,
    DPRReader,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from .configuration import ExtractiveReaderConfig, PassageEncoderConfig, QuestionEncoderConfig
from .errors import DPRDataError, MismatchError
from .modeling import DPREncoder, ExtractiveReader, PassageEncoder, QuestionEncoder
from .tokenization import tokenizer_fingerprint

logger = logging.getLogger(__name__)

QUESTION_ENCODER, PASSAGE_ENCODER, READER = "question_encoder", "passage_encoder", "reader"
MODEL_CLASSES = {QUESTION_ENCODER: QuestionEncoder, PASSAGE_ENCODER: PassageEncoder, READER: ExtractiveReader}
CONFIG_CLASSES = {
    QUESTION_ENCODER: QuestionEncoderConfig,
    PASSAGE_ENCODER: PassageEncoderConfig,
    READER: ExtractiveReaderConfig,
}

# Our key prefix -> the same weights' prefix in each foreign layout, per role. One table serves both directions.
TRANSFORMERS_PREFIXES = {
    QUESTION_ENCODER: {
        "encoder.": "question_encoder.bert_model.",
        "projection.": "question_encoder.encode_proj.",
    },
    PASSAGE_ENCODER: {"encoder.": "ctx_encoder.bert_model.", "projection.": "ctx_encoder.encode_proj."},
    READER: {
        "encoder.": "span_predictor.encoder.bert_model.",
        "qa_outputs.": "span_predictor.qa_outputs.",
        "qa_classifier.": "span_predictor.qa_classifier.",
    },
}
ORIGINAL_PREFIXES = {
    QUESTION_ENCODER: {"encoder.": "question_model.", "projection.": "question_model.encode_proj."},
    PASSAGE_ENCODER: {"encoder.": "ctx_model.", "projection.": "ctx_model.encode_proj."},
    READER: {"encoder.": "encoder.", "qa_outputs.": "qa_outputs.", "qa_classifier.": "qa_classifier."},
}
TRANSFORMERS_CLASSES = {
    QUESTION_ENCODER: DPRQuestionEncoder,
    PASSAGE_ENCODER: DPRContextEncoder,
    READER: DPRReader,
}
TRANSFORMERS_ARCHITECTURES = {cls.__name__: role for role, cls in TRANSFORMERS_CLASSES.items()}
# Entries the models do not use: the backbone pooler (DPR pools itself) and buffers older transformers saved.
IGNORED_KEYS = re.compile(r"(^|\.)pooler\.|(^|\.)position_ids$")


def _rename(key: str, prefixes: dict[str, str]) -> str | None:
    """Map `key` through `prefixes` (source -> target), longest source prefix first; None if none matches."""
    for source in sorted(prefixes, key=len, reverse=True):
        if key.startswith(source):
            return prefixes[source] + key[len(source) :]
    return None


def _role_of(model: PreTrainedModel) -> str:
    if isinstance(model, ExtractiveReader):
        return READER
    if isinstance(model, DPREncoder):
        return QUESTION_ENCODER if model.config.role == "question" else PASSAGE_ENCODER
    raise TypeError(
        f"expected a dpr_hf QuestionEncoder, PassageEncoder or ExtractiveReader, got {type(model)}"
    )


def _bert_config(dpr_config: DPRConfig) -> BertConfig:
    fields = dpr_config.to_dict()
    for key in ("model_type", "projection_dim", "architectures"):
        fields.pop(key, None)
    return BertConfig(**fields)


def _check_tokenizer(tokenizer: PreTrainedTokenizerBase, vocab_size: int, source: str) -> None:
    """Catch a missing tokenizer (transformers then builds one holding only special tokens) or a foreign one."""
    if len(tokenizer) <= len(tokenizer.all_special_tokens):
        raise DPRDataError("no tokenizer found; pass one with tokenizer=... (--tokenizer)", path=source)
    if len(tokenizer) > vocab_size:
        raise MismatchError(
            f"tokenizer of {source} has {len(tokenizer)} tokens but the model embeds only {vocab_size}"
        )


def _load_strict(model: PreTrainedModel, state: dict[str, torch.Tensor], source: str) -> None:
    """Load renamed weights, requiring every model weight and nothing else (ignored keys aside)."""
    state = {key: value for key, value in state.items() if not IGNORED_KEYS.search(key)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches: the backbone config does not describe these weights
        raise MismatchError(f"weights of {source} do not fit the backbone config: {error}") from error
    if missing or unexpected:
        raise DPRDataError(
            f"weights do not match {type(model).__name__}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}",
            path=source,
        )


def load_transformers_dpr(
    name_or_path: str | Path, **kwargs
) -> QuestionEncoder | PassageEncoder | ExtractiveReader:
    """Load a transformers DPR model (folder or Hub id) as the matching dpr_hf model.

    The class follows the checkpoint's `architectures` (or its weight names): `DPRQuestionEncoder` ->
    `QuestionEncoder`, `DPRContextEncoder` -> `PassageEncoder`, `DPRReader` -> `ExtractiveReader`.
    `kwargs` go to `from_pretrained` (e.g. `dtype`, `revision`).
    """
    source = str(name_or_path)
    dpr_config = AutoConfig.from_pretrained(source)
    if dpr_config.model_type != "dpr":
        raise DPRDataError(
            f"not a transformers DPR model (model_type {dpr_config.model_type!r})", path=source
        )
    role = _transformers_role(source, dpr_config)
    extra = {"projection_dim": dpr_config.projection_dim} if role != READER else {}
    if role == READER and dpr_config.projection_dim:
        raise MismatchError(f"{source}: a DPRReader with projection_dim > 0 has no dpr_hf equivalent")
    config = CONFIG_CLASSES[role](encoder=_bert_config(dpr_config), **extra)
    key_mapping = {f"^{re.escape(theirs)}": ours for ours, theirs in TRANSFORMERS_PREFIXES[role].items()}
    model, info = MODEL_CLASSES[role].from_pretrained(
        source, config=config, key_mapping=key_mapping, output_loading_info=True, **kwargs
    )
    if info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]:
        raise DPRDataError(
            f"weights do not match {type(model).__name__}: missing {sorted(info['missing_keys'])[:5]}, "
            f"unexpected {sorted(info['unexpected_keys'])[:5]}, mismatched {sorted(info['mismatched_keys'])[:5]}",
            path=source,
        )
    # from_pretrained remembers key_mapping and would reverse it on save_pretrained, writing the DPR layout back;
    # forget it so the converted model saves (and later trains and saves) in our own layout.
    model._weight_conversions = None
    return model


def _transformers_role(source: str, config: DPRConfig) -> str:
    for architecture in config.architectures or []:
        if architecture in TRANSFORMERS_ARCHITECTURES:
            return TRANSFORMERS_ARCHITECTURES[architecture]
    keys = _local_weight_keys(Path(source))
    for role, prefixes in TRANSFORMERS_PREFIXES.items():
        if any(key.startswith(prefixes["encoder."]) for key in keys):
            return role
    raise DPRDataError(
        "cannot tell whether this DPR checkpoint is a question encoder, context encoder or reader: config.json "
        "names no DPR architecture and no weight starts with question_encoder./ctx_encoder./span_predictor.",
        path=source,
    )


def _local_weight_keys(folder: Path) -> list[str]:
    keys = []
    for file in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        with safe_open(file, framework="pt") as handle:
            keys.extend(handle.keys())
    return keys


def _read_original(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Weights and `encoder_params` of an original DPR checkpoint (torch pickle or safetensors), loaded safely."""
    if path.suffix == ".safetensors":
        return load_file(path), {}
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise DPRDataError(
            "holds Python objects besides tensors (newer DPR versions store an omegaconf config), which "
            "torch.load(weights_only=True) refuses to run. If you trust the file, keep only its weights: "
            "torch.save(torch.load(path, weights_only=False)['model_dict'], 'weights.pt'), then convert that "
            f"with --backbone ({error})",
            path=str(path),
        ) from error
    if not isinstance(saved, dict):
        raise DPRDataError(f"expected a dict of weights, got {type(saved).__name__}", path=str(path))
    weights = saved.get("model_dict", saved)
    params = saved.get("encoder_params") or {}
    bad = [key for key, value in weights.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise DPRDataError(f"entries that are not tensors: {bad[:5]}", path=str(path))
    return weights, params if isinstance(params, dict) else {}


def original_roles(keys: list[str] | set[str], source: str = "") -> list[str]:
    """Roles held by an original DPR state dict: both encoders for a bi-encoder file, or the reader."""
    keys = set(keys)
    if any(key.startswith("question_model.") for key in keys) and any(
        key.startswith("ctx_model.") for key in keys
    ):
        return [QUESTION_ENCODER, PASSAGE_ENCODER]
    if "qa_outputs.weight" in keys and any(key.startswith("encoder.") for key in keys):
        return [READER]
    raise DPRDataError(
        "unknown checkpoint layout: expected an original DPR bi-encoder (question_model.*, ctx_model.*) or "
        f"reader (encoder.*, qa_outputs.*, qa_classifier.*); first keys: {sorted(keys)[:5]}",
        path=source or None,
    )


def load_original_dpr(
    path: str | Path, backbone: str | None = None
) -> tuple[dict[str, QuestionEncoder | PassageEncoder | ExtractiveReader], str]:
    """Load an original facebookresearch/DPR checkpoint as dpr_hf models.

    Returns `({"question_encoder": ..., "passage_encoder": ...} or {"reader": ...}, backbone)`, where `backbone`
    names the config used (and where the tokenizer lives): the `backbone` argument, else the checkpoint's
    `encoder_params["pretrained_model_cfg"]`.
    """
    path = Path(path)
    weights, params = _read_original(path)
    roles = original_roles(weights.keys(), str(path))
    backbone = backbone or params.get("pretrained_model_cfg")
    if not backbone:
        raise DPRDataError(
            "names no backbone; pass the backbone config/tokenizer it was trained from with backbone=... "
            "(--backbone), e.g. bert-base-uncased",
            path=str(path),
        )
    try:
        backbone_config: PreTrainedConfig = AutoConfig.from_pretrained(backbone)
    except OSError as error:
        raise FileNotFoundError(
            f"backbone {backbone!r} of {path} is neither a folder nor a reachable Hub model"
        ) from error
    claimed = set()
    models = {}
    for role in roles:
        prefixes = ORIGINAL_PREFIXES[role]
        state = {}
        for key, value in weights.items():
            ours = _rename(key, {theirs: ours for ours, theirs in prefixes.items()})
            if ours is not None:
                state[ours] = value
                claimed.add(key)
        extra = {}
        if role != READER:
            projection = state.get("projection.weight")
            extra["projection_dim"] = projection.shape[0] if projection is not None else 0
        model = MODEL_CLASSES[role](CONFIG_CLASSES[role](encoder=backbone_config.to_dict(), **extra))
        _load_strict(model, state, str(path))
        models[role] = model.eval()
    leftover = sorted(key for key in weights if key not in claimed and not IGNORED_KEYS.search(key))
    if leftover:
        raise DPRDataError(f"weights of no known DPR module: {leftover[:5]}", path=str(path))
    return models, backbone


def to_transformers_dpr(
    model: QuestionEncoder | PassageEncoder | ExtractiveReader,
) -> DPRQuestionEncoder | DPRContextEncoder | DPRReader:
    """Export a dpr_hf model to transformers' DPR class of the same role, for tools that expect those.

    Only BERT backbones with DPR's own head fit (CLS pooling, no L2 normalisation). transformers' `DPRReader`
    feeds no token type ids (all zero).
    """
    role = _role_of(model)
    backbone = model.config.encoder
    if backbone.model_type != "bert":
        raise MismatchError(
            f"transformers' DPR classes hold BERT backbones only; this one is {backbone.model_type}"
        )
    if role != READER and (model.config.pooling != "cls" or model.config.normalize):
        raise MismatchError(
            "transformers' DPR encoders pool [CLS] without normalisation; this model uses "
            f"pooling={model.config.pooling!r}, normalize={model.config.normalize}"
        )
    fields = {
        key: value for key, value in backbone.to_dict().items() if key not in ("model_type", "architectures")
    }
    projection_dim = model.config.projection_dim if role != READER else 0
    dpr_config = DPRConfig(**fields, projection_dim=projection_dim)
    dpr_config.architectures = [TRANSFORMERS_CLASSES[role].__name__]
    exported = TRANSFORMERS_CLASSES[role](dpr_config).to(model.dtype)
    state = {_rename(key, TRANSFORMERS_PREFIXES[role]): value for key, value in model.state_dict().items()}
    _load_strict(exported, state, type(model).__name__)
    return exported.eval()


def detect_source(src: str | Path) -> str:
    """Kind of `src`: "original" (a checkpoint file), "transformers" (DPR folder or Hub id), "dpr_hf" (ours)."""
    path = Path(src)
    if path.is_file():
        return "original"
    if path.is_dir():
        if (path / "config.json").is_file():
            model_type = PreTrainedConfig.get_config_dict(str(path))[0].get("model_type")
            if model_type == "dpr":
                return "transformers"
            if model_type in {config.model_type for config in CONFIG_CLASSES.values()}:
                return "dpr_hf"
            raise DPRDataError(
                f"a {model_type!r} model is not a DPR checkpoint (start from a plain backbone with "
                "QuestionEncoder.from_backbone / PassageEncoder.from_backbone)",
                path=str(path),
            )
        if _dpr_hf_folders(path):
            return "dpr_hf"
        raise DPRDataError(
            "unknown layout: expected a checkpoint file, a model folder with config.json, or a folder with "
            f"{QUESTION_ENCODER}/, {PASSAGE_ENCODER}/ or {READER}/ model folders",
            path=str(path),
        )
    try:
        model_type = PreTrainedConfig.get_config_dict(str(src))[0].get("model_type")
    except OSError as error:
        raise FileNotFoundError(f"{src} is neither a file, a folder nor a reachable Hub model") from error
    if model_type != "dpr":
        raise DPRDataError(f"not a DPR model (model_type {model_type!r})", path=str(src))
    return "transformers"


def _dpr_hf_folders(path: Path) -> dict[str | None, Path]:
    """Our model folder itself, or its role subfolders (a retriever pair or a system folder)."""
    if (path / "config.json").is_file():
        return {None: path}
    return {role: path / role for role in MODEL_CLASSES if (path / role / "config.json").is_file()}


def _save(outputs: dict[str | None, tuple], dest: Path, overwrite: bool) -> list[Path]:
    """Write `{subfolder: (model, tokenizer)}` under `dest` atomically: a temporary sibling renamed at the end."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())) and not overwrite:
        raise FileExistsError(
            f"{dest} exists and is not empty; pass overwrite=True (--overwrite) to replace it"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        for subfolder, (model, tokenizer) in outputs.items():
            target = staging / subfolder if subfolder else staging
            model.save_pretrained(target)
            tokenizer.save_pretrained(target)
        if dest.is_dir():
            shutil.rmtree(dest)
        elif dest.exists():
            dest.unlink()
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [dest / subfolder if subfolder else dest for subfolder in outputs]


def convert(
    src: str | Path,
    dest: str | Path,
    to: str = "dpr_hf",
    backbone: str | None = None,
    tokenizer: str | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Convert `src` into model folders under `dest` (weights, config, code and tokenizer); returns the folders.

    `to="dpr_hf"`: a transformers DPR folder/Hub id becomes one model folder at `dest`; an original bi-encoder
    checkpoint becomes `dest/question_encoder/` and `dest/passage_encoder/` (the layout training writes), an
    original reader `dest/reader/`. `to="transformers"`: a dpr_hf model folder, or a folder of
    `question_encoder/`, `passage_encoder/`, `reader/` ones, is exported to transformers' DPR classes in the
    same layout. `backbone` names the config and tokenizer of original checkpoints; `tokenizer` overrides the
    tokenizer in every case.
    """
    kind = detect_source(src)
    dest = Path(dest)
    if to == "transformers":
        if kind != "dpr_hf":
            raise DPRDataError(
                f"--to transformers exports dpr_hf models, not {kind} DPR checkpoints", path=str(src)
            )
        outputs = {}
        for subfolder, folder in _dpr_hf_folders(Path(src)).items():
            model = AutoModel.from_pretrained(folder)
            tokens = AutoTokenizer.from_pretrained(tokenizer or folder)
            outputs[subfolder] = (to_transformers_dpr(model), tokens)
    elif to == "dpr_hf":
        if kind == "dpr_hf":
            raise DPRDataError(
                "already a dpr_hf model; pass to='transformers' (--to transformers) to export it",
                path=str(src),
            )
        if kind == "transformers":
            model = load_transformers_dpr(src)
            # transformers' DPR tokenizers are BertTokenizer subclasses; save the plain class (see module doc).
            tokens = (
                AutoTokenizer.from_pretrained(tokenizer) if tokenizer else BertTokenizer.from_pretrained(src)
            )
            outputs = {None: (model, tokens)}
        else:
            models, backbone = load_original_dpr(src, backbone=backbone)
            tokens = AutoTokenizer.from_pretrained(tokenizer or backbone)
            outputs = {role: (model, tokens) for role, model in models.items()}
    else:
        raise ValueError(f"to must be 'dpr_hf' or 'transformers', got {to!r}")
    for model, tokens in outputs.values():
        _check_tokenizer(tokens, model.get_input_embeddings().num_embeddings, str(tokenizer or src))
        if isinstance(model, ExtractiveReader):  # read later only with this vocabulary
            model.config.tokenizer_fingerprint = tokenizer_fingerprint(tokens)
    written = _save(outputs, dest, overwrite)
    logger.info("converted %s (%s) -> %s", src, kind, ", ".join(map(str, written)))
    return written

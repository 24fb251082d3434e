"""Export a trained encoder pair as one sentence-transformers model (`Router`: query -> E_Q, document -> E_P).

Each route is the tower's backbone (`Transformer`) + its pooling (`Pooling`) + its projection (`Dense`, identity
activation) + `Normalize` when the tower normalises, so `encode_query` / `encode_document` return exactly the
towers' `pooler_output`. A passage is given as one string, `f"{title} {sep} {text}"` (`sep` the tokenizer's
separator token, `[SEP]` for BERT): it tokenises to the ids of dpr_hf's (title, text) pair encoding, with the
all-zero segment ids dpr_hf uses, which the export checks on probe passages before writing anything.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from ..atomic import replace_folder
from ..errors import MismatchError

SIMILARITIES = ("dot", "cosine")
EXPORT_INFO_FILE = "dpr_hf_export.json"
# Probe passages for the separator check: plain, punctuation around the boundary, digits, accents.
_PROBES = (
    ("Hamlet", "Hamlet is a tragedy written by William Shakespeare."),
    ("Paris (France)", "It has been the capital since 987, and Paris's population is 2.1 million."),
    ("Zoë's café", "naïve résumé of a rôle: «quoted» text!"),
)


@dataclass(frozen=True)
class PairSettings:
    """What an exported model must reproduce of a pair: read from its configs and training arguments."""

    similarity: str
    temperature: float
    question_max_length: int
    passage_max_length: int
    question_pooling: str
    passage_pooling: str
    projection_dim: int
    normalize: bool


def read_pair_settings(
    pair_dir: str | os.PathLike,
    similarity: str | None = None,
    question_max_length: int | None = None,
    passage_max_length: int | None = None,
) -> PairSettings:
    """The pair's inference settings, from its towers' configs (what dpr_hf's own encoding uses).

    Explicit arguments win: another similarity than the trained one, or other lengths.
    """
    from .. import DPREncoderConfig

    pair_dir = Path(pair_dir)
    configs = {}
    for role in ("question", "passage"):
        folder = pair_dir / f"{role}_encoder"
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"{pair_dir} is not an encoder pair folder: {folder / 'config.json'} is missing "
                "(expected the output folder of `dpr-hf train-retriever`, or a system folder)"
            )
        config = AutoConfig.from_pretrained(folder)
        if not isinstance(config, DPREncoderConfig):
            raise MismatchError(f"{folder} holds a {config.model_type!r} model, not a dpr_hf {role} encoder")
        if config.role != role:
            raise MismatchError(f"{folder} holds a {config.role} encoder, not a {role} encoder")
        configs[role] = config
    question, passage = configs["question"], configs["passage"]
    if question.normalize != passage.normalize or question.projection_dim != passage.projection_dim:
        raise MismatchError(
            f"the towers of {pair_dir} disagree: normalize {question.normalize}/{passage.normalize}, "
            f"projection_dim {question.projection_dim}/{passage.projection_dim} (question/passage)"
        )
    similarity = similarity or question.similarity
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    lengths = {
        "question_max_length": question_max_length or question.max_seq_length,
        "passage_max_length": passage_max_length or passage.max_seq_length,
    }
    for name, value in lengths.items():
        if value < 2:
            raise ValueError(f"{name} must be >= 2 (room for [CLS] and [SEP]), got {value}")
    return PairSettings(
        similarity=similarity,
        temperature=float(question.temperature),
        question_pooling=question.pooling,
        passage_pooling=passage.pooling,
        projection_dim=question.projection_dim,
        normalize=question.normalize,
        **lengths,
    )


def passage_separator(tokenizer: PreTrainedTokenizerBase) -> str:
    """The string joining title and text so that one string encodes as dpr_hf's (title, text) pair.

    Checked on probe passages: same input ids, and the single string's segment ids are all zero as dpr_hf's are.
    A tokenizer whose pair encoding no single string reproduces (e.g. RoBERTa's `</s></s>`) is refused.
    """
    from .. import format_passages

    if not tokenizer.sep_token:
        raise MismatchError(
            f"tokenizer {tokenizer.name_or_path!r} has no separator token to join title and text"
        )
    separator = f" {tokenizer.sep_token} "
    for title, text in _PROBES:
        pair = format_passages(tokenizer, [title], [text], return_tensors=None, padding=False)
        single = tokenizer(f"{title}{separator}{text}")
        if single["input_ids"] != pair["input_ids"][0] or any(single.get("token_type_ids") or []):
            raise MismatchError(
                f"tokenizer {tokenizer.name_or_path!r}: the string {title + separator + text!r} does not encode "
                "like the (title, text) pair dpr_hf feeds the passage encoder, so a sentence-transformers "
                "export could not reproduce its embeddings"
            )
    return separator


def _backbone_folder(encoder, tokenizer: PreTrainedTokenizerBase, folder: Path) -> Path:
    """Save the tower's backbone as a plain transformers model that sentence-transformers loads with AutoModel.

    dpr_hf drops the backbone's pooler head (it pools itself); AutoModel builds one again. It is saved as zeros:
    sentence-transformers pools token embeddings and never uses it, and the folder then loads without a
    missing-weights report and exports reproducibly.
    """
    backbone = encoder.encoder
    model = AutoModel.from_config(backbone.config)
    missing, unexpected = model.load_state_dict(backbone.state_dict(), strict=False)
    if unexpected or any(not key.startswith("pooler.") for key in missing):
        raise MismatchError(
            f"backbone weights do not fit {type(model).__name__}: missing {missing}, unexpected {unexpected}"
        )
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith("pooler."):
                parameter.zero_()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _route(encoder, tokenizer: PreTrainedTokenizerBase, max_length: int, folder: Path) -> list:
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    transformer = Transformer(str(_backbone_folder(encoder, tokenizer, folder)), max_seq_length=max_length)
    modules = [
        transformer,
        Pooling(transformer.get_embedding_dimension(), pooling_mode=encoder.config.pooling),
    ]
    if encoder.projection is not None:
        modules.append(
            Dense(
                encoder.config.hidden_size,
                encoder.config.projection_dim,
                activation_function=torch.nn.Identity(),
                init_weight=encoder.projection.weight.detach().clone(),
                init_bias=encoder.projection.bias.detach().clone(),
            )
        )
    if encoder.config.normalize:
        modules.append(Normalize())
    return modules


def export_sentence_transformers(
    pair_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    similarity: str | None = None,
    question_max_length: int | None = None,
    passage_max_length: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `output_dir`: one SentenceTransformer whose `encode_query` is E_Q and `encode_document` is E_P.

    `pair_dir` holds `question_encoder/` and `passage_encoder/` (a retriever training output or a system
    folder). The folder appears whole or not at all, with a README.md saying how to use it. Returns its path.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Router

    from .. import PassageEncoder, QuestionEncoder

    pair_dir, output_dir = Path(pair_dir), Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir} exists (pass overwrite=True / --overwrite to replace it)")
    settings = read_pair_settings(pair_dir, similarity, question_max_length, passage_max_length)
    question_encoder = QuestionEncoder.from_pretrained(
        pair_dir / "question_encoder", dtype=torch.float32
    ).eval()
    passage_encoder = PassageEncoder.from_pretrained(pair_dir / "passage_encoder", dtype=torch.float32).eval()
    question_tokenizer = AutoTokenizer.from_pretrained(pair_dir / "question_encoder")
    passage_tokenizer = AutoTokenizer.from_pretrained(pair_dir / "passage_encoder")
    separator = passage_separator(passage_tokenizer)

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_dir.with_name(f".{output_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with tempfile.TemporaryDirectory() as staging:
        router = Router.for_query_document(
            query_modules=_route(
                question_encoder, question_tokenizer, settings.question_max_length, Path(staging) / "query"
            ),
            document_modules=_route(
                passage_encoder, passage_tokenizer, settings.passage_max_length, Path(staging) / "document"
            ),
        )
        model = SentenceTransformer(modules=[router], similarity_fn_name=settings.similarity, device="cpu")
        model.save(str(tmp), create_model_card=False)
    info = {"source": str(pair_dir), "passage_separator": separator, **asdict(settings)}
    (tmp / EXPORT_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    (tmp / "README.md").write_text(model_card(settings, separator))
    replace_folder(tmp, output_dir)
    return output_dir


MODEL_CARD = """---
library_name: sentence-transformers
pipeline_tag: sentence-similarity
tags:
- sentence-transformers
- feature-extraction
- dense-passage-retrieval
- dpr
- dpr-hf
---

# DPR encoder pair (exported from dpr_hf)

A Dense Passage Retrieval bi-encoder (Karpukhin et al., 2020) trained with dpr_hf, as one sentence-transformers
model: `encode_query` runs the question encoder and `encode_document` the passage encoder (a `Router` with a
`query` and a `document` route; plain `encode` takes the document route). The embeddings are the dpr_hf towers'
(cosine >= 0.9999).

| setting | value |
|---|---|
| similarity (`model.similarity`) | {similarity} |
| pooling (question / passage) | {question_pooling} / {passage_pooling} |
| projection | {projection} |
| L2-normalised embeddings | {normalize} |
| max tokens (question / passage) | {question_max_length} / {passage_max_length} |
| training temperature | {temperature} |

## Usage

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("path/to/this/folder")
questions = ["who wrote hamlet?"]
passages = [
    "Hamlet{separator}Hamlet is a tragedy written by William Shakespeare.",  # f"{{title}}{separator}{{text}}"
    "Paris is the capital of France.",  # a passage without a title: just its text
]
query_embeddings = model.encode_query(questions)
document_embeddings = model.encode_document(passages)
scores = model.similarity(query_embeddings, document_embeddings)  # {similarity_words}
```

A passage with a title must be given as `f"{{title}}{separator}{{text}}"` (the separator is the tokenizer's
`{sep_token}` token with a space on each side): that string encodes exactly as the `[CLS] title [SEP] text [SEP]`
pair, with all-zero segment ids, that the passage encoder was trained on. Passages longer than
{passage_max_length} tokens are cut at the end, as dpr_hf cuts them while the text stays at least as long as
the title (dpr_hf trims the longer of title and text first). The training temperature does not change rankings;
the scores the pair was trained to separate are `model.similarity(...) / {temperature}`.
"""


def model_card(settings: PairSettings, separator: str) -> str:
    """The exported model's README.md: what it is and how to call it."""
    return MODEL_CARD.format(
        **asdict(settings),
        projection=f"linear to {settings.projection_dim} dims" if settings.projection_dim else "none",
        separator=separator,
        sep_token=separator.strip(),
        similarity_words="dot product" if settings.similarity == "dot" else "cosine similarity",
    )

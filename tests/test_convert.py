"""Conversion from transformers' DPR and original DPR checkpoints, and export back: outputs must not change."""

from __future__ import annotations

import argparse

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertModel,
    DPRConfig,
    DPRContextEncoder,
    DPRContextEncoderTokenizer,
    DPRQuestionEncoder,
    DPRQuestionEncoderTokenizer,
    DPRReader,
    RobertaConfig,
)

from dpr_hf import (
    ExtractiveReader,
    PassageEncoder,
    PassageEncoderConfig,
    QuestionEncoder,
    QuestionEncoderConfig,
    format_passages,
)
from dpr_hf.cli import main
from dpr_hf.models.convert import (
    convert,
    detect_source,
    load_original_dpr,
    load_transformers_dpr,
    to_transformers_dpr,
)
from dpr_hf.models.errors import DPRDataError, MismatchError
from dpr_hf.models.tokenization import tokenizer_fingerprint

ATOL = 1e-5
TITLES = ["Paris", "Photosynthesis"]
TEXTS = ["Paris is the capital and largest city of France.", "Plants turn light into chemical energy."]


@pytest.fixture(scope="module")
def dpr_config(tokenizer) -> DPRConfig:
    return DPRConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )


@pytest.fixture(scope="module")
def inputs(tokenizer) -> dict[str, torch.Tensor]:
    """Padded pairs whose text has segment id 1, so token type embeddings are exercised too."""
    encoded = tokenizer(TITLES, TEXTS, padding=True, return_tensors="pt")
    assert encoded["token_type_ids"].any() and not encoded["attention_mask"].all()
    return dict(encoded)


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory, tokenizer, dpr_config) -> str:
    """What `--backbone` points at for original checkpoints: a BERT config and its tokenizer."""
    folder = tmp_path_factory.mktemp("backbone")
    BertConfig(
        **{k: v for k, v in dpr_config.to_dict().items() if k not in ("model_type", "projection_dim")}
    ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _save_transformers(model, folder, minilm_path, tokenizer_class=DPRQuestionEncoderTokenizer) -> None:
    """Save like the Hub's facebook/dpr-* repos: a DPR tokenizer and the unused `*.pooler.dense.*` weights."""
    model.save_pretrained(folder)
    tokenizer_class.from_pretrained(minilm_path).save_pretrained(folder)
    weights = load_file(folder / "model.safetensors")
    prefix = next(iter(weights)).split("bert_model.")[0] + "bert_model."
    hidden = model.config.hidden_size
    weights[prefix + "pooler.dense.weight"] = torch.randn(hidden, hidden)
    weights[prefix + "pooler.dense.bias"] = torch.randn(hidden)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize("projection_dim", [0, 8])
@pytest.mark.parametrize(
    ("dpr_class", "our_class", "tokenizer_class"),
    [
        (DPRQuestionEncoder, QuestionEncoder, DPRQuestionEncoderTokenizer),
        (DPRContextEncoder, PassageEncoder, DPRContextEncoderTokenizer),
    ],
)
def test_transformers_encoder_converts_exactly(
    tmp_path, minilm_path, dpr_config, inputs, dpr_class, our_class, tokenizer_class, projection_dim
):
    torch.manual_seed(0)
    source = dpr_class(DPRConfig(**{**dpr_config.to_dict(), "projection_dim": projection_dim})).eval()
    _save_transformers(source, tmp_path / "dpr", minilm_path, tokenizer_class)
    assert detect_source(tmp_path / "dpr") == "transformers"

    [folder] = convert(tmp_path / "dpr", tmp_path / "ours")
    model = AutoModel.from_pretrained(folder)
    assert type(model) is our_class
    assert model.config.pooling == "cls" and model.config.projection_dim == projection_dim
    with torch.no_grad():
        expected = source(**inputs).pooler_output
        actual = model(**inputs).pooler_output
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0)
    # The saved tokenizer is a plain BERT one with the source vocabulary.
    saved = AutoTokenizer.from_pretrained(folder)
    assert type(saved).__name__ == "BertTokenizer"
    assert saved(TEXTS)["input_ids"] == AutoTokenizer.from_pretrained(minilm_path)(TEXTS)["input_ids"]


def test_transformers_reader_converts_exactly(tmp_path, minilm_path, dpr_config, tokenizer):
    torch.manual_seed(0)
    source = DPRReader(dpr_config).eval()
    _save_transformers(source, tmp_path / "dpr", minilm_path)
    reader = load_transformers_dpr(tmp_path / "dpr")
    assert isinstance(reader, ExtractiveReader)
    # The converted folder records its tokenizer's vocabulary: reading with another one is refused.
    [folder] = convert(tmp_path / "dpr", tmp_path / "ours")
    saved = AutoModel.from_pretrained(folder).config.tokenizer_fingerprint
    assert (
        saved
        == tokenizer_fingerprint(AutoTokenizer.from_pretrained(folder))
        == tokenizer_fingerprint(tokenizer)
    )

    # DPRReader feeds no token types: compare on [CLS] question [SEP] title [SEP] text with zeros.
    encoded = tokenizer(
        ["where is paris"] * 2, [f"{t} [SEP] {x}" for t, x in zip(TITLES, TEXTS, strict=True)], padding=True
    )
    ids, mask = torch.tensor(encoded["input_ids"]), torch.tensor(encoded["attention_mask"])
    with torch.no_grad():
        expected = source(input_ids=ids, attention_mask=mask)
        actual = reader(input_ids=ids, attention_mask=mask)
        grouped = reader(input_ids=ids[None], attention_mask=mask[None])
    for name in ("start_logits", "end_logits", "relevance_logits"):
        torch.testing.assert_close(getattr(actual, name), getattr(expected, name), atol=ATOL, rtol=0)
        torch.testing.assert_close(getattr(grouped, name)[0], getattr(expected, name), atol=ATOL, rtol=0)


def test_export_to_transformers_round_trip(tmp_path, tokenizer, tiny_bert_config, tiny_reader, inputs):
    torch.manual_seed(3)
    question = QuestionEncoder(QuestionEncoderConfig(encoder=tiny_bert_config, projection_dim=8)).eval()
    passage = PassageEncoder(PassageEncoderConfig(encoder=tiny_bert_config)).eval()
    for model, dpr_class in (
        (question, DPRQuestionEncoder),
        (passage, DPRContextEncoder),
        (tiny_reader, DPRReader),
    ):
        exported = to_transformers_dpr(model)
        assert type(exported) is dpr_class
        exported.save_pretrained(tmp_path / dpr_class.__name__)
        back = load_transformers_dpr(tmp_path / dpr_class.__name__)
        assert type(back) is type(model)
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        with torch.no_grad():
            if dpr_class is DPRReader:
                for name in ("start_logits", "end_logits", "relevance_logits"):
                    reference = getattr(model(input_ids=ids, attention_mask=mask), name)
                    torch.testing.assert_close(
                        getattr(exported(input_ids=ids, attention_mask=mask), name), reference
                    )
                    torch.testing.assert_close(
                        getattr(back(input_ids=ids, attention_mask=mask), name), reference
                    )
            else:
                reference = model(**inputs).pooler_output
                torch.testing.assert_close(exported(**inputs).pooler_output, reference, atol=ATOL, rtol=0)
                torch.testing.assert_close(back(**inputs).pooler_output, reference, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "config_kwargs", [{"pooling": "mean"}, {"normalize": True}], ids=["mean-pooling", "normalized"]
)
def test_export_refuses_what_dpr_cannot_hold(tiny_bert_config, config_kwargs):
    model = QuestionEncoder(QuestionEncoderConfig(encoder=tiny_bert_config, **config_kwargs))
    with pytest.raises(MismatchError, match="pool"):
        to_transformers_dpr(model)


def test_export_refuses_non_bert_backbone():
    roberta = RobertaConfig(
        vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    with pytest.raises(MismatchError, match="BERT backbones only.*roberta"):
        to_transformers_dpr(PassageEncoder(PassageEncoderConfig(encoder=roberta)))


def _original_biencoder(dpr_config, projection_dim: int) -> tuple[dict, dict]:
    """An original-DPR bi-encoder state dict (BertModel with pooler + encode_proj) and its reference towers."""
    bert_config = BertConfig(
        **{k: v for k, v in dpr_config.to_dict().items() if k not in ("model_type", "projection_dim")}
    )
    state, towers = {}, {}
    for seed, prefix in enumerate(("question_model.", "ctx_model.")):
        torch.manual_seed(10 + seed)
        bert = BertModel(bert_config).eval()  # keeps its pooler, as DPR's HFBertEncoder did
        projection = torch.nn.Linear(bert_config.hidden_size, projection_dim) if projection_dim else None
        state.update({prefix + k: v for k, v in bert.state_dict().items()})
        state[prefix + "embeddings.position_ids"] = torch.arange(bert_config.max_position_embeddings)[None]
        if projection is not None:
            state.update({prefix + "encode_proj." + k: v for k, v in projection.state_dict().items()})
        towers[prefix] = (bert, projection)
    return state, towers


def _tower_output(tower, inputs) -> torch.Tensor:
    bert, projection = tower
    with torch.no_grad():
        pooled = bert(**inputs).last_hidden_state[:, 0]
        return projection(pooled) if projection is not None else pooled


@pytest.mark.parametrize("layout", ["checkpoint-state", "plain-dict", "safetensors"])
def test_original_biencoder_converts_exactly(tmp_path, dpr_config, backbone_dir, tokenizer, layout):
    state, towers = _original_biencoder(dpr_config, projection_dim=8 if layout == "plain-dict" else 0)
    backbone = None
    if layout == "checkpoint-state":  # DPR's CheckpointState._asdict(); the backbone named in encoder_params
        source = tmp_path / "dpr_biencoder.cp"
        params = {"pretrained_model_cfg": backbone_dir, "projection_dim": 0, "sequence_length": 256}
        torch.save(
            {"model_dict": state, "optimizer_dict": {}, "offset": 0, "epoch": 3, "encoder_params": params},
            source,
        )
    elif layout == "plain-dict":
        source, backbone = tmp_path / "weights.pt", backbone_dir
        torch.save(state, source)
    else:
        source, backbone = tmp_path / "weights.safetensors", backbone_dir
        save_file({k: v.contiguous() for k, v in state.items()}, source)
    assert detect_source(source) == "original"

    written = convert(source, tmp_path / "pair", backbone=backbone)
    assert written == [tmp_path / "pair" / "question_encoder", tmp_path / "pair" / "passage_encoder"]
    batch = format_passages(tokenizer, TITLES, TEXTS)
    for folder, prefix, our_class in zip(written, towers, (QuestionEncoder, PassageEncoder), strict=True):
        model = AutoModel.from_pretrained(folder)
        assert type(model) is our_class
        assert (folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file()
        with torch.no_grad():
            actual = model(**batch).pooler_output
        torch.testing.assert_close(actual, _tower_output(towers[prefix], batch), atol=ATOL, rtol=0)


def test_original_reader_converts_exactly(tmp_path, dpr_config, backbone_dir, inputs):
    bert_config = BertConfig(
        **{k: v for k, v in dpr_config.to_dict().items() if k not in ("model_type", "projection_dim")}
    )
    torch.manual_seed(4)
    bert = BertModel(bert_config).eval()
    qa_outputs, qa_classifier = torch.nn.Linear(32, 2), torch.nn.Linear(32, 1)
    state = {"encoder." + k: v for k, v in bert.state_dict().items()}
    state.update({"qa_outputs." + k: v for k, v in qa_outputs.state_dict().items()})
    state.update({"qa_classifier." + k: v for k, v in qa_classifier.state_dict().items()})
    torch.save(
        {"model_dict": state, "encoder_params": {"pretrained_model_cfg": backbone_dir}},
        tmp_path / "reader.cp",
    )

    models, backbone = load_original_dpr(tmp_path / "reader.cp")
    assert backbone == backbone_dir and list(models) == ["reader"]
    with torch.no_grad():
        sequence = bert(**inputs).last_hidden_state
        start, end = qa_outputs(sequence).unbind(-1)
        actual = models["reader"](**inputs)
    torch.testing.assert_close(actual.start_logits, start, atol=ATOL, rtol=0)
    torch.testing.assert_close(actual.end_logits, end, atol=ATOL, rtol=0)
    torch.testing.assert_close(
        actual.relevance_logits, qa_classifier(sequence[:, 0]).squeeze(-1), atol=ATOL, rtol=0
    )


def test_original_checkpoint_errors(tmp_path, dpr_config, backbone_dir):
    state, _ = _original_biencoder(dpr_config, projection_dim=0)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "weights.safetensors")
    with pytest.raises(DPRDataError, match="names no backbone"):
        load_original_dpr(tmp_path / "weights.safetensors")

    # Pickled Python objects (here an argparse.Namespace, like old DPR args) are refused, never executed.
    torch.save({"model_dict": state, "encoder_params": argparse.Namespace(x=1)}, tmp_path / "unsafe.cp")
    with pytest.raises(DPRDataError, match="weights_only"):
        load_original_dpr(tmp_path / "unsafe.cp", backbone=backbone_dir)

    torch.save({"classifier.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    with pytest.raises(DPRDataError, match="unknown checkpoint layout"):
        load_original_dpr(tmp_path / "other.pt", backbone=backbone_dir)

    wrong_backbone = tmp_path / "wide"
    BertConfig(vocab_size=dpr_config.vocab_size, hidden_size=64, num_attention_heads=2).save_pretrained(
        wrong_backbone
    )
    with pytest.raises(MismatchError, match="do not fit the backbone config"):
        load_original_dpr(tmp_path / "weights.safetensors", backbone=str(wrong_backbone))

    state["question_model.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pt")
    with pytest.raises(DPRDataError, match=r"extra\.weight"):
        load_original_dpr(tmp_path / "extra.pt", backbone=backbone_dir)


def test_cli_convert_export_and_errors(tmp_path, minilm_path, dpr_config, backbone_dir, inputs, capsys):
    torch.manual_seed(5)
    source = DPRContextEncoder(dpr_config).eval()
    _save_transformers(source, tmp_path / "dpr", minilm_path, DPRContextEncoderTokenizer)

    assert main(["convert", str(tmp_path / "dpr"), str(tmp_path / "ours")]) == 0
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "back"), "--to", "transformers"]) == 0
    exported = DPRContextEncoder.from_pretrained(tmp_path / "back")
    with torch.no_grad():
        torch.testing.assert_close(
            exported(**inputs).pooler_output, source(**inputs).pooler_output, atol=ATOL, rtol=0
        )
    assert (tmp_path / "back" / "tokenizer_config.json").is_file()
    capsys.readouterr()

    # A non-empty DEST is kept unless --overwrite.
    assert main(["convert", str(tmp_path / "dpr"), str(tmp_path / "ours")]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "dpr"), str(tmp_path / "ours"), "--overwrite"]) == 0

    # An original bi-encoder file with --backbone; the pair then exports in the same layout.
    torch.save(_original_biencoder(dpr_config, projection_dim=0)[0], tmp_path / "biencoder.pt")
    assert (
        main(["convert", str(tmp_path / "biencoder.pt"), str(tmp_path / "pair"), "--backbone", backbone_dir])
        == 0
    )
    assert main(["convert", str(tmp_path / "pair"), str(tmp_path / "pair_dpr"), "--to", "transformers"]) == 0
    assert type(AutoModel.from_pretrained(tmp_path / "pair_dpr" / "question_encoder")) is DPRQuestionEncoder
    assert type(AutoModel.from_pretrained(tmp_path / "pair" / "passage_encoder")) is PassageEncoder
    DPRContextEncoder(dpr_config).save_pretrained(tmp_path / "no_tokenizer")

    # Unknown layouts and wrong directions fail with one line, exit code 2.
    torch.save({"classifier.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    (tmp_path / "empty").mkdir()
    for argv in (
        [str(tmp_path / "other.pt"), str(tmp_path / "x")],
        [str(tmp_path / "empty"), str(tmp_path / "x")],
        [str(tmp_path / "ours"), str(tmp_path / "x")],
        [str(tmp_path / "dpr"), str(tmp_path / "x"), "--to", "transformers"],
        [str(tmp_path / "missing"), str(tmp_path / "x")],
        [str(tmp_path / "no_tokenizer"), str(tmp_path / "x")],
    ):
        capsys.readouterr()
        assert main(["convert", *argv]) == 2, argv
        # The error is one line (progress bars from loading may precede it), not a traceback.
        err = capsys.readouterr().err
        assert err.splitlines()[-1].startswith("dpr-hf convert: error:") and "Traceback" not in err, err
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith((".x", "x"))]

"""The encoders and reader as transformers models: save/load, Auto classes, remote code, options, formatting."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModel, AutoTokenizer, BertConfig

from dpr_hf import (
    ExtractiveReader,
    ExtractiveReaderConfig,
    PassageEncoder,
    PassageEncoderConfig,
    QuestionEncoder,
    QuestionEncoderConfig,
    format_passages,
    format_questions,
)

QUESTIONS = ["what is the capital of france?", "how do plants make energy?"]
TITLES = ["Paris", "Photosynthesis"]
TEXTS = [
    "Paris is the capital and most populous city of France.",
    "Photosynthesis is the process by which plants turn light into chemical energy.",
]


@pytest.fixture
def batch(tokenizer):
    return format_passages(tokenizer, TITLES, TEXTS)


def _encoder(tiny_bert_config, role: str = "question", seed: int = 0, **options):
    torch.manual_seed(seed)
    if role == "question":
        return QuestionEncoder(QuestionEncoderConfig(encoder=tiny_bert_config, **options)).eval()
    return PassageEncoder(PassageEncoderConfig(encoder=tiny_bert_config, **options)).eval()


def _save(model, tokenizer, folder):
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_save_load_round_trip_is_identical(tmp_path, tiny_bert_config, tokenizer, tiny_reader, batch):
    model = _encoder(tiny_bert_config, "passage", projection_dim=16, pooling="mean")
    loaded = PassageEncoder.from_pretrained(_save(model, tokenizer, tmp_path / "passage"))
    for option in ("role", "pooling", "projection_dim", "normalize", "embedding_dim"):
        assert getattr(loaded.config, option) == getattr(model.config, option)
    assert {p.name for p in (tmp_path / "passage").iterdir()} >= {
        "config.json",
        "model.safetensors",
        "configuration.py",
        "modeling.py",
        "tokenizer_config.json",
    }
    # Identical up to float rounding: loaded weights are memory-mapped with another alignment, which can change
    # the SIMD path of a matmul by one ulp.
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(**batch).pooler_output, model(**batch).pooler_output, atol=1e-6, rtol=0
        )

    reader = ExtractiveReader.from_pretrained(_save(tiny_reader, tokenizer, tmp_path / "reader"))
    with torch.no_grad():
        expected, actual = tiny_reader(**batch), reader(**batch)
    for name in ("start_logits", "end_logits", "relevance_logits"):
        torch.testing.assert_close(getattr(actual, name), getattr(expected, name), atol=1e-6, rtol=0)


def test_auto_classes_return_each_role(
    tmp_path, tiny_question_encoder, tiny_passage_encoder, tiny_reader, tokenizer
):
    for model, config_class in (
        (tiny_question_encoder, QuestionEncoderConfig),
        (tiny_passage_encoder, PassageEncoderConfig),
        (tiny_reader, ExtractiveReaderConfig),
    ):
        folder = _save(model, tokenizer, tmp_path / type(model).__name__)
        assert type(AutoConfig.from_pretrained(folder)) is config_class
        assert type(AutoModel.from_pretrained(folder)) is type(model)


def test_reader_accepts_grouped_inputs(tiny_reader, tokenizer):
    encoded = tokenizer(["where is paris"] * 2, TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        flat = tiny_reader(**encoded)
        grouped = tiny_reader(**{k: v.reshape(1, 2, -1) for k, v in encoded.items()})
    assert grouped.start_logits.shape == (1, 2, encoded["input_ids"].shape[1])
    assert grouped.relevance_logits.shape == (1, 2)
    torch.testing.assert_close(grouped.start_logits[0], flat.start_logits)
    torch.testing.assert_close(grouped.relevance_logits[0], flat.relevance_logits)


REMOTE_LOAD = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class BlockDprHf(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "dpr_hf" or name.startswith("dpr_hf."):
                raise ModuleNotFoundError(f"{name} is blocked in this process")

    sys.meta_path.insert(0, BlockDprHf())
    try:
        import dpr_hf  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("dpr_hf is importable")

    import torch
    from transformers import AutoModel

    results = {}
    for folder in sys.argv[2:]:
        model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        ids = torch.tensor(json.loads(sys.argv[1]))
        with torch.no_grad():
            output = model(input_ids=ids, attention_mask=torch.ones_like(ids))
        vector = output.pooler_output if hasattr(output, "pooler_output") else output.start_logits
        results[folder] = {"class": type(model).__module__ + "." + type(model).__name__, "output": vector.tolist()}
    assert not any(name.startswith("dpr_hf") for name in sys.modules)
    print(json.dumps(results))
    """
)


def test_trust_remote_code_loads_without_dpr_hf(
    tmp_path, tiny_question_encoder, tiny_passage_encoder, tiny_reader, tokenizer
):
    models = {
        str(_save(model, tokenizer, tmp_path / type(model).__name__)): model
        for model in (tiny_question_encoder, tiny_passage_encoder, tiny_reader)
    }
    ids = tokenizer(QUESTIONS[0], return_tensors="pt")["input_ids"]
    env = {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_LOAD, json.dumps(ids.tolist()), *models],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    for folder, model in models.items():
        assert loaded[folder]["class"].startswith("transformers_modules.")
        assert loaded[folder]["class"].endswith("." + type(model).__name__)
        with torch.no_grad():
            output = model(input_ids=ids, attention_mask=torch.ones_like(ids))
        expected = (
            output.pooler_output
            if isinstance(model, QuestionEncoder | PassageEncoder)
            else output.start_logits
        )
        torch.testing.assert_close(torch.tensor(loaded[folder]["output"]), expected, atol=1e-6, rtol=0)


def test_wrong_role_is_refused(tmp_path, tiny_question_encoder, tiny_passage_encoder, tokenizer):
    passage_folder = _save(tiny_passage_encoder, tokenizer, tmp_path / "passage")
    question_folder = _save(tiny_question_encoder, tokenizer, tmp_path / "question")
    with pytest.raises(ValueError, match="passage encoder, not a question encoder.*PassageEncoder"):
        QuestionEncoder.from_pretrained(passage_folder)
    with pytest.raises(ValueError, match="question encoder, not a passage encoder"):
        PassageEncoder.from_pretrained(question_folder)
    with pytest.raises(ValueError, match="passage encoder, not a question encoder"):
        QuestionEncoder(PassageEncoderConfig(encoder=tiny_passage_encoder.config.encoder))


def test_cls_pooling_is_the_first_token(tiny_bert_config, batch):
    model = _encoder(tiny_bert_config, pooling="cls")
    with torch.no_grad():
        output = model(**batch)
    assert output.pooler_output.shape == (2, tiny_bert_config.hidden_size)
    assert torch.equal(output.pooler_output, output.last_hidden_state[:, 0])


def test_mean_pooling_ignores_padding(tiny_bert_config, tokenizer):
    model = _encoder(tiny_bert_config, pooling="mean")
    short = format_questions(tokenizer, QUESTIONS[:1])
    padded = format_questions(tokenizer, QUESTIONS[:1], padding="max_length", max_length=32)
    assert (padded["attention_mask"] == 0).any()
    with torch.no_grad():
        output = model(**short)
        with_padding = model(**padded).pooler_output
    torch.testing.assert_close(output.pooler_output, output.last_hidden_state.mean(dim=1))
    torch.testing.assert_close(with_padding, output.pooler_output, atol=1e-5, rtol=0)


def test_projection_dim_sets_the_embedding_size(tmp_path, tiny_bert_config, tokenizer, batch):
    model = _encoder(tiny_bert_config, "passage", projection_dim=8)
    assert model.config.embedding_dim == model.embedding_dim == 8
    assert _encoder(tiny_bert_config).embedding_dim == tiny_bert_config.hidden_size  # 0 = no projection
    loaded = AutoModel.from_pretrained(_save(model, tokenizer, tmp_path / "projected"))
    with torch.no_grad():
        output = loaded(**batch)
    assert output.pooler_output.shape == (2, 8)
    torch.testing.assert_close(output.pooler_output, loaded.projection(output.last_hidden_state[:, 0]))


def test_normalize_gives_unit_vectors(tiny_bert_config, batch):
    raw = _encoder(tiny_bert_config, normalize=False)
    normalized = _encoder(tiny_bert_config, normalize=True)
    with torch.no_grad():
        raw_vectors, unit_vectors = raw(**batch).pooler_output, normalized(**batch).pooler_output
    assert not torch.allclose(raw_vectors.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(unit_vectors.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(unit_vectors, torch.nn.functional.normalize(raw_vectors, dim=-1))


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"pooling": "max"}, "pooling must be one of"),
        ({"role": "answer"}, "role must be one of"),
        ({"projection_dim": -1}, "projection_dim must be >= 0"),
    ],
)
def test_invalid_options_are_refused(tiny_bert_config, option, message):
    with pytest.raises(ValueError, match=message):
        QuestionEncoderConfig(encoder=tiny_bert_config, **option)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_bert_config, batch):
    config = BertConfig(
        **{**tiny_bert_config.to_dict(), "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    )

    def gradients(checkpointing: bool) -> tuple[dict[str, torch.Tensor], int]:
        model = _encoder(config, seed=0).train()
        if checkpointing:
            model.activation_checkpointing_enable()
        calls = []
        model.encoder.encoder.layer[0].attention.register_forward_hook(lambda *_: calls.append(1))
        model(**batch).pooler_output.pow(2).sum().backward()
        return {name: p.grad for name, p in model.named_parameters() if p.grad is not None}, len(calls)

    plain, plain_calls = gradients(False)
    checkpointed, checkpointed_calls = gradients(True)
    assert (plain_calls, checkpointed_calls) == (1, 2)  # the checkpointed layer is recomputed in backward
    assert plain.keys() == checkpointed.keys() and len(plain) > 0
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5)


def test_sdpa_attention_is_used(tmp_path, tiny_question_encoder, tokenizer, batch):
    assert tiny_question_encoder.config.encoder._attn_implementation == "sdpa"
    folder = _save(tiny_question_encoder, tokenizer, tmp_path / "question")
    sdpa = QuestionEncoder.from_pretrained(folder)
    eager = QuestionEncoder.from_pretrained(folder, attn_implementation="eager")
    assert sdpa.encoder.config._attn_implementation == "sdpa"
    assert eager.encoder.config._attn_implementation == "eager"
    with torch.no_grad():
        torch.testing.assert_close(
            sdpa(**batch).pooler_output, eager(**batch).pooler_output, atol=1e-5, rtol=0
        )


def test_format_passages_is_title_sep_text_with_zero_token_types(tokenizer):
    encoded = format_passages(tokenizer, TITLES, TEXTS)
    first = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0][encoded["attention_mask"][0].bool()])
    assert first == ["[CLS]", "paris", "[SEP]", *tokenizer.tokenize(TEXTS[0]), "[SEP]"]
    assert not encoded["token_type_ids"].any()

    # Untitled passages are "[CLS] text [SEP]", the same whatever else is in the batch.
    alone = format_passages(tokenizer, [""], TEXTS[:1])["input_ids"][0]
    mixed = format_passages(tokenizer, ["", TITLES[1]], TEXTS)
    assert tokenizer.convert_ids_to_tokens(alone)[:2] == ["[CLS]", "paris"]
    assert torch.equal(mixed["input_ids"][0][: len(alone)], alone)
    assert torch.equal(format_passages(tokenizer, None, TEXTS[:1])["input_ids"][0], alone)

    with pytest.raises(ValueError, match="1 titles for 2 passage texts"):
        format_passages(tokenizer, TITLES[:1], TEXTS)


def test_format_max_lengths(tokenizer):
    long_text = "word " * 600
    assert format_passages(tokenizer, ["title"], [long_text])["input_ids"].shape == (1, 256)
    assert format_passages(tokenizer, ["title"], [long_text], max_length=32)["input_ids"].shape == (1, 32)
    questions = format_questions(tokenizer, [long_text, QUESTIONS[0]])
    assert questions["input_ids"].shape == (2, 64)
    assert tokenizer.convert_ids_to_tokens(questions["input_ids"][1])[:3] == ["[CLS]", "what", "is"]
    assert not questions["token_type_ids"].any()


def test_minilm_encoders_rank_the_answering_passage_first(tmp_path, minilm_path):
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    question_encoder = QuestionEncoder.from_backbone(minilm_path, pooling="mean").eval()
    passage_encoder = PassageEncoder.from_backbone(minilm_path, pooling="mean").eval()
    assert question_encoder.embedding_dim == passage_encoder.embedding_dim == 384
    # The weights really are MiniLM's, not a random init.
    with safe_open(f"{minilm_path}/model.safetensors", framework="pt") as weights:
        minilm_layer = weights.get_tensor("encoder.layer.5.output.dense.weight")
    assert torch.equal(question_encoder.encoder.encoder.layer[5].output.dense.weight, minilm_layer)
    assert torch.equal(passage_encoder.encoder.encoder.layer[5].output.dense.weight, minilm_layer)

    titles = ["Paris", "Photosynthesis", "Football"]
    texts = [
        TEXTS[0],
        TEXTS[1],
        "Association football is a team sport played between two teams of eleven players.",
    ]
    with torch.no_grad():
        questions = question_encoder(**format_questions(tokenizer, QUESTIONS)).pooler_output
        passages = passage_encoder(**format_passages(tokenizer, titles, texts)).pooler_output
    scores = questions @ passages.T
    assert scores.argmax(dim=1).tolist() == [0, 1]

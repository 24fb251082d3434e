"""`dpr-hf export --to sentence-transformers`: the exported model gives the pair's embeddings and similarity."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoTokenizer

from dpr_hf import PassageEncoder, QuestionEncoder, format_passages, format_questions
from dpr_hf.cli import main
from dpr_hf.errors import MismatchError
from dpr_hf.export import export_sentence_transformers, read_pair_settings

QUESTIONS = ["who wrote hamlet?", "What is the capital of France", "when did the roman empire fall?"]
LONG_TEXT = " ".join(
    ["The Roman Empire was ruled by emperors for centuries before its western half fell."] * 30
)
# (title, text): titled, untitled, punctuation at the boundary, a text cut at the passage length (the title
# stays whole, so dpr_hf's pair truncation and the single string's cut agree)
PASSAGES = [
    ("Hamlet", "Hamlet is a tragedy written by William Shakespeare around 1600."),
    ("", "Paris is the capital and most populous city of France."),
    ("Rome (empire)", "The Western Roman Empire fell in 476, when Odoacer deposed Romulus Augustulus."),
    ("Roman Empire", LONG_TEXT),
]


def _document(title: str, text: str, separator: str = " [SEP] ") -> str:
    return f"{title}{separator}{text}" if title else text


def _save_pair(folder, question_encoder, passage_encoder, tokenizer):
    for name, model in (("question_encoder", question_encoder), ("passage_encoder", passage_encoder)):
        model.save_pretrained(folder / name)
        tokenizer.save_pretrained(folder / name)
    return folder


@torch.no_grad()
def _reference(pair_dir, question_max_length: int, passage_max_length: int):
    """dpr_hf's own embeddings of QUESTIONS and PASSAGES, from the saved pair."""
    question_encoder = QuestionEncoder.from_pretrained(pair_dir / "question_encoder").eval()
    passage_encoder = PassageEncoder.from_pretrained(pair_dir / "passage_encoder").eval()
    tokenizer = AutoTokenizer.from_pretrained(pair_dir / "question_encoder")
    questions = question_encoder(**format_questions(tokenizer, QUESTIONS, question_max_length)).pooler_output
    titles, texts = zip(*PASSAGES, strict=True)
    passages = passage_encoder(**format_passages(tokenizer, titles, texts, passage_max_length)).pooler_output
    return questions, passages


def _assert_parity(exported: SentenceTransformer, reference) -> None:
    questions, passages = reference
    got_questions = exported.encode_query(QUESTIONS, convert_to_tensor=True)
    got_passages = exported.encode_document([_document(*p) for p in PASSAGES], convert_to_tensor=True)
    for got, want in ((got_questions, questions), (got_passages, passages)):
        assert got.shape == want.shape
        cosine = torch.nn.functional.cosine_similarity(got, want)
        assert cosine.min().item() >= 0.9999, cosine
        torch.testing.assert_close(got.norm(dim=1), want.norm(dim=1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        exported.similarity(got_questions, got_passages),
        exported.similarity(questions, passages),
        rtol=1e-4,
        atol=1e-4,
    )


@pytest.fixture
def tiny_pair(tmp_path, tiny_question_encoder, tiny_passage_encoder, tokenizer):
    """The tiny random pair ([CLS], dot product) read at short lengths, so that a passage gets cut."""
    tiny_question_encoder.config.max_seq_length = 16
    tiny_passage_encoder.config.max_seq_length = 40
    return _save_pair(tmp_path / "pair", tiny_question_encoder, tiny_passage_encoder, tokenizer)


def test_tiny_pair_round_trips_through_the_cli(tiny_pair, tmp_path):
    out = tmp_path / "st"
    assert main(["export", str(tiny_pair), str(out), "--to", "sentence-transformers"]) == 0
    exported = SentenceTransformer(str(out), device="cpu")
    assert exported.similarity_fn_name == "dot"
    _assert_parity(exported, _reference(tiny_pair, 16, 40))
    questions, passages = _reference(tiny_pair, 16, 40)
    torch.testing.assert_close(exported.similarity(questions, passages), questions @ passages.T)
    info = json.loads((out / "dpr_hf_export.json").read_text())
    assert info["question_max_length"] == 16 and info["passage_max_length"] == 40
    card = (out / "README.md").read_text()
    for usage in (
        "encode_query",
        "encode_document",
        "model.similarity",
        "Hamlet [SEP] Hamlet",
        "dot product",
    ):
        assert usage in card


def test_passage_string_tokenises_as_the_pair(tiny_pair, tmp_path, tokenizer):
    """The document route sees the ids and the all-zero segment ids of format_passages, truncation included."""
    out = export_sentence_transformers(tiny_pair, tmp_path / "st")
    exported = SentenceTransformer(str(out), device="cpu")
    titles, texts = zip(*PASSAGES, strict=True)
    want = format_passages(tokenizer, titles, texts, max_length=40)
    got = exported.preprocess([_document(*p) for p in PASSAGES], task="document")
    torch.testing.assert_close(got["input_ids"], want["input_ids"])
    torch.testing.assert_close(got["attention_mask"], want["attention_mask"])
    assert not got["token_type_ids"].any() and not want["token_type_ids"].any()
    questions = exported.preprocess(QUESTIONS, task="query")
    torch.testing.assert_close(
        questions["input_ids"], format_questions(tokenizer, QUESTIONS, 16)["input_ids"]
    )


def test_projection_mean_pooling_and_cosine(tmp_path, tiny_bert_config, tokenizer):
    from dpr_hf import PassageEncoderConfig, QuestionEncoderConfig

    options = {"pooling": "mean", "projection_dim": 8, "normalize": True, "temperature": 0.05}
    torch.manual_seed(5)
    question_encoder = QuestionEncoder(QuestionEncoderConfig(encoder=tiny_bert_config, **options)).eval()
    passage_encoder = PassageEncoder(PassageEncoderConfig(encoder=tiny_bert_config, **options)).eval()
    pair = _save_pair(
        tmp_path / "pair", question_encoder, passage_encoder, tokenizer
    )  # no training_args.json
    settings = read_pair_settings(pair)
    assert (settings.similarity, settings.question_max_length, settings.passage_max_length) == (
        "cosine",
        64,
        256,
    )
    out = export_sentence_transformers(pair, tmp_path / "st")
    exported = SentenceTransformer(str(out), device="cpu")
    assert exported.similarity_fn_name == "cosine"
    assert exported.get_embedding_dimension() == 8
    _assert_parity(exported, _reference(pair, 64, 256))
    assert "/ 0.05" in (out / "README.md").read_text()


@pytest.mark.parametrize(("pooling", "similarity"), [("cls", "dot"), ("mean", "cosine")])
def test_real_minilm_pair(tmp_path, minilm_path, tokenizer, pooling, similarity):
    """Real weights: a pair built from all-MiniLM-L6-v2, as train-retriever builds it, in both pooling modes."""
    options = {"pooling": pooling, "normalize": similarity == "cosine"}
    question_encoder = QuestionEncoder.from_backbone(minilm_path, max_seq_length=32, **options).eval()
    passage_encoder = PassageEncoder.from_backbone(minilm_path, max_seq_length=128, **options).eval()
    with torch.no_grad():  # towers that differ, as trained ones do
        for parameter in passage_encoder.encoder.encoder.layer[-1].parameters():
            parameter.mul_(1.05)
    pair = _save_pair(tmp_path / "pair", question_encoder, passage_encoder, tokenizer)
    out = export_sentence_transformers(pair, tmp_path / "st")
    exported = SentenceTransformer(str(out), device="cpu")
    assert exported.similarity_fn_name == similarity
    _assert_parity(exported, _reference(pair, 32, 128))


STANDALONE_SCRIPT = """
import importlib.abc, json, sys

class NoDprHf(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "dpr_hf" or name.startswith("dpr_hf."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoDprHf())
try:
    import dpr_hf
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("dpr_hf could still be imported")
from sentence_transformers import SentenceTransformer

model = SentenceTransformer(sys.argv[1], device="cpu")
inputs = json.loads(sys.argv[2])
queries = model.encode_query(inputs["questions"], convert_to_tensor=True)
documents = model.encode_document(inputs["documents"], convert_to_tensor=True)
print(json.dumps({
    "queries": queries.tolist(),
    "documents": documents.tolist(),
    "similarity": model.similarity(queries, documents).tolist(),
}))
"""


def test_export_loads_without_dpr_hf(tiny_pair, tmp_path):
    out = export_sentence_transformers(tiny_pair, tmp_path / "st")
    inputs = {"questions": QUESTIONS, "documents": [_document(*p) for p in PASSAGES]}
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-c", STANDALONE_SCRIPT, str(out), json.dumps(inputs)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    questions, passages = _reference(tiny_pair, 16, 40)
    for key, want in (("queries", questions), ("documents", passages)):
        cosine = torch.nn.functional.cosine_similarity(torch.tensor(result[key]), want)
        assert cosine.min().item() >= 0.9999
    torch.testing.assert_close(
        torch.tensor(result["similarity"]), questions @ passages.T, rtol=1e-4, atol=1e-4
    )


def test_bad_inputs_are_refused(tiny_pair, tmp_path, capsys):
    out = tmp_path / "st"
    assert main(["export", str(tmp_path), str(out), "--to", "sentence-transformers"]) == 2
    assert "question_encoder/config.json is missing" in capsys.readouterr().err
    assert not out.exists()
    assert main(["export", str(tiny_pair), str(out), "--to", "sentence-transformers"]) == 0
    assert main(["export", str(tiny_pair), str(out), "--to", "sentence-transformers"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["export", str(tiny_pair), str(out), "--to", "sentence-transformers", "--overwrite"]) == 0
    assert json.loads((out / "dpr_hf_export.json").read_text())["similarity"] == "dot"
    assert (
        main(
            [
                "export",
                str(tiny_pair),
                str(out),
                "--to",
                "sentence-transformers",
                "--overwrite",
                "--similarity",
                "cosine",
            ]
        )
        == 0
    )
    assert SentenceTransformer(str(out), device="cpu").similarity_fn_name == "cosine"
    # the pair's towers in each other's folders
    (tiny_pair / "question_encoder").rename(tmp_path / "swap")
    (tiny_pair / "passage_encoder").rename(tiny_pair / "question_encoder")
    (tmp_path / "swap").rename(tiny_pair / "passage_encoder")
    with pytest.raises(MismatchError, match="passage encoder, not a question encoder"):
        read_pair_settings(tiny_pair)

"""`dpr-hf build-system`: a system folder from separately saved parts, loadable, servable and pushable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi
from tiny_qa_system import QUESTIONS, build_tiny_system

from dpr_hf import PassageEncoder, PassageEncoderConfig, QASystem, QuestionEncoder, QuestionEncoderConfig
from dpr_hf.cli import main
from dpr_hf.hub import render_card


@pytest.fixture(scope="module")
def parts(tokenizer, tiny_bert_config, tmp_path_factory) -> Path:
    """What training and indexing leave behind: a pair folder, an index, a reader folder, a BM25 folder."""
    system = build_tiny_system(tokenizer, tiny_bert_config)
    root = tmp_path_factory.mktemp("parts")
    for name, model in (
        ("question_encoder", system.question_encoder),
        ("passage_encoder", system.passage_encoder),
    ):
        model.save_pretrained(root / "pair" / name)
        tokenizer.save_pretrained(root / "pair" / name)
    (root / "pair" / "training_args.json").write_text(json.dumps({"model_name_or_path": "minilm"}))
    system.reader.save_pretrained(root / "reader" / "reader")
    tokenizer.save_pretrained(root / "reader" / "reader")
    system.index.save(root / "index")
    system.bm25.save(root / "bm25")
    (root / "retrieval.json").write_text(json.dumps({"ndcg@10": 0.5, "recall@100": 0.9, "num_questions": 3}))
    return root


def test_build_system_from_parts_then_push(parts, tmp_path, monkeypatch, capsys):
    out = tmp_path / "system"
    args = ["build-system", "--pair", str(parts / "pair"), "--index", str(parts / "index"), "--reader",
            str(parts / "reader"), "--bm25", str(parts / "bm25"), "--retrieval-metrics",
            str(parts / "retrieval.json"), "--output", str(out)]  # fmt: skip
    assert main(args) == 0
    assert "default retriever hybrid" in capsys.readouterr().out
    system = QASystem.from_pretrained(out)
    assert system.config.retriever == "hybrid" and system.bm25 is not None and system.reader is not None
    answers, passages = system.answer(QUESTIONS[:2])
    assert len(answers) == 2 and all(answers) and all(passages)
    assert json.loads((out / "metrics" / "retrieval.json").read_text())["ndcg@10"] == 0.5

    uploaded: list[str] = []
    monkeypatch.setattr(
        HfApi, "create_repo", lambda self, repo_id, **kwargs: f"https://huggingface.co/{repo_id}"
    )
    monkeypatch.setattr(
        HfApi, "upload_folder", lambda self, *, repo_id, folder_path, **kwargs: uploaded.append(repo_id)
    )
    assert main(["push", str(out), "me/built", "--datasets", "my-beir"]) == 0 and uploaded == ["me/built"]
    card = render_card(out, "system", {"system": "me/built"})
    by_type = {result.metric_type: result for result in card.data.eval_results}
    assert by_type["ndcg_at_10"].metric_value == 0.5 and by_type["recall_at_100"].metric_value == 0.9
    assert by_type["ndcg_at_10"].dataset_name == "custom" and "| ndcg@10 | 0.50 |" in card.text


def test_retrieval_only_system(parts, tmp_path):
    out = tmp_path / "retrieval-only"
    assert (
        main(
            [
                "build-system",
                "--pair",
                str(parts / "pair"),
                "--index",
                str(parts / "index"),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    system = QASystem.from_pretrained(out)
    assert system.reader is None and system.config.retriever == "dense"
    assert len(system.retrieve(QUESTIONS[:1], k=3)[0]) == 3


def test_an_index_of_another_pair_is_refused(parts, tmp_path, tokenizer, tiny_bert_config, capsys):
    torch.manual_seed(1)
    other = tmp_path / "other"
    for model in (
        QuestionEncoder(QuestionEncoderConfig(encoder=tiny_bert_config)),
        PassageEncoder(PassageEncoderConfig(encoder=tiny_bert_config)),
    ):
        model.save_pretrained(other / f"{model.role}_encoder")
        tokenizer.save_pretrained(other / f"{model.role}_encoder")
    out = tmp_path / "bad"
    assert (
        main(["build-system", "--pair", str(other), "--index", str(parts / "index"), "--output", str(out)])
        == 2
    )
    assert "was encoded with passage encoder" in capsys.readouterr().err
    assert not out.exists()

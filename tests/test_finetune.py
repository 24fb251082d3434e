"""`dpr-hf finetune` end to end on the tiny BEIR fixture with a tiny random base model: every output, the
metrics.json shape, a loadable system, and a second run that resumes (skips every finished step)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch
from transformers import BertModel

from dpr_hf import QASystem
from dpr_hf.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]
BEIR_TINY = REPO_ROOT / "tests" / "data" / "beir-tiny"


def test_finetune_end_to_end_and_resume(tmp_path, tokenizer, tiny_bert_config, capsys):
    torch.manual_seed(0)
    BertModel(tiny_bert_config).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    out = tmp_path / "out"
    args = ["finetune", str(BEIR_TINY), "--output-dir", str(out), "--base", str(tmp_path / "base"),
            "--set", "disable_tqdm=true", "--set", "learning_rate=1e-3"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "estimated training time" in printed and "| finetuned |" in printed

    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["bm25", "base", "finetuned", "hybrid"]
    for values in metrics.values():
        assert {"ndcg@10", "recall@100", "mrr@10", "map@100", "ndcg_10"} <= set(values)
        assert values["num_judged_questions"] == 3 and not any(key.startswith("top_") for key in values)
    sizing = json.loads((out / "sizing.json").read_text())
    assert sizing["num_train_queries"] == 5 and sizing["overrides"]["learning_rate"] == 1e-3
    recipe = (out / "retriever.yaml").read_text()
    assert "learning_rate: 0.001" in recipe and "dev_file:" in recipe  # the fixture has a dev split
    assert (out / "report.png").stat().st_size > 0 and "| hybrid |" in (out / "report.md").read_text()
    system = QASystem.from_pretrained(out / "system")
    assert (
        system.config.retriever == "hybrid" and len(system.retrieve(["how are glaciers formed"], k=2)[0]) == 2
    )
    weights = (out / "retriever" / "question_encoder" / "model.safetensors").stat().st_mtime_ns

    assert main(args) == 0  # everything is done: every step is skipped
    assert capsys.readouterr().out.count("done already") == 8
    assert (out / "retriever" / "question_encoder" / "model.safetensors").stat().st_mtime_ns == weights


def test_finetune_needs_a_train_split(tmp_path, capsys):
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        (folder / name).write_text((BEIR_TINY / name).read_text())
    assert main(["finetune", str(folder), "--output-dir", str(tmp_path / "out")]) == 2
    assert "no qrels for split 'train'" in capsys.readouterr().err
    assert main(["finetune", str(BEIR_TINY), "--output-dir", str(tmp_path / "r"), "--reader"]) == 2
    assert "--reader trains on answer spans" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_finetune_on_squad_qa_data_adds_top_k_and_the_reader(tmp_path, tokenizer, tiny_bert_config):
    """QA users' data: a folder with SQuAD train.json and dev.json; their answers add top-k accuracy, and their
    spans train a reader that goes into the system."""
    with gzip.open(REPO_ROOT / "data" / "quickstart" / "squad-dev-subset.json.gz", "rt") as handle:
        squad = json.load(handle)
    qa = tmp_path / "qa"
    qa.mkdir()
    article = squad["data"][0]
    for name, paragraphs in (
        ("train.json", article["paragraphs"][:6]),
        ("dev.json", article["paragraphs"][6:9]),
    ):
        (qa / name).write_text(json.dumps({"data": [{"title": article["title"], "paragraphs": paragraphs}]}))
    torch.manual_seed(0)
    BertModel(tiny_bert_config).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    out = tmp_path / "out"
    args = ["finetune", str(qa), "--output-dir", str(out), "--base", str(tmp_path / "base"), "--epochs", "1",
            "--set", "disable_tqdm=true", "--reader"]  # fmt: skip
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    reader = metrics.pop("reader")
    assert set(reader["em"]) == {"1", "5", "20"} and 0.0 <= reader["f1"]["5"] <= 100.0
    assert QASystem.from_pretrained(out / "system").reader is not None
    dev_questions = sum(len(p["qas"]) for p in article["paragraphs"][6:9])
    for values in metrics.values():
        assert values["num_judged_questions"] == dev_questions and {"top_20", "ndcg@10"} <= set(values)
    assert "top_20" in (out / "report.md").read_text()

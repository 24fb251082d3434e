"""DPR's has_answer, the retrieval metrics, and `dpr-hf encode / build-index / evaluate-retrieval` end to end."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from dpr_hf import PassageEncoder, PassageEncoderConfig, QuestionEncoder, QuestionEncoderConfig
from dpr_hf.cli import main
from dpr_hf.evaluation.metrics import (
    answer_hits,
    gold_recall,
    has_answer,
    top_k_accuracy,
    top_k_curve,
)
from dpr_hf.evaluation.retrieval import load_qrels
from dpr_hf.models.errors import DPRDataError

REPO_ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------- has_answer
@pytest.mark.parametrize(
    ("answers", "text", "expected"),
    [
        (["Central Asia"], "It began in the arid plains of central asia.", True),  # case
        (["1347"], "By 1347, the plague had reached Sicily.", True),  # punctuation splits tokens
        (["U.S."], "the U.S. government", True),  # punctuation inside the answer
        (["Asia"], "Eurasia is a continent.", False),  # whole tokens only
        (["Zürich"], "He moved to Zu\u0308rich in 1900.", True),  # NFC answer, NFD text
        (["Zürich"], "He moved to Zurich in 1900.", False),  # accents are not stripped
        (["東京"], "首都は東京です", False),  # CJK runs are one token, as in DrQA
        (["", "fealty"], "Rollo swore fealty.", True),  # empty answers are skipped
        (["Rollo"], "", False),
    ],
)
def test_has_answer_string_mode(answers, text, expected):
    assert has_answer(answers, text) is expected


@pytest.mark.parametrize(
    ("answers", "text", "expected"),
    [
        ([r"\d{4}"], "founded in 1862", True),
        ([r"Abraham\s+Lincoln"], "ABRAHAM   LINCOLN was president", True),  # case-insensitive
        ([r"^Lincoln"], "Abraham Lincoln", False),
        ([r"(?:dog|cat)s?"], "two cats", True),
    ],
)
def test_has_answer_regex_mode(answers, text, expected):
    assert has_answer(answers, text, mode="regex") is expected


def test_answer_hits_equals_has_answer_per_passage():
    retrieved = [[{"text": "Paris is in France."}, {"text": "Berlin"}], [{"text": "Paris is in France."}]]
    answers = [["berlin"], ["France", "Spain"]]
    assert answer_hits(retrieved, answers) == [[False, True], [True]]
    assert answer_hits(retrieved, [[r"Ber\w+"], ["nope"]], mode="regex") == [[False, True], [False]]


# ------------------------------------------------------------------------------------------------------ metrics
def test_top_k_accuracy_and_curve():
    hits = [[False, True, False], [True], [False, False, False], []]
    assert top_k_curve(hits, 3) == [25.0, 50.0, 50.0]
    assert top_k_accuracy(hits, ks=(1, 2, 100)) == {"top_1": 25.0, "top_2": 50.0, "top_100": 50.0}


def test_gold_recall_counts_only_questions_with_a_gold_passage():
    retrieved = [["a", "b"], ["c", "d"], ["e"]]
    assert gold_recall(retrieved, ["b", "x", ""], ks=(1, 2)) == {"gold_recall_1": 0.0, "gold_recall_2": 50.0}
    assert gold_recall(retrieved, ["", "", ""]) == {}


def test_load_qrels(tmp_path):
    path = tmp_path / "qrels.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\tp1\t1\nq1\tp2\t2\nq2\tp9\t1\n")
    assert load_qrels(path) == {"q1": {"p1": 1.0, "p2": 2.0}, "q2": {"p9": 1.0}}
    path.write_text("q1\tp1\n")
    with pytest.raises(DPRDataError, match="record 1"):
        load_qrels(path)


# ------------------------------------------------------------------------------------------------------ CLI
@pytest.fixture
def squad_subset(tmp_path) -> Path:
    """Two articles of the quickstart SQuAD dev subset: 45 paragraphs, 206 questions."""
    with gzip.open(REPO_ROOT / "data" / "quickstart" / "squad-dev-subset.json.gz", "rt") as handle:
        squad = json.load(handle)
    squad["data"] = squad["data"][:2]
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(squad))
    return path


def _pair(path: Path, tokenizer, config, seed: int) -> Path:
    torch.manual_seed(seed)
    for model in (
        QuestionEncoder(QuestionEncoderConfig(encoder=config)),
        PassageEncoder(PassageEncoderConfig(encoder=config)),
    ):
        model.save_pretrained(path / f"{model.role}_encoder")
        tokenizer.save_pretrained(path / f"{model.role}_encoder")
    return path


def test_cli_encode_index_evaluate_end_to_end(tmp_path, squad_subset, tokenizer, tiny_bert_config, capsys):
    pair = _pair(tmp_path / "pair", tokenizer, tiny_bert_config, seed=0)
    assert (
        main(
            [
                "encode",
                "--passage-encoder",
                str(pair),
                "--passages",
                str(squad_subset),
                "--output",
                str(tmp_path / "emb"),
            ]
        )
        == 0
    )
    assert (
        main(["build-index", "--embeddings", str(tmp_path / "emb"), "--output", str(tmp_path / "index")]) == 0
    )

    metrics = {}
    for retriever in ("dense", "bm25", "hybrid"):
        out = tmp_path / f"eval-{retriever}"
        args = ["evaluate-retrieval", "--retriever", retriever, "--model", str(pair), "--index", str(tmp_path / "index"),
                "--questions", str(squad_subset), "--output-dir", str(out)]  # fmt: skip
        assert main(args) == 0
        assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "results.json", "top_k_curve.png"]
        metrics[retriever] = json.loads((out / "metrics.json").read_text())
        assert {"top_1", "top_5", "top_20", "top_100", "gold_recall_1", "gold_recall_100"} <= set(
            metrics[retriever]
        )
        assert metrics[retriever]["num_questions"] == 206
        results = json.loads((out / "results.json").read_text())
        assert len(results) == 206
        # top-100 of a 45-passage corpus: all of it, but BM25 leaves out passages sharing no term with a question
        assert len(results[0]["ctxs"]) == 45 if retriever != "bm25" else 0 < len(results[0]["ctxs"]) <= 45
        first = results[0]
        assert {"id", "question", "answers", "gold_passage_id", "ctxs"} <= set(first)
        assert set(first["ctxs"][0]) == {"id", "title", "text", "score", "has_answer"}
        assert [c["has_answer"] for c in first["ctxs"]] == [
            has_answer(first["answers"], c["text"]) for c in first["ctxs"]
        ]
        scores = [c["score"] for c in first["ctxs"]]
        assert scores == sorted(scores, reverse=True)
    # Every paragraph is retrieved at 100 in a 45-passage corpus; BM25 beats a random encoder at 1.
    assert metrics["dense"]["gold_recall_100"] == metrics["hybrid"]["gold_recall_100"] == 100.0
    assert metrics["bm25"]["top_1"] > metrics["dense"]["top_1"]

    # --passages builds the index on the fly: the same dense ranking as the saved index.
    passages = tmp_path / "passages.jsonl"
    with open(passages, "w") as handle:
        for line in json.loads((tmp_path / "eval-dense" / "results.json").read_text())[0]["ctxs"]:
            handle.write(json.dumps({"id": line["id"], "title": line["title"], "text": line["text"]}) + "\n")
    args = ["evaluate-retrieval", "--retriever", "dense", "--model", str(pair), "--passages", str(passages),
            "--questions", str(squad_subset), "--output-dir", str(tmp_path / "fly"), "--top-k", "20"]  # fmt: skip
    assert main(args) == 0
    fly = json.loads((tmp_path / "fly" / "metrics.json").read_text())
    assert {key: fly[key] for key in ("top_1", "top_5", "top_20")} == pytest.approx(
        {key: metrics["dense"][key] for key in ("top_1", "top_5", "top_20")}
    )
    assert "top_100" not in fly

    # A question encoder from another pair is refused with a clear message and exit code 2.
    other = _pair(tmp_path / "other", tokenizer, tiny_bert_config, seed=1)
    capsys.readouterr()
    args = ["evaluate-retrieval", "--retriever", "dense", "--model", str(other), "--index", str(tmp_path / "index"),
            "--questions", str(squad_subset), "--output-dir", str(tmp_path / "bad")]  # fmt: skip
    assert main(args) == 2
    assert "was encoded with passage encoder" in capsys.readouterr().err

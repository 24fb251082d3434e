"""Hard-negative mining (BM25 and dense) on a real SQuAD subset, and the `dpr-hf mine-negatives` command."""

from __future__ import annotations

import gzip
import json

import datasets
import pytest

from dpr_hf.cli import main
from dpr_hf.data import load_passages, load_retriever_data, save_retriever_json
from dpr_hf.encoding import encode_passages
from dpr_hf.evaluation.metrics import has_answer
from dpr_hf.index.passage_index import PassageIndex
from dpr_hf.retrieval.bm25 import BM25Retriever
from dpr_hf.retrieval.dense import DenseRetriever
from dpr_hf.retrieval.negatives import (
    mine_bm25_negatives,
    mine_dense_negatives,
    mine_hard_negatives,
    select_negatives,
)


@pytest.fixture(scope="module")
def squad_subset(squad_dir, tmp_path_factory):
    """The first four dev-a articles as a SQuAD file: a real corpus (paragraphs) and real questions."""
    document = json.load(gzip.open(squad_dir / "squad1.1-dev-a.json.gz", "rt", encoding="utf-8"))
    document["data"] = document["data"][:4]
    path = tmp_path_factory.mktemp("squad") / "subset.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(squad_subset):
    return load_passages(squad_subset)


@pytest.fixture(scope="module")
def data(squad_subset):
    return load_retriever_data(squad_subset).select(range(0, 400, 4))


def _assert_valid_negatives(mined, num_negatives):
    assert len(mined) > 0
    for example in mined:
        gold = example["positive_ctxs"][0]
        negatives = example["hard_negative_ctxs"]
        assert len(negatives) <= num_negatives
        assert len({n["id"] for n in negatives}) == len(negatives)
        for negative in negatives:
            assert not has_answer(example["answers"], negative["text"])
            assert negative["id"] != gold["id"] and negative["text"] != gold["text"]


def test_bm25_negatives_on_squad(data, corpus):
    retriever = BM25Retriever.from_passages(corpus)
    mined = mine_bm25_negatives(data, retriever, num_negatives=5, depth=50)
    assert mined.features == data.features and len(mined) == len(data)
    assert mined["question"] == data["question"] and mined["positive_ctxs"] == data["positive_ctxs"]
    _assert_valid_negatives(mined, 5)
    assert sum(len(example) == 5 for example in mined["hard_negative_ctxs"]) > 0.9 * len(mined)
    # negatives are the best-ranked passages that survive the filter, in rank order
    example = mined[0]
    ranked = retriever.search([example["question"]], 50)[0]
    expected = [
        hit["id"]
        for hit in ranked
        if not has_answer(example["answers"], hit["text"]) and hit["id"] != example["positive_ctxs"][0]["id"]
    ][:5]
    assert [n["id"] for n in example["hard_negative_ctxs"]] == expected
    # a corpus given as a Dataset builds the BM25 index itself and mines the same
    assert mine_bm25_negatives(data.select(range(3)), corpus, num_negatives=5, depth=50).to_list() == (
        mined.select(range(3)).to_list()
    )


def test_gold_excluded_by_text_even_without_answers():
    """A question without answers (has_answer cannot help) never gets its gold passage, nor a copy of it."""
    corpus = datasets.Dataset.from_list(
        [
            {"id": "gold", "title": "Paris", "text": "Paris is the capital of France."},
            {"id": "copy", "title": "Paris", "text": "Paris  is the capital of  France. "},
            {"id": "other", "title": "Lyon", "text": "Lyon is a city in France."},
        ]
    )
    data = load_retriever_data(
        datasets.Dataset.from_list(
            [
                {
                    "question": "capital of France",
                    "answers": [],
                    "positive_ctxs": [corpus[0]],
                    "hard_negative_ctxs": [],
                }
            ]
        )
    )
    mined = mine_hard_negatives(data, BM25Retriever.from_passages(corpus), num_negatives=3, depth=3)
    assert [n["id"] for n in mined[0]["hard_negative_ctxs"]] == ["other"]


def test_select_negatives_regex_mode():
    ranked = [
        {"id": "1", "title": "", "text": "born in 1990"},
        {"id": "2", "title": "", "text": "born later"},
    ]
    assert [n["id"] for n in select_negatives([r"19\d\d"], [], ranked, 5, match="regex")] == ["2"]
    assert [n["id"] for n in select_negatives(["1990"], [], ranked, 1)] == ["2"]


def test_mined_json_reloads(data, corpus, tmp_path):
    mined = mine_bm25_negatives(data.select(range(10)), corpus, num_negatives=3, depth=20)
    path = save_retriever_json(mined, tmp_path / "mined.json")
    assert load_retriever_data(path).to_list() == mined.to_list()


def test_dense_negatives(data, corpus, tiny_question_encoder, tiny_passage_encoder, tokenizer):
    encoded = encode_passages(tiny_passage_encoder, tokenizer, corpus, batch_size=64, max_length=64)
    index = PassageIndex.build(encoded)
    subset = data.select(range(20))
    mined = mine_dense_negatives(subset, tiny_question_encoder, tokenizer, index, num_negatives=4, depth=30)
    _assert_valid_negatives(mined, 4)
    assert all(len(negatives) == 4 for negatives in mined["hard_negative_ctxs"])
    ranked = DenseRetriever(tiny_question_encoder, tokenizer, index).search([subset[0]["question"]], 30)[0]
    first = next(
        hit["id"]
        for hit in ranked
        if not has_answer(subset[0]["answers"], hit["text"])
        and hit["id"] != subset[0]["positive_ctxs"][0]["id"]
    )
    assert mined[0]["hard_negative_ctxs"][0]["id"] == first


def test_cli_bm25(squad_subset, data, tmp_path, capsys):
    small = save_retriever_json(data.select(range(30)), tmp_path / "small.json")
    output = tmp_path / "out" / "mined.json"
    argv = ["mine-negatives", "--data", str(small), "--passages", str(squad_subset)]
    assert main([*argv, "--output", str(output), "--num-negatives", "2", "--depth", "20"]) == 0
    assert "30 questions" in capsys.readouterr().out
    mined = load_retriever_data(output)
    assert mined["question"] == data["question"][:30]
    _assert_valid_negatives(mined, 2)
    # the same through a saved BM25 folder given as --index (directly or inside a system folder)
    BM25Retriever.from_passages(load_passages(squad_subset)).save(tmp_path / "system" / "bm25")
    again = tmp_path / "again.jsonl"
    argv = [
        "mine-negatives",
        "--data",
        str(output),
        "--index",
        str(tmp_path / "system"),
        "--output",
        str(again),
    ]
    assert main([*argv, "--num-negatives", "2", "--depth", "20"]) == 0
    assert load_retriever_data(again).to_list() == mined.to_list()


def test_cli_dense_with_pair_folder(
    squad_subset, tmp_path, tiny_question_encoder, tiny_passage_encoder, tokenizer, data
):
    pair = tmp_path / "pair"
    for role, model in (("question", tiny_question_encoder), ("passage", tiny_passage_encoder)):
        model.save_pretrained(pair / f"{role}_encoder")
        tokenizer.save_pretrained(pair / f"{role}_encoder")
    small = save_retriever_json(data.select(range(5)), tmp_path / "small.json")
    output = tmp_path / "dense.json"
    argv = ["mine-negatives", "--method", "dense", "--model", str(pair), "--data", str(small)]
    assert (
        main([*argv, "--passages", str(squad_subset), "--output", str(output), "--num-negatives", "3"]) == 0
    )
    mined = load_retriever_data(output)
    assert len(mined) == 5
    _assert_valid_negatives(mined, 3)


def _error_lines(stderr: str) -> list[str]:
    """The CLI's own error lines (datasets' progress bars also write to stderr)."""
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if line.startswith("dpr-hf mine-negatives: error:")]


def test_cli_errors_are_one_line_exit_2(tmp_path, squad_subset, capsys):
    output = str(tmp_path / "x.json")
    missing = tmp_path / "missing.json"
    argv = ["mine-negatives", "--data", str(missing), "--passages", str(squad_subset), "--output", output]
    assert main(argv) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert str(missing) in line
    bad = tmp_path / "bad.json"
    bad.write_text('[{"question": 1}]')
    argv = ["mine-negatives", "--data", str(bad), "--passages", str(squad_subset), "--output", output]
    assert main(argv) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert f"{bad}, record 1, field 'question'" in line
    argv = [
        "mine-negatives",
        "--method",
        "dense",
        "--data",
        str(squad_subset),
        "--passages",
        str(squad_subset),
    ]
    assert main([*argv, "--output", output]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "--model" in line
    assert not (tmp_path / "x.json").exists()


def test_cli_bm25_with_stemmer(squad_subset, data, tmp_path):
    small = save_retriever_json(data.select(range(10)), tmp_path / "small.json")
    output = tmp_path / "mined.json"
    argv = ["mine-negatives", "--data", str(small), "--passages", str(squad_subset), "--stemmer", "english"]
    assert main([*argv, "--output", str(output), "--num-negatives", "2", "--depth", "20"]) == 0
    _assert_valid_negatives(load_retriever_data(output), 2)

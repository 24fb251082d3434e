"""BEIR datasets in: local folders (plain and .gz), the Hub layout (a local dataset repo, offline), positives by
id, the SQuAD converter, and one clear error for each kind of bad input."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import datasets
import pytest
import torch
import yaml
from transformers import BertModel

from dpr_hf.cli import main
from dpr_hf.data import (
    beir_retriever_data,
    load_beir,
    load_passages,
    load_qrels,
    load_questions,
    squad_to_beir,
)
from dpr_hf.models.errors import DPRDataError

BEIR_TINY = Path(__file__).resolve().parent / "data" / "beir-tiny"


def _copy(tmp_path: Path, name: str = "beir") -> Path:
    folder = tmp_path / name
    shutil.copytree(BEIR_TINY, folder)
    return folder


def test_local_folder_splits():
    train = load_beir(BEIR_TINY, "train")
    assert len(train.corpus) == 12 and train.corpus[0] == {
        "id": "d1",
        "title": "Lighthouses",
        "text": "A lighthouse is a tower with a bright lamp that guides ships away from rocks at night.",
    }
    assert train.queries["id"] == ["q1", "q2", "q3", "q4", "q5"]  # only the judged ones, in file order
    assert train.queries[0] == {
        "id": "q1",
        "question": "what guides ships away from rocks at night",
        "answers": [],
        "gold_passage_id": "",
    }
    assert train.qrels["q1"] == {"d1": 2, "d2": 1} and train.qrels["q5"] == {"d9": 1, "d10": 0}
    assert load_beir(BEIR_TINY, "dev").queries["id"] == ["q6", "q8"]
    test = load_beir(BEIR_TINY)  # the default split is test
    assert test.split == "test" and test.qrels["q9"] == {"d6": 2, "d5": 1}


def test_gzipped_folder_and_sibling_qrels(tmp_path):
    folder = _copy(tmp_path)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        path = folder / name
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    # a downloaded BeIR/<name> snapshot keeps its qrels in a sibling <name>-qrels folder
    shutil.move(folder / "qrels", tmp_path / "beir-qrels")
    loaded = load_beir(folder, "test")
    assert set(loaded.qrels) == {"q7", "q9", "q10"} and len(loaded.corpus) == 12


def test_loaders_take_beir_columns(tmp_path):
    """`_id` is the id and `text` the question wherever a file or a dataset is accepted."""
    passages = load_passages(BEIR_TINY / "corpus.jsonl")
    assert passages["id"][:3] == ["d1", "d2", "d3"]
    questions = load_questions(BEIR_TINY / "queries.jsonl")
    assert questions[1]["id"] == "q2" and questions[1]["question"] == "how do bees turn nectar into honey"
    corpus = datasets.Dataset.from_dict({"_id": ["7"], "title": ["T"], "text": ["body"]})
    assert load_passages(corpus).to_list() == [{"id": "7", "title": "T", "text": "body"}]
    queries = datasets.Dataset.from_dict({"_id": ["x"], "title": [""], "text": ["why?"]})
    assert load_questions(queries)[0] == {"id": "x", "question": "why?", "answers": [], "gold_passage_id": ""}
    tsv = tmp_path / "corpus.tsv"
    tsv.write_text("_id\ttext\ttitle\n42\tsome text\tA title\n")
    assert load_passages(tsv)[0] == {"id": "42", "title": "A title", "text": "some text"}
    with pytest.raises(DPRDataError, match=r"missing column \(or 'text'\)"):
        load_questions(datasets.Dataset.from_dict({"_id": ["x"], "query": ["why?"]}))


def _hub_layout(tmp_path: Path) -> Path:
    """BeIR/<name> as the Hub holds it (configs `corpus` and `queries`) with numeric ids, and <name>-qrels."""
    repo = tmp_path / "tiny"
    renumber = {f"d{i}": f"{i:04d}" for i in range(1, 13)}  # leading zeros must survive as strings
    for config in ("corpus", "queries"):
        (repo / config).mkdir(parents=True)
        lines = (BEIR_TINY / f"{config}.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        for record in records:
            record["_id"] = renumber.get(record["_id"], record["_id"])
            record.setdefault("title", "")
        (repo / config / f"{config}-00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (repo / "README.md").write_text(
        "---\nconfigs:\n"
        + "".join(
            f"- config_name: {c}\n  data_files:\n  - split: {c}\n    path: {c}/{c}-*\n"
            for c in ("corpus", "queries")
        )
        + "---\n# tiny\n"
    )
    qrels = tmp_path / "tiny-qrels"
    qrels.mkdir()
    for split in ("train", "dev", "test"):
        rows = (BEIR_TINY / "qrels" / f"{split}.tsv").read_text().splitlines()
        fixed = [rows[0]] + [
            "\t".join([q, renumber[p], s]) for q, p, s in (row.split("\t") for row in rows[1:])
        ]
        (qrels / f"{split}.tsv").write_text("\n".join(fixed) + "\n")
    return repo


def test_hub_layout_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    repo = _hub_layout(tmp_path)
    train = load_beir(str(repo), "train")
    assert train.corpus[0]["id"] == "0001" and train.qrels["q1"] == {"0001": 2, "0002": 1}
    assert train.queries["id"] == ["q1", "q2", "q3", "q4", "q5"]
    assert load_beir(str(repo), "dev").queries["id"] == ["q6", "q8"]  # datasets calls dev.tsv "validation"
    with pytest.raises(DPRDataError, match=r"no qrels for split 'other'"):
        load_beir(str(repo), "other")


def test_positives_by_id():
    data = beir_retriever_data(load_beir(BEIR_TINY, "train"))
    assert data["question"][0] == "what guides ships away from rocks at night"
    # every passage judged relevant, the highest grade first; a 0 judgement is not a positive
    assert [[p["id"] for p in positives] for positives in data["positive_ctxs"]] == [
        ["d1", "d2"],
        ["d3"],
        ["d5"],
        ["d7", "d8"],
        ["d9"],
    ]
    assert data["positive_ctxs"][1][0]["title"] == "Beekeeping" and data["answers"][0] == []


# ------------------------------------------------------------------------------------------------ bad input
def _rewrite(path: Path, text: str) -> None:
    path.write_text(text)


@pytest.mark.parametrize(
    ("change", "split", "message", "where"),
    [
        (
            lambda f: _rewrite(
                f / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq7\tx1\t1\nq9\td6\t1\nq10\tx2\t1\n"
            ),
            "test",
            r"2 qrels lines name a passage that is not in .*corpus.jsonl; the first names 'x1'",
            ("test.tsv", 2, "corpus-id"),
        ),
        (
            lambda f: _rewrite(
                f / "qrels" / "dev.tsv", "query-id\tcorpus-id\tscore\nq6\td2\t1\nnope\td4\t1\n"
            ),
            "dev",
            r"1 qrels lines name a query that is not in .*queries.jsonl; the first names 'nope'",
            ("dev.tsv", 3, "query-id"),
        ),
        (
            lambda f: _rewrite(
                f / "corpus.jsonl", (f / "corpus.jsonl").read_text() + '{"_id": "d3", "text": "x"}\n'
            ),
            "test",
            r"duplicate id 'd3'",
            ("corpus.jsonl", 13, "id"),
        ),
        (
            lambda f: _rewrite(f / "queries.jsonl", '{"_id": "q1", "text": "  "}\n'),
            "test",
            r"must not be empty",
            ("queries.jsonl", 1, "text"),
        ),
        (
            lambda f: _rewrite(f / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\n"),
            "test",
            r"split 'test' has no judgements",
            ("test.tsv", None, None),
        ),
        (
            lambda f: None,
            "validation",
            r"no qrels for split 'validation'.*\['dev', 'test', 'train'\]",
            (None, None, None),
        ),
        (
            lambda f: (f / "queries.jsonl").unlink(),
            "test",
            r"not a BEIR folder: missing queries.jsonl",
            (None, None, None),
        ),
        (
            lambda f: _rewrite(f / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq7\td12\thigh\n"),
            "test",
            r"relevance 'high' is not a number",
            ("test.tsv", 2, "score"),
        ),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, change, split, message, where):
    folder = _copy(tmp_path)
    change(folder)
    with pytest.raises(DPRDataError, match=message) as caught:
        load_beir(folder, split)
    name, record, field = where
    assert str(folder) in str(caught.value)
    if name:
        assert str(caught.value.path).endswith(name)
    assert (caught.value.record, caught.value.field) == (record, field)


def test_load_qrels_conflicting_grades(tmp_path):
    path = tmp_path / "qrels.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq\tp\t1\nq\tp\t1\nq\tp\t2\n")
    with pytest.raises(DPRDataError, match=r"twice with different scores \(1 and 2\)") as caught:
        load_qrels(path)
    assert caught.value.record == 4


# ------------------------------------------------------------------------------------------- SQuAD -> BEIR
def _squad(title: str, paragraphs: list[tuple[str, list[tuple[str, str, list[str]]]]]) -> dict:
    return {
        "version": "1.1",
        "data": [
            {
                "title": title,
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            {
                                "id": qid,
                                "question": q,
                                "answers": [{"text": a, "answer_start": 0} for a in answers],
                            }
                            for qid, q, answers in qas
                        ],
                    }
                    for context, qas in paragraphs
                ],
            }
        ],
    }


def test_squad_to_beir(tmp_path):
    train = tmp_path / "train.json"
    train.write_text(
        json.dumps(
            _squad(
                "Oxygen",
                [
                    ("Oxygen is element 8.", [("t1", "Which element is 8?", ["Oxygen"])]),
                    (
                        "Oxygen was found in 1774.",
                        [("t2", "When was oxygen found?", ["1774"]), ("t3", "Who?", [])],
                    ),
                ],
            )
        )
    )
    dev = tmp_path / "dev.json.gz"
    dev.write_bytes(
        gzip.compress(
            json.dumps(
                _squad("Nile_River", [("The Nile is long.", [("v1", "Is the Nile long?", ["long"])])])
            ).encode()
        )
    )
    out = squad_to_beir(train, dev, tmp_path / "beir")
    assert sorted(p.name for p in out.iterdir()) == ["corpus.jsonl", "qrels", "queries.jsonl"]
    test = load_beir(out, "test")
    assert test.corpus["id"] == ["Oxygen-0", "Oxygen-1", "Nile_River-0"]
    assert test.corpus[2]["title"] == "Nile River"
    assert test.qrels == {"v1": {"Nile_River-0": 1}}
    assert test.queries.to_list() == [
        {"id": "v1", "question": "Is the Nile long?", "answers": ["long"], "gold_passage_id": ""}
    ]
    assert load_beir(out, "train").qrels == {"t1": {"Oxygen-0": 1}, "t2": {"Oxygen-1": 1}}  # t3: no answer
    # the same ids as load_passages gives the SQuAD files themselves
    assert load_passages(train)["id"] == ["Oxygen-0", "Oxygen-1"]

    # a train/dev split of the same article: dev paragraphs continue the numbering; a shared one is one passage
    dev.write_bytes(
        gzip.compress(
            json.dumps(
                _squad(
                    "Oxygen",
                    [
                        ("Oxygen is element 8.", [("v2", "Element 8?", ["Oxygen"])]),
                        ("Another text.", [("v3", "Which text?", ["Another"])]),
                    ],
                )
            ).encode()
        )
    )
    shared = load_beir(squad_to_beir(train, dev, tmp_path / "shared"), "test")
    assert shared.corpus["id"] == ["Oxygen-0", "Oxygen-1", "Oxygen-3"]
    assert shared.qrels == {"v2": {"Oxygen-0": 1}, "v3": {"Oxygen-3": 1}}
    dev.write_bytes(
        gzip.compress(json.dumps(_squad("Nile", [("Nile.", [("t1", "Again?", ["Nile"])])])).encode())
    )
    with pytest.raises(DPRDataError, match=r"question id 't1' is already used by .*train.json") as caught:
        squad_to_beir(train, dev, tmp_path / "bad")
    assert caught.value.record == "data[0].paragraphs[0].qas[0]" and not (tmp_path / "bad").exists()


# ------------------------------------------------------------------------------- mined BEIR data -> training
def _mined(path: Path) -> dict[str, dict]:
    return {record["question"]: record for record in json.loads(path.read_text())}


def test_mine_negatives_beir_then_train_retriever(tmp_path, tokenizer, tiny_bert_config, single_thread):
    mined = tmp_path / "train-bm25.json"
    args = ["mine-negatives", "--beir", str(BEIR_TINY), "--split", "train", "--output", str(mined), "--num-negatives", "3"]  # fmt: skip
    assert main(args) == 0
    records = _mined(mined)
    train = load_beir(BEIR_TINY, "train")
    text_of = dict(zip(train.queries["id"], train.queries["question"], strict=True))
    assert len(records) == 5
    for query_id, judged in train.qrels.items():
        record = records[text_of[query_id]]
        relevant = [pid for pid, score in sorted(judged.items(), key=lambda item: -item[1]) if score > 0]
        assert [ctx["passage_id"] for ctx in record["positive_ctxs"]] == relevant
        negatives = {ctx["passage_id"] for ctx in record["hard_negative_ctxs"]}
        assert not negatives & set(relevant)  # no judged-relevant passage of the query is a negative
    # a passage judged 0 (not relevant) is a fair hard negative; with no answers, BM25's top passages are kept
    assert "d10" in {ctx["passage_id"] for ctx in records[text_of["q5"]]["hard_negative_ctxs"]}
    assert [c["passage_id"] for c in records[text_of["q3"]]["hard_negative_ctxs"]] == ["d6"]

    # queries that carry answers: answer strings filter too (d6 mentions the valleys glaciers carve)
    folder = _copy(tmp_path)
    lines = [json.loads(line) for line in (folder / "queries.jsonl").read_text().splitlines()]
    for line in lines:
        if line["_id"] == "q3":
            line["answers"] = ["valleys"]
    (folder / "queries.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    filtered = tmp_path / "filtered.json"
    assert main(["mine-negatives", "--beir", str(folder), "--output", str(filtered)]) == 0  # --split: train
    assert _mined(filtered)[text_of["q3"]]["hard_negative_ctxs"] == []

    # train-retriever takes the mined file unchanged: one step of a tiny random pair
    torch.manual_seed(0)
    BertModel(tiny_bert_config).save_pretrained(tmp_path / "backbone")
    tokenizer.save_pretrained(tmp_path / "backbone")
    recipe = {"model_name_or_path": str(tmp_path / "backbone"), "train_file": str(mined), "max_steps": 1,
              "per_device_train_batch_size": 4, "question_max_length": 16, "passage_max_length": 32,
              "disable_tqdm": True}  # fmt: skip
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert (
        main(["train-retriever", str(tmp_path / "recipe.yaml"), "--output_dir", str(tmp_path / "pair")]) == 0
    )
    assert (tmp_path / "pair" / "question_encoder" / "model.safetensors").is_file()
    history = json.loads((tmp_path / "pair" / "metrics.json").read_text())["log_history"]
    assert any("loss" in entry for entry in history)

    # a second round mines with the trained pair the same way: judged-relevant passages are never negatives
    dense = tmp_path / "train-dense.json"
    args = ["mine-negatives", "--beir", str(BEIR_TINY), "--method", "dense", "--model", str(tmp_path / "pair"),
            "--output", str(dense), "--num-negatives", "2"]  # fmt: skip
    assert main(args) == 0
    for query_id, judged in train.qrels.items():
        record = _mined(dense)[text_of[query_id]]
        negatives = [ctx["passage_id"] for ctx in record["hard_negative_ctxs"]]
        assert len(negatives) == 2 and not {pid for pid, score in judged.items() if score > 0} & set(
            negatives
        )


def test_mine_negatives_needs_a_corpus_without_beir(tmp_path, capsys):
    args = ["mine-negatives", "--data", str(tmp_path / "x.json"), "--output", str(tmp_path / "o.json")]
    assert main(args) == 2
    assert "--passages FILE or --index DIR" in capsys.readouterr().err

"""Data loaders on the real shared files (DPR's NQ sample, SQuAD, NQ documents) and on hand-made bad input."""

from __future__ import annotations

import ast
import csv
import gzip
import json
import logging
import uuid

import datasets
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpr_hf.data import (
    RETRIEVER_FEATURES,
    load_passages,
    load_questions,
    load_retriever_data,
    passage_id,
    save_retriever_json,
    split_documents,
)
from dpr_hf.models.errors import DPRDataError


def _squad_counts(path):
    """Answerable / unanswerable question counts read straight from the file, independently of the loader."""
    document = json.load(gzip.open(path, "rt", encoding="utf-8"))
    qas = [qa for article in document["data"] for p in article["paragraphs"] for qa in p["qas"]]
    answerable = sum(1 for qa in qas if qa["answers"] and not qa.get("is_impossible"))
    return answerable, len(qas) - answerable


# ----------------------------------------------------------------------------------------------- real files
def test_dpr_retriever_json_sample(nq_dir):
    raw = json.loads((nq_dir / "biencoder-nq-dev-sample.json").read_text())
    data = load_retriever_data(nq_dir / "biencoder-nq-dev-sample.json")
    assert data.features == RETRIEVER_FEATURES
    assert len(data) == len(raw) == 5
    for record, example in zip(raw, data, strict=True):
        assert example["question"] == record["question"] and example["answers"] == record["answers"]
        for field in ("positive_ctxs", "negative_ctxs", "hard_negative_ctxs"):
            assert [c["id"] for c in example[field]] == [str(c["passage_id"]) for c in record[field]]
            assert [c["text"] for c in example[field]] == [c["text"] for c in record[field]]
            assert [c["title"] for c in example[field]] == [c["title"] for c in record[field]]
    assert data[0]["positive_ctxs"][0]["id"] == "11828866"
    assert {len(example["negative_ctxs"]) for example in data} == {50}


def test_retriever_json_round_trip_is_dpr_format(nq_dir, tmp_path):
    data = load_retriever_data(nq_dir / "biencoder-nq-dev-sample.json")
    for name in ("out.json", "out.jsonl", "out.json.gz"):
        path = save_retriever_json(data, tmp_path / name)
        assert load_retriever_data(path).to_list() == data.to_list()
    written = json.loads((tmp_path / "out.json").read_text())
    ctx = written[0]["positive_ctxs"][0]
    assert set(ctx) == {"passage_id", "title", "text"} and ctx["passage_id"] == "11828866"
    assert not list(tmp_path.glob(".*tmp*")), "temporary files must not be left behind"


def test_squad_v1_retriever_data(squad_dir):
    path = squad_dir / "squad1.1-dev-a.json.gz"
    answerable, unanswerable = _squad_counts(path)
    data = load_retriever_data(path)
    assert unanswerable == 0 and len(data) == answerable == 5665
    first = data[0]
    assert first["positive_ctxs"][0]["id"] == "1973_oil_crisis-0"
    assert first["positive_ctxs"][0]["title"] == "1973 oil crisis"
    assert first["negative_ctxs"] == [] and first["hard_negative_ctxs"] == []
    for example in data.select(range(0, len(data), 97)):
        assert any(answer in example["positive_ctxs"][0]["text"] for answer in example["answers"])


def test_squad_v2_skips_and_counts_unanswerable(squad_dir, caplog):
    path = squad_dir / "squad2.0-dev-a.json.gz"
    answerable, unanswerable = _squad_counts(path)
    assert unanswerable > 0
    for _ in range(2):  # the second load comes from datasets' cache and must warn all the same
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="dpr_hf"):
            data = load_retriever_data(path)
        assert len(data) == answerable
        assert f"skipped {unanswerable} unanswerable" in caplog.text
    questions = load_questions(path)
    assert len(questions) == answerable


def test_squad_passages_and_questions_agree(squad_dir):
    path = squad_dir / "squad1.1-dev-a.json.gz"
    passages = load_passages(path)
    questions = load_questions(path)
    assert len(passages) == 1065 and len(set(passages["id"])) == 1065
    assert not any("_" in title for title in passages["title"])
    assert set(questions["gold_passage_id"]) <= set(passages["id"])
    assert len(questions) == 5665 and questions[0]["id"] == "5725b33f6a3fe71400b8952d"


def test_dpr_sample_as_corpus_and_questions(nq_dir):
    passages = load_passages(nq_dir / "biencoder-nq-dev-sample.json")
    assert len(passages) == 751 == len(set(passages["id"]))
    questions = load_questions(nq_dir / "biencoder-nq-dev-sample.json")
    assert questions[0]["gold_passage_id"] == "11828866" and questions[0]["answers"] == ["Linda Davis"]


def test_split_nq_documents_into_100_word_passages(nq_dir):
    documents = load_passages(nq_dir / "nq-dev-subset-v2.json.gz")
    assert len(documents) == 50
    passages = split_documents(documents, words=100)
    by_document: dict[str, list[dict]] = {}
    for passage in passages:
        assert len(passage["text"].split()) <= 100
        by_document.setdefault(passage["id"].rsplit("-", 1)[0], []).append(passage)
    for document in documents:
        parts = by_document[document["id"]]
        assert [p["id"] for p in parts] == [f"{document['id']}-{i}" for i in range(len(parts))]
        assert {p["title"] for p in parts} == {document["title"]}
        assert " ".join(p["text"] for p in parts).split() == document["text"].split()
        assert all(len(p["text"].split()) == 100 for p in parts[:-1])
    assert len(passages) == sum(-(-len(d.split()) // 100) for d in documents["text"])


# ------------------------------------------------------------------------------------------ other formats
def test_dpr_passage_tsv(tmp_path):
    content = (
        'id\ttext\ttitle\n1\t"Aaron ( or ; ""Ahärôn"") is a prophet\twith a tab"\tAaron\n2\tplain text\t\n'
    )
    (tmp_path / "psgs.tsv").write_text(content, encoding="utf-8")
    with gzip.open(tmp_path / "psgs.tsv.gz", "wt", encoding="utf-8") as handle:
        handle.write(content)
    for name in ("psgs.tsv", "psgs.tsv.gz"):
        passages = load_passages(tmp_path / name)
        assert passages.to_list() == [
            {"id": "1", "title": "Aaron", "text": 'Aaron ( or ; "Ahärôn") is a prophet\twith a tab'},
            {"id": "2", "title": "", "text": "plain text"},
        ]


def test_passage_jsonl_gets_stable_ids(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"title": "T", "text": "body one"}\n\n{"id": 7, "text": "body two"}\n')
    passages = load_passages(path)
    assert passages[0]["id"] == passage_id("T", "body one") == passage_id("T", "body one")
    assert passages[0]["id"] != passage_id("T", "body two")
    assert passages[1] == {"id": "7", "title": "", "text": "body two"}


def test_qas_tsv_and_csv(tmp_path):
    (tmp_path / "qas.tsv").write_text(
        'who wrote hamlet\t[\'William Shakespeare\', "Shakespeare"]\nwhen\t["1603"]\n', encoding="utf-8"
    )
    questions = load_questions(tmp_path / "qas.tsv")
    assert questions["answers"] == [["William Shakespeare", "Shakespeare"], ["1603"]]
    assert questions["id"] == ["1", "2"] and questions["gold_passage_id"] == ["", ""]
    (tmp_path / "qas.csv").write_text('question,answers\n"a, b?","[""x""]"\n', encoding="utf-8")
    assert load_questions(tmp_path / "qas.csv").to_list() == [
        {"id": "2", "question": "a, b?", "answers": ["x"], "gold_passage_id": ""}
    ]


@pytest.mark.parametrize(
    ("name", "content", "question"),
    [
        ("multiline.tsv", '"who\nwrote it"\t["a"]\n', "who\nwrote it"),  # line 1 has no tab: still TSV
        ("dpr.csv", "who wrote it\t['a']\n", "who wrote it"),  # DPR's qas .csv files are tab-separated
        ("comma.csv", '"who\twrote, it","[""a""]"\n', "who\twrote, it"),  # a tab inside a quoted field
    ],
)
def test_qas_first_record_decides_the_delimiter(tmp_path, name, content, question):
    (tmp_path / name).write_text(content, encoding="utf-8")
    assert load_questions(tmp_path / name).to_list() == [
        {
            "id": "1" if "multiline" not in name else "2",
            "question": question,
            "answers": ["a"],
            "gold_passage_id": "",
        }
    ]


def test_qas_answers_are_never_evaluated(tmp_path):
    marker = tmp_path / "evaluated"
    path = tmp_path / "qas.tsv"
    path.write_text(f"q\t__import__('pathlib').Path({str(marker)!r}).touch()\n", encoding="utf-8")
    with pytest.raises(DPRDataError) as error:
        load_questions(path)
    assert error.value.record == 1 and error.value.field == "answers"
    assert not marker.exists()


def test_question_jsonl(tmp_path):
    path = tmp_path / "questions.jsonl"
    path.write_text(
        '{"question": "q one", "answers": ["a"]}\n{"id": "x", "question": "q two", "gold_passage_id": 5}\n'
    )
    assert load_questions(path).to_list() == [
        {"id": "1", "question": "q one", "answers": ["a"], "gold_passage_id": ""},
        {"id": "x", "question": "q two", "answers": [], "gold_passage_id": "5"},
    ]


def test_datasets_sources(tmp_path, caplog):
    rows = [
        {
            "question": "q1",
            "answers": ["a"],
            "extra": 1,
            "positive_ctxs": [{"passage_id": "9", "text": "a b"}],
        },
        {"question": "q2", "answers": ["b"], "extra": 2, "positive_ctxs": []},
    ]
    dataset = datasets.Dataset.from_list(rows)
    with caplog.at_level(logging.WARNING, logger="dpr_hf"):
        data = load_retriever_data(dataset)
    assert "skipped 1 records without a positive" in caplog.text
    assert data.features == RETRIEVER_FEATURES
    assert data.to_list() == [
        {
            "question": "q1",
            "answers": ["a"],
            "positive_ctxs": [{"id": "9", "title": "", "text": "a b"}],
            "negative_ctxs": [],
            "hard_negative_ctxs": [],
        }
    ]
    datasets.DatasetDict({"train": dataset, "dev": dataset.select([0])}).save_to_disk(str(tmp_path / "dd"))
    assert len(load_retriever_data(tmp_path / "dd", split="dev")) == 1
    with pytest.raises(DPRDataError, match="split"):
        load_retriever_data(tmp_path / "dd")
    with pytest.raises(DPRDataError) as error:
        load_retriever_data(datasets.Dataset.from_list([{"question": "q"}]))
    assert error.value.field == "positive_ctxs"
    with pytest.raises(DPRDataError) as error:
        load_retriever_data(datasets.Dataset.from_list([{"question": " ", "positive_ctxs": [{"text": "t"}]}]))
    assert (error.value.record, error.value.field) == (1, "question")
    passages = load_passages(datasets.Dataset.from_list([{"text": "t", "title": None}]))
    assert passages[0] == {"id": passage_id("", "t"), "title": "", "text": "t"}


# --------------------------------------------------------------------------------------------- bad input
GOOD = {"question": "q", "answers": ["a"], "positive_ctxs": [{"title": "t", "text": "a"}]}


def _with(**changes):
    record = json.loads(json.dumps(GOOD))
    record.update(changes)
    return record


@pytest.mark.parametrize(
    ("records", "record", "field"),
    [
        ([GOOD, _with(question=3)], 2, "question"),
        ([_with(question="  ")], 1, "question"),
        ([{"answers": ["a"], "positive_ctxs": GOOD["positive_ctxs"]}], 1, "question"),
        ([_with(answers="a")], 1, "answers"),
        ([_with(answers=["a", 1])], 1, "answers[1]"),
        ([{"question": "q", "answers": []}], 1, "positive_ctxs"),
        ([_with(positive_ctxs={"text": "a"})], 1, "positive_ctxs"),
        ([_with(positive_ctxs=[{"title": "t"}])], 1, "positive_ctxs[0].text"),
        ([_with(hard_negative_ctxs=[{"text": "x"}, {"text": ["x"]}])], 1, "hard_negative_ctxs[1].text"),
        ([_with(positive_ctxs=[{"text": "a", "passage_id": 1.5}])], 1, "positive_ctxs[0].passage_id"),
        ([GOOD, "not an object"], 2, None),
    ],
)
@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_malformed_records_name_file_record_and_field(tmp_path, records, record, field, suffix):
    path = tmp_path / f"bad{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(records))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(DPRDataError) as error:
        load_retriever_data(path)
    assert (error.value.record, error.value.field) == (record, field)
    assert str(path) in str(error.value) and f"record {record}" in str(error.value)


@pytest.mark.parametrize(
    ("name", "content", "loader", "message"),
    [
        (
            "truncated.json",
            b'[{"question": "q", "answers": ["a"], "positive_ctxs": [{"te',
            load_retriever_data,
            "JSON",
        ),
        (
            "truncated.jsonl",
            json.dumps(GOOD).encode() + b'\n{"question": "q2", "answ',
            load_retriever_data,
            "JSON",
        ),
        ("latin1.json", '[{"question": "caf\xe9"}]'.encode("latin-1"), load_retriever_data, "UTF-8"),
        ("latin1.tsv", "id\ttext\ttitle\n1\tcaf\xe9\tt\n".encode("latin-1"), load_passages, "UTF-8"),
        ("object.json", b'{"question": "q"}', load_retriever_data, "SQuAD"),
        ("squad.json", b'{"data": [{"title": "t", "paragraphs": [{"qas": []}]}]}', load_passages, "context"),
        ("noheader.tsv", b"1\tsome text\ttitle\n", load_passages, "header"),
        ("ragged.tsv", b"id\ttext\ttitle\n1\ttext\n", load_passages, "fields"),
        ("qas.tsv", b"question only\n", load_questions, "answers"),
        ("qas2.tsv", b"q\t['a'\n", load_questions, "answers"),
        ("qas3.tsv", b"q\t[1, 2]\n", load_questions, "answers"),
        ("data.txt", b"whatever", load_passages, "format"),
    ],
)
def test_malformed_files_raise_dpr_data_error(tmp_path, name, content, loader, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DPRDataError, match=message) as error:
        loader(path)
    assert str(path) in str(error.value)


def test_truncated_gzip(squad_dir, tmp_path):
    path = tmp_path / "cut.json.gz"
    path.write_bytes((squad_dir / "squad1.1-dev-a.json.gz").read_bytes()[:5000])
    with pytest.raises(DPRDataError, match="gzip"):
        load_retriever_data(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_retriever_data(tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError):
        load_passages(tmp_path / "nope.tsv")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
FIELDS = st.sampled_from(["question", "answers", "positive_ctxs", "negative_ctxs", "hard_negative_ctxs"])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=FIELDS, value=JSON_VALUES, jsonl=st.booleans())
def test_any_field_value_loads_or_raises_our_error(tmp_path, field, value, jsonl):
    """Whatever a field holds, the loader returns canonical data or raises DPRDataError naming that field."""
    record = _with(**{field: value})
    path = tmp_path / f"{uuid.uuid4().hex}.{'jsonl' if jsonl else 'json'}"
    path.write_text(json.dumps(record) + "\n" if jsonl else json.dumps([record]))
    try:
        data = load_retriever_data(path)
    except DPRDataError as error:
        assert error.record == 1 and error.field.startswith(field)
        return
    assert data.features == RETRIEVER_FEATURES and len(data) <= 1


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=60), suffix=st.sampled_from([".json", ".jsonl", ".tsv", ".json.gz"]))
def test_arbitrary_bytes_never_escape_as_other_errors(tmp_path, content, suffix):
    path = tmp_path / f"{uuid.uuid4().hex}{suffix}"
    path.write_bytes(content)
    loader = load_passages if suffix == ".tsv" else load_retriever_data
    try:
        loader(path)
    except DPRDataError as error:
        assert str(path) in str(error)


def test_empty_files_are_empty_datasets(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "none.json").write_text("[]")
    for name in ("empty.jsonl", "none.json"):
        data = load_retriever_data(tmp_path / name)
        assert len(data) == 0 and data.features == RETRIEVER_FEATURES


# Lists of objects with the loaders' own keys: values that get past the first type checks.
SHAPED_VALUES = st.lists(
    st.dictionaries(
        st.sampled_from(["id", "passage_id", "title", "text", "context", "qas", "question", "answers"]),
        JSON_VALUES,
        max_size=4,
    ),
    max_size=2,
)
HYPOTHESIS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _load_or_error(loader, path):
    """The loaded rows, or the DPRDataError, which must name the file; any other exception fails the test."""
    try:
        return loader(path).to_list()
    except DPRDataError as error:
        assert str(path) in str(error) and error.path is not None
        return error


def _expected_question_field(field: str, value):
    """What `value` in `field` of a question record must load as (column, value), or None: refused."""
    if field == "question":
        return ("question", value) if isinstance(value, str) and value.strip() else None
    if field == "answers":
        if value is None:
            return "answers", []
        ok = isinstance(value, list) and all(isinstance(answer, str) for answer in value)
        return ("answers", value) if ok else None
    if field == "positive_ctxs":
        if not value:
            return "gold_passage_id", ""
        ctx = value[0] if isinstance(value, list) and isinstance(value[0], dict) else None
        if ctx is None or not isinstance(ctx.get("text"), str):
            return None
        given_id = next((ctx[key] for key in ("id", "passage_id") if ctx.get(key) is not None), None)
        return "gold_passage_id", str(given_id) if given_id is not None else passage_id(
            ctx.get("title") or "", ctx["text"]
        )
    if field == "text":  # BEIR's question field, ignored beside `question`
        return "question", "q"
    column = "gold_passage_id" if field == "gold_passage_id" else "id"
    if value is None:
        return column, "" if field == "gold_passage_id" else "1"
    return (column, str(value)) if isinstance(value, (str, int)) and not isinstance(value, bool) else None


@HYPOTHESIS
@given(
    field=st.sampled_from(["id", "_id", "text", "question", "answers", "gold_passage_id", "positive_ctxs"]),
    value=JSON_VALUES | SHAPED_VALUES,
    jsonl=st.booleans(),
)
def test_question_field_values_load_canonically_or_raise_our_error(tmp_path, field, value, jsonl):
    """JSON/JSONL questions: any value in any field loads as exactly that value, or is refused by field."""
    record = {"question": "q", "answers": ["a"], field: value}
    path = tmp_path / f"{uuid.uuid4().hex}.{'jsonl' if jsonl else 'json'}"
    path.write_text(json.dumps(record) + "\n" if jsonl else json.dumps([record]))
    loaded = _load_or_error(load_questions, path)
    expected = _expected_question_field(field, value)
    if isinstance(loaded, DPRDataError):
        assert expected is None or field == "positive_ctxs", f"refused a valid {field}: {loaded}"
        assert loaded.record == 1 and loaded.field.startswith(field)
        return
    assert expected is not None, f"accepted an invalid {field}: {loaded}"
    column, canonical = expected
    assert len(loaded) == 1 and loaded[0][column] == canonical


def _expected_passage_field(field: str, value):
    """The passage `{"title": "T", "text": "t", field: value}` must load as, or None: refused."""
    passage = {"title": "T", "text": "t", field: value}
    if not isinstance(passage["text"], str) or not isinstance(passage["title"], (str, type(None))):
        return None
    title = passage["title"] or ""
    if field in ("id", "passage_id", "_id") and value is not None:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            return None
        return {"id": str(value), "title": title, "text": passage["text"]}
    return {"id": passage_id(title, passage["text"]), "title": title, "text": passage["text"]}


@HYPOTHESIS
@given(
    field=st.sampled_from(["id", "passage_id", "_id", "title", "text"]),
    value=JSON_VALUES | SHAPED_VALUES,
    jsonl=st.booleans(),
)
def test_passage_field_values_load_canonically_or_raise_our_error(tmp_path, field, value, jsonl):
    """Passage JSONL and DPR retriever JSON ctxs: any value in any field loads as exactly that value, or is
    refused naming the field."""
    ctx = {"title": "T", "text": "t", field: value}
    path = tmp_path / f"{uuid.uuid4().hex}.{'jsonl' if jsonl else 'json'}"
    path.write_text(json.dumps(ctx) + "\n" if jsonl else json.dumps([_with(positive_ctxs=[ctx])]))
    loaded = _load_or_error(load_passages, path)
    expected = _expected_passage_field(field, value)
    if isinstance(loaded, DPRDataError):
        assert expected is None, f"refused a valid {field}: {loaded}"
        assert loaded.record == 1 and loaded.field.endswith(f".{field}")
        return
    assert loaded == [expected]


@HYPOTHESIS
@given(
    rows=st.lists(st.tuples(st.text(max_size=6), st.text(max_size=6)), max_size=3),
    suffix=st.sampled_from([".tsv", ".csv"]),
)
def test_passage_tsv_cells_load_as_written(tmp_path, rows, suffix):
    """DPR passage TSV (and CSV): any title and text, with tabs, quotes and line breaks, load as written."""
    path = tmp_path / f"{uuid.uuid4().hex}{suffix}"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t" if suffix == ".tsv" else ",")
        writer.writerows(
            [("id", "text", "title")] + [(str(i), text, title) for i, (title, text) in enumerate(rows)]
        )
    expected = [{"id": str(i), "title": title, "text": text} for i, (title, text) in enumerate(rows)]
    assert load_passages(path).to_list() == expected


def _parsed_answers(cell: str):
    """The answers a qas cell holds by its own reading (JSON, else a Python literal), or None."""
    for parse in (json.loads, ast.literal_eval):
        try:
            answers = parse(cell)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        return list(answers) if isinstance(answers, (list, tuple)) else None
    return None


@HYPOTHESIS
@given(
    question=st.text(max_size=8),
    answers=st.lists(st.text(max_size=6), max_size=3) | st.text(max_size=8),
    identifier=st.none() | st.text(max_size=4),
    suffix=st.sampled_from([".tsv", ".csv"]),
    python_literal=st.booleans(),
)
def test_qas_cells_load_canonically_or_raise_our_error(
    tmp_path, question, answers, identifier, suffix, python_literal
):
    """qas TSV (DPR's, no header) and CSV (with header): any cell text, including tabs, quotes and line breaks,
    loads as exactly that text or is refused naming the question or answers field."""
    if isinstance(answers, list):
        cell = repr(answers) if python_literal else json.dumps(answers)
    else:
        cell = answers
    row = [question, cell, *([identifier] if identifier is not None else [])]
    path = tmp_path / f"{uuid.uuid4().hex}{suffix}"
    with path.open("w", encoding="utf-8", newline="") as handle:
        if suffix == ".csv":
            handle.write("question,answers,id\r\n")
        csv.writer(handle, delimiter="\t" if suffix == ".tsv" else ",").writerow(row)
    loaded = _load_or_error(load_questions, path)
    parsed = _parsed_answers(cell)
    valid = question.strip() and parsed is not None and all(isinstance(answer, str) for answer in parsed)
    if isinstance(loaded, DPRDataError):
        assert not valid, f"refused a valid row {row}: {loaded}"
        assert isinstance(loaded.record, int) and loaded.field in ("question", "answers")
        return
    if suffix == ".tsv" and [question.strip().lower(), cell.strip().lower()] == ["question", "answers"]:
        assert loaded == []  # DPR's header row
        return
    assert valid, f"accepted an invalid row {row}: {loaded}"
    ((example,),) = [loaded]
    assert (example["question"], example["answers"], example["gold_passage_id"]) == (question, parsed, "")
    if identifier:
        assert example["id"] == identifier
    else:
        assert example["id"].isdigit()  # the record's line number


SQUAD_SLOTS = {"title": "article", "paragraphs": "article", "context": "paragraph", "qas": "paragraph"}
SQUAD_SLOTS |= {"question": "qa", "id": "qa", "answers": "qa", "is_impossible": "qa", "text": "answer"}


def _expected_squad_leaf(slot: str, value) -> dict | None:
    """What `value` in a SQuAD leaf field must load as, or None: refused."""
    is_text = isinstance(value, str)
    if slot == "title":
        if not is_text and value is not None:
            return None
        return {"passage_id": f"{value or ''}-0", "title": (value or "").replace("_", " ")}
    if slot == "context":
        return {"text": value} if is_text else None
    if slot == "question":
        return {"question": value} if is_text and value.strip() else None
    if slot == "id":
        if isinstance(value, bool) or not isinstance(value, (str, int, type(None))):
            return None
        return {"id": str(value) if value not in (None, "") else "0-0-0"}
    if slot == "text":
        return {"answers": [value]} if is_text else None
    return {"answerable": value is not True}  # is_impossible: only true means unanswerable


@HYPOTHESIS
@given(slot=st.sampled_from(sorted(SQUAD_SLOTS)), value=JSON_VALUES | SHAPED_VALUES)
def test_squad_field_values_load_canonically_or_raise_our_error(tmp_path, slot, value):
    """SQuAD JSON through all three loaders: any value in any field loads as that value, with the same passage,
    question and positive everywhere, or every loader refuses it naming the record (JSON path) and field."""
    answer = {"text": "c", "answer_start": 0}
    qa = {"id": "q1", "question": "q?", "answers": [answer]}
    paragraph = {"context": "c", "qas": [qa]}
    article = {"title": "T_x", "paragraphs": [paragraph]}
    {"article": article, "paragraph": paragraph, "qa": qa, "answer": answer}[SQUAD_SLOTS[slot]][slot] = value
    path = tmp_path / f"{uuid.uuid4().hex}.json"
    path.write_text(json.dumps({"data": [article]}))
    results = [
        _load_or_error(loader, path) for loader in (load_passages, load_questions, load_retriever_data)
    ]
    errors = [result for result in results if isinstance(result, DPRDataError)]
    container = slot in ("paragraphs", "qas", "answers")
    expected = None if container else _expected_squad_leaf(slot, value)
    if errors:
        assert len(errors) == 3, f"only some loaders refused: {errors}"
        assert container or expected is None, f"refused a valid {slot}: {errors[0]}"
        for error in errors:
            assert error.record.startswith("data[0]")
            assert slot in f"{error.record}.{error.field}" if container else error.field.endswith(slot)
        return
    assert container or expected is not None, f"accepted an invalid {slot}: {results}"
    passages, questions, pairs = results
    assert [q["gold_passage_id"] for q in questions] == [p["positive_ctxs"][0]["id"] for p in pairs]
    assert [(q["question"], q["answers"]) for q in questions] == [
        (p["question"], p["answers"]) for p in pairs
    ]
    assert {q["gold_passage_id"] for q in questions} <= {p["id"] for p in passages}
    if container:
        return
    unchanged = {"passage_id": "T_x-0", "title": "T x", "text": "c", "id": "q1", "question": "q?"}
    want = unchanged | {"answers": ["c"], "answerable": True} | expected
    assert passages == [{"id": want["passage_id"], "title": want["title"], "text": want["text"]}]
    question = {key: want[key] for key in ("id", "question", "answers")} | {
        "gold_passage_id": want["passage_id"]
    }
    assert questions == ([question] if want["answerable"] else [])


@HYPOTHESIS
@given(
    content=st.binary(max_size=80),
    case=st.sampled_from(
        [(load_questions, s) for s in (".tsv", ".csv", ".jsonl", ".json", ".json.gz")]
        + [(load_passages, s) for s in (".csv", ".jsonl", ".json")]
    ),
)
def test_arbitrary_bytes_as_questions_or_passages_never_escape(tmp_path, content, case):
    loader, suffix = case
    path = tmp_path / f"{uuid.uuid4().hex}{suffix}"
    path.write_bytes(content)
    _load_or_error(loader, path)


@pytest.mark.parametrize(
    ("loader", "name", "content", "record", "field"),
    [
        (load_questions, "deep.json", "[" * 100_000, None, None),
        (load_passages, "deep.jsonl", '{"text": "t"}\n' + "[" * 100_000, 2, None),
        (load_retriever_data, "long.json", "[" + "1" * 5000 + "]", None, None),
        (load_questions, "deep.tsv", "q\t" + "[" * 100_000, 1, "answers"),
        (load_questions, "long.tsv", "q\t[" + "1" * 5000 + "]", 1, "answers"),
    ],
)
def test_json_that_python_cannot_read_is_our_error(tmp_path, loader, name, content, record, field):
    """Nesting past the recursion limit or a 5,000-digit integer: valid JSON syntax that `json` refuses."""
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DPRDataError) as error:
        loader(path)
    assert (str(error.value.path), error.value.record, error.value.field) == (str(path), record, field)


# --------------------------------------------------------------------------------------------- huge fields
HUGE = 'Aaron, called Ahärôn, a "prophet"\twith a tab. ' * 100_000  # 4.4 MB of text in one field


def _huge_file(tmp_path, name: str):
    """Write the file `name` with HUGE as its passage text or question; returns the path."""
    quoted = '"' + HUGE.replace('"', '""') + '"'
    squad_context = {"data": [{"title": "T", "paragraphs": [{"context": HUGE, "qas": [SQUAD_QA]}]}]}
    contents = {
        "passages.tsv": lambda: f"id\ttext\ttitle\n1\t{quoted}\tT\n",
        "passages.jsonl": lambda: json.dumps({"id": "1", "title": "T", "text": HUGE}) + "\n",
        "passages.json": lambda: json.dumps([_with(positive_ctxs=[{"id": "1", "title": "T", "text": HUGE}])]),
        "squad.json": lambda: json.dumps(squad_context),
        "squad-question.json": lambda: json.dumps(
            {"data": [_squad_article([{**SQUAD_QA, "question": HUGE}])]}
        ),
        "qas.tsv": lambda: f'{quoted}\t["a"]\n',
        "questions.jsonl": lambda: json.dumps({"id": "q", "question": HUGE, "answers": ["a"]}) + "\n",
        "retriever.jsonl": lambda: json.dumps(_with(question=HUGE)) + "\n",
    }
    path = tmp_path / name
    path.write_text(contents[name](), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("loader", "name", "column"),
    [
        (load_passages, "passages.tsv", "text"),
        (load_passages, "passages.jsonl", "text"),
        (load_passages, "passages.json", "text"),
        (load_passages, "squad.json", "text"),
        (load_questions, "qas.tsv", "question"),
        (load_questions, "questions.jsonl", "question"),
        (load_questions, "squad-question.json", "question"),
        (load_retriever_data, "retriever.jsonl", "question"),
        (load_retriever_data, "squad.json", "positive_ctxs"),
    ],
)
def test_huge_fields_load_whole(tmp_path, loader, name, column):
    """A 4.4 MB passage or question (quotes, tabs, non-ASCII) loads whole: no field-size limit, no crash."""
    (row,) = loader(_huge_file(tmp_path, name)).to_list()
    value = row[column][0]["text"] if column == "positive_ctxs" else row[column]
    assert value == HUGE


# ------------------------------------------------------------------------------------------- duplicate ids
def _duplicate_error(loader, source) -> DPRDataError:
    with pytest.raises(DPRDataError) as error:
        loader(source)
    return error.value


@pytest.mark.parametrize(
    ("name", "content", "record", "earlier", "value"),
    [
        ("psgs.tsv", "id\ttext\ttitle\n1\ta\tA\n2\tb\tB\n\n1\tc\tC\n", 5, 2, "1"),
        ("psgs.csv.gz", 'id,text,title\n7,"a, b",A\n7,c,C\n', 3, 2, "7"),
        (
            "psgs.jsonl",
            '{"id": 1, "text": "a"}\n{"id": "2", "text": "b"}\n{"passage_id": 2, "text": "c"}\n',
            3,
            2,
            "2",
        ),
        (
            "same.jsonl",
            '{"title": "T", "text": "a"}\n{"title": "T", "text": "a"}\n',
            2,
            1,
            passage_id("T", "a"),
        ),
    ],
)
def test_duplicate_passage_ids_name_the_record_and_the_earlier_one(
    tmp_path, name, content, record, earlier, value
):
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(content)
    else:
        path.write_text(content, encoding="utf-8")
    error = _duplicate_error(load_passages, path)
    assert (str(error.path), error.record, error.field) == (str(path), record, "id")
    assert f"duplicate id {value!r}: record {earlier} has it too" in str(error)
    assert str(path) in str(error)


def test_duplicate_passage_ids_in_a_dataset_source():
    dataset = datasets.Dataset.from_list(
        [{"id": "a", "text": "t"}, {"id": "b", "text": "t"}, {"id": "a", "text": "u"}]
    )
    error = _duplicate_error(load_passages, dataset)
    assert (error.record, error.field) == (3, "id") and "record 1 has it too" in str(error)


def test_dpr_json_passages_recur_under_one_id_but_two_passages_cannot_share_it(tmp_path):
    ctx = {"passage_id": 5, "title": "T", "text": "a"}
    records = [
        _with(positive_ctxs=[ctx]),
        _with(positive_ctxs=[ctx], hard_negative_ctxs=[{**ctx, "text": "b"}]),
    ]
    (tmp_path / "same.json").write_text(json.dumps(records[:1] * 2))
    assert load_passages(tmp_path / "same.json").to_list() == [{"id": "5", "title": "T", "text": "a"}]
    (tmp_path / "other.json").write_text(json.dumps(records))
    error = _duplicate_error(load_passages, tmp_path / "other.json")
    assert (error.record, error.field) == (2, "hard_negative_ctxs[0].passage_id")
    assert "record 1, positive_ctxs[0]" in str(error)


SQUAD_QA = {"question": "q?", "answers": [{"text": "c"}]}


def _squad_article(*paragraph_qas: list[dict], title: str | None = "T") -> dict:
    """A SQuAD article: one paragraph (context "c") per list of questions."""
    article = {"paragraphs": [{"context": "c", "qas": qas} for qas in paragraph_qas]}
    return article if title is None else {"title": title, **article}


def test_squad_repeated_and_missing_titles_still_give_distinct_ids(tmp_path):
    """Paragraph ids count per title, so an article whose title repeats (or untitled ones) never reuse an id."""
    one, two = [[SQUAD_QA]], [[SQUAD_QA], [SQUAD_QA]]
    articles = [_squad_article(*two, title="A"), _squad_article(*one, title=None)]
    articles += [_squad_article(*one, title="A"), _squad_article(*two, title=None)]
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"data": articles}))
    passages = load_passages(path)
    assert passages["id"] == ["A-0", "A-1", "-0", "A-2", "-1", "-2"]
    assert load_questions(path)["gold_passage_id"] == passages["id"]
    assert [ex["positive_ctxs"][0]["id"] for ex in load_retriever_data(path)] == passages["id"]


@pytest.mark.parametrize(
    ("name", "content", "record", "earlier", "value"),
    [
        (
            "explicit.jsonl",
            '{"id": "x", "question": "a"}\n{"question": "b"}\n{"id": "x", "question": "c"}\n',
            3,
            1,
            "x",
        ),
        ("assigned.jsonl", '{"question": "a"}\n{"id": 1, "question": "b"}\n', 2, 1, "1"),
        ("list.json", '[{"question": "a"}, {"id": "1", "question": "b"}]', 2, 1, "1"),
        ("qas.tsv", 'q1\t["a"]\tx\nq2\t["b"]\nq3\t["c"]\tx\n', 3, 1, "x"),
        ("qas.csv", 'question,answers,id\nq1,"[""a""]",3\nq2,"[""b""]"\n', 3, 2, "3"),
        (
            "squad.json",
            json.dumps({"data": [_squad_article([{**SQUAD_QA, "id": "q"}, {**SQUAD_QA, "id": "q"}])]}),
            "data[0].paragraphs[0].qas[1]",
            "data[0].paragraphs[0].qas[0]",
            "q",
        ),
    ],
)
def test_duplicate_question_ids_name_the_record_and_the_earlier_one(
    tmp_path, name, content, record, earlier, value
):
    """Predictions and evaluation key on question ids: a repeated id, explicit or assigned, is an error."""
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    error = _duplicate_error(load_questions, path)
    assert (str(error.path), error.record, error.field) == (str(path), record, "id")
    assert f"duplicate id {value!r}: record {earlier} has it too" in str(error)


def test_questions_without_ids_never_collide(tmp_path):
    (tmp_path / "q.jsonl").write_text('{"question": "a"}\n\n{"question": "a"}\n')
    assert load_questions(tmp_path / "q.jsonl")["id"] == ["1", "3"]
    squad = {"data": [_squad_article([SQUAD_QA, SQUAD_QA], [SQUAD_QA])]}
    (tmp_path / "squad.json").write_text(json.dumps(squad))
    assert load_questions(tmp_path / "squad.json")["id"] == ["0-0-0", "0-0-1", "0-1-0"]


def test_first_repeated_compares_values_when_hashes_agree(monkeypatch):
    """Equal hashes only nominate candidates: with every hash colliding, the answer must still be exact."""
    from dpr_hf.data import _io

    values = pa.chunked_array([["a", "b"], ["c", "b", "a"]])
    assert _io.first_repeated(values) == (1, 3)
    monkeypatch.setattr(_io, "_HASH_SLICE", 2)
    monkeypatch.setattr(
        _io.pd.util, "hash_array", lambda strings, categorize: np.zeros(len(strings), np.uint64)
    )
    assert _io.first_repeated(values) == (1, 3)
    assert _io.first_repeated(pa.chunked_array([["a", "b"], ["c"]])) is None
    assert _io.first_repeated(pa.chunked_array([], pa.string())) is None


def test_cli_duplicate_ids_exit_2_with_one_line(tmp_path, capsys):
    from dpr_hf.cli import main

    (tmp_path / "data.json").write_text(json.dumps([GOOD]))
    (tmp_path / "psgs.tsv").write_text("id\ttext\ttitle\n1\ta\tA\n1\tb\tB\n")
    argv = ["mine-negatives", "--data", str(tmp_path / "data.json"), "--passages", str(tmp_path / "psgs.tsv")]
    assert main([*argv, "--output", str(tmp_path / "out.json")]) == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("dpr-hf mine-negatives: error:")]
    assert f"{tmp_path / 'psgs.tsv'}, record 3, field 'id': duplicate id '1': record 2 has it too" in line

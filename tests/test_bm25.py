"""BM25Retriever (bm25s) on the real SQuAD dev-a paragraphs: ranking quality, stopwords, save/load."""

from __future__ import annotations

import json

import datasets
import pytest

from dpr_hf.data import load_passages, load_questions
from dpr_hf.evaluation.metrics import has_answer
from dpr_hf.models.errors import MismatchError
from dpr_hf.retrieval.bm25 import CONFIG_NAME, BM25Retriever


@pytest.fixture(scope="module")
def squad_dev(squad_dir):
    path = squad_dir / "squad1.1-dev-a.json.gz"
    return load_passages(path), load_questions(path).select(range(0, 5665, 19))


@pytest.fixture(scope="module")
def retriever(squad_dev):
    return BM25Retriever.from_passages(squad_dev[0])


def test_search_finds_squad_gold_paragraphs(retriever, squad_dev):
    _, questions = squad_dev
    results = retriever.search(questions["question"], k=20)
    assert len(results) == len(questions)
    for hits in results:
        assert len(hits) == 20
        assert all(set(hit) == {"id", "title", "text", "score"} for hit in hits)
        scores = [hit["score"] for hit in hits]
        assert scores == sorted(scores, reverse=True) and scores[-1] > 0
    gold = questions["gold_passage_id"]
    top1 = sum(hits[0]["id"] == g for hits, g in zip(results, gold, strict=True)) / len(gold)
    top20 = sum(g in {h["id"] for h in hits} for hits, g in zip(results, gold, strict=True)) / len(gold)
    answered = sum(
        any(has_answer(answers, hit["text"]) for hit in hits)
        for hits, answers in zip(results, questions["answers"], strict=True)
    ) / len(gold)
    # SQuAD questions were written looking at the paragraph: BM25 finds it (DPR paper: BM25 beats DPR here).
    assert top1 > 0.6 and top20 > 0.85 and answered > 0.9


def test_title_is_indexed_and_stopwords_ignored(retriever):
    assert retriever.search(["the of and is"], k=5) == [[]]  # only stopwords: nothing shares a term
    assert retriever.search([], k=5) == []
    hits = retriever.search(["Warsaw"], k=3)[0]
    assert all(hit["title"] == "Warsaw" or "Warsaw" in hit["text"] for hit in hits)


def test_small_corpus_and_k_larger_than_corpus():
    corpus = datasets.Dataset.from_list(
        [
            {"id": "a", "title": "Cats", "text": "cats purr and sleep"},
            {"id": "b", "title": "", "text": "dogs bark at cats"},
            {"id": "c", "title": "Fish", "text": "fish swim"},
        ]
    )
    retriever = BM25Retriever.from_passages(corpus)
    hits = retriever.search(["cats", "barking dogs"], k=10)
    assert [hit["id"] for hit in hits[0]] == ["a", "b"]  # "cats" in the title counts too
    assert [hit["id"] for hit in hits[1]] == ["b"]
    with pytest.raises(ValueError, match="empty"):
        BM25Retriever().search(["q"], 1)
    with pytest.raises(ValueError, match="empty corpus"):
        BM25Retriever.from_passages(corpus.select([]))


def test_save_load_round_trip(retriever, squad_dev, tmp_path):
    questions = squad_dev[1]["question"][:20]
    folder = retriever.save(tmp_path / "bm25")
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".json", ".npy", ".arrow"}, files
    for mmap in (False, True):
        loaded = BM25Retriever.load(folder, mmap=mmap)
        assert len(loaded) == len(retriever)
        assert loaded.search(questions, k=10) == retriever.search(questions, k=10)
    retriever.save(folder)  # replacing an earlier BM25 folder is allowed
    assert not [p for p in tmp_path.iterdir() if p.name != "bm25"], "no temporary folder left behind"


def test_save_refuses_foreign_folder_and_load_checks_counts(retriever, tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        retriever.save(tmp_path / "other")
    assert (tmp_path / "other" / "keep.txt").read_text() == "mine"
    with pytest.raises(FileNotFoundError):
        BM25Retriever.load(tmp_path / "other")
    folder = retriever.save(tmp_path / "bm25")
    config = json.loads((folder / CONFIG_NAME).read_text())
    config["num_passages"] += 1
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(MismatchError):
        BM25Retriever.load(folder)


# ------------------------------------------------------------------------------------------------------ at scale
def test_chunked_tokenisation_builds_the_same_index(retriever, squad_dev):
    passages, questions = squad_dev
    chunked = BM25Retriever().build(passages, chunk_size=97)  # the paragraphs in uneven chunks
    assert chunked.tokenizer.get_vocab_dict() == retriever.tokenizer.get_vocab_dict()
    for name in ("data", "indices", "indptr"):
        assert (chunked.model.scores[name] == retriever.model.scores[name]).all()
    some = questions["question"][:30]
    assert chunked.search(some, k=10) == retriever.search(some, k=10)


def test_threaded_search_equals_one_thread(squad_dev):
    passages, questions = squad_dev
    threaded = BM25Retriever(n_threads=4).build(passages)
    single = BM25Retriever(n_threads=0).build(passages)
    many = questions["question"][:130]  # bm25s hands threads 50 questions each: three chunks
    assert threaded.search(many, k=20) == single.search(many, k=20)


def test_stemmer_matches_inflections_and_is_saved_with_the_index(squad_dev, tmp_path):
    corpus = datasets.Dataset.from_list(
        [
            {"id": "a", "title": "", "text": "the knights were riding horses to rouen"},
            {"id": "b", "title": "", "text": "a list of the kings of france"},
        ]
    )
    plain = BM25Retriever.from_passages(corpus)
    stemmed = BM25Retriever.from_passages(corpus, stemmer="english")
    assert plain.search(["which knight rode a horse"], k=2) == [[]]  # no exact word in common
    assert [hit["id"] for hit in stemmed.search(["which knight rode a horse"], k=2)[0]] == ["a"]
    stemmed.save(tmp_path / "bm25")
    assert json.loads((tmp_path / "bm25" / CONFIG_NAME).read_text())["stemmer"] == "english"
    loaded = BM25Retriever.load(tmp_path / "bm25")
    assert loaded.stemmer == "english"
    assert loaded.search(["riding kings"], k=2) == stemmed.search(["riding kings"], k=2)
    # A folder from before stemming existed (no "stemmer" key) loads unstemmed.
    plain.save(tmp_path / "old")
    config = json.loads((tmp_path / "old" / CONFIG_NAME).read_text())
    del config["stemmer"]
    (tmp_path / "old" / CONFIG_NAME).write_text(json.dumps(config))
    assert BM25Retriever.load(tmp_path / "old").stemmer is None
    with pytest.raises(ValueError, match="no PyStemmer stemmer 'klingon'"):
        BM25Retriever(stemmer="klingon")

"""Corpus encoding (order, precision, shards, resume, two processes) and PassageIndex (search, save/load, checks)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pytest
import torch
from datasets import Dataset, load_from_disk

from dpr_hf import (
    PassageEncoder,
    PassageEncoderConfig,
    QuestionEncoder,
    QuestionEncoderConfig,
    encoding,
    format_passages,
)
from dpr_hf.cpu_streams import StreamRace
from dpr_hf.encoding import encode_corpus, encode_passages, precision_context
from dpr_hf.index.passage_index import PassageIndex
from dpr_hf.models.errors import MismatchError
from dpr_hf.models.fingerprints import encoder_fingerprint, pretrained_fingerprint

REPO_ROOT = Path(__file__).resolve().parents[1]


def _vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _dataset(vectors: np.ndarray) -> Dataset:
    n = len(vectors)
    return Dataset.from_dict(
        {
            "id": [f"p{i}" for i in range(n)],
            "title": [f"title {i}" for i in range(n)],
            "text": [f"text {i}" for i in range(n)],
            "embeddings": vectors,
        }
    )


def _passages(n: int = 40) -> Dataset:
    words = "the quick brown fox jumps over a lazy dog while norman knights ride to rouen".split()
    return Dataset.from_dict(
        {
            "id": [str(i) for i in range(n)],
            "title": [f"Article {i % 5}" if i % 3 else "" for i in range(n)],
            "text": [" ".join(words[(i + j) % len(words)] for j in range(3 + 7 * (i % 6))) for i in range(n)],
        }
    )


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, exact, strict=True)]))


def _save_pair(path: Path, tokenizer, config, seed: int) -> Path:
    torch.manual_seed(seed)
    for model in (
        QuestionEncoder(QuestionEncoderConfig(encoder=config)),
        PassageEncoder(PassageEncoderConfig(encoder=config)),
    ):
        folder = path / f"{model.role}_encoder"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return path


# --------------------------------------------------------------------------------------------------- search
def test_flat_search_equals_numpy_dot_product():
    vectors, queries = _vectors(500, 16), _vectors(7, 16, seed=1)
    index = PassageIndex.build(_dataset(vectors))
    results = index.search(queries, k=10)
    scores = queries @ vectors.T
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    for row, hits in enumerate(results):
        assert [hit["id"] for hit in hits] == [f"p{i}" for i in expected[row]]
        np.testing.assert_allclose([hit["score"] for hit in hits], scores[row, expected[row]], rtol=1e-5)
        assert set(hits[0]) == {"id", "title", "text", "score"}


def test_search_rows_is_faiss_answer_and_search_fetches_those_rows():
    vectors, queries = _vectors(300, 16), _vectors(5, 16, seed=1)
    index = PassageIndex.build(_dataset(vectors))
    scores, rows = index.search_rows(queries, k=8)
    expected_scores, expected_rows = index.faiss_index.search(queries, 8)
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_array_equal(scores, expected_scores)
    for query_rows, query_scores, hits in zip(rows, scores, index.search(queries, k=8), strict=True):
        assert [hit["id"] for hit in hits] == [f"p{row}" for row in query_rows]
        assert [hit["score"] for hit in hits] == pytest.approx(query_scores.tolist())
    with pytest.raises(MismatchError, match="17 dims"):
        index.search_rows(_vectors(1, 17), k=3)


def test_passages_follow_a_selected_and_shuffled_dataset():
    """Row numbers are the dataset's rows, also when it is a re-ordered view of its Arrow table."""
    dataset = _dataset(_vectors(50, 8)).shuffle(seed=3).select(range(10, 40))
    index = PassageIndex.build(dataset)
    assert index.passages([0, 29, 5]) == [
        {key: dataset[row][key] for key in ("id", "title", "text")} for row in (0, 29, 5)
    ]
    for query, hits in zip(_vectors(3, 8, seed=4), index.search(_vectors(3, 8, seed=4), k=30), strict=True):
        assert [hit["id"] for hit in hits[:3]] == [
            dataset[int(row)]["id"] for row in np.argsort(-(np.stack(dataset["embeddings"]) @ query))[:3]
        ]


def test_search_drops_the_rows_faiss_could_not_fill():
    """An IVF index probing one list may find fewer than k passages: FAISS pads with row -1, search drops them."""
    vectors = _vectors(400, 8)
    index = PassageIndex.build(_dataset(vectors), factory="IVF16,Flat", search_parameters={"nprobe": 1})
    scores, rows = index.search_rows(vectors[:4], k=200)
    assert (rows == -1).any()
    for query_rows, hits in zip(rows, index.search(vectors[:4], k=200), strict=True):
        assert [hit["id"] for hit in hits] == [f"p{row}" for row in query_rows if row >= 0]


def test_build_leaves_the_callers_dataset_without_index():
    dataset = _dataset(_vectors(20, 8))
    PassageIndex.build(dataset)
    assert dataset.list_indexes() == []


def test_hnsw_recall_at_10_is_close_to_flat_on_100k_vectors():
    vectors, queries = _vectors(100_000, 32), _vectors(100, 32, seed=1)
    ids = [str(i) for i in range(len(vectors))]
    index = PassageIndex.build(Dataset.from_dict({"id": ids, "embeddings": vectors}), factory="HNSW32")
    assert index.manifest["search_parameters"] == {"efSearch": 128}
    _, found = index.faiss_index.search(queries, 10)
    # Unnormalised vectors: the inner-product top 10 differs from the L2 one, so a wrong metric fails here.
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    assert _recall(found, exact) >= 0.95


@pytest.mark.parametrize(("factory", "adds"), [("HNSW32", [25_000]), ("Flat", [10_000, 10_000, 5_000])])
def test_hnsw_is_built_from_one_add(monkeypatch, factory, adds):
    """FAISS builds a worse HNSW graph from several adds (benchmarks/RESULTS.md, search at 1M)."""
    calls = []
    for cls in (faiss.IndexHNSWFlat, faiss.IndexFlat):
        original = cls.add
        monkeypatch.setattr(
            cls, "add", lambda self, x, original=original: (calls.append(len(x)), original(self, x))
        )
    PassageIndex.build(_dataset(_vectors(25_000, 8)), factory=factory)
    assert calls == adds


def test_ivf_is_trained_on_a_random_sample_not_the_first_rows():
    # The first 1,000 rows repeat one vector: trained on them (datasets' train_size), k-means finds one cluster
    # and every vector lands in the same inverted list.
    vectors = _vectors(4_000, 16)
    vectors[:1_000] = vectors[0]
    index = PassageIndex.build(_dataset(vectors), factory="IVF16,Flat", train_size=1_000, seed=0)
    assert index.manifest["train_size"] == 1_000 and index.manifest["search_parameters"] == {"nprobe": 32}
    ivf = faiss.extract_index_ivf(index.faiss_index)
    sizes = [ivf.invlists.list_size(i) for i in range(ivf.nlist)]
    assert sum(sizes) == 4_000 and max(sizes) < 0.5 * 4_000
    queries = _vectors(20, 16, seed=1)
    found = [[int(hit["id"][1:]) for hit in hits] for hits in index.search(queries, 10)]
    assert (
        _recall(np.array(found), np.argsort(-(queries @ vectors.T), axis=1)[:, :10]) == 1.0
    )  # nprobe >= nlist


# ------------------------------------------------------------------------------------------------ save / load
def test_save_load_round_trip(tmp_path):
    vectors, queries = _vectors(300, 16), _vectors(5, 16, seed=1)
    index = PassageIndex.build(
        _dataset(vectors), factory="HNSW32", encoder_name="enc", encoder_fingerprint="sha256:x"
    )
    index.save(tmp_path / "index")
    assert sorted(os.listdir(tmp_path / "index")) == ["index.faiss", "manifest.json", "passages"]
    assert not list(tmp_path.glob("*.tmp"))
    loaded = PassageIndex.load(tmp_path / "index")
    assert loaded.manifest == {**index.manifest, "embeddings_kept": False}
    assert len(loaded) == 300 and loaded.embedding_dim == 16
    assert loaded.search(queries, 5) == index.search(queries, 5)
    index.save(tmp_path / "index")  # overwriting an index folder works too
    assert PassageIndex.load(tmp_path / "index").search(queries, 5) == index.search(queries, 5)


@pytest.fixture
def saved_index(tmp_path):
    PassageIndex.build(_dataset(_vectors(30, 32))).save(tmp_path / "index")
    return tmp_path / "index"


def _edit_manifest(path: Path, **changes) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, **changes}))


def test_load_refuses_other_passage_count(saved_index, tmp_path):
    _edit_manifest(saved_index, num_passages=31)
    with pytest.raises(MismatchError, match="30 passages, the manifest 31"):
        PassageIndex.load(saved_index)


def test_load_refuses_index_of_other_passages(saved_index, tmp_path):
    PassageIndex.build(_dataset(_vectors(12, 32))).save(tmp_path / "small")
    shutil.copy(tmp_path / "small" / "index.faiss", saved_index / "index.faiss")
    with pytest.raises(MismatchError, match="index.faiss does not fit the 30 passages"):
        PassageIndex.load(saved_index)


@pytest.mark.parametrize("keep_embeddings", [False, True])
def test_load_refuses_other_dim(tmp_path, keep_embeddings):
    PassageIndex.build(_dataset(_vectors(30, 32))).save(tmp_path / "index", keep_embeddings=keep_embeddings)
    _edit_manifest(tmp_path / "index", embedding_dim=16)
    checked = "passages/ holds 32-dim embeddings" if keep_embeddings else "index.faiss holds 32-dim vectors"
    with pytest.raises(MismatchError, match=f"{checked}, the manifest says 16"):
        PassageIndex.load(tmp_path / "index")


# ----------------------------------------------------------------------------------- vectors stored once
def _column_names(folder: Path) -> list[str]:
    return load_from_disk(str(folder / "passages")).column_names


@pytest.mark.parametrize("factory", ["Flat", "HNSW16"])
def test_saved_folder_stores_the_vectors_only_in_the_faiss_index(tmp_path, factory):
    vectors, queries = _vectors(2_000, 64), _vectors(5, 64, seed=1)
    index = PassageIndex.build(_dataset(vectors), factory=factory)
    index.save(tmp_path / "once")
    index.save(tmp_path / "kept", keep_embeddings=True)
    assert _column_names(tmp_path / "once") == ["id", "title", "text"]
    assert _column_names(tmp_path / "kept") == ["id", "title", "text", "embeddings"]
    manifest = json.loads((tmp_path / "once" / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and manifest["embeddings_kept"] is False

    def size(folder: Path) -> int:
        return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())

    # The kept column costs 4 x dim bytes per passage on top of the same index and texts.
    assert size(tmp_path / "kept") - size(tmp_path / "once") >= vectors.nbytes
    assert size(tmp_path / "once" / "passages") < vectors.nbytes / 5
    once, kept = PassageIndex.load(tmp_path / "once"), PassageIndex.load(tmp_path / "kept")
    assert not once.has_embeddings and kept.has_embeddings
    assert once.search(queries, 10) == kept.search(queries, 10) == index.search(queries, 10)
    rows = [1_999, 0, 7]
    # Flat and HNSW-Flat hold the vectors exactly: they are still at hand without the column.
    np.testing.assert_array_equal(once.embeddings(rows), vectors[rows])
    np.testing.assert_array_equal(kept.embeddings(rows), vectors[rows])
    with pytest.raises(ValueError, match="loaded from a folder saved without its raw vectors"):
        once.save(tmp_path / "again", keep_embeddings=True)
    kept.save(tmp_path / "kept")  # re-saving a folder with the column drops it unless asked to keep it
    assert _column_names(tmp_path / "kept") == ["id", "title", "text"]


def test_save_refuses_to_drop_the_only_column(tmp_path):
    index = PassageIndex.build(Dataset.from_dict({"embeddings": _vectors(10, 4)}))
    with pytest.raises(ValueError, match="no column but 'embeddings'"):
        index.save(tmp_path / "index")
    index.save(tmp_path / "index", keep_embeddings=True)
    assert len(PassageIndex.load(tmp_path / "index")) == 10


def test_compressed_index_saved_without_vectors_says_they_were_not_kept(tmp_path):
    vectors = _vectors(3_000, 32)
    index = PassageIndex.build(_dataset(vectors), factory="IVF8,PQ4")
    np.testing.assert_array_equal(
        index.embeddings([3, 4]), vectors[[3, 4]]
    )  # built here: the column is there
    index.save(tmp_path / "index")
    loaded = PassageIndex.load(tmp_path / "index")
    assert len(loaded.search(vectors[:2], 5)[0]) == 5
    with pytest.raises(ValueError, match="IVF8,PQ4 index was saved without its raw vectors"):
        loaded.embeddings([3])
    index.save(tmp_path / "kept", keep_embeddings=True)
    np.testing.assert_array_equal(PassageIndex.load(tmp_path / "kept").embeddings([3, 4]), vectors[[3, 4]])


def test_index_saved_by_version_1_with_its_vectors_still_loads(tmp_path):
    """Version 1 wrote the whole dataset, embeddings column included, and a manifest without `embeddings_kept`."""
    vectors, queries = _vectors(500, 16), _vectors(4, 16, seed=1)
    index = PassageIndex.build(_dataset(vectors), factory="IVF4,Flat")
    index.save(tmp_path / "v1", keep_embeddings=True)
    manifest = json.loads((tmp_path / "v1" / "manifest.json").read_text())
    del manifest["embeddings_kept"]
    (tmp_path / "v1" / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    loaded = PassageIndex.load(tmp_path / "v1")
    assert loaded.has_embeddings and loaded.manifest["embeddings_kept"] is True
    assert loaded.search(queries, 10) == index.search(queries, 10)
    np.testing.assert_array_equal(loaded.embeddings([0, 499]), vectors[[0, 499]])
    loaded.save(tmp_path / "v2")  # re-saved in the current format: the vectors once
    assert _column_names(tmp_path / "v2") == ["id", "title", "text"]
    assert json.loads((tmp_path / "v2" / "manifest.json").read_text())["format_version"] == 2


def test_load_refuses_a_newer_format_and_a_manifest_that_disagrees_about_the_vectors(saved_index):
    _edit_manifest(saved_index, embeddings_kept=True)
    with pytest.raises(MismatchError, match="the embeddings were kept, but passages/ lacks"):
        PassageIndex.load(saved_index)
    _edit_manifest(saved_index, format_version=3)
    with pytest.raises(MismatchError, match="format_version 3; this dpr_hf reads up to 2"):
        PassageIndex.load(saved_index)


def test_cli_build_index_keeps_embeddings_only_when_asked(tmp_path):
    from dpr_hf.cli import main

    _dataset(_vectors(50, 8)).save_to_disk(str(tmp_path / "emb"))
    for name, flags in (("once", []), ("kept", ["--keep-embeddings"])):
        args = ["build-index", "--embeddings", str(tmp_path / "emb"), "--output", str(tmp_path / name)]
        assert main([*args, *flags]) == 0
    assert "embeddings" not in _column_names(tmp_path / "once")
    assert "embeddings" in _column_names(tmp_path / "kept")


def test_load_refuses_other_factory(saved_index):
    _edit_manifest(saved_index, factory="HNSW32")
    with pytest.raises(MismatchError, match="factory 'HNSW32'"):
        PassageIndex.load(saved_index)


def test_load_refuses_folder_without_manifest(saved_index):
    (saved_index / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        PassageIndex.load(saved_index)


def test_load_refuses_question_encoder_of_other_dim(saved_index, tiny_bert_config):
    projected = QuestionEncoder(QuestionEncoderConfig(encoder=tiny_bert_config, projection_dim=8))
    with pytest.raises(MismatchError, match="8-dim vectors but the index"):
        PassageIndex.load(saved_index, question_encoder=projected)
    PassageIndex.load(
        saved_index, question_encoder=QuestionEncoder(QuestionEncoderConfig(encoder=tiny_bert_config))
    )


def test_load_refuses_encoders_of_another_pair(tmp_path, tokenizer, tiny_bert_config):
    pair_a = _save_pair(tmp_path / "a", tokenizer, tiny_bert_config, seed=0)
    pair_b = _save_pair(tmp_path / "b", tokenizer, tiny_bert_config, seed=1)
    passage_encoder = PassageEncoder.from_pretrained(pair_a / "passage_encoder")
    assert encoder_fingerprint(passage_encoder) == pretrained_fingerprint(pair_a / "passage_encoder")
    embedded = encode_passages(passage_encoder, tokenizer, _passages(10), show_progress=False)
    PassageIndex.build(
        embedded, encoder_name="a", encoder_fingerprint=encoder_fingerprint(passage_encoder)
    ).save(tmp_path / "index")

    PassageIndex.load(
        tmp_path / "index", question_encoder=QuestionEncoder.from_pretrained(pair_a / "question_encoder")
    )
    with pytest.raises(MismatchError, match="was encoded with passage encoder 'a'"):
        PassageIndex.load(
            tmp_path / "index", question_encoder=QuestionEncoder.from_pretrained(pair_b / "question_encoder")
        )
    with pytest.raises(MismatchError, match="was encoded with passage encoder 'a'"):
        PassageIndex.load(
            tmp_path / "index", passage_encoder=PassageEncoder.from_pretrained(pair_b / "passage_encoder")
        )


# --------------------------------------------------------------------------------------------------- encoding
def test_encode_passages_keeps_corpus_order_and_matches_one_by_one(tiny_passage_encoder, tokenizer):
    passages = _passages(12)
    encoded = encode_passages(tiny_passage_encoder, tokenizer, passages, batch_size=5, show_progress=False)
    assert encoded["id"] == passages["id"] and encoded.features["embeddings"].length == 32
    with torch.no_grad():
        single = [
            tiny_passage_encoder(**format_passages(tokenizer, [row["title"]], [row["text"]]))
            .pooler_output[0]
            .numpy()
            for row in passages
        ]
    np.testing.assert_allclose(np.array(encoded["embeddings"]), np.stack(single), atol=1e-5)


def test_encode_passages_bf16_autocast_is_close_to_fp32(tiny_passage_encoder, tokenizer):
    passages = _passages(8)
    full = np.array(
        encode_passages(tiny_passage_encoder, tokenizer, passages, show_progress=False)["embeddings"]
    )
    half = encode_passages(tiny_passage_encoder, tokenizer, passages, precision="bf16", show_progress=False)
    assert half.features["embeddings"].feature.dtype == "float32"
    half = np.array(half["embeddings"])
    cosine = (full * half).sum(1) / np.linalg.norm(full, axis=1) / np.linalg.norm(half, axis=1)
    assert cosine.min() > 0.99 and not np.array_equal(full, half)


def test_encode_passages_bf32_keeps_fp32_tensors_and_restores_the_matmul_mode(
    tiny_passage_encoder, tokenizer
):
    passages = _passages(8)
    full = np.array(
        encode_passages(tiny_passage_encoder, tokenizer, passages, show_progress=False)["embeddings"]
    )
    matmul = torch.backends.mkldnn.matmul
    before = matmul.fp32_precision
    bf32 = np.array(
        encode_passages(tiny_passage_encoder, tokenizer, passages, precision="bf32", show_progress=False)[
            "embeddings"
        ]
    )
    cosine = (full * bf32).sum(1) / np.linalg.norm(full, axis=1) / np.linalg.norm(bf32, axis=1)
    assert cosine.min() > 0.99999 and matmul.fp32_precision == before
    with pytest.raises(RuntimeError), precision_context(torch.device("cpu"), "bf32"):
        assert matmul.fp32_precision == "bf16"
        raise RuntimeError("interrupted")
    assert matmul.fp32_precision == before
    with pytest.raises(ValueError, match="use bf16 or fp16"), precision_context(torch.device("cuda"), "bf32"):
        pass
    with pytest.raises(ValueError, match="precision must be one of"), precision_context(None, "int8"):
        pass


@pytest.mark.parametrize("precision", [None, "bf16"])
def test_encode_in_cpu_streams_gives_the_one_stream_embeddings_in_corpus_order(
    tiny_passage_encoder, tokenizer, precision
):
    """Streams run batches on their own threads: autocast (a per-thread mode) must reach each of them, the rows
    must land in corpus order, and torch's thread count must be restored."""
    passages = _passages(13)
    threads = torch.get_num_threads()
    one = encode_passages(
        tiny_passage_encoder, tokenizer, passages, batch_size=3, precision=precision, show_progress=False
    )
    two = encode_passages(
        tiny_passage_encoder,
        tokenizer,
        passages,
        batch_size=3,
        precision=precision,
        show_progress=False,
        streams=2,
    )
    assert two["id"] == passages["id"] and torch.get_num_threads() == threads
    np.testing.assert_allclose(np.array(two["embeddings"]), np.array(one["embeddings"]), atol=1e-6)
    if precision == "bf16":  # autocast reached the streams: not the fp32 embeddings
        full = encode_passages(tiny_passage_encoder, tokenizer, passages, show_progress=False, streams=2)
        assert not np.allclose(np.array(full["embeddings"]), np.array(two["embeddings"]), atol=1e-6)


def test_a_stream_race_reads_every_text_once_and_keeps_its_verdict(
    tiny_passage_encoder, tokenizer, monkeypatch
):
    """One stream against CPU streams, timed on the run's first texts: every row still gets its one-stream
    embedding, the verdict is reported once with both plans' times, and a later run reads with it untimed."""
    monkeypatch.setattr(encoding, "RACE_TOKENS", 400)
    passages = _passages(60)
    one = encode_passages(tiny_passage_encoder, tokenizer, passages, batch_size=8, show_progress=False)
    heard = []
    race = StreamRace(2, 3, 8, on_verdict=lambda verdict, seconds: heard.append((verdict, seconds)))
    raced = encode_passages(tiny_passage_encoder, tokenizer, passages, race=race, show_progress=False)
    np.testing.assert_allclose(np.array(raced["embeddings"]), np.array(one["embeddings"]), atol=1e-6)
    ((verdict, seconds),) = heard
    assert verdict == race.verdict in (1, 2) and set(seconds) == {1, 2} and min(seconds.values()) > 0
    assert race.plan() == ((2, 3) if verdict == 2 else (1, 8))
    again = encode_passages(tiny_passage_encoder, tokenizer, passages, race=race, show_progress=False)
    assert len(heard) == 1
    np.testing.assert_allclose(np.array(again["embeddings"]), np.array(one["embeddings"]), atol=1e-6)


def test_a_run_too_short_to_race_reads_with_one_stream_and_decides_nothing(tiny_passage_encoder, tokenizer):
    heard = []
    race = StreamRace(2, 3, 8, on_verdict=lambda *verdict: heard.append(verdict))
    passages = _passages(20)  # far below RACE_TOKENS padded tokens a side
    raced = encode_passages(tiny_passage_encoder, tokenizer, passages, race=race, show_progress=False)
    one = encode_passages(tiny_passage_encoder, tokenizer, passages, batch_size=8, show_progress=False)
    np.testing.assert_allclose(np.array(raced["embeddings"]), np.array(one["embeddings"]), atol=1e-6)
    assert race.verdict is None and heard == [] and race.plan() == (1, 8)


@pytest.mark.parametrize(("seconds", "plan"), [({1: 2.0, 2: 1.0}, (2, 3)), ({1: 1.0, 2: 1.5}, (1, 8))])
def test_a_stream_race_keeps_the_plan_with_less_time_per_token(seconds, plan):
    race = StreamRace(2, 3, 8)
    assert race.plan() == (1, 8)
    race.decide(seconds)
    assert race.plan() == plan


def test_encode_refuses_streams_below_one(tiny_passage_encoder, tokenizer):
    with pytest.raises(ValueError, match="streams must be >= 1"):
        encode_passages(tiny_passage_encoder, tokenizer, _passages(2), show_progress=False, streams=0)


def test_encode_corpus_resumes_from_finished_shards(tmp_path, tiny_passage_encoder, tokenizer):
    passages = _passages(40)
    reference = encode_passages(tiny_passage_encoder, tokenizer, passages, batch_size=4, show_progress=False)
    calls, crash = [], [True]

    def crash_on_third_shard(module, args, output):
        calls.append(1)
        if crash[0] and len(calls) == 5:  # 2 batches per shard: dies inside the third shard
            raise RuntimeError("simulated crash")

    handle = tiny_passage_encoder.register_forward_hook(crash_on_third_shard)
    with pytest.raises(RuntimeError, match="simulated crash"):
        encode_corpus(
            tiny_passage_encoder,
            tokenizer,
            passages,
            tmp_path / "emb",
            shard_size=8,
            batch_size=4,
            show_progress=False,
        )
    finished = sorted(path.name for path in (tmp_path / "emb.shards").glob("shard-*"))
    assert finished == ["shard-00000-of-00005", "shard-00001-of-00005"] and not (tmp_path / "emb").exists()

    calls.clear()
    crash[0] = False
    encoded = encode_corpus(
        tiny_passage_encoder,
        tokenizer,
        passages,
        tmp_path / "emb",
        shard_size=8,
        batch_size=4,
        show_progress=False,
    )
    handle.remove()
    assert len(calls) == 6  # only the 3 missing shards were encoded
    assert encoded["id"] == passages["id"]
    np.testing.assert_allclose(np.array(encoded["embeddings"]), np.array(reference["embeddings"]), atol=1e-5)
    assert sorted(os.listdir(tmp_path)) == ["emb"]  # shards merged and removed, no temporary folders left
    info = json.loads((tmp_path / "emb" / "encoding.json").read_text())
    assert (
        info["encoder_fingerprint"] == encoder_fingerprint(tiny_passage_encoder)
        and info["num_passages"] == 40
    )


def test_encode_corpus_refuses_shards_of_another_encoder(
    tmp_path, tiny_passage_encoder, tiny_bert_config, tokenizer
):
    passages = _passages(16)
    (tmp_path / "emb.shards").mkdir()
    other = PassageEncoder(PassageEncoderConfig(encoder=tiny_bert_config, pooling="mean"))
    plan = {"num_passages": 16, "shard_size": 8, "max_length": 256, "embedding_dim": 32, "encoder_name": None,
            "encoder_fingerprint": encoder_fingerprint(other)}  # fmt: skip
    (tmp_path / "emb.shards" / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(MismatchError, match="other encoder_fingerprint"):
        encode_corpus(
            tiny_passage_encoder, tokenizer, passages, tmp_path / "emb", shard_size=8, show_progress=False
        )


def test_encode_corpus_never_overwrites_a_folder_of_other_files(tmp_path, tiny_passage_encoder, tokenizer):
    (tmp_path / "emb").mkdir()
    (tmp_path / "emb" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds no embeddings"):
        encode_corpus(tiny_passage_encoder, tokenizer, _passages(8), tmp_path / "emb", show_progress=False)
    assert (tmp_path / "emb" / "notes.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()  # an empty folder (e.g. made by a job scheduler) is fine to fill
    encoded = encode_corpus(
        tiny_passage_encoder, tokenizer, _passages(8), tmp_path / "empty", show_progress=False
    )
    assert len(encoded) == 8 and sorted(p.name for p in tmp_path.iterdir()) == ["emb", "empty"]


def test_two_processes_encode_the_same_embeddings_as_one(tmp_path, tokenizer, tiny_bert_config):
    pair = _save_pair(tmp_path / "pair", tokenizer, tiny_bert_config, seed=0)
    passages = _passages(30)
    passages.save_to_disk(str(tmp_path / "corpus"))
    encoder = PassageEncoder.from_pretrained(pair / "passage_encoder")
    single = encode_corpus(encoder, tokenizer, passages, tmp_path / "one", shard_size=7, show_progress=False)
    # accelerate's --cpu flag launches one process without MPI; --multi_gpu launches two (gloo) on a CPU machine.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
               "-m", "dpr_hf.cli", "encode", "--passage-encoder", str(pair), "--passages", str(tmp_path / "corpus"),
               "--output", str(tmp_path / "two"), "--shard-size", "7"]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.count("encoded 30 passages") == 1  # two ranks of one run, not two single runs
    double = load_from_disk(str(tmp_path / "two"))
    assert double["id"] == single["id"]
    np.testing.assert_allclose(np.array(double["embeddings"]), np.array(single["embeddings"]), atol=1e-6)


def test_inner_product_metric_is_recorded(saved_index):
    index = PassageIndex.load(saved_index)
    assert (
        index.faiss_index.metric_type == faiss.METRIC_INNER_PRODUCT
        and index.manifest["metric"] == "inner_product"
    )


# ----------------------------------------------------------------------------------------------------- memory
_MEMORY_PROBE = """
import sys, threading
from pathlib import Path
from datasets import load_from_disk
from dpr_hf.index.passage_index import PassageIndex

def anon_mib():
    status = Path("/proc/self/status").read_text()
    return int(status.split("RssAnon:")[1].split()[0]) / 1024

dataset = load_from_disk(sys.argv[1])  # memory-mapped: file pages, not anonymous memory
base = anon_mib()
peak = [base]
done = threading.Event()

def sample():
    while not done.wait(0.005):
        peak[0] = max(peak[0], anon_mib())

threading.Thread(target=sample, daemon=True).start()
index = PassageIndex.build(dataset)
index.save(sys.argv[2])
del index
loaded = PassageIndex.load(sys.argv[2])
peak[0] = max(peak[0], anon_mib())
done.set()
print(len(loaded), peak[0] - base)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads anonymous RSS from Linux /proc")
def test_flat_build_save_load_holds_one_copy_of_the_vectors(tmp_path):
    # A Flat index must hold N x dim x 4 bytes; anything above 1.5x is a copy too many (the index deep-copied with
    # the passages view, or its array regrown by doubling, which 165K x 128 rows just past a doubling would show).
    vectors = _vectors(165_000, 128)
    vectors_mib = vectors.nbytes / 2**20
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 128)
    ids = pa.array([str(i) for i in range(len(vectors))])
    Dataset(pa.table({"id": ids, "embeddings": column})).save_to_disk(str(tmp_path / "embeddings"))
    del vectors, column, ids
    completed = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(tmp_path / "embeddings"), str(tmp_path / "index")],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    count, growth_mib = completed.stdout.split()
    assert int(count) == 165_000
    assert float(growth_mib) < 1.5 * vectors_mib, (
        f"peak anonymous growth {growth_mib} MiB, vectors {vectors_mib:.0f}"
    )

"""On-disk IVF (`,OnDisk` factories): the same answers as the in-memory index after save, move and load; the
planner's choice of it when nothing fits in RAM; `build-index` putting its data file inside the index folder."""

from __future__ import annotations

import json
import os

import faiss
import numpy as np
import pytest
from datasets import Dataset

from dpr_hf.cli import main
from dpr_hf.index import passage_index
from dpr_hf.index.passage_index import DATA_FILE, INDEX_FILE, PassageIndex
from dpr_hf.index.planner import FAMILIES, ON_DISK_FAMILIES, PlanError, estimate, factory_for, plan_index
from dpr_hf.models.errors import MismatchError

N, DIM = 20_000, 64


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    vectors = np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32)
    return Dataset.from_dict({"id": [str(i) for i in range(N)], "embeddings": vectors})


def _queries() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((100, DIM)).astype(np.float32)


def test_on_disk_ivf_answers_like_the_in_memory_one_after_save_move_and_load(dataset, tmp_path, monkeypatch):
    # Uneven shards (7K, 7K, 6K): each shard's rows must keep their global ids through the merge.
    monkeypatch.setattr(passage_index, "ON_DISK_SHARD", 7_000)
    in_memory = PassageIndex.build(dataset, factory="IVF128,SQ8", train_size=5_000)
    on_disk = PassageIndex.build(
        dataset, factory="IVF128,SQ8,OnDisk", train_size=5_000, on_disk_dir=tmp_path / "build"
    )
    assert on_disk.manifest["search_parameters"] == in_memory.manifest["search_parameters"] == {"nprobe": 32}
    expected_scores, expected_rows = in_memory.search_rows(_queries(), k=20)
    for index in [on_disk]:
        scores, rows = index.search_rows(_queries(), k=20)
        np.testing.assert_array_equal(rows, expected_rows)
        np.testing.assert_array_equal(scores, expected_scores)
    assert os.listdir(tmp_path / "build") == [DATA_FILE]  # the shard files are gone once merged

    on_disk.save(tmp_path / "saved")
    assert not (tmp_path / "build" / DATA_FILE).exists()  # the saved folder took the data file over
    (tmp_path / "saved").rename(tmp_path / "moved")  # index.faiss still names the old path
    loaded = PassageIndex.load(tmp_path / "moved")
    assert loaded.factory == "IVF128,SQ8,OnDisk" and len(loaded) == N
    # Mapped read-only: FAISS's default (read-write) fails on a read-only folder or mount.
    assert faiss.downcast_InvertedLists(faiss.extract_index_ivf(loaded.faiss_index).invlists).read_only
    plan = estimate("IVF128,SQ8,OnDisk", N, DIM)
    assert os.path.getsize(tmp_path / "moved" / DATA_FILE) == plan.data_bytes == (DIM + 8) * N
    assert os.path.getsize(tmp_path / "moved" / INDEX_FILE) < plan.data_bytes / 10  # centroids and list table
    scores, rows = loaded.search_rows(_queries(), k=20)
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_array_equal(scores, expected_scores)
    assert loaded.search(_queries()[:1], k=3)[0][0]["id"] == str(expected_rows[0, 0])

    # Both save again: the loaded one, and the built one whose saved folder has moved since (as when a QASystem
    # saves its index into a staging folder that is then renamed).
    loaded.save(tmp_path / "again")
    on_disk.save(tmp_path / "from_build")
    for folder in ("again", "from_build"):
        again = PassageIndex.load(tmp_path / folder)
        np.testing.assert_array_equal(again.search_rows(_queries(), k=20)[1], rows)
    # A folder without its data file is refused.
    (tmp_path / "moved" / DATA_FILE).unlink()
    with pytest.raises(MismatchError, match="inverted lists in index.ivfdata, missing"):
        PassageIndex.load(tmp_path / "moved")


def test_on_disk_needs_an_ivf_factory_and_a_folder(dataset):
    with pytest.raises(ValueError, match="only IVF indexes"):
        PassageIndex.build(dataset, factory="HNSW32,OnDisk", on_disk_dir="unused")
    with pytest.raises(ValueError, match="pass on_disk_dir"):
        PassageIndex.build(dataset, factory="IVF128,SQ8,OnDisk")


def test_planner_falls_back_to_on_disk_ivf_when_nothing_fits_in_ram():
    n, dim, gb = 21_015_324, 768, 10**9
    in_memory = min(estimate(factory_for(f, n, dim), n, dim).ram_bytes for f in FAMILIES)
    on_disk = {f: estimate(factory_for(f, n, dim), n, dim) for f in ON_DISK_FAMILIES}
    pq = on_disk["IVF-PQ-OnDisk"]
    assert pq.ram_bytes < 6 * gb < in_memory
    plan = plan_index(n, dim, 6 * gb)
    assert plan == pq and plan.factory == "IVF16384,PQ96,OnDisk"
    # Centroids (16384 x 768 x 4 B) and the list table in RAM to search; the codes and ids on disk.
    assert plan.search_ram_bytes == 16_384 * 768 * 4 + 96 * 256 * 4 * 8 + 24 * 16_384
    assert (
        plan.data_bytes == (96 + 8) * n
        and plan.recall_at_100 == estimate("IVF16384,PQ96", n, dim).recall_at_100
    )
    assert "index.ivfdata" in plan.describe()
    with pytest.raises(
        PlanError, match="even with its lists on disk: the smallest, IVF16384,PQ96,OnDisk, needs 5.16"
    ):
        plan_index(n, dim, 5 * gb)
    # 200M x 768: IVF-SQ8's training sample on disk needs less than IVF-PQ's index in RAM.
    big = 200_000_000
    sq8 = estimate(factory_for("IVF-SQ8-OnDisk", big, dim), big, dim)
    assert plan_index(big, dim, sq8.ram_bytes).factory == "IVF65536,SQ8,OnDisk"
    # --factory still wins, checked against the budget.
    with pytest.raises(PlanError, match="Flat over .* needs"):
        plan_index(n, dim, 6 * gb, factory="Flat")


def test_cli_build_index_writes_the_on_disk_index_inside_the_output(dataset, tmp_path, capsys):
    # At this size Flat is the smallest plan; the factory given wins (and is checked against the budget).
    dataset.save_to_disk(str(tmp_path / "emb"))
    args = ["build-index", "--embeddings", str(tmp_path / "emb"), "--output", str(tmp_path / "index")]
    assert main([*args, "--memory-budget", "1GB", "--factory", "IVF128,SQ8,OnDisk"]) == 0
    printed = capsys.readouterr().out
    assert f"x {DIM} dims: IVF128,SQ8,OnDisk" in printed and "1.44 MB index.ivfdata" in printed
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["factory"] == "IVF128,SQ8,OnDisk" and (tmp_path / "index" / DATA_FILE).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb", "index"]  # no build folder left behind
    rows = PassageIndex.load(tmp_path / "index").search_rows(np.asarray(dataset[:3]["embeddings"]), k=1)[1]
    np.testing.assert_array_equal(rows[:, 0], [0, 1, 2])

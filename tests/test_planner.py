"""The index planner: its sizes against real FAISS builds, its choices for a budget, and `build-index --memory-budget`."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from datasets import Dataset

from dpr_hf.cli import main
from dpr_hf.index import PassageIndex
from dpr_hf.index.planner import PlanError, estimate, factory_for, ivf_lists, parse_size, plan_index


def _dataset(n: int, dim: int) -> Dataset:
    vectors = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    return Dataset.from_dict({"id": [str(i) for i in range(n)], "text": ["t"] * n, "embeddings": vectors})


def test_parse_size():
    assert parse_size("16GB") == 16 * 10**9 and parse_size("16GiB") == 16 * 2**30
    assert parse_size("1.5 TB") == 1_500_000_000_000 and parse_size("500mb") == 500 * 10**6
    assert parse_size("4096") == 4096
    with pytest.raises(ValueError, match="not a size: 'lots'"):
        parse_size("lots")


@pytest.mark.parametrize("family", ["Flat", "HNSW", "IVF-SQ8", "IVF-PQ"])
def test_index_size_formula_matches_the_saved_faiss_index(tmp_path, family):
    n, dim = 6_000, 64
    factory = factory_for(family, n, dim)
    PassageIndex.build(_dataset(n, dim), factory=factory).save(tmp_path / "index")
    actual = os.path.getsize(tmp_path / "index" / "index.faiss")
    planned = estimate(factory, n, dim).index_bytes
    # Exact up to headers (and HNSW's random upper levels): within 2%.
    assert abs(actual - planned) / actual < 0.02, (factory, actual, planned)


def test_plan_picks_the_most_accurate_index_that_fits():
    gb = 10**9
    assert plan_index(100_000, 768, 16 * gb).factory == "Flat"
    # 21M x 768: Flat ~65 GB and HNSW32 ~70 GB need a big machine; 16 GB leaves IVF-PQ.
    assert plan_index(21_015_324, 768, 256 * gb).factory == "HNSW32"
    assert plan_index(21_015_324, 768, 68 * gb).factory == "Flat"
    assert plan_index(21_015_324, 768, 40 * gb).factory == f"IVF{ivf_lists(21_015_324)},SQ8"
    small = plan_index(21_015_324, 768, 16 * gb)
    assert small.factory == "IVF16384,PQ96" and small.ram_bytes <= 16 * gb
    assert small.index_bytes < 3 * gb and small.build_ram_bytes > small.search_ram_bytes
    with pytest.raises(
        PlanError, match="even with its lists on disk: the smallest, IVF16384,PQ96,OnDisk, needs 5.16 GB"
    ):
        plan_index(21_015_324, 768, 1 * gb)


def test_a_given_factory_wins_but_must_fit_the_budget():
    assert plan_index(100_000, 768, 16 * 10**9, factory="HNSW32").factory == "HNSW32"
    with pytest.raises(PlanError, match="Flat over 21,015,324 x 768 needs 64.62 GB"):
        plan_index(21_015_324, 768, 16 * 10**9, factory="Flat")
    with pytest.raises(PlanError, match="no estimates for factory 'LSH'"):
        plan_index(1_000, 8, 10**9, factory="LSH")


def test_estimates_grow_as_the_layout_says():
    flat, hnsw = estimate("Flat", 1_000_000, 768), estimate("HNSW32", 1_000_000, 768)
    assert flat.index_bytes == 4 * 768 * 1_000_000 and hnsw.index_bytes == (4 * 768 + 272) * 1_000_000
    assert hnsw.build_ram_bytes > hnsw.search_ram_bytes + flat.index_bytes * 0.99  # one transient copy
    assert estimate("Flat", 2_000_000, 768).build_seconds == pytest.approx(2 * flat.build_seconds)


def test_cli_build_index_plans_within_the_budget_and_refuses_what_cannot_fit(tmp_path, capsys):
    _dataset(2_000, 16).save_to_disk(str(tmp_path / "emb"))
    base = ["build-index", "--embeddings", str(tmp_path / "emb")]
    assert main([*base, "--output", str(tmp_path / "planned"), "--memory-budget", "1GB"]) == 0
    printed = capsys.readouterr().out
    assert "index plan for 2,000 passages x 16 dims: Flat" in printed and "recall@100 vs Flat" in printed
    assert json.loads((tmp_path / "planned" / "manifest.json").read_text())["factory"] == "Flat"

    assert main([*base, "--output", str(tmp_path / "none"), "--memory-budget", "10KB"]) == 2
    assert "no index of 2,000 x 16 vectors fits 0.00 GB" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()

    assert (
        main([*base, "--output", str(tmp_path / "given"), "--memory-budget", "1GB", "--factory", "HNSW16"])
        == 0
    )
    assert json.loads((tmp_path / "given" / "manifest.json").read_text())["factory"] == "HNSW16"
    assert "x 16 dims: HNSW16" in capsys.readouterr().out

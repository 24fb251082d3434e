"""IR metrics: our numbers are pytrec_eval's on a hand-made run, and match nDCG / MRR / Recall computed by hand
(the graded-relevance example of Wikipedia's "Discounted cumulative gain" article: DCG@6 = 6.861)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import datasets
import pytest
import pytrec_eval

from dpr_hf.cli import main
from dpr_hf.data import QUESTION_FEATURES, load_qrels
from dpr_hf.evaluation import ir_metrics
from dpr_hf.evaluation.retrieval import score_retrieval
from dpr_hf.models.errors import DPRDataError

BEIR_TINY = Path(__file__).resolve().parent / "data" / "beir-tiny"
# Wikipedia's example: six retrieved documents graded 3, 2, 3, 0, 1, 2; two more judged ones (3 and 2) unretrieved
WIKI_QRELS = {"w": {"d1": 3, "d2": 2, "d3": 3, "d4": 0, "d5": 1, "d6": 2, "d7": 3, "d8": 2}}
WIKI_RUN = {"w": ["d1", "d2", "d3", "d4", "d5", "d6"]}


def _dcg(gains: list[int]) -> float:
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, start=1))


def test_ndcg_by_hand_on_the_textbook_example():
    assert _dcg([3, 2, 3, 0, 1, 2]) == pytest.approx(6.861, abs=5e-4)  # the article's DCG@6
    metrics = ir_metrics(WIKI_RUN, WIKI_QRELS)
    ideal = [3, 3, 3, 2, 2, 2, 1, 0]
    assert metrics["ndcg@1"] == pytest.approx(1.0)
    assert metrics["ndcg@3"] == pytest.approx(_dcg([3, 2, 3]) / _dcg(ideal[:3]))
    assert metrics["ndcg@5"] == pytest.approx(_dcg([3, 2, 3, 0, 1]) / _dcg(ideal[:5]))
    assert (
        metrics["ndcg@10"] == pytest.approx(6.861 / _dcg(ideal), abs=1e-4) == pytest.approx(0.7562, abs=1e-4)
    )
    relevant = 7  # grades > 0
    assert metrics["recall@5"] == pytest.approx(4 / relevant) and metrics["recall@10"] == pytest.approx(
        5 / relevant
    )
    assert metrics["mrr@10"] == 1.0 and metrics["ndcg_10"] == metrics["ndcg@10"] and metrics["mrr_10"] == 1.0
    # MAP@100: precision at each relevant retrieved rank, over all 7 relevant
    assert metrics["map@100"] == pytest.approx((1 / 1 + 2 / 2 + 3 / 3 + 4 / 5 + 5 / 6) / relevant)


def test_equals_pytrec_eval_on_a_hand_made_run():
    qrels = {
        "q1": {"a": 1, "b": 2, "z": 1},
        "q2": {"c": 1},
        "q3": {"d": 0, "e": 3},
        "q4": {"f": 1},
    }
    ranked = {
        "q1": ["x", "b", "y", "a"],
        "q2": [f"n{i}" for i in range(10)] + ["c"],  # first relevant at rank 11: MRR@10 0, recip_rank 1/11
        "q3": ["d", "e"],
        "q4": ["g"],
    }
    ours = ir_metrics(ranked, qrels)
    run = {qid: {pid: 100.0 - rank for rank, pid in enumerate(ids)} for qid, ids in ranked.items()}
    evaluator = pytrec_eval.RelevanceEvaluator(
        qrels, {"ndcg_cut.1,3,5,10,100", "recall.1,5,10,20,100", "map_cut.100"}
    )
    per_query = evaluator.evaluate(run)
    for key, measure in [("ndcg@1", "ndcg_cut_1"), ("ndcg@10", "ndcg_cut_10"), ("ndcg@100", "ndcg_cut_100"),
                         ("recall@5", "recall_5"), ("recall@20", "recall_20"), ("map@100", "map_cut_100")]:  # fmt: skip
        assert ours[key] == pytest.approx(sum(q[measure] for q in per_query.values()) / 4), key
    assert ours["mrr@10"] == pytest.approx((1 / 2 + 0 + 1 / 2 + 0) / 4)
    assert ours["recall@1"] == 0.0 and ours["recall@5"] == pytest.approx((2 / 3 + 0 + 1 + 0) / 4)


def test_unretrieved_queries_count_zero_and_depth_limits_cutoffs():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    metrics = ir_metrics({"q1": ["a"], "q2": []}, qrels, depth=20)
    assert metrics["ndcg@10"] == 0.5 and metrics["mrr@10"] == 0.5  # pytrec_eval alone would skip q2: 1.0
    assert "ndcg@100" not in metrics and "recall@100" not in metrics and "map@100" not in metrics
    assert metrics["recall@20"] == 0.5
    assert ir_metrics({"q9": ["a"]}, qrels) == {}


def _questions(ids, answers):
    return datasets.Dataset.from_dict(
        {"id": ids, "question": ["q"] * len(ids), "answers": answers, "gold_passage_id": [""] * len(ids)},
        features=QUESTION_FEATURES,
    )


def _hits(*ids):
    return [{"id": pid, "title": "", "text": f"text of {pid}", "score": 1.0} for pid in ids]


def test_top_k_only_for_questions_with_answers(caplog):
    questions = _questions(["a", "b", "c"], [["text"], [], []])
    with caplog.at_level(logging.WARNING):
        evaluation = score_retrieval(
            questions, [_hits("p1"), _hits("p2"), _hits("p3")], top_k=5, qrels={"b": {"p2": 1}}
        )
    metrics = evaluation.metrics
    assert metrics["top_1"] == 100.0 and metrics["num_questions_with_answers"] == 1
    assert metrics["ndcg@1"] == 1.0 and metrics["num_judged_questions"] == 1 and "ndcg@10" not in metrics
    assert "1 of 3 questions have no answers, gold passage id or relevance judgement" in caplog.text
    unanswered = score_retrieval(_questions(["b"], [[]]), [_hits("p2")], top_k=5, qrels={"b": {"p2": 1}})
    assert not any(key.startswith("top_") for key in unanswered.metrics) and unanswered.curve == []
    with pytest.raises(
        DPRDataError, match=r"no question id has judgements in the qrels \(questions: \['b'\]"
    ):
        score_retrieval(_questions(["b"], [[]]), [_hits("p2")], qrels={"7": {"p2": 1}})


def test_cli_evaluate_retrieval_with_beir_qrels(tmp_path):
    out = tmp_path / "eval"
    args = ["evaluate-retrieval", "--retriever", "bm25", "--passages", str(BEIR_TINY / "corpus.jsonl"),
            "--questions", str(BEIR_TINY / "queries.jsonl"), "--qrels", str(BEIR_TINY / "qrels" / "test.tsv"),
            "--output-dir", str(out)]  # fmt: skip
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    expected = {"ndcg@1", "ndcg@3", "ndcg@5", "ndcg@10", "ndcg@100", "recall@1", "recall@5", "recall@10",
                "recall@20", "recall@100", "mrr@10", "map@100", "ndcg_10", "mrr_10"}  # fmt: skip
    assert expected <= set(metrics) and metrics["num_judged_questions"] == 3
    assert not any(key.startswith("top_") for key in metrics)  # BEIR queries carry no answers
    # BM25 finds each test query's passages on this tiny corpus: every metric can be recomputed from results.json
    results = json.loads((out / "results.json").read_text())
    ranked = {r["id"]: [c["id"] for c in r["ctxs"]] for r in results}
    assert ir_metrics(ranked, load_qrels(BEIR_TINY / "qrels" / "test.tsv"), depth=100) == pytest.approx(
        {k: v for k, v in metrics.items() if not k.startswith("num_")}
    )
    assert metrics["recall@10"] == 1.0

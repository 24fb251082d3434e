"""Answer ranking across passages: reading more passages must not lose a right answer to a worse one."""

from __future__ import annotations

import math
import random

import pytest

from dpr_hf.reader.decoding import PassageReading, rank_answers


def _reading(relevance: float, *spans: tuple[str, float, float]) -> PassageReading:
    """A passage's reading: its relevance logit and spans (answer, start + end logit, log-probability)."""
    return PassageReading(
        relevance,
        [{"answer": a, "score": s, "log_prob": lp, "start": 0, "end": len(a)} for a, s, lp in spans],
    )


def _passages(n: int) -> list[dict]:
    return [{"id": str(i), "title": f"T{i}", "text": "text", "score": 0.5} for i in range(n)]


# The black-death case of the quickstart: the right answer's passage comes first; the second passage is judged a
# little more relevant and has a higher raw span logit, but its span is far less certain within its passage.
READINGS = [
    _reading(1.0, ("Central Asia", 8.0, -0.3)),
    _reading(1.5, ("1343", 9.0, -2.5)),
    _reading(0.8, ("central Asia", 7.0, -0.4)),
]


def _top(readings, ranking: str, **kwargs) -> str:
    return rank_answers(readings, _passages(len(readings)), ranking=ranking, **kwargs)[0]["answer"]


def test_dpr_and_span_rules_lose_the_right_answer_with_more_passages():
    assert _top(READINGS[:1], "dpr") == _top(READINGS[:1], "span") == "Central Asia"
    assert _top(READINGS[:2], "dpr") == _top(READINGS[:2], "span") == "1343"


@pytest.mark.parametrize("ranking", ["joint", "marginal"])
def test_probabilistic_rankings_keep_the_right_answer(ranking):
    for n in (1, 2, 3):
        assert _top(READINGS[:n], ranking).lower() == "central asia"


def test_marginal_sums_an_answer_found_in_several_passages():
    readings = [
        _reading(1.0, ("Lyon", 5.0, -0.2)),
        _reading(0.9, ("Paris", 5.0, -0.4)),
        _reading(0.9, ("paris", 5.0, -0.4)),
    ]
    assert _top(readings, "joint") == "Lyon"
    answers = rank_answers(readings, _passages(3), top_k=5, ranking="marginal")
    assert [a["answer"] for a in answers] == ["Paris", "Lyon"]  # one answer per normalised string
    assert answers[0]["passage"]["id"] == "1"  # shown with its most probable span
    # scores are probabilities over the passages read: each answer's mass, summing to at most 1
    joint = [math.exp(lp) * w for lp, w in zip((-0.2, -0.4, -0.4), _softmax([1.0, 0.9, 0.9]), strict=True)]
    assert answers[0]["score"] == pytest.approx(joint[1] + joint[2])
    assert answers[1]["score"] == pytest.approx(joint[0])


def _softmax(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def test_joint_winner_changes_only_to_a_span_of_the_new_passage():
    generator = random.Random(0)
    for _ in range(200):
        readings = [
            _reading(
                generator.gauss(0, 2),
                *((f"a{p}-{s}", generator.gauss(5, 3), -abs(generator.gauss(1, 1))) for s in range(2)),
            )
            for p in range(8)
        ]
        for n in range(1, 8):
            before = _top(readings[:n], "joint")
            after = rank_answers(readings[: n + 1], _passages(n + 1), ranking="joint")[0]
            assert after["answer"] == before or after["passage"]["id"] == str(n)


def test_retriever_score_is_added_as_a_logit():
    readings = [_reading(0.0, ("A", 1.0, -0.1)), _reading(0.0, ("B", 1.0, -0.1))]
    passages = _passages(2)
    passages[1]["score"] = 0.6  # cosine 0.6 vs 0.5 at τ = 0.05: two logits apart
    assert _top(readings, "joint") == "A"  # a tie, broken by passage order
    best = rank_answers(readings, passages, ranking="joint", retriever_weight=1.0, retriever_temperature=0.05)
    assert best[0]["answer"] == "B"
    assert best[0]["score"] == pytest.approx(math.exp(-0.1) * _softmax([0.0, 2.0])[1])
    passages[0]["score"] = None
    with pytest.raises(ValueError, match="retriever `score`"):
        rank_answers(readings, passages, ranking="joint", retriever_weight=1.0)


def test_unknown_ranking_and_empty_readings():
    with pytest.raises(ValueError, match="unknown ranking 'best'"):
        rank_answers(READINGS, _passages(3), ranking="best")
    assert rank_answers([PassageReading(1.0)], _passages(1)) == []

"""Standard IR metrics over relevance judgements (qrels), computed by pytrec_eval, trec_eval's own C code.

pytrec_eval (the `pytrec-eval-terrier` wheel) is what BEIR and MTEB report with, so our nDCG@10 is comparable
to theirs; it is a compiled extension with no further dependencies and scores 10K queries in well under a second.
Two choices differ from calling it naively, both so the numbers describe the ranking we produced:
- trec_eval re-sorts a run by score and breaks ties by passage id; we pass rank-derived scores instead, so ties
  in retriever scores keep the retriever's order.
- trec_eval leaves out queries the run does not mention (a retriever that found nothing for a query would
  raise the mean); such queries count 0 here, averaged over every judged query.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytrec_eval

NDCG_KS = (1, 3, 5, 10, 100)
RECALL_KS = (1, 5, 10, 20, 100)
MRR_K = 10
MAP_K = 100
# metrics.json keys written before these were library-backed; kept as aliases of the new ones
ALIASES = {"ndcg_10": "ndcg@10", "mrr_10": "mrr@10"}


def _run(ranked: Mapping[str, Sequence[str]], depth: int | None = None) -> dict[str, dict[str, float]]:
    run = {}
    for query_id, passage_ids in ranked.items():
        unique = list(dict.fromkeys(passage_ids))[:depth]
        run[query_id] = {pid: float(len(unique) - rank) for rank, pid in enumerate(unique)}
    return run


def _mean(per_query: Mapping[str, Mapping[str, float]], measure: str, query_ids: Sequence[str]) -> float:
    return sum(per_query.get(qid, {}).get(measure, 0.0) for qid in query_ids) / len(query_ids)


def ir_metrics(
    ranked: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]], depth: int | None = None
) -> dict[str, float]:
    """nDCG@{1,3,5,10,100}, Recall@{1,5,10,20,100}, MRR@10 and MAP@100 (fractions in [0, 1]), averaged over the
    queries of `ranked` that have judgements.

    Args:
        ranked: {query id: passage ids, best first}.
        qrels: {query id: {passage id: integer grade}}; a grade > 0 is relevant, and nDCG's gain is the grade.
        depth: how many passages were retrieved per query; cut-offs above it are left out (they would read as
            measured at a depth that was never searched). None: all cut-offs.
    Returns `{"ndcg@10": ..., "recall@100": ..., "mrr@10": ..., "map@100": ...}` plus the aliases `ndcg_10` and
    `mrr_10`; `{}` when no query of `ranked` is judged.
    """
    query_ids = [qid for qid in ranked if qid in qrels]
    if not query_ids:
        return {}
    judged = {qid: {pid: int(grade) for pid, grade in qrels[qid].items()} for qid in query_ids}
    keep = [k for k in sorted({*NDCG_KS, *RECALL_KS, MAP_K}) if depth is None or k <= depth]
    ndcg_ks = [k for k in NDCG_KS if k in keep]
    recall_ks = [k for k in RECALL_KS if k in keep]
    measures = {f"ndcg_cut.{','.join(map(str, ndcg_ks))}", f"recall.{','.join(map(str, recall_ks))}"}
    if MAP_K in keep:
        measures.add(f"map_cut.{MAP_K}")
    run = {qid: ranked[qid] for qid in query_ids}
    per_query = pytrec_eval.RelevanceEvaluator(judged, measures).evaluate(_run(run))
    metrics = {f"ndcg@{k}": _mean(per_query, f"ndcg_cut_{k}", query_ids) for k in ndcg_ks}
    metrics.update({f"recall@{k}": _mean(per_query, f"recall_{k}", query_ids) for k in recall_ks})
    if depth is None or MRR_K <= depth:
        # trec_eval's recip_rank has no cut-off: MRR@10 is recip_rank of the run cut at 10
        cut = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(_run(run, MRR_K))
        metrics[f"mrr@{MRR_K}"] = _mean(cut, "recip_rank", query_ids)
    if MAP_K in keep:
        metrics[f"map@{MAP_K}"] = _mean(per_query, f"map_cut_{MAP_K}", query_ids)
    metrics.update({alias: metrics[key] for alias, key in ALIASES.items() if key in metrics})
    return metrics

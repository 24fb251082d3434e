"""The reader's answer rankings compared on the same readings: EM/F1 when reading the top 1/5/20 passages.

    python benchmarks/reader_ranking.py --reader READER_DIR (--retriever PAIR_DIR | --results RESULTS_JSON [--gold])
        [--questions 300] [--max-length N]

`--retriever`: DPR's SQuAD open setting, a seeded sample of dev-a questions over every SQuAD train + dev-a
paragraph (the corpus encoding is the slow part; its top-20 is cached in runs/bench/reader-ranking/); it also
reports EM/F1 on each question's gold paragraph alone (the reader's ceiling with one passage).
`--results`: any retrieval-results JSON (`dpr-hf evaluate-retrieval`'s results.json), e.g. the quickstart's dev
subset; with `--gold` its questions are SQuAD dev-a ones, and their gold paragraphs are read as with `--retriever`.
The reader reads each question's 20 passages once; every ranking ranks the same readings.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import random
from pathlib import Path

import common
from retrieval_quality import dense_retriever

from dpr_hf.evaluation.metrics import has_answer
from dpr_hf.evaluation.reader import load_reader
from dpr_hf.reader.decoding import RANKINGS, PassageReading, rank_answers, score_passages

TOP_N = (1, 5, 20)


def weights_stamp(paths) -> str:
    """What a cache of a model's outputs is keyed by: its weights (every trained model's folder has the same name)."""
    return hashlib.sha256(b"".join(path.read_bytes() for path in paths)).hexdigest()[:16]


def open_squad_top20(pair_dir: Path, count: int, output: Path) -> list[dict]:
    """Top-20 dense passages for `count` seeded dev-a questions over the full SQuAD corpus, cached."""
    # keyed by the pair's weights, not its folder name: every trained pair's folder is called "retriever"
    stamp = weights_stamp(
        pair_dir / tower / "model.safetensors" for tower in ("question_encoder", "passage_encoder")
    )
    cache = output / f"{pair_dir.name}-{stamp}-{count}-top20.json"
    if cache.exists():
        return json.loads(cache.read_text())
    corpus, questions = common.open_squad(0)
    questions = questions.select(sorted(random.Random(0).sample(range(len(questions)), count)))
    retriever, seconds = dense_retriever(pair_dir, corpus, "bf32")
    print(f"corpus of {len(corpus)} encoded in {seconds:.0f} s", flush=True)
    hits = retriever.search(list(questions["question"]), 20)
    rows = [
        {
            "id": q["id"],
            "question": q["question"],
            "answers": q["answers"],
            "ctxs": [{**h, "has_answer": has_answer(q["answers"], h["text"])} for h in hs],
        }
        for q, hs in zip(questions, hits, strict=True)
    ]
    output.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(rows, ensure_ascii=False))
    return rows


def gold_paragraph_scores(
    reader, tokenizer, rows: list[dict], gold: list[dict], max_length: int
) -> tuple[float, float]:
    """EM/F1 (%) of the reader's best span in each question's own paragraph (`gold`: the oracle passages)."""
    readings = score_passages(
        reader, tokenizer, [row["question"] for row in rows], [[p] for p in gold], max_length=max_length
    )
    predictions = [r[0].spans[0]["answer"] if r[0].spans else "" for r in readings]
    return common.squad_scores(predictions, [row["answers"] for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reader", type=Path, required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--retriever", type=Path, help="pair folder: SQuAD open dev-a, full corpus")
    source.add_argument("--results", type=Path, help="retrieval-results JSON")
    parser.add_argument("--questions", type=int, default=300, help="seeded question sample (300)")
    parser.add_argument("--max-length", type=int, default=0, help="default: the reader's max_seq_length")
    parser.add_argument("--num-spans", type=int, default=3, help="spans per passage for the last rows (3)")
    parser.add_argument("--weights", default="0.5,1,2,4", help="retriever weights λ tried (λ · score/τ)")
    parser.add_argument("--temperature", type=float, default=0.05, help="retriever's τ (logit = score/τ)")
    parser.add_argument(
        "--gold",
        action="store_true",
        help="--results holds SQuAD dev-a questions: also read their own paragraphs",
    )
    args = parser.parse_args()
    output = common.RUNS / "reader-ranking"
    if args.retriever:
        rows = open_squad_top20(args.retriever, args.questions, output)
        temperature = json.loads((args.retriever / "question_encoder" / "config.json").read_text())[
            "temperature"
        ]
    else:
        rows = json.loads(args.results.read_text())
        rows = [
            rows[i] for i in sorted(random.Random(0).sample(range(len(rows)), min(args.questions, len(rows))))
        ]
        temperature = args.temperature
    rows = [{**row, "ctxs": row["ctxs"][:20]} for row in rows]
    gold_paragraphs = None  # dev-a questions: each has its own paragraph, the reader's ceiling on one passage
    # looked up before the long reading, so ids that are not dev-a questions fail at once
    if args.retriever or args.gold:
        try:
            gold_paragraphs = common.dev_gold_paragraphs([row["id"] for row in rows])
        except ValueError as error:
            raise SystemExit(f"{args.results or args.retriever}: {error}") from None
    reader, tokenizer = load_reader(args.reader)
    max_length = args.max_length or reader.config.max_seq_length
    started = common.now()
    source = args.retriever or args.results
    stamp = weights_stamp([args.reader / "model.safetensors"])
    cache = output / f"readings-{args.reader.name}-{stamp}-{max_length}-{source.stem}-{len(rows)}.json"
    if cache.exists():  # the same readings: only the rankings below change between runs
        readings = [[PassageReading(**r) for r in q] for q in json.loads(cache.read_text())]
    else:
        readings = score_passages(
            reader,
            tokenizer,
            [row["question"] for row in rows],
            [row["ctxs"] for row in rows],
            num_spans=args.num_spans,
            max_length=max_length,
        )
        output.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps([[dataclasses.asdict(r) for r in q] for q in readings]))
    recall = {
        n: 100 * sum(any(c["has_answer"] for c in row["ctxs"][:n]) for row in rows) / len(rows) for n in TOP_N
    }
    print(f"{len(rows)} questions, {max_length} tokens; answer in top-n passages: {recall}", flush=True)
    gold = ""
    if gold_paragraphs is not None:
        em, f1 = gold_paragraph_scores(reader, tokenizer, rows, gold_paragraphs, max_length)
        gold = f" Gold paragraph alone: EM {em:.1f}, F1 {f1:.1f}."
        print(gold.strip(), flush=True)
    weights = [float(w) for w in args.weights.split(",")]
    variants = [(ranking, 0.0, 1) for ranking in RANKINGS]
    variants += [(ranking, weight, 1) for ranking in ("joint", "marginal") for weight in weights]
    variants += [("marginal", weight, args.num_spans) for weight in weights]
    table = []
    for ranking, weight, num_spans in variants:
        name = ranking + (f" + {weight:g} retriever/τ" if weight else "") + f", {num_spans} span(s)/passage"
        em, f1 = {}, {}
        for n in TOP_N:
            best = [
                rank_answers(
                    [PassageReading(r.relevance, r.spans[:num_spans]) for r in question_readings[:n]],
                    row["ctxs"][:n],
                    ranking=ranking,
                    retriever_weight=weight,
                    retriever_temperature=temperature,
                )
                for question_readings, row in zip(readings, rows, strict=True)
            ]
            predictions = [answers[0]["answer"] if answers else "" for answers in best]
            em[n], f1[n] = common.squad_scores(predictions, [r["answers"] for r in rows])
        table.append([name, *em.values(), *f1.values()])
        print(f"{name:<48}" + "".join(f"{v:7.1f}" for v in table[-1][1:]), flush=True)
    body = "\n\n".join(
        [
            f"{len(rows)} questions ({args.retriever or args.results}); reader `{args.reader}` read at {max_length} "
            f"tokens; answer in the top 1/5/20 passages: {' / '.join(f'{v:.1f}' for v in recall.values())} %.{gold}",
            common.table(["ranking", *(f"EM@{n}" for n in TOP_N), *(f"F1@{n}" for n in TOP_N)], table),
        ]
    )
    common.record("Reader: answer rankings on the same readings", body, False, started)


if __name__ == "__main__":
    main()

"""End-to-end reader quality on SQuAD open dev-a: EM/F1 of the quickstart-size reader over the trained retriever's
top passages, next to the same reader over BM25's top passages and over the gold paragraph alone (oracle).

    python benchmarks/reader_quality.py [--quick] [--questions N] [--reader DIR] [--max-length N]

Reads the top-20 passages saved by `retrieval_quality.py` (run it first, same --quick flag); trains the
quickstart reader (recipes/quickstart/reader.yaml) if runs/bench/quickstart/reader is missing.
"""

from __future__ import annotations

import argparse
import json
import random

import common

from dpr_hf.data import load_passages
from dpr_hf.evaluation.reader import evaluate_reader, load_reader
from dpr_hf.models.tokenization import READER_MAX_LENGTH


def trained_max_length(reader_dir) -> int:
    """Read passages as the reader was trained to (its training_args.json), else at DPR's 350 tokens."""
    return common.training_args(reader_dir).get("max_length") or READER_MAX_LENGTH


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 questions, top-1/5")
    parser.add_argument(
        "--questions", type=int, default=0, help="seeded question sample (default 1000; quick 100)"
    )
    parser.add_argument(
        "--reader", type=common.Path, help="reader folder (default: train the quickstart reader)"
    )
    parser.add_argument("--retrieval", type=common.Path, help="retrieval_quality.py output folder to read")
    parser.add_argument(
        "--max-length",
        type=int,
        default=0,
        help="tokens per question + passage (default: the length the reader was trained with, else 350)",
    )
    args = parser.parse_args()
    started = common.now()
    retrieval = args.retrieval or common.RUNS / ("retrieval-quick" if args.quick else "retrieval")
    if not (retrieval / "dpr_hf_trained_top20.json").exists():
        raise SystemExit(
            f"no {retrieval}/dpr_hf_trained_top20.json: run benchmarks/retrieval_quality.py first"
        )
    reader_dir = args.reader or common.quickstart_reader()
    reader, tokenizer = load_reader(reader_dir)
    max_length = args.max_length or trained_max_length(reader_dir)
    top_n = (1, 5) if args.quick else (1, 5, 20)
    count = args.questions or (100 if args.quick else 1000)

    dense = json.loads((retrieval / "dpr_hf_trained_top20.json").read_text())
    keep = sorted(random.Random(0).sample(range(len(dense)), min(count, len(dense))))
    sources = {
        "dpr_hf trained retriever": [dense[i] for i in keep],
        "BM25": [json.loads((retrieval / "bm25_top20.json").read_text())[i] for i in keep],
    }
    gold = {p["id"]: p for p in load_passages(str(common.SQUAD_DEV))}
    sources["gold paragraph only (oracle)"] = [
        {**row, "ctxs": [{**gold[row["gold_passage_id"]], "score": 0.0}]} for row in sources["BM25"]
    ]
    metrics = {}
    for name, rows in sources.items():
        n = (1,) if name.startswith("gold") else top_n
        metrics[name], _ = evaluate_reader(
            reader, tokenizer, rows, top_n=n, max_length=max_length, show_progress=False
        )
        print(name, metrics[name], flush=True)
    (retrieval / "reader_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

    bm25 = metrics["BM25"]
    table_rows = []
    for name, m in metrics.items():
        for n in m["em"]:
            ratio = m["f1"][n] / bm25["f1"][n] if n in bm25["f1"] and bm25["f1"][n] else float("nan")
            table_rows.append([name, n, m["em"][n], m["f1"][n], ratio])
    body = "\n\n".join(
        [
            f"{len(keep)} seeded dev-a questions of the retrieval run's {len(dense)} (corpus: "
            f"{'a sample' if args.quick else 'every SQuAD train + dev-a paragraph'}); reader: `{reader_dir}` "
            f"({'recipes/quickstart/reader.yaml: ' if args.reader is None else ''}all-MiniLM-L6-v2 backbone); "
            f"{max_length} tokens per question + passage; prediction = best span of the most relevant of the top-n "
            "passages (DPR); SQuAD EM/F1 in %.",
            common.table(["passages", "top-n", "EM", "F1", "F1 / BM25"], table_rows),
            common.BASE_NOTE,
        ]
    )
    common.record("Reader: EM/F1 on SQuAD open dev-a", body, args.quick, started)


if __name__ == "__main__":
    main()

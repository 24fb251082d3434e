"""Evaluate a reader on retrieval results: EM/F1 at several top-n passage thresholds.

`dpr-hf evaluate-reader --model DIR --retrieval-results FILE --output-dir DIR [--top-n 1,5,20,50]
[--max-questions N]` writes `metrics.json` ({"em": {n: ...}, "f1": {n: ...}, "num_questions": N}, percent) and `predictions.json`.
"""

from __future__ import annotations

import argparse
import json


def _thresholds(value: str) -> list[int]:
    try:
        thresholds = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None
    if not thresholds or min(thresholds) < 1:
        raise argparse.ArgumentTypeError(f"thresholds must be positive integers, got {value!r}")
    return thresholds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="reader folder, or system folder containing reader/")
    parser.add_argument(
        "--retrieval-results",
        required=True,
        help="DPR results JSON: [{question, answers, ctxs: [{id, title, text, score, has_answer}]}]",
    )
    parser.add_argument("--output-dir", required=True, help="folder for metrics.json and predictions.json")
    parser.add_argument(
        "--top-n", type=_thresholds, default=[1, 5, 20, 50], help="passage thresholds (1,5,20,50)"
    )
    parser.add_argument("--max-answer-length", type=int, default=10, help="longest answer in tokens (10)")
    parser.add_argument(
        "--max-length", type=int, help="tokens per question+passage (default: the reader's trained length)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="question-passage pairs per forward pass")
    parser.add_argument(
        "--max-questions",
        type=int,
        default=0,
        help="read a seeded sample of this many questions (0: all): reading 20 passages costs ~0.6 s a question "
        "on 2 CPU cores",
    )
    parser.add_argument("--seed", type=int, default=42, help="seed of the --max-questions sample (42)")
    parser.add_argument(
        "--retriever-weight",
        type=float,
        default=0.0,
        help="weight of the retriever's logit (score / --retriever-temperature) in the passage prior (0)",
    )
    parser.add_argument(
        "--retriever-temperature",
        type=float,
        default=1.0,
        help="the retriever's training temperature τ (dpr_hf pairs: question_encoder/config.json) (1.0)",
    )


def run(args: argparse.Namespace) -> int:
    from ..evaluation.reader import evaluate_reader_on_results

    metrics = evaluate_reader_on_results(
        args.model,
        args.retrieval_results,
        args.output_dir,
        top_n=args.top_n,
        max_answer_length=args.max_answer_length,
        max_length=args.max_length,
        batch_size=args.batch_size,
        max_questions=args.max_questions,
        seed=args.seed,
        retriever_weight=args.retriever_weight,
        retriever_temperature=args.retriever_temperature,
    )
    print(json.dumps(metrics, indent=2))
    return 0

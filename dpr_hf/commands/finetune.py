"""Fine-tune and evaluate a retrieval system on a BEIR dataset, end to end, resumable.

`dpr-hf finetune DIR --output-dir OUT [--base MODEL] [--epochs N] [--batch-size N] [--max-train-queries N]
[--reader] [--set KEY=VALUE ...]`: DIR is a BEIR folder or Hub id with train and test qrels (dev optional, used to pick
the best checkpoint), or a folder holding SQuAD `train.json` and `dev.json` (dev = the test split). Writes
OUT/system, OUT/metrics.json and OUT/report.md; see `dpr_hf.finetune`.
"""

from __future__ import annotations

import argparse

import yaml


def _key_value(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    for number in (int, float):  # YAML 1.1 reads "1e-3" as a string
        try:
            return key, number(value)
        except ValueError:
            pass
    return key, yaml.safe_load(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data",
        help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/), Hub id, or a folder of SQuAD train/dev.json",
    )
    parser.add_argument("--output-dir", required=True, help="where every step's output goes")
    parser.add_argument("--base", default="minilm", help="base encoder: Hub id, folder or 'minilm' (offline)")
    parser.add_argument("--epochs", type=int, help="training epochs (default: sized from the data)")
    parser.add_argument("--batch-size", type=int, help="questions per batch (default: 32)")
    parser.add_argument("--max-train-queries", type=int, help="train on a seeded subset of the train queries")
    parser.add_argument(
        "--time-budget-minutes", type=float, default=35.0, help="fewer default epochs beyond this (35)"
    )
    parser.add_argument(
        "--reader",
        action="store_true",
        help="also train the reader (SQuAD QA data only: it needs answer spans)",
    )
    parser.add_argument(
        "--set", type=_key_value, action="append", default=[], metavar="KEY=VALUE", help="any recipe key"
    )


def run(args: argparse.Namespace) -> int:
    from ..finetune import finetune

    finetune(
        args.data,
        args.output_dir,
        base=args.base,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_train_queries=args.max_train_queries,
        recipe_overrides=dict(args.set),
        time_budget_minutes=args.time_budget_minutes,
        reader=args.reader,
    )
    return 0

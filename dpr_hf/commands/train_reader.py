"""Train an extractive reader: `dpr-hf train-reader RECIPE.yaml [--key value ...] [--resume]`.

Recipe keys are the fields of `ReaderArguments` and `TrainingArguments`; `--key value` overrides them.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="YAML recipe (e.g. recipes/quickstart/reader.yaml)")
    parser.add_argument(
        "overrides",
        nargs=argparse.REMAINDER,
        help="`--key value` overrides of recipe keys; `--resume` continues from the latest checkpoint",
    )


def run(args: argparse.Namespace) -> int:
    from ..training.engine import TrainingArguments, parse_recipe
    from ..training.reader import ReaderArguments, train_reader

    reader_args, training_args = parse_recipe(
        (ReaderArguments, TrainingArguments), args.recipe, args.overrides
    )
    metrics = train_reader(reader_args, training_args)
    summary = {key: value for key, value in metrics.items() if key != "log_history"}
    print(json.dumps(summary, indent=2))
    return 0

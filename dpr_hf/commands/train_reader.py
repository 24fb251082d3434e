"""Train an extractive reader: `dpr-hf train-reader RECIPE.yaml [--key value ...] [--resume]`.

Recipe keys are the fields of `ReaderArguments` and `TrainingArguments`; `--key value` overrides them.
"""

from __future__ import annotations

import argparse
import json

from ..training.arguments import TrainingArguments, add_recipe_arguments, parse_recipe
from ..training.reader import ReaderArguments, train_reader


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Train an extractive reader (DPR's passage selection + answer span loss). Settings come from the recipe "
        "YAML; any of them can be overridden as `--key value` after it (`--resume` continues from the latest "
        "checkpoint)."
    )
    add_recipe_arguments(parser, (ReaderArguments, TrainingArguments), "recipes/quickstart/reader.yaml")


def run(args: argparse.Namespace) -> int:
    reader_args, training_args = parse_recipe(
        (ReaderArguments, TrainingArguments), args.recipe, args.overrides
    )
    metrics = train_reader(reader_args, training_args)
    summary = {key: value for key, value in metrics.items() if key != "log_history"}
    print(json.dumps(summary, indent=2))
    return 0

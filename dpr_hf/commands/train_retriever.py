"""Train a DPR question/passage encoder pair from a recipe: `dpr-hf train-retriever RECIPE.yaml [--key value]`."""

from __future__ import annotations

import argparse
import dataclasses

from accelerate import PartialState

from ..training.engine import TrainingArguments, parse_recipe
from ..training.retriever import RetrieverArguments, train_retriever


def add_arguments(parser: argparse.ArgumentParser) -> None:
    keys = [f.name for dc in (RetrieverArguments, TrainingArguments) for f in dataclasses.fields(dc)]
    parser.description = (
        "Train question and passage encoders with DPR's in-batch negative loss. Settings come from the recipe "
        "YAML; any of them can be overridden as `--key value` after it (`--resume` continues from the latest "
        "checkpoint). Several processes: `accelerate launch --multi_gpu --num_processes N -m dpr_hf.cli "
        "train-retriever ...` on GPUs, `torchrun --nproc_per_node N -m dpr_hf.cli train-retriever ...` on CPUs."
    )
    parser.epilog = "keys: " + ", ".join(keys)
    parser.add_argument("recipe", help="recipe YAML (e.g. recipes/quickstart/retriever.yaml)")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, help="--key value pairs overriding the recipe")


def run(args: argparse.Namespace) -> int:
    retriever_args, training_args = parse_recipe(
        (RetrieverArguments, TrainingArguments), args.recipe, args.overrides
    )
    metrics = train_retriever(retriever_args, training_args)
    if PartialState().is_main_process:
        summary = {k: v for k, v in metrics.items() if k != "log_history"}
        print(f"saved {training_args.output_dir} ({summary})")
    return 0

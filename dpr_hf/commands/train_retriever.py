"""Train a DPR question/passage encoder pair from a recipe: `dpr-hf train-retriever RECIPE.yaml [--key value]`."""

from __future__ import annotations

import argparse

from accelerate import PartialState

from ..training.arguments import TrainingArguments, add_recipe_arguments, parse_recipe
from ..training.retriever import RetrieverArguments, train_retriever


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Train question and passage encoders with DPR's in-batch negative loss. Settings come from the recipe "
        "YAML; any of them can be overridden as `--key value` after it (`--resume` continues from the latest "
        "checkpoint). Several processes: `accelerate launch --multi_gpu --num_processes N -m dpr_hf.cli "
        "train-retriever ...` on GPUs, `torchrun --nproc_per_node N -m dpr_hf.cli train-retriever ...` on CPUs."
    )
    add_recipe_arguments(parser, (RetrieverArguments, TrainingArguments), "recipes/quickstart/retriever.yaml")


def run(args: argparse.Namespace) -> int:
    retriever_args, training_args = parse_recipe(
        (RetrieverArguments, TrainingArguments), args.recipe, args.overrides
    )
    metrics = train_retriever(retriever_args, training_args)
    if PartialState().is_main_process:
        summary = {k: v for k, v in metrics.items() if k != "log_history"}
        print(f"saved {training_args.output_dir} ({summary})")
    return 0

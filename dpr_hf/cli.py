"""`dpr-hf` command line: each sub-command is a thin shell over one library function (dpr_hf/commands/)."""

from __future__ import annotations

import argparse
import importlib
import sys

from .models.errors import DPRDataError, MismatchError

# sub-command -> module in dpr_hf.commands defining `add_arguments(parser)` and `run(args) -> int | None`
COMMANDS = {
    "convert": "convert",
    "export": "export",
    "mine-negatives": "mine_negatives",
    "train-retriever": "train_retriever",
    "encode": "encode",
    "build-index": "build_index",
    "evaluate-retrieval": "evaluate_retrieval",
    "train-reader": "train_reader",
    "evaluate-reader": "evaluate_reader",
    "build-system": "build_system",
    "finetune": "finetune",
    "push": "push",
    "demo": "demo",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dpr-hf", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"dpr_hf.commands.{module_name}")
        sub = subparsers.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    # OSError besides FileNotFoundError/NotADirectoryError: transformers reports a model or tokenizer it cannot
    # find (a missing folder, a folder without config.json, an uncached Hub id offline) as a bare OSError.
    except (DPRDataError, MismatchError, OSError) as error:
        message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        print(f"dpr-hf {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

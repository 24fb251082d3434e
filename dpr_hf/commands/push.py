"""Upload a saved QA system folder to the Hugging Face Hub with rendered model cards.

The system goes to REPO_ID as one repo; `--separate-encoders` also publishes the question encoder, passage encoder
and reader as REPO_ID-question-encoder, REPO_ID-passage-encoder and REPO_ID-reader. Each upload first prints its
file count and bytes; a folder over 1 GB or 1,000 files goes up through the Hub's large-folder upload (resumable).
`--space` also publishes a gradio Space (default REPO_ID-demo) serving the system's demo page, as
`dpr-hf demo REPO_ID` does locally.
"""

from __future__ import annotations

import argparse

from ..hub import part_repo_ids, push_space, push_system


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("system_dir", help="a system folder written by QASystem.save_pretrained")
    parser.add_argument("repo_id", help="Hub repo id, e.g. my-org/dpr-squad")
    parser.add_argument(
        "--separate-encoders",
        action="store_true",
        help="also push each encoder and the reader as its own repo (REPO_ID-question-encoder, ...)",
    )
    parser.add_argument("--private", action="store_true", help="create the repos as private")
    parser.add_argument("--token", help="Hub token (default: the logged-in one)")
    parser.add_argument("--license", default="apache-2.0", help="license in the model cards")
    parser.add_argument("--datasets", nargs="+", help="Hub ids of the training datasets, for the model cards")
    parser.add_argument(
        "--base-model", help="Hub id of the pretrained backbone (default: from training_args)"
    )
    parser.add_argument(
        "--eval-dataset", help="dataset named in the cards' model-index (default: first of --datasets)"
    )
    parser.add_argument(
        "--space", action="store_true", help="also publish a gradio Space serving the demo page of the system"
    )
    parser.add_argument("--space-id", help="the Space's repo id (default: REPO_ID-demo)")
    parser.add_argument(
        "--space-requirement",
        action="append",
        help="a requirements.txt line of the Space, repeatable (default: dpr-hf[demo]; e.g. "
        "'dpr-hf[demo] @ git+https://github.com/ORG/dpr_hf')",
    )


def run(args: argparse.Namespace) -> int:
    push_system(
        args.system_dir,
        args.repo_id,
        separate_encoders=args.separate_encoders,
        private=args.private or None,
        token=args.token,
        license=args.license,
        datasets=args.datasets,
        base_model=args.base_model,
        eval_dataset=args.eval_dataset,
    )
    for part, repo in part_repo_ids(args.repo_id, args.separate_encoders).items():
        print(f"pushed {part} to https://huggingface.co/{repo}")
    if args.space:
        space_id = args.space_id or f"{args.repo_id}-demo"
        requirements = {"requirements": args.space_requirement} if args.space_requirement else {}
        push_space(
            args.repo_id,
            space_id,
            private=args.private or None,
            token=args.token,
            license=args.license,
            **requirements,
        )
        print(f"pushed the demo Space to https://huggingface.co/spaces/{space_id}")
    return 0

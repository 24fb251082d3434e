"""The reader a transformers user would train instead of dpr_hf's: `AutoModelForQuestionAnswering` on the same
backbone, trained for the same wall time on the same questions, then read like dpr_hf's reader (issue 17 item 3).

    python benchmarks/reader_peer.py [--budget-minutes 120] [--results RESULTS_JSON] [--resume | --eval-only]

Training follows transformers' question-answering example (run_qa.py): question + the gold SQuAD paragraph,
`truncation="only_second"`, windows of `--max-length` tokens overlapping by `--stride`, answer start/end tokens
(windows without the answer point at [CLS]), `Trainer` with linear decay; batches padded to their longest window
(run_qa's `--pad_to_max_length False`, cheaper on CPU). The questions are the ones dpr_hf's reader recipe trains on:
`seeded_subset` of the answerable questions in the same order, seed and count as `train_reader`.

Wall time: the peer may train as long as the dpr_hf reader did, and no longer. Its learning rate decays linearly
over the budget's wall time instead of a step count (a count estimated from timed steps left 10% of the budget unused
in one run), up to run_qa's 3 epochs; a callback stops training once the budget is spent, so the peer trains for
the budget and ends at a learning rate of zero. Training time survives `--resume` (checkpoint state), so an
interrupted run continues to the same budget.

Reading: the context is the passage text alone, as in training (SQuAD paragraphs have no title in run_qa, so a
title would be text the peer never saw); long passages are read in the same overlapping windows. Score of a span:
start + end logit, at most `--max-answer-length` tokens (dpr_hf's default 10), answer = the best span over all
windows of the top-n passages. EM/F1 with dpr_hf's metrics, on the gold paragraph and on the top 1/5/20 passages
of `--results` (a `dpr-hf evaluate-retrieval` results.json or reader_ranking.py's cached top-20).
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path

import common
import torch
from datasets import Dataset
from torch.optim.lr_scheduler import LambdaLR
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import get_last_checkpoint

from dpr_hf.data import load_passages, load_questions
from dpr_hf.reader.decoding import best_spans
from dpr_hf.training.arguments import seeded_subset

TOP_N = (1, 5, 20)


def train_examples(path: Path, count: int, seed: int) -> list[dict]:
    """dpr_hf's reader recipe's questions, each with its SQuAD paragraph and first answer (run_qa's label)."""
    chosen = seeded_subset(load_questions(str(path)), count, seed)["id"]
    with (gzip.open if path.suffix == ".gz" else open)(path, "rt", encoding="utf-8") as handle:
        squad = json.load(handle)
    by_id = {
        qa["id"]: {
            "question": qa["question"],
            "context": paragraph["context"],
            "answer": qa["answers"][0]["text"],
            "answer_start": qa["answers"][0]["answer_start"],
        }
        for article in squad["data"]
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
        if qa.get("answers")
    }
    return [by_id[i] for i in chosen]


def train_features(
    tokenizer: PreTrainedTokenizerBase, examples: list[dict], max_length: int, stride: int
) -> Dataset:
    """run_qa.py's `prepare_train_features`: one row per window, start/end at [CLS] when the answer is not in it."""
    encoded = tokenizer(
        [e["question"].lstrip() for e in examples],
        [e["context"] for e in examples],
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    starts, ends = [], []
    for i, offsets in enumerate(encoded.pop("offset_mapping")):
        example = examples[encoded["overflow_to_sample_mapping"][i]]
        sequence = encoded.sequence_ids(i)
        begin, end = example["answer_start"], example["answer_start"] + len(example["answer"])
        first, last = sequence.index(1), len(sequence) - 1 - sequence[::-1].index(1)
        if not (offsets[first][0] <= begin and offsets[last][1] >= end):
            cls = encoded["input_ids"][i].index(tokenizer.cls_token_id)
            starts.append(cls)
            ends.append(cls)
            continue
        while first <= last and offsets[first][0] <= begin:
            first += 1
        while last >= first - 1 and offsets[last][1] >= end:
            last -= 1
        starts.append(first - 1)
        ends.append(last + 1)
    del encoded["overflow_to_sample_mapping"]
    return Dataset.from_dict({**encoded, "start_positions": starts, "end_positions": ends})


class WallTimeBudget(TrainerCallback, ExportableState):
    """Stop training once its wall time (summed over resumed runs: saved with each checkpoint) reaches the budget."""

    def __init__(self, budget_s: float = 0.0, elapsed_s: float = 0.0):
        self.budget_s, self.elapsed_s, self._base, self._start = budget_s, elapsed_s, 0.0, 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self._base, self._start = self.elapsed_s, time.monotonic()

    def spent_s(self) -> float:
        """Training seconds so far, resumed runs included (before training starts: those restored)."""
        return self._base + time.monotonic() - self._start if self._start else self.elapsed_s

    def on_step_end(self, args, state, control, **kwargs):
        self.elapsed_s = self.spent_s()
        if self.elapsed_s >= self.budget_s:
            control.should_training_stop = control.should_save = True

    def fraction_left(self) -> float:
        """Share of the budget still to spend: the linear schedule's factor, read from the clock, not the step."""
        return max(0.0, 1.0 - self.spent_s() / self.budget_s)

    def state(self) -> dict:
        return {"args": {"budget_s": self.budget_s, "elapsed_s": self.elapsed_s}, "attributes": {}}


class WallTimeTrainer(Trainer):
    """`Trainer` whose learning rate decays linearly to zero over the wall-time budget (no warm-up, as run_qa)."""

    def __init__(self, *args, budget_s: float, **kwargs):
        super().__init__(*args, callbacks=[WallTimeBudget(budget_s)], **kwargs)

    @property
    def budget(self) -> WallTimeBudget:
        """The live budget callback: resuming replaces it with the checkpoint's."""
        return next(c for c in self.callback_handler.callbacks if isinstance(c, WallTimeBudget))

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = LambdaLR(
                optimizer or self.optimizer, lambda _step: self.budget.fraction_left()
            )
        return self.lr_scheduler


def train(args: argparse.Namespace) -> dict:
    """Fine-tune the peer within the budget; save it (safetensors) and what it cost in peer_training.json."""
    model, tokenizer = common.qa_peer(args.backbone)
    examples = train_examples(args.train_file, args.max_train_samples, args.seed)
    features = train_features(tokenizer, examples, args.max_length, args.stride)
    training = {
        "per_device_train_batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "lr_scheduler_type": "linear",
        "seed": args.seed,
        "use_cpu": not torch.cuda.is_available(),
        "logging_steps": 50,
        "report_to": "none",
        "disable_tqdm": True,
    }
    checkpoint = get_last_checkpoint(str(args.output)) if args.resume and args.output.is_dir() else None
    if checkpoint:
        print(f"resuming from {checkpoint}", flush=True)
    arguments = TrainingArguments(
        str(args.output),
        **training,
        num_train_epochs=3.0,  # run_qa's default; the budget ends training first
        save_steps=args.save_steps,
        save_total_limit=1,
        restore_callback_states_from_checkpoint=True,
    )
    trainer = WallTimeTrainer(
        model,
        arguments,
        train_dataset=features,
        processing_class=tokenizer,
        budget_s=args.budget_minutes * 60,
    )
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()  # model.safetensors + tokenizer in --output
    budget = trainer.budget
    summary = {
        "backbone": args.backbone or "all-MiniLM-L6-v2",
        "questions": len(examples),
        "windows": len(features),
        "schedule": "linear over the wall-time budget",
        "steps": trainer.state.global_step,
        "windows_seen": trainer.state.global_step * args.batch_size,
        "epochs": round(trainer.state.epoch or 0.0, 2),
        "train_minutes": round(budget.elapsed_s / 60, 1),
        "budget_minutes": round(budget.budget_s / 60, 1),  # a resumed run keeps its first budget
        "train_file": str(args.train_file),
        **{k: getattr(args, k) for k in ("max_length", "stride", "batch_size", "learning_rate", "seed")},
    }
    staged = args.output / "peer_training.json.tmp"
    staged.write_text(json.dumps(summary, indent=2) + "\n")
    staged.replace(args.output / "peer_training.json")
    return summary


@torch.inference_mode()
def read(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[str],
    passages: Sequence[Sequence[str]],
    args: argparse.Namespace,
) -> list[list[tuple[float, str]]]:
    """Per question and passage, the best span `(start + end logit, text)` over the passage's windows."""
    pairs = [(q, p, i) for i, (q, found) in enumerate(zip(questions, passages, strict=True)) for p in found]
    best: list[list[tuple[float, str]]] = [[] for _ in questions]
    for begin in range(0, len(pairs), args.eval_batch_size):
        chunk = pairs[begin : begin + args.eval_batch_size]
        encoded = tokenizer(
            [q.lstrip() for q, _, _ in chunk],
            [p for _, p, _ in chunk],
            truncation="only_second",
            max_length=args.max_length,
            stride=args.stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding=True,
            return_tensors="pt",
        )
        offsets, owners = encoded.pop("offset_mapping").tolist(), encoded.pop("overflow_to_sample_mapping")
        outputs = model(**encoded)
        readings = [(float("-inf"), "")] * len(chunk)
        for window, owner in enumerate(owners.tolist()):
            context = torch.tensor([s == 1 for s in encoded.sequence_ids(window)])
            spans = best_spans(
                outputs.start_logits[window], outputs.end_logits[window], context, args.max_answer_length
            )
            if spans and spans[0][2] > readings[owner][0]:
                start, end, score = spans[0]
                readings[owner] = (
                    score,
                    chunk[owner][1][offsets[window][start][0] : offsets[window][end][1]],
                )
        for (_, _, question), reading in zip(chunk, readings, strict=True):
            best[question].append(reading)
    return best


def scores(rows: Sequence[dict], readings: list[list[tuple[float, str]]], n: int) -> tuple[float, float]:
    """EM and F1 (%) of the best span score across each question's first n passages."""
    predictions = [max(found[:n], default=(0.0, ""))[1] for found in readings]
    return common.squad_scores(predictions, [row["answers"] for row in rows])


def evaluate(args: argparse.Namespace) -> tuple[list[list], str, float]:
    """Table rows on the gold paragraph and the retrieved passages, what was read, and the reading seconds."""
    model, tokenizer = common.qa_peer(args.output)
    questions = {q["id"]: q for q in load_questions(str(args.dev_file))}
    if args.results:
        rows = json.loads(args.results.read_text())
        missing = [row.get("id") for row in rows if row.get("id") not in questions]
        if missing:
            raise SystemExit(
                f"{args.results}: question ids {missing[:3]} are not in --dev-file {args.dev_file}"
            )
    else:
        rows = list(questions.values())
    rows = [
        rows[i] for i in sorted(random.Random(0).sample(range(len(rows)), min(args.questions, len(rows))))
    ]
    passages = {p["id"]: p["text"] for p in load_passages(str(args.dev_file))}
    gold = [[passages[questions[row["id"]]["gold_passage_id"]]] for row in rows]
    start = time.perf_counter()
    readings = read(model, tokenizer, [r["question"] for r in rows], gold, args)
    table = [["gold paragraph", 1, *scores(rows, readings, 1), 100.0]]
    source = f"{len(rows)} seeded questions of `{args.dev_file}`"
    if args.results:
        found = [[c["text"] for c in row["ctxs"][: TOP_N[-1]]] for row in rows]
        readings = read(model, tokenizer, [r["question"] for r in rows], found, args)
        for n in TOP_N:
            recall = 100 * sum(any(c["has_answer"] for c in row["ctxs"][:n]) for row in rows) / len(rows)
            table.append([f"top-{n} of the results", n, *scores(rows, readings, n), recall])
        source = f"{len(rows)} seeded questions of `{args.results}` (gold paragraphs from `{args.dev_file}`)"
    return table, source, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", help="model folder (default: the offline all-MiniLM-L6-v2)")
    parser.add_argument("--train-file", type=Path, default=common.SQUAD_TRAIN)
    parser.add_argument("--max-train-samples", type=int, default=12000, help="as recipes/squad/reader.yaml")
    parser.add_argument("--seed", type=int, default=42, help="as recipes/squad/reader.yaml")
    parser.add_argument("--budget-minutes", type=float, default=120.0, help="the dpr_hf reader's train time")
    parser.add_argument(
        "--max-length", type=int, default=0, help="window tokens (256; --eval-only: as trained)"
    )
    parser.add_argument("--stride", type=int, default=0, help="window overlap (128; --eval-only: as trained)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--save-steps", type=int, default=200)
    parser.add_argument("--output", type=Path, default=common.RUNS / "reader-peer")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output")
    mode.add_argument("--eval-only", action="store_true", help="evaluate the peer already in --output")
    parser.add_argument("--dev-file", type=Path, default=common.SQUAD_DEV, help="gold paragraphs (dev-a)")
    parser.add_argument(
        "--results", type=Path, help="retrieval results of --dev-file questions (top 20 read)"
    )
    parser.add_argument("--questions", type=int, default=1000, help="seeded question sample (1000)")
    parser.add_argument("--max-answer-length", type=int, default=10, help="tokens (dpr_hf's default)")
    parser.add_argument("--eval-batch-size", type=int, default=32, help="passages tokenised per forward")
    args = parser.parse_args()
    if args.budget_minutes <= 0 and not args.eval_only:
        parser.error(
            f"--budget-minutes must be positive (the dpr_hf reader's training minutes), not {args.budget_minutes}"
        )
    started = common.now()
    summary_file = args.output / "peer_training.json"
    training = json.loads(summary_file.read_text()) if args.eval_only and summary_file.exists() else {}
    args.max_length = args.max_length or training.get("max_length", 256)
    args.stride = args.stride or training.get("stride", 128)
    if not args.eval_only:
        training = train(args)
    print("training:", training, flush=True)
    table, source, seconds = evaluate(args)
    for row in table:
        print(row, flush=True)
    t = training
    cost = (
        f"{t['questions']} questions ({t['windows']} windows of {t['max_length']} tokens, stride {t['stride']}) "
        f"of `{t.get('train_file', args.train_file)}`, seed {t['seed']}; {t['steps']} steps of {t['batch_size']} "
        f"({t['windows_seen']} windows seen, {t['epochs']} epochs) in {t['train_minutes']} min of a "
        f"{t['budget_minutes']}-min budget, lr {t['learning_rate']} "
        f"{t.get('schedule', 'linear over an estimated step count')}"
        if t
        else "training record missing (peer_training.json)"
    )
    body = "\n\n".join(
        [
            f"Peer: transformers `AutoModelForQuestionAnswering` on {training.get('backbone', args.output)}, "
            f"trained with `Trainer` as run_qa.py does: {cost}. Read: {source}, passage text only, windows of "
            f"{args.max_length} tokens (stride {args.stride}), answer = best start + end logit (spans of at most "
            f"{args.max_answer_length} tokens) across the top-n passages; {seconds:.0f} s to read. SQuAD EM/F1 in %.",
            common.table(["passages", "top-n", "EM", "F1", "answer in passages %"], table),
            common.BASE_NOTE,
        ]
    )
    common.record("Reader peer: transformers AutoModelForQuestionAnswering", body, False, started)


if __name__ == "__main__":
    main()

"""Reader training: DPR's passage-selection + span MML loss through the shared engine (`dpr_hf.training`).

`train_reader(ReaderArguments(...), TrainingArguments(...))` is what `dpr-hf train-reader` runs. The output
folder holds `reader/` (save_pretrained + tokenizer, the checkpoint with the best dev exact match: the task's
`metric_for_best_model` is `em`, higher is better), `training_args.json` and `metrics.json`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase

from ..data.reader import ReaderCollator, load_reader_data, tokenize_reader_data
from ..evaluation.reader import evaluate_reader, load_reader
from ..losses import reader_loss
from ..models.configuration import ExtractiveReaderConfig
from ..models.modeling import ExtractiveReader
from ..models.tokenization import tokenizer_fingerprint
from .arguments import TrainingArguments, resolve_model_path, seeded_subset
from .engine import Trainer, TrainingTask

MIN_READER_LENGTH = 16


@dataclass
class ReaderArguments:
    """Model, data and decoding settings of reader training (engine settings are in `TrainingArguments`)."""

    model_name_or_path: str = field(
        default="bert-base-uncased",
        metadata={
            "help": "Backbone (Hub id or folder; 'minilm' = the offline all-MiniLM-L6-v2) to build the reader "
            "from, or a reader folder to continue training."
        },
    )
    train_file: str = field(
        default="", metadata={"help": "DPR retrieval-results JSON or SQuAD JSON (see load_reader_data)."}
    )
    dev_file: str | None = field(default=None, metadata={"help": "Dev data, same formats (selects best/)."})
    train_retrieval_results: str | None = field(
        default=None,
        metadata={"help": "SQuAD train_file only: results JSON giving its negatives (default: BM25)."},
    )
    dev_retrieval_results: str | None = field(
        default=None,
        metadata={"help": "SQuAD dev_file only: results JSON giving its passages (default: BM25)."},
    )
    max_train_samples: int = field(default=0, metadata={"help": "Use a seeded random subset (0 = all)."})
    max_eval_samples: int = field(default=0, metadata={"help": "Use a seeded random dev subset (0 = all)."})
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "Tokens per question+passage (default: the reader config's max_seq_length, 350 for a new "
            "reader); saved in the config, so reading uses it."
        },
    )
    train_max_length: int | None = field(
        default=None,
        metadata={
            "help": "Tokens per training example (default: max_length). Shorter is cheaper per step: positives "
            "are windows holding an answer, negatives their first tokens; the reader still reads at max_length."
        },
    )
    passages_per_question: int = field(
        default=24, metadata={"help": "Passages per question in training: 1 positive + negatives (DPR: 24)."}
    )
    eval_passages_per_question: int = field(
        default=50, metadata={"help": "Top retrieved passages read per dev question (DPR: 50)."}
    )
    max_n_answers: int = field(default=10, metadata={"help": "Answer occurrences per positive in the MML."})
    max_positives: int = field(default=20, metadata={"help": "Positives kept per question (DPR: 20)."})
    max_negatives: int = field(default=50, metadata={"help": "Negatives kept per question to sample from."})
    num_retrieved: int = field(
        default=50, metadata={"help": "SQuAD data: retrieved passages (negatives) kept per question."}
    )
    max_answer_length: int = field(default=10, metadata={"help": "Longest answer span in tokens (decoding)."})

    def __post_init__(self):
        # Below this a question and title leave the passage fewer tokens than the windows' overlap.
        for name in ("max_length", "train_max_length"):
            if getattr(self, name) is not None and getattr(self, name) < MIN_READER_LENGTH:
                raise ValueError(f"{name} must be >= {MIN_READER_LENGTH} tokens, got {getattr(self, name)}")

    def with_lengths_of(self, reader: ExtractiveReader) -> ReaderArguments:
        """These arguments with both lengths resolved: `max_length` (default: the reader config's
        `max_seq_length`) and `train_max_length` (default: `max_length`)."""
        max_length = self.max_length or reader.config.max_seq_length
        return dataclasses.replace(
            self, max_length=max_length, train_max_length=self.train_max_length or max_length
        )


def load_reader_model(model_name_or_path: str) -> tuple[ExtractiveReader, PreTrainedTokenizerBase]:
    """A reader and its tokenizer: loaded from a reader folder, or built around a pretrained backbone.

    The reader's config records the tokenizer's vocabulary fingerprint (the reader is trained with it), so that
    reading later with another tokenizer is refused.
    """
    path = resolve_model_path(model_name_or_path)
    if isinstance(AutoConfig.from_pretrained(path), ExtractiveReaderConfig):
        reader, tokenizer = load_reader(
            path
        )  # the one loader of reader folders (class and vocabulary checked)
    else:
        reader, tokenizer = ExtractiveReader.from_backbone(path), AutoTokenizer.from_pretrained(path)
    reader.config.tokenizer_fingerprint = tokenizer_fingerprint(tokenizer)
    return reader, tokenizer


class ReaderTask(TrainingTask):
    """DPR reader training: one positive and sampled negatives per question, `reader_loss`, dev EM/F1.

    `train_dataset` comes from `tokenize_reader_data`; `eval_dataset` is a reader dataset (`load_reader_data`).
    The reader's config owns the input length (`max_seq_length`; `args.max_length` overrides it and is written
    there), so the saved reader reads as it was trained. Dev exact match picks `best/` unless told otherwise.
    """

    metric_for_best_model = "em"
    greater_is_better = True

    def __init__(
        self,
        args: ReaderArguments,
        reader: ExtractiveReader,
        tokenizer: PreTrainedTokenizerBase,
        train_dataset,
        eval_dataset=None,
        seed: int = 42,
        eval_batch_size: int = 64,
    ):
        self.args = args.with_lengths_of(reader)
        reader.config.max_seq_length = self.args.max_length
        self.reader = reader
        self.tokenizer = tokenizer
        self._train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.seed = seed
        self.eval_batch_size = eval_batch_size

    def models(self) -> dict[str, nn.Module]:
        return {"reader": self.reader}

    def train_dataset(self):
        return self._train_dataset

    def data_collator(self) -> Callable:
        return ReaderCollator(
            self.tokenizer,
            passages_per_question=self.args.passages_per_question,
            max_length=self.args.train_max_length,
            max_n_answers=self.args.max_n_answers,
            shuffle=True,
            seed=self.seed,
        )

    def compute_loss(self, models: dict[str, nn.Module], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        outputs = models["reader"](input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return reader_loss(
            outputs.start_logits,
            outputs.end_logits,
            outputs.relevance_logits,
            batch["start_positions"],
            batch["end_positions"],
            batch["answer_mask"],
            span_mask=batch["span_mask"],
            passage_mask=batch["passage_mask"],
        )

    def evaluate(self, models: dict[str, nn.Module], accelerator: Accelerator) -> dict[str, float]:
        """Dev EM/F1 reading all `eval_passages_per_question` passages (`em`, `f1`) and only the first (`*_top1`)."""
        if self.eval_dataset is None or not accelerator.is_main_process:
            return {}
        read_all = self.args.eval_passages_per_question
        metrics, _ = evaluate_reader(
            models["reader"],
            self.tokenizer,
            self.eval_dataset,
            top_n=(1, read_all),
            max_answer_length=self.args.max_answer_length,
            max_length=self.args.max_length,
            batch_size=self.eval_batch_size,
            show_progress=False,
        )
        return {
            "em": metrics["em"][str(read_all)],
            "f1": metrics["f1"][str(read_all)],
            "em_top1": metrics["em"]["1"],
            "f1_top1": metrics["f1"]["1"],
            "num_questions": metrics["num_questions"],
        }

    def save(self, models: dict[str, nn.Module], output_dir: Path) -> None:
        models["reader"].save_pretrained(output_dir / "reader")
        self.tokenizer.save_pretrained(output_dir / "reader")


def train_reader(args: ReaderArguments, training_args: TrainingArguments) -> dict[str, Any]:
    """Train a reader as configured; returns the final metrics (also in OUT/metrics.json).

    With a dev file, dev exact match picks the best checkpoint (`ReaderTask.metric_for_best_model`), unless the
    training arguments name another metric.
    """
    if not args.train_file:
        raise ValueError("train_file is required")
    reader, tokenizer = load_reader_model(args.model_name_or_path)
    train = load_reader_data(args.train_file, args.train_retrieval_results, num_retrieved=args.num_retrieved)
    train = seeded_subset(train, args.max_train_samples, training_args.seed)
    args = args.with_lengths_of(reader)
    train, _ = tokenize_reader_data(
        train,
        tokenizer,
        max_length=args.train_max_length,
        max_n_answers=args.max_n_answers,
        max_positives=args.max_positives,
        max_negatives=args.max_negatives,
    )
    dev = None
    if args.dev_file:
        dev = load_reader_data(
            args.dev_file,
            args.dev_retrieval_results,
            num_retrieved=args.eval_passages_per_question,
            gold_positive=False,
        )
        dev = seeded_subset(dev, args.max_eval_samples, training_args.seed)
    task = ReaderTask(
        args,
        reader,
        tokenizer,
        train,
        dev,
        seed=training_args.seed,
        eval_batch_size=training_args.per_device_eval_batch_size,
    )
    return Trainer(task, training_args).train()

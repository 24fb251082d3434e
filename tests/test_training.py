"""Retriever training: collator, recipes, GradCache, the engine under kill/resume and 2 processes, a real run."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from accelerate import Accelerator
from cli_runs import TIMEOUT, cli_command, kill_once_written, resume, subprocess_env
from datasets import Dataset
from safetensors.torch import load_file
from transformers import BertConfig, BertModel

from dpr_hf import PassageEncoder, PassageEncoderConfig, QuestionEncoder, QuestionEncoderConfig
from dpr_hf.cli import main as cli_main
from dpr_hf.data import save_retriever_json
from dpr_hf.data.collators import RetrieverCollator
from dpr_hf.training import Trainer, TrainingArguments, parse_recipe
from dpr_hf.training.reader import ReaderArguments
from dpr_hf.training.retriever import RetrieverArguments, RetrieverTask

REPO = Path(__file__).resolve().parents[1]


def _passage(pid: str, text: str, title: str = "") -> dict:
    return {"id": pid, "title": title, "text": text}


def _examples(count: int) -> list[dict]:
    """Synthetic canonical records: one positive, two hard negatives and two other negatives each."""
    words = ["river", "castle", "engine", "violin", "glacier", "comet", "orchard", "harbor"]
    rows = []
    for i in range(count):
        topic = f"{words[i % len(words)]} {i}"
        rows.append(
            {
                "question": f"what is known about the {topic}?",
                "answers": [topic],
                "positive_ctxs": [
                    _passage(f"pos-{i}", f"the {topic} is described here in detail", f"Topic {i}")
                ],
                "negative_ctxs": [
                    _passage(f"neg-{i}-{j}", f"unrelated filler text {i} {j}") for j in range(2)
                ],
                "hard_negative_ctxs": [
                    _passage(f"hard-{i}-{j}", f"the {words[(i + j + 1) % len(words)]} is not it")
                    for j in range(2)
                ],
            }
        )
    return rows


# ------------------------------------------------------------------------------------------------------ collator
def test_collator_builds_dpr_batches(tokenizer):
    rows = _examples(3)
    rows[2]["positive_ctxs"] = rows[0]["positive_ctxs"]  # two questions on the same paragraph
    rows[1]["hard_negative_ctxs"] = []  # falls back to the other negatives, as DPR does
    collator = RetrieverCollator(
        tokenizer, num_hard_negatives=1, num_other_negatives=1, passage_max_length=24
    )
    batch = collator(rows)
    assert batch["question"]["input_ids"].shape[0] == 3
    assert batch["passage"]["input_ids"].shape[1] <= 24
    assert (batch["passage"]["token_type_ids"] == 0).all()
    positives = batch["positive_idx"].tolist()
    assert positives[0] == positives[2] == 0  # shared paragraph encoded once
    # q0: pos + hard + other; q1: pos + 2 draws from negative_ctxs (fallback + other, one may repeat)
    # q2: shared pos + hard + other
    assert len(batch["passage"]["input_ids"]) in (7, 8)
    assert collator(rows)["passage"]["input_ids"].equal(batch["passage"]["input_ids"])  # same seed, same draw


def test_collator_sampling_is_seeded_per_epoch_and_question(tokenizer):
    row = _examples(1)[0]
    row["hard_negative_ctxs"] = [_passage(f"h{j}", f"hard negative {j}") for j in range(20)]
    collator = RetrieverCollator(tokenizer, num_hard_negatives=1, seed=3)
    draws = []
    for epoch in range(6):
        collator.set_epoch(epoch)
        draws.append(collator.select(row)[1][0]["id"])
    assert len(set(draws)) > 1  # a new negative across epochs
    collator.set_epoch(2)
    assert collator.select(row)[1][0]["id"] == draws[2]
    first = RetrieverCollator(tokenizer, num_hard_negatives=2, shuffle_negatives=False).select(row)[1]
    assert [p["id"] for p in first] == ["h0", "h1"]
    row["positive_ctxs"] = []
    with pytest.raises(ValueError, match="no positive"):
        collator.select(row)


# ------------------------------------------------------------------------------------------------------- recipes
def test_recipe_yaml_with_command_line_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train_file: a.json\nlearning_rate: 1.0e-5\noutput_dir: out\npooling: mean\n")
    retriever, training = parse_recipe(
        (RetrieverArguments, TrainingArguments), recipe, ["--learning_rate", "3e-4", "--resume"]
    )
    assert (retriever.train_file, retriever.pooling) == ("a.json", "mean")
    assert (training.learning_rate, training.resume, training.output_dir) == (3e-4, True, "out")
    recipe.write_text("learnin_rate: 1.0\n")
    with pytest.raises(ValueError, match="learnin_rate"):
        parse_recipe((RetrieverArguments, TrainingArguments), recipe)


@pytest.mark.parametrize("name", ["nq", "quickstart", "squad"])
def test_shipped_recipes_parse(name):
    retriever, training = parse_recipe(
        (RetrieverArguments, TrainingArguments), REPO / "recipes" / name / "retriever.yaml"
    )
    assert retriever.train_file and training.output_dir
    if name == "nq":  # the paper's settings
        assert retriever.model_name_or_path == "bert-base-uncased"
        assert (training.per_device_train_batch_size, training.learning_rate) == (128, 2e-5)
        assert (training.num_train_epochs, training.warmup_steps, training.max_grad_norm) == (40, 1237, 2.0)
        assert (retriever.passage_max_length, retriever.num_hard_negatives) == (256, 1)


# ----------------------------------------------------------------------------------------------------- GradCache
class _SavedTensorMeter:
    """Peak bytes of activations held by autograd for backward (parameters excluded)."""

    def __init__(self, models):
        self.params = {p.untyped_storage().data_ptr() for m in models for p in m.parameters()}
        self.live = self.peak = 0

    def pack(self, tensor):
        size = (
            0
            if tensor.untyped_storage().data_ptr() in self.params
            else tensor.numel() * tensor.element_size()
        )
        self.live += size
        self.peak = max(self.peak, self.live)
        return _Packed(tensor, size, self)

    @staticmethod
    def unpack(packed):
        return packed.tensor


class _Packed:
    def __init__(self, tensor, size, meter):
        self.tensor, self.size, self.meter = tensor, size, meter

    def __del__(self):
        self.meter.live -= self.size


def _grad_step(tiny_bert_config, tokenizer, chunk_size: int):
    config = BertConfig(
        **{**tiny_bert_config.to_dict(), "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    )
    torch.manual_seed(0)
    question_encoder = QuestionEncoder(QuestionEncoderConfig(encoder=config))
    passage_encoder = PassageEncoder(PassageEncoderConfig(encoder=config))
    args = RetrieverArguments(gradient_cache_chunk_size=chunk_size, passage_max_length=48)
    task = RetrieverTask(args, question_encoder, passage_encoder, tokenizer, train_dataset=None)
    batch = task.data_collator()(_examples(8))
    models = task.models()
    meter = _SavedTensorMeter(models.values())
    with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
        loss = task.training_step(models, batch, Accelerator(cpu=True))
    grads = {f"{n}.{k}": p.grad for n, m in models.items() for k, p in m.named_parameters()}
    return loss, grads, meter.peak


def test_gradient_cache_gives_the_same_gradients_with_less_memory(tiny_bert_config, tokenizer):
    loss, grads, plain_peak = _grad_step(tiny_bert_config, tokenizer, chunk_size=0)
    cached_loss, cached_grads, cached_peak = _grad_step(tiny_bert_config, tokenizer, chunk_size=4)
    torch.testing.assert_close(cached_loss, loss)
    assert grads.keys() == cached_grads.keys()
    for name, grad in grads.items():
        if grad is not None:
            torch.testing.assert_close(cached_grads[name], grad, atol=1e-6, rtol=1e-4, msg=name)
    # 8 questions + 16 passages encoded 4 at a time: autograd holds about one chunk of activations at once
    assert cached_peak < 0.35 * plain_peak, (cached_peak, plain_peak)


def _seeded_task(tokenizer, tiny_bert_config, num_train: int, num_dev: int) -> RetrieverTask:
    """A retriever task on freshly seeded tiny towers: `num_train` synthetic training and `num_dev` dev records."""
    torch.manual_seed(0)
    question_encoder = QuestionEncoder(QuestionEncoderConfig(encoder=tiny_bert_config))
    passage_encoder = PassageEncoder(PassageEncoderConfig(encoder=tiny_bert_config))
    rows = _examples(num_train + num_dev)
    return RetrieverTask(
        RetrieverArguments(question_max_length=16, passage_max_length=24),
        question_encoder,
        passage_encoder,
        tokenizer,
        Dataset.from_list(rows[:num_train]),
        Dataset.from_list(rows[num_train:]),
    )


# -------------------------------------------------------------------------------------------- best checkpoint
def test_final_model_is_the_best_evaluation(tmp_path, tokenizer, tiny_bert_config, single_thread):
    # "best" = highest dev loss here, i.e. the untrained model evaluated at step 0: the selection must find it
    task = _seeded_task(tokenizer, tiny_bert_config, num_train=32, num_dev=8)
    initial = {k: v.clone() for k, v in task.question_encoder.state_dict().items()}
    training = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        num_train_epochs=2,
        learning_rate=1e-3,
        eval_on_start=True,
        eval_steps=2,
        greater_is_better=True,
        disable_tqdm=True,
    )
    metrics = Trainer(task, training).train()
    evaluations = [r["eval_loss"] for r in metrics["log_history"] if "eval_loss" in r]
    assert len(evaluations) == 5 and evaluations[0] == max(evaluations)
    assert (metrics["saved_model_step"], metrics["best_step"], metrics["global_step"]) == (0, 0, 8)
    saved = load_file(tmp_path / "question_encoder" / "model.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in initial.items())
    assert (tmp_path / "question_encoder" / "tokenizer_config.json").is_file()


# ------------------------------------------------------------------------------------------------ engine via CLI
def _tiny_setup(
    tmp_path: Path,
    tokenizer,
    tiny_bert_config,
    dropout: float,
    train_size: int,
    shared_paragraphs: bool = False,
    **recipe,
) -> Path:
    """A tiny random BERT backbone folder, synthetic train/dev JSON and a recipe; returns the recipe path.
    `shared_paragraphs`: three consecutive questions share one positive paragraph (SQuAD-style)."""
    config = BertConfig(
        **{
            **tiny_bert_config.to_dict(),
            "hidden_dropout_prob": dropout,
            "attention_probs_dropout_prob": dropout,
        }
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(tmp_path / "backbone")
    tokenizer.save_pretrained(tmp_path / "backbone")
    rows = _examples(train_size + 8)
    if shared_paragraphs:
        for i, row in enumerate(rows):
            row["positive_ctxs"] = rows[i - i % 3]["positive_ctxs"]
    save_retriever_json(Dataset.from_list(rows[:train_size]), tmp_path / "train.json")
    save_retriever_json(Dataset.from_list(rows[train_size:]), tmp_path / "dev.json")
    values = {
        "model_name_or_path": str(tmp_path / "backbone"),
        "train_file": str(tmp_path / "train.json"),
        "dev_file": str(tmp_path / "dev.json"),
        "question_max_length": 16,
        "passage_max_length": 24,
        "learning_rate": 1e-3,
        "warmup_steps": 3,
        "disable_tqdm": True,
        **recipe,
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(values))
    return tmp_path / "recipe.yaml"


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return {
        f"{tower}.{k}": v
        for tower in ("question_encoder", "passage_encoder")
        for k, v in load_file(folder / tower / "model.safetensors").items()
    }


def test_killed_run_resumes_to_the_same_weights(tmp_path, tokenizer, tiny_bert_config, single_thread):
    # 160 examples, batch 4, accumulation 2 -> 20 optimizer steps per epoch, 3 epochs; dropout on, so the random
    # state must be restored too. The kill lands in the second epoch.
    recipe = _tiny_setup(
        tmp_path,
        tokenizer,
        tiny_bert_config,
        dropout=0.1,
        train_size=160,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        num_train_epochs=3,
        save_steps=5,
        save_total_limit=2,
        eval_steps=10,
        logging_steps=1,
        load_best_model_at_end=False,
    )
    reference = tmp_path / "reference"
    assert cli_main(["train-retriever", str(recipe), "--output_dir", str(reference)]) == 0

    run = tmp_path / "run"
    command = cli_command("train-retriever", str(recipe), "--output_dir", str(run))
    kill_once_written(command, run / "checkpoints" / "step_30", subprocess_env())
    assert not (run / "question_encoder").exists(), "the run finished before the kill: make it longer"

    resume(command, subprocess_env())
    expected, actual = _weights(reference), _weights(run)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    history = json.loads((reference / "metrics.json").read_text())["log_history"]
    assert json.loads((run / "metrics.json").read_text())["log_history"] == history


def test_two_processes_train_like_one_process_on_the_global_batch(
    tmp_path, tokenizer, tiny_bert_config, single_thread
):
    # 2 processes x 4 questions = 1 process x 8 questions: same global batches, same loss, same updates, also
    # when a paragraph is the positive of questions in both processes' halves (the passage keys mask the copy)
    recipe = _tiny_setup(
        tmp_path,
        tokenizer,
        tiny_bert_config,
        dropout=0.0,
        train_size=48,
        shared_paragraphs=True,
        num_train_epochs=1,
        logging_steps=1,
    )
    single = tmp_path / "single"
    args = ["train-retriever", str(recipe), "--per_device_train_batch_size"]
    assert cli_main([*args, "8", "--output_dir", str(single)]) == 0
    double = tmp_path / "double"
    # accelerate's own launcher runs a single process with --cpu; torchrun starts the 2 gloo processes
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    launch += ["-m", "dpr_hf.cli"]
    result = subprocess.run(
        [*launch, *args, "4", "--output_dir", str(double)],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    one = json.loads((single / "metrics.json").read_text())
    two = json.loads((double / "metrics.json").read_text())
    losses = [[r["loss"] for r in m["log_history"] if "loss" in r] for m in (one, two)]
    assert len(losses[0]) == 6
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    assert two["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-4)
    expected, actual = _weights(single), _weights(double)
    # The passage encoder's last LayerNorm bias shifts every passage vector alike, which the softmax ignores: its
    # gradient is exactly 0, so both runs only see rounding noise there, which Adam scales up to lr-sized steps.
    shift_invariant = "passage_encoder.encoder.encoder.layer.1.output.LayerNorm.bias"
    for name, weight in expected.items():
        if name != shift_invariant:
            torch.testing.assert_close(actual[name], weight, atol=1e-5, rtol=1e-4, msg=name)


# ------------------------------------------------------------------------------------------------ real training
@pytest.mark.slow
def test_minilm_training_on_squad_improves_dev_loss_and_average_rank(tmp_path):
    """A short real run from the offline MiniLM weights on SQuAD questions (in-batch negatives only), scored as
    the quickstart recipe scores them: cosine at temperature 0.05, which both towers record."""
    from dpr_hf.training.retriever import train_retriever

    data = REPO / "data" / "quickstart"
    retriever_args = RetrieverArguments(
        model_name_or_path="minilm",
        train_file=str(data / "squad-train-subset.json.gz"),
        dev_file=str(data / "squad-dev-subset.json.gz"),
        max_train_samples=192,
        max_eval_samples=160,
        pooling="mean",
        similarity="cosine",
        temperature=0.05,
        question_max_length=32,
        passage_max_length=128,
    )
    training_args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=32,
        learning_rate=5e-5,
        warmup_steps=1,
        max_grad_norm=2.0,
        eval_on_start=True,
        logging_steps=1,
        disable_tqdm=True,
    )
    metrics = train_retriever(retriever_args, training_args)
    evaluations = [r for r in metrics["log_history"] if "eval_loss" in r]
    before, after = evaluations[0], evaluations[-1]
    assert (before["step"], after["step"]) == (0, 6)
    assert after["eval_loss"] < before["eval_loss"]
    assert after["eval_average_rank"] < before["eval_average_rank"]
    for tower in ("question_encoder", "passage_encoder"):
        assert (tmp_path / "out" / tower / "model.safetensors").is_file()
        assert (tmp_path / "out" / tower / "tokenizer.json").is_file()
        config = json.loads((tmp_path / "out" / tower / "config.json").read_text())
        assert (config["normalize"], config["temperature"]) == (True, 0.05)
    saved = json.loads((tmp_path / "out" / "training_args.json").read_text())
    assert saved["pooling"] == "mean" and saved["learning_rate"] == 5e-5


# ---------------------------------------------------------------------------------------------------- trackers
def test_report_to_tensorboard_writes_event_files_with_the_loss(tmp_path, tokenizer, tiny_bert_config):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    task = _seeded_task(tokenizer, tiny_bert_config, num_train=8, num_dev=4)
    training = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=4,
        logging_steps=1,
        report_to="tensorboard",
        disable_tqdm=True,
    )
    metrics = Trainer(task, training).train()
    assert list((tmp_path / "runs").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(tmp_path / "runs"))
    events.Reload()
    losses = [(e.step, e.value) for e in events.Scalars("train/loss")]
    expected = [(r["step"], r["loss"]) for r in metrics["log_history"] if "loss" in r]
    assert [step for step, _ in losses] == [step for step, _ in expected] == [1, 2]
    assert [value for _, value in losses] == pytest.approx([value for _, value in expected], rel=1e-5)
    assert [e.step for e in events.Scalars("eval/loss")] == [2]
    assert "train/learning_rate" in events.Tags()["scalars"]


def test_report_to_takes_lists_and_comma_strings_and_refuses_unknown_trackers():
    assert TrainingArguments(report_to="none").report_to == []
    assert TrainingArguments(report_to="tensorboard,wandb").report_to == ["tensorboard", "wandb"]
    assert TrainingArguments(report_to=["tensorboard"]).report_to == ["tensorboard"]
    assert TrainingArguments().report_to == []
    with pytest.raises(ValueError, match="tensorbored"):
        TrainingArguments(report_to="tensorbored")


# -------------------------------------------------------------------------------------------- one CLI dialect
def _flag_value(name: str, default) -> str:
    """A valid command-line value for a recipe key, other than its default."""
    special = {
        "similarity": "cosine",
        "mixed_precision": "bf16",
        "report_to": "tensorboard",
        "pooling": "mean",
        "optim": "adamw_torch",
    }
    if name in special:
        return special[name]
    if isinstance(default, bool) or name == "greater_is_better":
        return "false" if default else "true"
    if isinstance(default, float) or name == "temperature":
        return "0.25"
    if isinstance(default, int) or name.endswith(("_length", "_samples")):
        return str(default + 3 if default else 64)  # an unset length: 64, a valid reader length
    return "x"


@pytest.mark.parametrize(
    "types", [(RetrieverArguments, TrainingArguments), (ReaderArguments, TrainingArguments)]
)
def test_every_train_flag_takes_kebab_case_and_snake_case_alike(types):
    import dataclasses

    for dataclass_type in types:
        for f in dataclasses.fields(dataclass_type):
            default = None if f.default is dataclasses.MISSING else f.default
            value = _flag_value(f.name, default)
            snake = parse_recipe(types, None, [f"--{f.name}", value])
            kebab = parse_recipe(types, None, [f"--{f.name.replace('_', '-')}", value])
            assert snake == kebab, f.name
            assert snake != parse_recipe(types, None, []), f.name  # the flag set something
    flags = [
        "--learning-rate",
        "3e-4",
        "--resume",
        "--no-load-best-model-at-end",
        "--report-to",
        "tensorboard",
    ]
    kebab = parse_recipe(types, None, flags)
    assert kebab == parse_recipe(
        types, None, [f"--{f[2:].replace('-', '_')}" if f.startswith("--") else f for f in flags]
    )
    assert (kebab[1].learning_rate, kebab[1].resume, kebab[1].load_best_model_at_end) == (3e-4, True, False)


def test_train_commands_named_in_readme_parse():
    """Every `dpr-hf train-*` command of README (flags in either spelling) parses to the values it names."""
    import shlex

    text = (REPO / "README.md").read_text().replace("\\\n", " ")
    commands = [line.strip() for line in text.splitlines() if line.strip().startswith("dpr-hf train-")]
    assert len(commands) >= 2
    for command in commands:
        _, name, recipe, *overrides = shlex.split(command)
        types = (RetrieverArguments if name == "train-retriever" else ReaderArguments, TrainingArguments)
        task_args, training_args = parse_recipe(types, REPO / recipe, overrides)
        for flag, value in zip(overrides[::2], overrides[1::2], strict=True):
            key = flag[2:].replace("-", "_")
            parsed = getattr(task_args, key, getattr(training_args, key, None))
            assert str(parsed) == value or parsed == type(parsed)(value), (command, flag)


def test_old_path_of_the_renamed_dev_evaluation_still_resolves():
    """`evaluate_retriever` of training became `evaluate_dev_pool` (the evaluation package's `evaluate_retriever`
    does something else); dpr_hf 0.1's path keeps the old name for one release."""
    from dpr_hf.training.retriever import evaluate_dev_pool

    sys.modules.pop("dpr_hf.retriever_training", None)  # imported afresh, whatever ran before
    with pytest.warns(DeprecationWarning, match="retriever_training"):
        old = importlib.import_module("dpr_hf.retriever_training")
    assert old.evaluate_retriever is evaluate_dev_pool

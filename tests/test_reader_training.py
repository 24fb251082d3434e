"""Reader training through the shared engine: kill/resume exactness (tiny BERT) and a real MiniLM run."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml
from cli_runs import cli_command, kill_once_written, resume, run_cli, subprocess_env
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]


def _train_results(path: Path) -> Path:
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    records = []
    for i in range(24):
        answer = words[i % len(words)]
        records.append(
            {
                "question": f"which word is number {i}?",
                "answers": [answer],
                "ctxs": [
                    {
                        "id": f"p{i}",
                        "title": f"T{i}",
                        "text": f"word {i} is {answer} and more",
                        "has_answer": True,
                    },
                    {"id": f"n{i}a", "title": "N", "text": f"nothing about {i} here", "has_answer": False},
                    {"id": f"n{i}b", "title": "M", "text": f"still nothing on {i + 1}", "has_answer": False},
                ],
            }
        )
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def test_kill_and_resume_gives_the_same_weights(tmp_path, tiny_reader, tokenizer):
    model_dir = tmp_path / "tiny-reader"
    tiny_reader.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "model_name_or_path": str(model_dir),
                "train_file": str(_train_results(tmp_path / "train.json")),
                "max_length": 32,
                "passages_per_question": 3,
                "max_steps": 60,
                "per_device_train_batch_size": 2,
                "learning_rate": 1e-3,
                "save_steps": 10,
                "logging_steps": 5,
                "disable_tqdm": True,
                "seed": 3,
            }
        ),
        encoding="utf-8",
    )
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    env = subprocess_env(CUDA_VISIBLE_DEVICES="")
    run_cli(cli_command("train-reader", str(recipe), "--output_dir", str(straight)), env)

    command = cli_command("train-reader", str(recipe), "--output_dir", str(interrupted))
    kill_once_written(command, interrupted / "checkpoints" / "step_10" / "trainer_state.json", env)
    assert not (interrupted / "metrics.json").exists(), "training finished before it could be killed"

    resume(command, env)
    expected = load_file(straight / "reader" / "model.safetensors")
    resumed = load_file(interrupted / "reader" / "model.safetensors")
    assert expected.keys() == resumed.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6, msg=name)
    initial = load_file(model_dir / "model.safetensors")
    assert not torch.equal(initial["qa_outputs.weight"], expected["qa_outputs.weight"])  # it did train
    # read later at the length it was trained at
    assert json.loads((straight / "reader" / "config.json").read_text())["max_seq_length"] == 32
    metrics = json.loads((interrupted / "metrics.json").read_text())
    assert metrics["global_step"] == 60
    assert (interrupted / "reader" / "tokenizer.json").exists()


def test_train_max_length_trains_short_and_reads_long(tmp_path, tiny_reader, tokenizer):
    """Training windows of `train_max_length` tokens; the saved reader reads at `max_length`."""
    from dpr_hf.data.reader import load_reader_data, tokenize_reader_data
    from dpr_hf.training.reader import ReaderArguments, ReaderTask

    args = ReaderArguments(train_file="unused", max_length=64, train_max_length=24, passages_per_question=3)
    train, _ = tokenize_reader_data(
        load_reader_data(_train_results(tmp_path / "train.json")), tokenizer, max_length=24
    )
    reader = copy.deepcopy(tiny_reader)  # the task writes the read length into the reader's config
    task = ReaderTask(args, reader, tokenizer, train)
    batch = task.data_collator()([train[i] for i in range(4)])
    assert batch["input_ids"].shape[:2] == (4, 3) and batch["input_ids"].shape[2] <= 24
    assert reader.config.max_seq_length == 64
    with pytest.raises(ValueError, match="train_max_length must be >= 16 tokens, got 0"):
        ReaderArguments(train_max_length=0)
    # too short for a question, a title and the windows' overlap: named before the tokenizer panics
    with pytest.raises(ValueError, match="max_length must be >= 16 tokens, got 12"):
        ReaderArguments(max_length=12)
    # in a recipe, the error names the recipe file
    from dpr_hf.training.arguments import TrainingArguments, parse_recipe

    recipe = tmp_path / "reader.yaml"
    recipe.write_text("train_file: unused\ntrain_max_length: 12\n")
    with pytest.raises(ValueError, match=r"reader\.yaml: train_max_length must be >= 16 tokens, got 12"):
        parse_recipe([ReaderArguments, TrainingArguments], recipe)


@pytest.mark.parametrize("name", ["nq", "quickstart", "squad"])
def test_shipped_reader_recipes_parse(name):
    """Every shipped reader recipe parses; a dev file (for checkpoint selection) comes with its passages."""
    from dpr_hf.training.arguments import TrainingArguments, parse_recipe
    from dpr_hf.training.reader import ReaderArguments

    reader, training = parse_recipe(
        [ReaderArguments, TrainingArguments], REPO / "recipes" / name / "reader.yaml"
    )
    assert reader.train_file and training.output_dir
    assert 16 <= (reader.train_max_length or reader.max_length) <= reader.max_length
    if reader.dev_file and name != "nq":
        assert reader.dev_retrieval_results
    if name == "quickstart":  # evaluated by `make quickstart` after training, not during it
        assert not reader.dev_file


@pytest.mark.slow
def test_training_from_minilm_raises_dev_exact_match(tmp_path, single_thread):
    """A real run: the offline MiniLM backbone, 640 SQuAD train questions (gold paragraph, 128 tokens), then dev
    EM/F1 on 100 dev questions reading BM25's top passage. The untrained reader (evaluated at step 0) is at ~0 EM."""
    from dpr_hf.training.engine import TrainingArguments
    from dpr_hf.training.reader import ReaderArguments, train_reader

    data = REPO / "data" / "quickstart"
    args = ReaderArguments(
        model_name_or_path="minilm",
        train_file=str(data / "squad-train-subset.json.gz"),
        dev_file=str(data / "squad-dev-subset.json.gz"),
        max_train_samples=640,
        max_eval_samples=100,
        max_length=128,
        passages_per_question=1,
        eval_passages_per_question=1,
        num_retrieved=1,
    )
    training = TrainingArguments(
        output_dir=str(tmp_path / "reader-run"),
        num_train_epochs=1,
        per_device_train_batch_size=4,
        learning_rate=2e-4,
        warmup_steps=3,
        max_grad_norm=2.0,
        logging_steps=20,
        eval_on_start=True,
        disable_tqdm=True,
    )
    metrics = train_reader(args, training)
    evaluations = [record for record in metrics["log_history"] if "eval_em" in record]
    untrained, trained = evaluations[0], evaluations[-1]
    assert untrained["step"] == 0 and trained["step"] == metrics["global_step"] > 100
    assert untrained["eval_em"] <= 2.0
    assert trained["eval_em"] >= untrained["eval_em"] + 5.0, evaluations
    assert trained["eval_f1"] >= untrained["eval_f1"] + 5.0, evaluations
    assert (tmp_path / "reader-run" / "reader" / "model.safetensors").exists()
    assert json.loads((tmp_path / "reader-run" / "metrics.json").read_text())["best_em"] == trained["eval_em"]

"""Retriever training stays exact across processes (issue 18, item 4), on the tiny random BERT:

- SQuAD-style data (several questions per paragraph, paragraphs that are other questions' hard negatives): 2 gloo
  processes with batch b give the loss and gradients of 1 process with batch 2b, plain and with GradCache;
- GradCache replays dropout (the gradients of the loss its first pass computed), under DDP (gradients synced once,
  chunk counts that differ between processes) and under bf16 autocast;
- the dev evaluation, chunked and sharded over 2 processes, gives the single-process metrics.

Every run goes through `accelerate` as the engine uses it (`Accelerator(cpu=True)`, `prepare`, DDP over gloo), in
spawned processes: one process for the single-process runs, two for the 2-process ones, started together.
"""

from __future__ import annotations

import datetime
import gc
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

BATCH = 8  # the global batch: 8 questions, 4 per process under 2 processes
CHUNK = 2  # GradCache chunks: 4 and 5 passages in the 2 processes' batches, so 2 and 3 passage chunks
MAX_LENGTHS = {"question_max_length": 16, "passage_max_length": 32}


def _passage(pid: str, title: str, text: str) -> dict:
    return {"id": pid, "title": title, "text": text}


def _squad_rows(questions_per_paragraph: list[int]) -> list[dict]:
    """SQuAD-style records: consecutive questions share a paragraph; a question's hard negative is the next
    paragraph of the article (another question's positive) and every question has the same filler negative.
    The last paragraph has no id, so its identity is its title and text."""
    topics = ["the river delta", "the castle walls", "the steam engine", "the violin maker", "the glacier"]
    paragraphs = [
        _passage(
            f"para-{k}" if k < len(questions_per_paragraph) - 1 else "", "Article", f"{topic} is here {k}"
        )
        for k, topic in enumerate(topics[: len(questions_per_paragraph)])
    ]
    filler = _passage("filler", "", "a paragraph about nothing in particular")
    rows = []
    for k, count in enumerate(questions_per_paragraph):
        for j in range(count):
            rows.append(
                {
                    "question": f"question {j} about {topics[k]}?",
                    "answers": [topics[k]],
                    "positive_ctxs": [paragraphs[k]],
                    "hard_negative_ctxs": [paragraphs[(k + 1) % len(paragraphs)]],
                    "negative_ctxs": [filler],
                }
            )
    return rows


TRAIN_ROWS = _squad_rows([3, 2, 1, 2])  # paragraph 1 has a question in each process's half
DEV_ROWS = _squad_rows([3, 1, 4, 2, 1])

# name -> (mixed precision, dropout, GradCache chunk size (0 = plain step), drop the passage keys)
STEPS = {
    "plain": ("no", 0.0, 0, False),
    "plain_without_keys": ("no", 0.0, 0, True),
    "cache": ("no", 0.0, CHUNK, False),
    "plain_dropout": ("no", 0.1, 0, False),
    "cache_dropout_one_chunk": ("no", 0.1, 64, False),
    "cache_dropout": ("no", 0.1, CHUNK, False),
}
SINGLE_ONLY = {  # runs that change the process-wide precision (accelerate's state is per process)
    "bf16_plain": ("bf16", 0.0, 0, False),
    "bf16_cache": ("bf16", 0.0, CHUNK, False),
}
ACCUMULATED = {"accumulate_plain": 0, "accumulate_cache": CHUNK}  # 2 micro-batches per step: chunk size
EVAL_CHUNKS = {"eval_whole": 10_000, "eval_chunked": 3}


def _encoders(config: dict, dropout: float):
    from transformers import BertConfig

    from dpr_hf import PassageEncoder, PassageEncoderConfig, QuestionEncoder, QuestionEncoderConfig

    backbone = BertConfig(
        **{**config, "hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    )
    torch.manual_seed(0)
    return (
        QuestionEncoder(QuestionEncoderConfig(encoder=backbone)),
        PassageEncoder(PassageEncoderConfig(encoder=backbone)),
    )


def _accelerator(mixed_precision: str):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if (
        int(os.environ["WORLD_SIZE"]) == 1
    ):  # a new precision needs a new state (one process: nothing to tear down)
        AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(cpu=True, mixed_precision=mixed_precision)


def _reference_step(task, models, batch, accelerator) -> torch.Tensor:
    """What GradCache computes the gradient of: the loss of the chunks encoded in order, with autograd."""
    vectors = []
    for name, key in (("question_encoder", "question"), ("passage_encoder", "passage")):
        features = batch[key]
        count = features["input_ids"].shape[0]
        chunks = [{k: v[i : i + CHUNK] for k, v in features.items()} for i in range(0, count, CHUNK)]
        vectors.append(torch.cat([models[name](**chunk).pooler_output for chunk in chunks]))
    loss = task._loss(*vectors, batch)
    accelerator.backward(loss)
    return loss.detach()


def _step(name: str, spec: tuple, config: dict, tokenizer, rows: list[dict], rank: int, accelerator) -> dict:
    from dpr_hf.training.retriever import RetrieverArguments, RetrieverTask

    _, dropout, chunk, drop_keys = spec
    question_encoder, passage_encoder = _encoders(config, dropout)
    args = RetrieverArguments(gradient_cache_chunk_size=chunk, num_other_negatives=1, **MAX_LENGTHS)
    task = RetrieverTask(args, question_encoder, passage_encoder, tokenizer, train_dataset=None)
    batch = task.data_collator()(rows)
    if drop_keys:
        del batch["passage_keys"]
    models = dict(zip(task.models(), accelerator.prepare(question_encoder, passage_encoder), strict=True))
    torch.manual_seed(100 + rank)  # dropout: the same masks for every run of this process
    if name == "reference_dropout":
        loss = _reference_step(task, models, batch, accelerator)
    else:
        loss = task.training_step(models, batch, accelerator)
    grads = {
        f"{tower}.{key}": param.grad.clone()
        for tower, model in task.models().items()
        for key, param in model.named_parameters()
        if param.grad is not None
    }
    return {"loss": loss, "grads": grads, "num_passages": batch["passage"]["input_ids"].shape[0]}


def _micro_batches(rank: int, world_size: int) -> list[list[dict]]:
    """Global micro-batch m holds the m-th pair of each process's 4 questions; one process takes both pairs."""
    ranks = [rank] if world_size == 2 else [0, 1]
    return [[row for r in ranks for row in TRAIN_ROWS[4 * r + 2 * m : 4 * r + 2 * m + 2]] for m in range(2)]


def _accumulated_step(
    chunk: int, config: dict, tokenizer, micro_batches: list[list[dict]], accelerator
) -> dict:
    """One optimizer step of 2 micro-batches under `accelerator.accumulate`, as the engine runs it: DDP must
    not sync after the first (the GradCache step's own `no_sync` nests in accumulate's) and sync after the second.
    """
    from dpr_hf.training.retriever import RetrieverArguments, RetrieverTask

    question_encoder, passage_encoder = _encoders(config, 0.0)
    args = RetrieverArguments(gradient_cache_chunk_size=chunk, num_other_negatives=1, **MAX_LENGTHS)
    task = RetrieverTask(args, question_encoder, passage_encoder, tokenizer, train_dataset=None)
    models = dict(zip(task.models(), accelerator.prepare(question_encoder, passage_encoder), strict=True))
    accelerator.gradient_accumulation_steps, accelerator.step = 2, 0
    first_grads = None
    for micro in micro_batches:
        with accelerator.accumulate(*models.values()):
            task.training_step(models, task.data_collator()(micro), accelerator)
        if first_grads is None:
            first_grads = {k: p.grad.clone() for k, p in question_encoder.named_parameters()}
    accelerator.gradient_accumulation_steps = 1
    grads = {
        f"{tower}.{key}": param.grad.clone()
        for tower, model in task.models().items()
        for key, param in model.named_parameters()
        if param.grad is not None
    }
    return {"grads": grads, "first_question_grads": first_grads}


def _evaluation(chunk: int, config: dict, tokenizer) -> dict:
    from dpr_hf.training.retriever import RetrieverArguments, evaluate_dev_pool

    question_encoder, passage_encoder = _encoders(config, 0.0)
    args = RetrieverArguments(eval_chunk_size=chunk, num_other_negatives=1, **MAX_LENGTHS)
    return evaluate_dev_pool(
        question_encoder.eval(), passage_encoder.eval(), tokenizer, DEV_ROWS, args, batch_size=4
    )


def _worker(rank: int, world_size: int, port: int, out_dir: str, config: dict, tokenizer_dir: str) -> None:
    from transformers import AutoTokenizer

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
    )
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    share = len(TRAIN_ROWS) // world_size
    rows = TRAIN_ROWS[rank * share : (rank + 1) * share]
    steps = {**STEPS, "reference_dropout": STEPS["cache_dropout"], **(SINGLE_ONLY if world_size == 1 else {})}
    results = {}
    accelerator = None
    for name, spec in steps.items():
        if accelerator is None or accelerator.mixed_precision != spec[0]:
            accelerator = _accelerator(spec[0])
        if name == "reference_dropout" and world_size > 1:
            continue
        results[name] = _step(name, spec, config, tokenizer, rows, rank, accelerator)
    if accelerator.mixed_precision != "no":
        accelerator = _accelerator("no")
    for name, chunk in ACCUMULATED.items():
        micro_batches = _micro_batches(rank, world_size)
        results[name] = _accumulated_step(chunk, config, tokenizer, micro_batches, accelerator)
    for name, chunk in EVAL_CHUNKS.items():
        results[name] = _evaluation(chunk, config, tokenizer)
    torch.save(results, Path(out_dir) / f"{rank}.pt")
    # free DDP's reducers before the gloo group goes (see Trainer.train: a hang at exit otherwise)
    accelerator.free_memory()
    gc.collect()
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_bert_config, minilm_path) -> dict[int, list[dict]]:
    """Every run, by world size (1, 2), then rank: the single-process and the 2-process group at once."""
    context = mp.get_context("spawn")
    folders, processes = {}, []
    for world_size in (1, 2):
        folders[world_size] = tmp_path_factory.mktemp(f"world{world_size}")
        port = _free_port()
        for rank in range(world_size):
            args = (rank, world_size, port, str(folders[world_size]), tiny_bert_config.to_dict(), minilm_path)
            processes.append(context.Process(target=_worker, args=args))
    for process in processes:
        process.start()
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=600)
    for process in processes:
        process.join(timeout=max(1.0, (deadline - datetime.datetime.now()).total_seconds()))
    for process in processes:
        if process.exitcode is None:
            process.kill()
    assert [p.exitcode for p in processes] == [0, 0, 0]
    return {w: [torch.load(folders[w] / f"{r}.pt") for r in range(w)] for w in (1, 2)}


def _relative_error(actual: dict, expected: dict) -> float:
    """|actual - expected| / |expected| over all gradients as one vector. Not element by element: at random
    initialisation every passage vector is nearly the same, so the loss gradient is a difference of nearly equal
    terms, and gradients that are 0 in exact arithmetic (a key bias, the passage tower's last LayerNorm bias) hold
    rounding noise; any reordering of the sums (chunks, processes) moves single elements by 1e-3 of their size."""
    assert actual.keys() == expected.keys()
    difference = torch.cat([(actual[k] - expected[k]).flatten() for k in expected])
    return (difference.norm() / torch.cat([v.flatten() for v in expected.values()]).norm()).item()


def test_two_processes_on_shared_paragraphs_train_like_one_process_with_the_global_batch(runs):
    (single,), double = runs[1], runs[2]
    # the paragraphs shared between the halves are encoded once in one process, once per process in two
    assert single["plain"]["num_passages"] < sum(r["plain"]["num_passages"] for r in double)
    for name in ("plain", "cache"):
        for result in double:
            torch.testing.assert_close(result[name]["loss"], single["plain"]["loss"])
            # DDP averages the processes' gradients: each equals the one-process gradient of the global batch
            # (measured: 5e-5, as large as one process's GradCache vs plain step, 2e-5)
            assert _relative_error(result[name]["grads"], single["plain"]["grads"]) < 1e-3
    # without the passage keys a shared paragraph is a false negative: the test can tell (measured: 0.23)
    for result in double:
        assert abs(result["plain_without_keys"]["loss"] - single["plain"]["loss"]) > 1e-2
        assert _relative_error(result["plain_without_keys"]["grads"], single["plain"]["grads"]) > 1e-1
    # in one process the collator already encodes each paragraph once: the keys change nothing
    assert torch.equal(single["plain_without_keys"]["loss"], single["plain"]["loss"])
    assert _relative_error(single["plain_without_keys"]["grads"], single["plain"]["grads"]) == 0


def test_gradient_cache_replays_dropout(runs):
    (single,) = runs[1]
    assert abs(single["plain_dropout"]["loss"] - single["plain"]["loss"]) > 1e-2  # dropout is on
    # one chunk draws the plain step's masks: the plain step's loss and gradients
    torch.testing.assert_close(single["cache_dropout_one_chunk"]["loss"], single["plain_dropout"]["loss"])
    assert (
        _relative_error(single["cache_dropout_one_chunk"]["grads"], single["plain_dropout"]["grads"]) < 1e-5
    )
    # several chunks: the gradients of the loss the first pass computed, with the masks it drew (measured: 3e-8;
    # other masks, e.g. the plain step's: 0.5)
    torch.testing.assert_close(single["cache_dropout"]["loss"], single["reference_dropout"]["loss"])
    assert _relative_error(single["cache_dropout"]["grads"], single["reference_dropout"]["grads"]) < 1e-5
    assert _relative_error(single["cache_dropout"]["grads"], single["plain_dropout"]["grads"]) > 1e-1


def test_gradient_cache_under_two_processes_syncs_gradients_once(runs):
    double = runs[2]
    # chunk counts differ between the processes: DDP must still sync each tower once per step
    assert [-(-r["cache"]["num_passages"] // CHUNK) for r in double] == [2, 3]
    for name, reference in (("cache", "plain"), ("cache_dropout_one_chunk", "plain_dropout")):
        for result in double:
            torch.testing.assert_close(result[name]["loss"], result[reference]["loss"])
            assert _relative_error(result[name]["grads"], result[reference]["grads"]) < 1e-3, name
    # synchronised: both processes hold the same (averaged) gradients, also with dropout and several chunks
    first, second = (r["cache_dropout"]["grads"] for r in double)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_gradient_cache_with_gradient_accumulation_syncs_on_the_last_micro_batch_only(runs):
    (single,), double = runs[1], runs[2]
    for result in (single, *double):
        error = _relative_error(result["accumulate_cache"]["grads"], result["accumulate_plain"]["grads"])
        assert error < 1e-3
    # two processes: after the first micro-batch each holds its own gradients, after the second the same ones
    first = [r[n]["first_question_grads"] for r in double for n in ACCUMULATED]
    assert _relative_error(first[0], first[2]) > 1e-2 and _relative_error(first[1], first[3]) > 1e-2
    last = [r[n]["grads"] for r in double for n in ACCUMULATED]
    assert all(torch.equal(last[0][k], last[2][k]) and torch.equal(last[1][k], last[3][k]) for k in last[0])
    # and those of one process accumulating over the same global micro-batches
    for name in ACCUMULATED:
        assert _relative_error(double[0][name]["grads"], single["accumulate_plain"]["grads"]) < 1e-3, name


def test_gradient_cache_under_bf16_autocast(runs):
    (single,) = runs[1]
    fp32, plain, cached = (single[n] for n in ("plain", "bf16_plain", "bf16_cache"))
    assert plain["loss"] != fp32["loss"]  # autocast is on
    torch.testing.assert_close(plain["loss"], fp32["loss"], atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(cached["loss"], plain["loss"], atol=1e-2, rtol=1e-2)
    # within bf16's precision (8 bits of mantissa): the bf16 plain step is itself 2e-2 from fp32; GradCache is
    # as close to the bf16 plain step (measured: 1.6e-2) and no further from fp32 than it (2.3e-2)
    plain_error = _relative_error(plain["grads"], fp32["grads"])
    assert plain_error < 5e-2
    assert _relative_error(cached["grads"], plain["grads"]) < 5e-2
    assert _relative_error(cached["grads"], fp32["grads"]) < 2 * plain_error


def test_dev_evaluation_is_chunked_and_sharded_with_the_same_metrics(runs):
    (single,), double = runs[1], runs[2]
    whole = single["eval_whole"]
    assert whole["num_questions"] == len(DEV_ROWS)
    for result in (single["eval_chunked"], *(r[n] for r in double for n in EVAL_CHUNKS)):
        assert result.keys() == whole.keys()
        for key, value in whole.items():
            assert result[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key

"""`--backend auto`: a measured choice that passes the cosine guard, cached once, read back without timing."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import load_from_disk
from tiny_qa_system import PASSAGES

from dpr_hf import PassageEncoder, QuestionEncoder, encoding
from dpr_hf.cli import main
from dpr_hf.data import load_passages, load_questions
from dpr_hf.encoding import encode, encode_passages
from dpr_hf.export import auto
from dpr_hf.export.auto import (
    CHOICE_FILE,
    EXPORT_MIN_TEXTS,
    GUARD_COSINE,
    MEASURE_MIN_TOKENS,
    MIN_SPEEDUP,
    TIMED_ROUNDS,
    available_candidates,
    candidate_name,
    choose_backend,
    close_call,
    cpu_has_bf16,
    stream_batch_size,
)
from dpr_hf.export.backends import PreparedEncoder, load_encoder, load_system, prepare_encoder

TORCH_ONLY = [("torch", "fp32"), ("torch", "bf32")]
QUICKSTART_DEV = Path(__file__).resolve().parents[1] / "data" / "quickstart" / "squad-dev-subset.json.gz"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One dpr_hf cache for the module: the tiny encoder's ONNX export is made once (the choices file is reset
    by each test that needs a fresh one)."""
    return tmp_path_factory.mktemp("dpr_hf_cache")


@pytest.fixture
def encoder_dir(cache, tmp_path_factory, tiny_passage_encoder, tokenizer, monkeypatch, single_thread):
    """The tiny passage encoder's folder, measured on one thread: on a busy 2-core machine two threads of a tiny
    model spin against the other jobs and take seconds per batch."""
    monkeypatch.setenv("DPR_HF_CACHE", str(cache))
    (cache / CHOICE_FILE).unlink(missing_ok=True)
    folder = tmp_path_factory.getbasetemp() / "auto_pair" / "passage_encoder"
    if not folder.exists():
        tiny_passage_encoder.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return folder


def _entries(cache) -> dict:
    return json.loads((cache / CHOICE_FILE).read_text())["choices"]


def _min_cosine(got, want) -> float:
    got, want = torch.as_tensor(np.asarray(got)), torch.as_tensor(np.asarray(want))
    return torch.nn.functional.cosine_similarity(got, want).min().item()


def test_auto_picks_a_guarded_backend_and_caches_it(encoder_dir, cache, tokenizer):
    candidates = available_candidates()
    assert ("onnx", "fp32") in candidates and (
        "openvino",
        "fp32",
    ) in candidates  # the test extras install them
    choice = choose_backend(encoder_dir, "passage")
    assert choice.measured and str(cache / CHOICE_FILE) in choice.reason
    (entry,) = _entries(cache).values()
    assert (entry["backend"], entry["precision"]) == (choice.backend, choice.precision)
    assert entry["key"]["threads"] == torch.get_num_threads() and entry["key"]["encoder"]["hidden_size"] == 32
    measurements = entry["measurements"]
    assert set(measurements) == {f"{backend} {precision}" for backend, precision in candidates}
    chosen = measurements[f"{choice.backend} {choice.precision}"]
    assert chosen["cosine"] >= GUARD_COSINE and "rejected" not in chosen
    timed = {name: m["seconds"] for name, m in measurements.items() if "seconds" in m}
    (rounds,) = {m["rounds"] for m in measurements.values() if "seconds" in m}
    # one round only where its times left no close call (then they are the recorded ones)
    assert rounds == TIMED_ROUNDS or (rounds == 1 and not close_call(timed, "torch fp32"))
    if (choice.backend, choice.precision) != ("torch", "fp32"):
        assert measurements["torch fp32"]["seconds"] / chosen["seconds"] >= MIN_SPEEDUP

    # What auto loads encodes within the guard of torch fp32 on texts it was not measured on.
    model, precision = load_encoder(encoder_dir, "passage", backend="auto")
    got = encode_passages(model, tokenizer, PASSAGES, precision=precision, show_progress=False)["embeddings"]
    reference, _ = load_encoder(encoder_dir, "passage", backend="torch")
    want = encode_passages(reference, tokenizer, PASSAGES, show_progress=False)["embeddings"]
    assert _min_cosine(got, want) >= GUARD_COSINE

    # A second run reads the file: no timing, the file untouched.
    before = (cache / CHOICE_FILE).stat().st_mtime_ns
    again = choose_backend(encoder_dir, "passage")
    assert not again.measured and (again.backend, again.precision) == (choice.backend, choice.precision)
    assert (cache / CHOICE_FILE).stat().st_mtime_ns == before and len(_entries(cache)) == 1


def test_a_second_timed_round_only_where_the_first_leaves_a_close_call():
    reference = "torch fp32"
    assert not close_call({reference: 1.0, "streams": 0.7}, reference)  # 1.4x: streams win either way
    assert not close_call({reference: 1.0, "onnx": 1.5}, reference)  # far slower: the reference stays
    assert close_call({reference: 1.0, "bf32": 1 / MIN_SPEEDUP}, reference)  # at the bar
    assert close_call({reference: 1.0, "bf32": 0.9}, reference)  # 1.11x: noise could undo it
    assert close_call({reference: 1.0, "streams": 0.5, "bf32": 0.55}, reference)  # which of two winners
    assert not close_call({reference: 1.0}, reference)


def test_a_changed_key_measures_again_beside_the_first_choice(encoder_dir, cache):
    choose_backend(encoder_dir, "passage", TORCH_ONLY)
    assert choose_backend(encoder_dir, "passage", TORCH_ONLY, min_cosine=0.9999).measured
    assert sorted(entry["key"]["min_cosine"] for entry in _entries(cache).values()) == [0.999, 0.9999]
    assert not choose_backend(encoder_dir, "passage", TORCH_ONLY).measured


def test_without_onnx_or_openvino_auto_stays_on_torch(encoder_dir, cache):
    choice = choose_backend(encoder_dir, "passage", TORCH_ONLY)
    assert choice.backend == "torch" and choice.measured
    only = choose_backend(encoder_dir, "passage", [("torch", "fp32")])
    assert (only.backend, only.precision, only.measured) == ("torch", "fp32", False)


def test_rejected_candidates_are_reported_and_never_chosen(encoder_dir, cache):
    """int8 loses more than a strict guard allows (on this tiny model it passes 0.999); a precision a backend
    lacks cannot run."""
    candidates = [("torch", "fp32"), ("onnx", "int8"), ("openvino", "bf16")]
    choice = choose_backend(encoder_dir, "passage", candidates, min_cosine=0.99999)
    assert (choice.backend, choice.precision) == ("torch", "fp32")
    measurements = next(iter(_entries(cache).values()))["measurements"]
    assert measurements["onnx int8"]["cosine"] < 0.99999
    assert measurements["onnx int8"]["rejected"].startswith("cosine")
    assert "not offered by the openvino backend" in measurements["openvino bf16"]["rejected"]
    assert "onnx int8 rejected: cosine" in choice.reason and "openvino bf16 rejected" in choice.reason


@pytest.mark.parametrize(
    "content", ["{not json", json.dumps({"version": 1, "choices": []}), json.dumps(["a list"])]
)
def test_a_corrupt_cache_is_moved_aside_and_measured_again(encoder_dir, cache, caplog, content):
    (cache / CHOICE_FILE).write_text(content)
    with caplog.at_level(logging.WARNING):
        choice = choose_backend(encoder_dir, "passage", TORCH_ONLY)
    assert choice.measured and "is not a backend choice cache" in caplog.text
    assert (cache / f"{CHOICE_FILE}.corrupt").read_text() == content  # nothing lost
    assert len(_entries(cache)) == 1


def test_a_cached_entry_naming_no_backend_is_measured_again(encoder_dir, cache):
    choose_backend(encoder_dir, "passage", TORCH_ONLY)
    content = json.loads((cache / CHOICE_FILE).read_text())
    (entry,) = content["choices"].values()
    entry["backend"] = "cuda"
    (cache / CHOICE_FILE).write_text(json.dumps(content))
    choice = choose_backend(encoder_dir, "passage", TORCH_ONLY)
    assert choice.measured and choice.backend == "torch"
    assert next(iter(_entries(cache).values()))["backend"] == "torch"


def test_an_explicit_precision_under_auto_is_not_timed(encoder_dir, cache):
    model, precision = load_encoder(encoder_dir, "passage", backend="auto", precision="bf32")
    assert precision == "bf32" and model.__class__.__name__ == "PassageEncoder"
    model, precision = load_encoder(encoder_dir, "passage", backend="auto", precision="int8")
    assert precision is None and model.quantized
    assert not (cache / CHOICE_FILE).exists()


def test_encode_uses_auto_by_default_and_an_explicit_backend_wins(
    encoder_dir, cache, tmp_path, monkeypatch, caplog
):
    passages = tmp_path / "passages.jsonl"
    passages.write_text("".join(json.dumps(p) + "\n" for p in PASSAGES))
    argv = ["encode", "--passage-encoder", str(encoder_dir.parent), "--passages", str(passages), "--output"]

    assert main([*argv, str(tmp_path / "torch"), "--backend", "torch"]) == 0
    assert not (cache / CHOICE_FILE).exists()  # explicit: nothing measured
    monkeypatch.setenv("DPR_HF_BACKEND", "onnx")  # the flag beats the environment too
    assert main([*argv, str(tmp_path / "torch2"), "--backend", "torch"]) == 0
    assert not (cache / CHOICE_FILE).exists()

    monkeypatch.delenv("DPR_HF_BACKEND")
    monkeypatch.setattr(auto, "MEASURE_MIN_TOKENS", 0)  # a handful of passages: measure anyway
    torch.set_num_threads(
        2
    )  # streams compete, whatever other tests left in the cache (single_thread restores)
    with caplog.at_level(logging.WARNING):
        assert main([*argv, str(tmp_path / "auto")]) == 0
    (line,) = [record.getMessage() for record in caplog.records if "backend auto:" in record.getMessage()]
    (entry,) = _entries(cache).values()
    name = candidate_name((entry["backend"], entry["precision"], entry["streams"]))
    assert line.startswith(f"backend auto: {name} (")
    want = load_from_disk(str(tmp_path / "torch"))["embeddings"]
    assert _min_cosine(load_from_disk(str(tmp_path / "auto"))["embeddings"], want) >= GUARD_COSINE
    assert load_from_disk(str(tmp_path / "torch2"))["embeddings"] == want


def test_a_bad_backend_in_the_environment_is_a_usage_error(encoder_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DPR_HF_BACKEND", "tpu")
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "encode",
                "--passage-encoder",
                str(encoder_dir),
                "--passages",
                "x",
                "--output",
                str(tmp_path / "o"),
            ]
        )
    assert exit_info.value.code == 2 and "'tpu' is not one of auto, torch" in capsys.readouterr().err


def test_a_system_takes_no_auto_backend(tmp_path):
    """The cosine guard vouches for embeddings, not for a reader's answers: systems name their backend."""
    with pytest.raises(ValueError, match="system's backend must be one of"):
        load_system(tmp_path, backend="auto")


def test_streams_race_on_the_run_where_torch_has_threads_and_the_verdict_is_kept(
    encoder_dir, cache, tokenizer, monkeypatch
):
    """With 2 threads, one single-thread stream per thread is a candidate; against torch fp32 alone (the same
    kernels) nothing is timed on a sample: the run's first texts are read both ways, every text keeps its one-stream
    embedding, and the verdict is cached as the plan (streams and batch size) later runs read without timing."""
    torch.set_num_threads(2)  # the fixture's single_thread restores the count
    candidates = available_candidates(num_texts=100)
    assert ("torch", "fp32", 2) in candidates
    assert not any(backend in ("onnx", "openvino") for backend, *_ in candidates)  # export would not pay
    streamed = [("torch", "fp32"), ("torch", "fp32", 2)]
    choice = choose_backend(encoder_dir, "passage", streamed, batch_size=16)
    assert choice.race is not None and not choice.measured and not (cache / CHOICE_FILE).exists()
    monkeypatch.setattr(encoding, "RACE_TOKENS", 400)
    texts = [" ".join(PASSAGES[i % len(PASSAGES)]["text"].split()[: 5 + i % 30]) for i in range(80)]
    model = load_encoder(encoder_dir, "passage", backend="torch")[0]
    raced = encode(model, tokenizer, texts, [""] * len(texts), race=choice.race)
    one = encode(model, tokenizer, texts, [""] * len(texts), batch_size=16)
    assert _min_cosine(raced, one) > 0.99999
    (entry,) = _entries(cache).values()
    assert set(entry["measurements"]) == {"torch fp32", "torch fp32 x2 streams"}
    length = json.loads((encoder_dir / "config.json").read_text())["max_seq_length"]
    plan = (2, stream_batch_size(min(length, 256))) if choice.race.verdict == 2 else (1, 16)
    assert (entry["streams"], entry["batch_size"]) == plan
    again = choose_backend(encoder_dir, "passage", streamed, batch_size=16)
    assert not again.measured and again.race is None and (again.streams, again.batch_size) == plan
    assert choose_backend(encoder_dir, "passage", streamed, batch_size=32).race is not None


def test_onnx_candidates_need_a_run_big_enough_to_repay_the_export_or_an_export():
    small = available_candidates(num_texts=EXPORT_MIN_TEXTS - 1)
    assert [c for c in small if c[0] != "torch"] == []
    for candidates in (
        available_candidates(num_texts=EXPORT_MIN_TEXTS),
        available_candidates(10, exported=True),
    ):
        assert ("onnx", "fp32") in candidates and ("openvino", "fp32") in candidates


def test_bf16_competes_only_where_the_cpu_has_bf16_hardware():
    """Elsewhere bf16 is emulated, several times slower than fp32: timing it would only cost the calibration."""
    candidates = available_candidates(num_texts=100)
    bf16 = [candidate for candidate in candidates if candidate[1] == "bf16"]
    threads = torch.get_num_threads()
    assert bf16 == ([("torch", "bf16")] + [("torch", "bf16", threads)] * (threads > 1)) * cpu_has_bf16()
    assert not any(
        precision == "bf32" for _, precision, *_ in candidates
    )  # bf16 ran faster wherever measured


def test_an_explicit_batch_size_runs_unstreamed(encoder_dir):
    prepared = prepare_encoder(encoder_dir, "passage", backend="torch")
    assert prepared.encode_kwargs() == {"precision": "fp32", "streams": 1, "batch_size": 64}
    planned = PreparedEncoder(prepared.model, None, streams=2, batch_size=4)
    assert planned.encode_kwargs() == {"precision": None, "streams": 2, "batch_size": 4}
    assert planned.encode_kwargs(100) == {"precision": None, "streams": 1, "batch_size": 100}


def test_a_stream_reads_about_a_thousand_tokens_per_batch():
    assert [stream_batch_size(n) for n in (256, 192, 32, 4096)] == [4, 5, 32, 1]


def test_a_run_too_small_to_repay_timing_measures_nothing_but_reads_a_cached_choice(encoder_dir, cache):
    length = json.loads((encoder_dir / "config.json").read_text())["max_seq_length"]
    few = -(-MEASURE_MIN_TOKENS // min(length, 256)) - 1  # one text short of the tokens that repay timing
    small = choose_backend(encoder_dir, "passage", TORCH_ONLY, num_texts=few)
    assert (small.backend, small.precision, small.measured) == ("torch", "fp32", False)
    assert "too few to repay" in small.reason and not (cache / CHOICE_FILE).exists()
    measured = choose_backend(encoder_dir, "passage", TORCH_ONLY, num_texts=few + 1)
    assert measured.measured
    again = choose_backend(encoder_dir, "passage", TORCH_ONLY, num_texts=1)
    assert not again.measured and (again.backend, again.precision) == (measured.backend, measured.precision)
    assert "cached in" in again.reason


@pytest.mark.skipif(
    not cpu_has_bf16(), reason="bf16 competes only on CPUs with bf16 hardware (emulated elsewhere)"
)
def test_bf16_on_real_weights_passes_the_guard_on_squad(minilm_path, tokenizer):
    """auto's bf16 candidates (one stream and CPU streams) on all-MiniLM-L6-v2 and the 97 paragraphs of the
    bundled SQuAD dev subset: embeddings within cosine 0.999 of fp32 and the same questions' paragraphs in the top
    5, within one question (the guard `benchmarks/encoding_throughput.py` applies at scale)."""
    passages = load_passages(str(QUICKSTART_DEV))
    questions = load_questions(str(QUICKSTART_DEV))
    encoder = PassageEncoder.from_backbone(minilm_path, pooling="mean").eval()
    question_vectors = encode(
        QuestionEncoder.from_backbone(minilm_path, pooling="mean").eval(), tokenizer, questions["question"]
    )
    gold = np.array([passages["id"].index(pid) for pid in questions["gold_passage_id"]])

    def found(vectors: np.ndarray) -> np.ndarray:
        top5 = np.argsort(-(question_vectors @ vectors.T), axis=1)[:, :5]
        return (top5 == gold[:, None]).any(axis=1)

    def embeddings(**plan) -> np.ndarray:
        return encode(encoder, tokenizer, passages["text"], passages["title"], max_length=256, **plan)

    fp32 = embeddings(batch_size=64)
    for plan in (
        {"precision": "bf16", "batch_size": 64},
        {"precision": "bf16", "batch_size": 4, "streams": 2},
    ):
        bf16 = embeddings(**plan)
        assert _min_cosine(bf16, fp32) >= GUARD_COSINE, plan
        assert abs(int(found(bf16).sum()) - int(found(fp32).sum())) <= 1, plan

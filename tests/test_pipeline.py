"""QASystem folders and the open-domain-qa / dense-retrieval pipelines, end to end on tiny random models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from tiny_qa_system import PASSAGES, QUESTIONS, build_tiny_system, hub_cache_snapshot
from transformers import pipeline

from dpr_hf import OpenDomainQAPipeline, QASystem, QASystemConfig
from dpr_hf.encoding import encode_passages
from dpr_hf.index.passage_index import PassageIndex
from dpr_hf.models.errors import MismatchError
from dpr_hf.pipelines.system import REMOTE_TASK
from dpr_hf.retrieval import DenseRetriever, HybridRetriever

ANSWER_KEYS = {"answer", "score", "span_score", "log_prob", "start", "end", "relevance", "passage"}


@pytest.fixture(scope="module")
def system(tokenizer, tiny_bert_config) -> QASystem:
    return build_tiny_system(tokenizer, tiny_bert_config)


@pytest.fixture(scope="module")
def system_dir(system, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("qa") / "system"
    system.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def qa(system_dir) -> OpenDomainQAPipeline:
    return pipeline("open-domain-qa", model=str(system_dir), device="cpu")


def test_saved_folder_layout_and_config(system_dir):
    assert sorted(p.name for p in system_dir.parent.iterdir()) == ["system"]  # no temporary folder left over
    entries = {p.name for p in system_dir.iterdir()}
    assert {
        "question_encoder",
        "passage_encoder",
        "reader",
        "index",
        "bm25",
        "metrics",
        "training_args",
    } <= entries
    assert {
        "config.json",
        "system.py",
        "pipeline.py",
        "configuration.py",
        "modeling.py",
        "passage_index.py",
    } <= entries
    for part in ("question_encoder", "passage_encoder", "reader"):
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
            p.name for p in (system_dir / part).iterdir()
        }
    assert {"index.faiss", "manifest.json", "passages"} <= {p.name for p in (system_dir / "index").iterdir()}
    config = json.loads((system_dir / "config.json").read_text())
    assert config["model_type"] == "dpr_hf_qa_system"
    assert config["format_version"] == 1
    assert config["embedding_dim"] == 32
    assert [config[k] for k in ("question_encoder", "passage_encoder", "reader", "index", "bm25")] == [
        "question_encoder", "passage_encoder", "reader", "index", "bm25"
    ]  # fmt: skip
    assert config["auto_map"] == {"AutoConfig": "system.QASystemConfig", "AutoModel": "system.QASystem"}
    assert config["custom_pipelines"][REMOTE_TASK]["impl"] == "pipeline.OpenDomainQAPipeline"
    assert json.loads((system_dir / "metrics" / "reader.json").read_text())["em"] == {"1": 20.0, "5": 40.0}


def test_round_trip_gives_the_same_answers(system, system_dir):
    loaded = QASystem.from_pretrained(system_dir)
    assert loaded.metrics == system.metrics and loaded.training_args == system.training_args
    assert len(loaded.index) == len(PASSAGES) and loaded.bm25 is not None
    assert loaded.answer(QUESTIONS, top_k=3) == system.answer(QUESTIONS, top_k=3)
    assert loaded.passage_encoder is not None and loaded.reader is not None
    serving = QASystem.from_pretrained(system_dir, with_passage_encoder=False)
    assert serving.passage_encoder is None and serving.config.passage_encoder is None
    assert serving.retrieve([], 3) == []


def test_save_replaces_an_existing_folder_atomically(system, tmp_path):
    target = tmp_path / "system"
    target.mkdir()
    (target / "stale.txt").write_text("from an older save")
    system.save_pretrained(target)
    assert not (target / "stale.txt").exists() and (target / "config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["system"]


def test_load_refuses_newer_format_and_missing_parts(system_dir, tmp_path):
    config = json.loads((system_dir / "config.json").read_text())
    with pytest.raises(MismatchError, match="format version 2"):
        QASystemConfig(**{**config, "format_version": 2})
    broken = tmp_path / "broken"
    shutil.copytree(system_dir, broken)
    (broken / "config.json").write_text(json.dumps({**config, "reader": "no_such_reader"}))
    with pytest.raises(FileNotFoundError, match="no_such_reader"):
        QASystem.from_pretrained(broken)
    with pytest.raises(MismatchError, match="'dpr_hf_question_encoder' model, not a QA system"):
        QASystem.from_pretrained(system_dir / "question_encoder")


def test_parts_that_do_not_fit_are_refused(system, tokenizer, tiny_bert_config):
    from dpr_hf import PassageEncoder, PassageEncoderConfig

    other = PassageEncoder(PassageEncoderConfig(encoder=tiny_bert_config, projection_dim=16)).eval()
    index_16 = PassageIndex.build(encode_passages(other, tokenizer, PASSAGES[:4], show_progress=False))
    with pytest.raises(MismatchError, match="16-dim"):
        QASystem(question_encoder=system.question_encoder, question_tokenizer=tokenizer, index=index_16)


def test_one_line_pipeline_answers(qa):
    answers = qa(QUESTIONS[0], top_k=3, num_passages=5)
    assert len(answers) == 3
    for answer in answers:
        assert set(answer) == ANSWER_KEYS
        assert set(answer["passage"]) == {"id", "title", "text", "score"}
        assert answer["passage"]["text"][answer["start"] : answer["end"]] == answer["answer"] != ""
    scores = [a["score"] for a in answers]  # probabilities of distinct answers among the passages read
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6  # best first
    result = qa(QUESTIONS[0], num_passages=3, return_passages=True)
    assert len(result["answers"]) == 1 and len(result["passages"]) == 3
    assert len(qa(QUESTIONS[0], return_passages=True)["passages"]) == qa.model.config.num_passages == 4
    assert result["answers"][0]["passage"]["id"] in {p["id"] for p in result["passages"]}


def test_batched_calls_match_single_calls(qa):
    questions = QUESTIONS[:3]
    singles = [qa(question, top_k=2) for question in questions]
    assert qa(questions, top_k=2) == singles
    batched = qa(questions, top_k=2, batch_size=2)
    assert _rounded(batched) == _rounded(singles)  # padding in a batch changes float noise only


def test_pipeline_from_parts_matches_the_loaded_system(system, qa):
    parts = pipeline(
        "open-domain-qa",
        model=system.question_encoder,
        tokenizer=system.question_tokenizer,
        index=system.index,
        reader=system.reader,
        device="cpu",
    )
    assert parts(QUESTIONS[1], top_k=2, num_passages=4) == qa(QUESTIONS[1], top_k=2)
    with pytest.raises(ValueError, match="index"):
        pipeline("open-domain-qa", model=system.question_encoder, tokenizer=system.question_tokenizer)


@pytest.mark.parametrize(
    ("questions", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        (42, "must be a string"),
        (None, "must be a string"),
        ([], "empty list"),
        (["Who wrote Hamlet?", ""], "question 1 is empty"),
        (["Who wrote Hamlet?", 7], "question 1 must be a string"),
    ],
)
def test_bad_questions_raise_value_error(qa, questions, message):
    with pytest.raises(ValueError, match=message):
        qa(questions)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [({"top_k": 0}, "top_k"), ({"num_passages": -1}, "num_passages"), ({"retriever": "sparse"}, "retriever")],
)
def test_bad_parameters_raise_value_error(qa, parameters, message):
    with pytest.raises(ValueError, match=message):
        qa(QUESTIONS[0], **parameters)


def test_dense_retrieval_pipeline_is_the_dense_retriever(system, system_dir):
    retrieve = pipeline(
        "dense-retrieval",
        model=str(system_dir),
        device="cpu",
        model_kwargs={"with_reader": False, "with_passage_encoder": False},
    )
    assert retrieve.model.reader is None and retrieve.model.passage_encoder is None
    expected = DenseRetriever(system.question_encoder, system.question_tokenizer, system.index).search(
        QUESTIONS, 4
    )
    assert _rounded(retrieve(QUESTIONS, top_k=4)) == _rounded(expected)
    scores = [p["score"] for p in retrieve(QUESTIONS[2], top_k=6)]
    assert len(scores) == 6 and scores == sorted(scores, reverse=True)


def test_hybrid_retrieval_fuses_bm25_and_dense(system, qa):
    dense = DenseRetriever(system.question_encoder, system.question_tokenizer, system.index)
    expected = HybridRetriever(system.bm25, dense, weight=system.config.hybrid_lambda).search(QUESTIONS, 5)
    assert _rounded(system.retrieve(QUESTIONS, 5, retriever="hybrid")) == _rounded(expected)
    # BM25 puts the lexically matching passage first, which random dense vectors alone do not do.
    top = qa("Who wrote Hamlet?", retriever="hybrid", num_passages=3, return_passages=True)["passages"]
    assert top[0]["title"] == "Hamlet"
    without_bm25 = QASystem(
        question_encoder=system.question_encoder,
        question_tokenizer=system.question_tokenizer,
        index=system.index,
    )
    with pytest.raises(ValueError, match="BM25"):
        without_bm25.retrieve(QUESTIONS, 3, retriever="hybrid")


def test_threads_give_the_same_answers_as_sequential_calls(qa):
    questions = QUESTIONS * 2
    sequential = [qa(question, top_k=2) for question in questions]
    with ThreadPoolExecutor(max_workers=8) as pool:
        threaded = list(pool.map(lambda q: qa(q, top_k=2), questions))
    assert threaded == sequential


@pytest.fixture
def offline_hub_cache(system_dir, tmp_path, monkeypatch) -> Path:
    """An HF cache holding the system as repo `dpr-hf-test/tiny-system`, used offline (no network)."""
    cache = tmp_path / "hub"
    hub_cache_snapshot(cache, "dpr-hf-test/tiny-system", system_dir)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_load_by_repo_id_from_the_offline_cache(offline_hub_cache, qa):
    system = QASystem.from_pretrained("dpr-hf-test/tiny-system")
    assert str(offline_hub_cache) in str(system.question_encoder.name_or_path)
    hub_qa = pipeline("open-domain-qa", model="dpr-hf-test/tiny-system", device="cpu")
    assert hub_qa(QUESTIONS[:2], top_k=2) == qa(QUESTIONS[:2], top_k=2)
    with pytest.raises(FileNotFoundError, match="dpr-hf-test/not-cached"):
        QASystem.from_pretrained("dpr-hf-test/not-cached")


# Run where dpr_hf cannot be imported: a meta-path finder refuses it, as if it were not installed.
REMOTE_SCRIPT = """
import importlib.abc, json, sys

class NoDprHf(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "dpr_hf" or name.startswith("dpr_hf."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoDprHf())
try:
    import dpr_hf
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("dpr_hf could still be imported")
from transformers import pipeline

qa = pipeline(model="dpr-hf-test/tiny-system", trust_remote_code=True, device="cpu")
print(json.dumps({"class": type(qa).__module__, "answers": qa(json.loads(sys.argv[1]), top_k=2)}))
"""


def test_trust_remote_code_works_without_dpr_hf(offline_hub_cache, qa, tmp_path):
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    completed = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, json.dumps(QUESTIONS[:2])],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["class"].startswith("transformers_modules.")
    assert _rounded(result["answers"]) == _rounded(qa(QUESTIONS[:2], top_k=2))


def _rounded(value):
    """Floats to 4 decimals: equal up to float noise (batch padding, JSON round trips)."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def test_pipeline_moves_the_whole_system(system_dir):
    qa = pipeline("open-domain-qa", model=str(system_dir), device="cpu", dtype=torch.float32)
    assert qa.model.device.type == "cpu" and qa.model.reader.device.type == "cpu"
    assert qa.model.dtype == torch.float32


def test_build_from_training_outputs(system, tmp_path):
    """What the quickstart does: a retriever run, a reader run, an index, a BM25 folder and metrics -> a system."""
    retriever_run, reader_run = tmp_path / "retriever", tmp_path / "reader"
    for folder, model, tokenizer in (
        (retriever_run / "question_encoder", system.question_encoder, system.question_tokenizer),
        (retriever_run / "passage_encoder", system.passage_encoder, system.passage_tokenizer),
        (reader_run / "reader", system.reader, system.reader_tokenizer),
    ):
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    (retriever_run / "training_args.json").write_text(json.dumps(system.training_args["retriever"]))
    (reader_run / "training_args.json").write_text(json.dumps(system.training_args["reader"]))
    system.index.save(tmp_path / "index")
    system.bm25.save(tmp_path / "bm25")
    (tmp_path / "retrieval_metrics.json").write_text(json.dumps(system.metrics["retrieval"]))

    built = QASystem.from_components(
        retriever_run,
        tmp_path / "index",
        reader_dir=reader_run,
        bm25=tmp_path / "bm25",
        retrieval_metrics=tmp_path / "retrieval_metrics.json",
        reader_metrics=system.metrics["reader"],
        num_passages=4,
        retriever="hybrid",
    )
    assert built.metrics == system.metrics and built.training_args == system.training_args
    built.save_pretrained(tmp_path / "system")
    loaded = QASystem.from_pretrained(tmp_path / "system")
    assert loaded.config.retriever == "hybrid" and loaded.config.num_passages == 4
    assert loaded.answer(QUESTIONS[:2]) == system.answer(QUESTIONS[:2], retriever="hybrid")

    # An index encoded by another passage encoder is refused.
    torch.manual_seed(5)
    other = type(system.passage_encoder)(system.passage_encoder.config).eval()
    other.save_pretrained(retriever_run / "passage_encoder")
    with pytest.raises(MismatchError, match="passage encoder"):
        QASystem.from_components(retriever_run, tmp_path / "index")


def test_bm25_retrieval_is_the_systems_bm25_index(system, qa):
    assert system.retrieve(QUESTIONS, 4, retriever="bm25") == system.bm25.search(QUESTIONS, 4)
    answers = qa(QUESTIONS[1], retriever="bm25", top_k=2, return_passages=True)
    assert [p["id"] for p in answers["passages"]] == [
        p["id"] for p in system.bm25.search(QUESTIONS[1:2], 4)[0]
    ]
    # A question sharing no term with any passage retrieves nothing, and so gets no answer (not an error).
    assert qa("zzzqx vvvkw", retriever="bm25", return_passages=True) == {"answers": [], "passages": []}
    with pytest.raises(ValueError, match="the default retriever is 'bm25' but the system has no BM25 index"):
        QASystem(
            question_encoder=system.question_encoder,
            question_tokenizer=system.question_tokenizer,
            index=system.index,
            config=QASystemConfig(retriever="bm25"),
        )


@pytest.mark.parametrize("first", ["dpr_hf", "transformers.pipelines"])
def test_the_tasks_are_registered_whichever_is_imported_first_and_only_pipelines_pay_for_transformers_pipelines(
    first,
):
    """`import dpr_hf` leaves transformers' pipelines module (seconds to import) unloaded; the tasks appear in
    its registry the moment it is imported, or at once when it already was."""
    code = (
        f"import sys, importlib; importlib.import_module({first!r}); import dpr_hf\n"
        "loaded = 'transformers.pipelines' in sys.modules\n"
        f"assert loaded == ({first!r} == 'transformers.pipelines'), loaded\n"
        "from transformers.pipelines import PIPELINE_REGISTRY\n"
        "tasks = set(PIPELINE_REGISTRY.get_supported_tasks())\n"
        "assert {'open-domain-qa', 'dense-retrieval'} <= tasks, sorted(tasks)\n"
        "assert PIPELINE_REGISTRY.check_task('open-domain-qa')[1]['impl'] is dpr_hf.OpenDomainQAPipeline\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_importing_the_pipeline_class_first_registers_the_tasks():
    """The class's module imports transformers' pipelines, whose post-import hook must not re-enter it."""
    code = (
        "from dpr_hf import OpenDomainQAPipeline\n"
        "from transformers.pipelines import PIPELINE_REGISTRY\n"
        "assert PIPELINE_REGISTRY.check_task('open-domain-qa')[1]['impl'] is OpenDomainQAPipeline\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]

"""ONNX export of the encoders and the reader: ONNX Runtime and OpenVINO give the torch models' outputs."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import load_from_disk
from tiny_qa_system import PASSAGES, QUESTIONS, build_tiny_system
from transformers import pipeline

from dpr_hf import format_passages, format_questions
from dpr_hf.cli import main
from dpr_hf.encoding import encode_passages
from dpr_hf.export import ONNXEncoder, ONNXReader, export_onnx, load_onnx_model, load_system
from dpr_hf.models.fingerprints import encoder_fingerprint
from dpr_hf.reader import read

TITLES = [p["title"] for p in PASSAGES]
TEXTS = [p["text"] for p in PASSAGES]


@pytest.fixture(scope="module")
def system(tokenizer, tiny_bert_config):
    return build_tiny_system(tokenizer, tiny_bert_config, with_bm25=False)


@pytest.fixture(scope="module")
def exported(system, tmp_path_factory):
    """The tiny system's encoders and reader exported once (fp32 and int8) through the command line."""
    folder = tmp_path_factory.mktemp("onnx")
    system.save_pretrained(folder / "system")
    assert main(["export", str(folder / "system"), str(folder / "onnx"), "--to", "onnx", "--quantize"]) == 0
    return folder / "onnx"


def _min_cosine(got: torch.Tensor, want: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(got, want).min().item()


@pytest.mark.parametrize(("backend", "quantized"), [("onnx", False), ("openvino", False), ("onnx", True)])
def test_encoders_match_torch(system, exported, tokenizer, backend, quantized):
    question_encoder = load_onnx_model(exported / "question_encoder", quantized=quantized, backend=backend)
    passage_encoder = load_onnx_model(exported / "passage_encoder", quantized=quantized, backend=backend)
    assert isinstance(question_encoder, ONNXEncoder) and question_encoder.embedding_dim == 32
    questions = format_questions(tokenizer, QUESTIONS)
    passages = format_passages(tokenizer, TITLES, TEXTS)
    with torch.no_grad():
        want_q = system.question_encoder(**questions).pooler_output
        want_p = system.passage_encoder(**passages).pooler_output
    got_q = question_encoder(**questions).pooler_output
    got_p = passage_encoder(**passages).pooler_output
    # int8 is dynamic quantisation: close, not equal (on real MiniLM weights see test_minilm_onnx)
    threshold = 0.99 if quantized else 0.99999
    assert _min_cosine(got_q, want_q) >= threshold and _min_cosine(got_p, want_p) >= threshold
    if not quantized:
        torch.testing.assert_close(got_p, want_p, rtol=1e-4, atol=1e-5)


def test_onnx_passage_encoder_encodes_a_corpus_like_torch(system, exported, tokenizer):
    """The ONNX tower goes where a torch tower goes: dpr_hf's batched corpus encoding takes it unchanged, and it
    carries the torch weights' fingerprint, so an index built from torch embeddings accepts it."""
    onnx_encoder = load_onnx_model(exported / "passage_encoder")
    assert onnx_encoder.fingerprint == encoder_fingerprint(system.passage_encoder)
    got = encode_passages(onnx_encoder, tokenizer, PASSAGES, batch_size=5, show_progress=False)
    want = encode_passages(system.passage_encoder, tokenizer, PASSAGES, batch_size=5, show_progress=False)
    torch.testing.assert_close(
        torch.tensor(got["embeddings"]), torch.tensor(want["embeddings"]), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_reader_answers_are_identical(system, exported, tokenizer, backend):
    reader = load_onnx_model(exported / "reader", backend=backend)
    assert isinstance(reader, ONNXReader)
    passages = [PASSAGES[i : i + 6] for i in range(0, len(QUESTIONS) * 4, 4)]
    want = read(system.reader, tokenizer, QUESTIONS, passages, top_k=3, num_spans=2, batch_size=4)
    got = read(reader, tokenizer, QUESTIONS, passages, top_k=3, num_spans=2, batch_size=4)
    strip = [
        [{k: a[k] for k in ("answer", "start", "end")} | {"id": a["passage"]["id"]} for a in q] for q in got
    ]
    assert strip == [
        [{k: a[k] for k in ("answer", "start", "end")} | {"id": a["passage"]["id"]} for a in q] for q in want
    ]
    for got_q, want_q in zip(got, want, strict=True):
        for a, b in zip(got_q, want_q, strict=True):
            assert a["score"] == pytest.approx(b["score"], abs=1e-4)
            assert a["relevance"] == pytest.approx(b["relevance"], abs=1e-4)
    # (questions, passages, seq) inputs keep their leading dims, as the torch reader's do
    inputs = tokenizer(["a question"] * 6, ["a passage text"] * 6, return_tensors="pt")
    shaped = {k: v.reshape(2, 3, -1) for k, v in inputs.items()}
    out = reader(**shaped)
    assert out.start_logits.shape == shaped["input_ids"].shape and out.relevance_logits.shape == (2, 3)
    with torch.no_grad():
        torch.testing.assert_close(
            out.start_logits, system.reader(**shaped).start_logits, rtol=1e-4, atol=1e-4
        )


def test_minilm_onnx(tmp_path, minilm_path, tokenizer):
    """Real weights: fp32 ONNX equals torch; int8 (per-channel dynamic quantisation) stays close."""
    from dpr_hf import PassageEncoder

    encoder = PassageEncoder.from_backbone(minilm_path, pooling="mean", normalize=True).eval()
    encoder.save_pretrained(tmp_path / "passage_encoder")
    (folder,) = export_onnx(tmp_path / "passage_encoder", tmp_path / "onnx", quantize=True)
    inputs = format_passages(tokenizer, TITLES, TEXTS)
    with torch.no_grad():
        want = encoder(**inputs).pooler_output
    assert _min_cosine(load_onnx_model(folder)(**inputs).pooler_output, want) >= 0.99999
    assert _min_cosine(load_onnx_model(folder, quantized=True)(**inputs).pooler_output, want) >= 0.98


def test_bad_inputs_are_refused(exported, tmp_path, capsys):
    assert main(["export", str(tmp_path), str(tmp_path / "out"), "--to", "onnx"]) == 2
    assert "holds no dpr_hf model" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="not an ONNX export"):
        load_onnx_model(tmp_path)
    only_fp32 = tmp_path / "fp32"
    assert main(["export", str(exported.parent / "system" / "reader"), str(only_fp32), "--to", "onnx"]) == 0
    with pytest.raises(FileNotFoundError, match="model_int8.onnx"):
        load_onnx_model(only_fp32, quantized=True)
    assert main(["export", str(exported.parent / "system" / "reader"), str(only_fp32), "--to", "onnx"]) == 2
    assert "exist" in capsys.readouterr().err
    with pytest.raises(ValueError, match="backend"):
        load_onnx_model(only_fp32, backend="tensorrt")
    with pytest.raises(ValueError, match="CPU"):
        load_onnx_model(only_fp32).to("cuda")


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _encode_argv(system_dir, passages, output) -> list[str]:
    return [
        "encode",
        "--passage-encoder",
        str(system_dir),
        "--passages",
        str(passages),
        "--output",
        str(output),
    ]


def test_encode_and_evaluate_retrieval_take_a_backend(exported, tmp_path, monkeypatch, capsys):
    """`--backend onnx|openvino` on the torch folders: exported once into the cache, then the same embeddings,
    the same fingerprint in encoding.json, and the same retrieval results as torch."""
    monkeypatch.setenv("DPR_HF_CACHE", str(tmp_path / "cache"))
    system_dir = exported.parent / "system"
    passages = _write_jsonl(tmp_path / "passages.jsonl", PASSAGES)
    runs = {}
    for backend, precision in (("torch", "fp32"), ("onnx", "fp32"), ("openvino", "fp32"), ("onnx", "int8")):
        out = tmp_path / f"emb-{backend}-{precision}"
        argv = _encode_argv(system_dir, passages, out)
        assert main([*argv, "--backend", backend, "--precision", precision, "--batch-size", "5"]) == 0
        runs[backend, precision] = (load_from_disk(str(out)), json.loads((out / "encoding.json").read_text()))
    (cached,) = (tmp_path / "cache" / "onnx").iterdir()  # one export of the passage encoder, fp32 and int8
    assert {"model.onnx", "model_int8.onnx"} <= {p.name for p in cached.iterdir()}
    want, want_info = runs["torch", "fp32"]
    for (backend, precision), (got, info) in runs.items():
        assert info["encoder_fingerprint"] == want_info["encoder_fingerprint"]
        threshold = 0.99 if precision == "int8" else 0.99999
        cosine = _min_cosine(torch.tensor(got["embeddings"]), torch.tensor(want["embeddings"]))
        assert cosine >= threshold, (backend, precision, cosine)

    questions = _write_jsonl(
        tmp_path / "questions.jsonl",
        [
            {"question": q, "answers": [a]}
            for q, a in zip(QUESTIONS, ["Paris", "Shakespeare", "Everest", "Guido", "1969"], strict=True)
        ],
    )
    results = {}
    for backend in ("torch", "onnx"):
        out = tmp_path / f"eval-{backend}"
        argv = [
            "evaluate-retrieval",
            "--retriever",
            "dense",
            "--model",
            str(system_dir),
            "--index",
            str(system_dir),
        ]
        assert (
            main(
                [
                    *argv,
                    "--questions",
                    str(questions),
                    "--output-dir",
                    str(out),
                    "--top-k",
                    "5",
                    "--backend",
                    backend,
                ]
            )
            == 0
        )
        results[backend] = json.loads((out / "results.json").read_text())
    strip = {b: [[c["id"] for c in r["ctxs"]] for r in rs] for b, rs in results.items()}
    assert strip["onnx"] == strip["torch"]
    capsys.readouterr()
    argv = _encode_argv(system_dir, passages, tmp_path / "x")
    assert main([*argv, "--backend", "torch", "--precision", "int8"]) == 2
    assert "not offered by the torch backend" in capsys.readouterr().err


def test_pipeline_on_the_onnx_backend(exported, tmp_path, monkeypatch):
    """`pipeline("open-domain-qa", model=load_system(folder, "onnx"))` answers as the torch system does."""
    monkeypatch.setenv("DPR_HF_CACHE", str(tmp_path / "cache"))
    system_dir = exported.parent / "system"
    want = pipeline("open-domain-qa", model=str(system_dir), device="cpu")(QUESTIONS, top_k=2)
    onnx_system = load_system(system_dir, backend="onnx")
    assert isinstance(onnx_system.question_encoder, ONNXEncoder) and isinstance(
        onnx_system.reader, ONNXReader
    )
    got = pipeline("open-domain-qa", model=onnx_system, device="cpu")(QUESTIONS, top_k=2)
    assert _rounded(got) == _rounded(want)


def _rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def test_towers_with_the_same_weights_get_their_own_exports(tiny_question_encoder, tmp_path, monkeypatch):
    """A pair made from one base model holds the same weights in both towers (the quickstart's zero-shot pair):
    each tower still gets its own export, so the passage tower is not served by the question tower's."""
    from dpr_hf import PassageEncoder, PassageEncoderConfig
    from dpr_hf.export.backends import load_encoder, onnx_export_of

    monkeypatch.setenv("DPR_HF_CACHE", str(tmp_path / "cache"))
    passage = PassageEncoder(PassageEncoderConfig(encoder=tiny_question_encoder.config.encoder)).eval()
    passage.load_state_dict(tiny_question_encoder.state_dict())
    tiny_question_encoder.save_pretrained(tmp_path / "pair" / "question_encoder")
    passage.save_pretrained(tmp_path / "pair" / "passage_encoder")
    folders = {
        role: onnx_export_of(tmp_path / "pair" / f"{role}_encoder") for role in ("question", "passage")
    }
    assert folders["question"] != folders["passage"]
    for role in ("question", "passage"):
        model, _ = load_encoder(tmp_path / "pair", role, backend="onnx")
        assert model.config.role == role

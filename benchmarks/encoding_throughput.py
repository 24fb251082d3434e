"""Passage encoding throughput: dpr_hf `encode_passages` vs sentence-transformers `encode`, same backbone, texts,
max length and batch size; lower-precision variants and ONNX Runtime / OpenVINO backends of dpr_hf (and the
peer's own ONNX / OpenVINO backends, where optimum installs) with a quality guard.

    python benchmarks/encoding_throughput.py [--quick] [--passages N] [--batch-size 64] [--max-length 256]

Texts: SQuAD dev-a paragraphs as "title [SEP] text" (sentence-transformers) = the token ids of dpr_hf's passage
format. Guard for each variant: min cosine to dpr_hf fp32 embeddings >= 0.999 and no question lost from the top-20
hits of the dev-a questions whose paragraph is among the encoded ones (base model question vectors, fp32); the
table shows the change in questions found, either way.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import common
import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
from transformers import AutoTokenizer

from dpr_hf.data import load_passages, load_questions
from dpr_hf.encoding import encode, encode_passages
from dpr_hf.evaluation.metrics import has_answer
from dpr_hf.export import export_model_onnx, load_onnx_model
from dpr_hf.models.modeling import PassageEncoder, QuestionEncoder

warnings.filterwarnings("ignore", message=".*quantiz.*deprecated.*")


def forward_flops(lengths: np.ndarray, config) -> float:
    """Multiply-adds x 2 of a BERT encoder over sequences of these (unpadded) lengths: the useful work."""
    d, ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    per_layer = 2 * lengths * (4 * d * d + 2 * d * ff) + 4 * lengths**2 * d
    return float(layers * per_layer.sum())


def matmul_peak(dtype: torch.dtype, seconds: float = 2.0) -> float:
    """GFLOP/s of a (4096 x 384) @ (384 x 1536) matmul, the FFN shape of MiniLM, in `dtype`."""
    a, b = torch.randn(4096, 384, dtype=dtype), torch.randn(384, 1536, dtype=dtype)
    torch.mm(a, b)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        count += 1
    return 2 * 4096 * 384 * 1536 * count / (time.perf_counter() - start) / 1e9


def top20_hits(passage_vectors: np.ndarray, question_vectors: np.ndarray, passages, questions) -> np.ndarray:
    """Per question: is an answer in its top-20 passages (DPR's has_answer)?"""
    ranked = np.argsort(-(question_vectors @ passage_vectors.T), axis=1)[:, :20]
    texts = passages["text"]
    return np.array(
        [
            any(has_answer(q["answers"], texts[i]) for i in row)
            for q, row in zip(questions, ranked, strict=True)
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 passages")
    parser.add_argument("--passages", type=int, default=0, help="passages encoded (default 512, quick 64)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    started = common.now()
    count = args.passages or (64 if args.quick else 512)
    base = common.base_model_dir()
    passages = load_passages(str(common.SQUAD_DEV)).select(range(count))
    kept = set(passages["id"])
    questions = load_questions(str(common.SQUAD_DEV)).filter(lambda q: q["gold_passage_id"] in kept)
    texts = [f"{t} [SEP] {x}" if t else x for t, x in zip(passages["title"], passages["text"], strict=True)]

    tokenizer = AutoTokenizer.from_pretrained(base)
    encoder = PassageEncoder.from_backbone(base, pooling="mean").eval()
    lengths = np.array(
        [len(ids) for ids in tokenizer(texts, truncation=True, max_length=args.max_length)["input_ids"]]
    )
    flops = forward_flops(lengths, encoder.config.encoder)
    question_encoder = QuestionEncoder.from_backbone(base, pooling="mean").eval()
    question_vectors = encode(question_encoder, tokenizer, questions["question"], batch_size=args.batch_size)

    with tempfile.TemporaryDirectory() as tmp:  # exported once, outside the timings (as int8's quantisation)
        export_model_onnx(encoder, Path(tmp) / "onnx", quantize=True)
        exported = {
            (backend, quantized): load_onnx_model(Path(tmp) / "onnx", quantized=quantized, backend=backend)
            for backend in ("onnx", "openvino")
            for quantized in (False, True)
        }

    st_model = SentenceTransformer(base, device="cpu")
    st_model.max_seq_length = args.max_length
    int8 = quantize_dynamic(encoder, {torch.nn.Linear: per_channel_dynamic_qconfig})

    def dpr_hf_encode(model, precision):
        dataset = encode_passages(
            model, tokenizer, passages, args.batch_size, args.max_length, precision, show_progress=False
        )
        return np.asarray(dataset.with_format("numpy")["embeddings"], dtype=np.float32)

    runs = {
        "sentence-transformers encode (fp32)": lambda: st_model.encode(
            texts, batch_size=args.batch_size, normalize_embeddings=False, convert_to_numpy=True
        ),
        "dpr_hf encode_passages (fp32)": lambda: dpr_hf_encode(encoder, None),
        "dpr_hf encode_passages (bf32: fp32 tensors, bf16 matmul math)": lambda: dpr_hf_encode(
            encoder, "bf32"
        ),
        "dpr_hf encode_passages (bf16 autocast)": lambda: dpr_hf_encode(encoder, "bf16"),
        "dpr_hf encode_passages (int8 dynamic, per-channel)": lambda: dpr_hf_encode(int8, None),
        **{
            f"dpr_hf encode_passages ({backend} {'int8 dynamic, per-channel' if quantized else 'fp32'})": (
                lambda model=model: dpr_hf_encode(model, None)
            )
            for (backend, quantized), model in exported.items()
        },
    }
    # sentence-transformers' own ONNX / OpenVINO backends export through optimum, whose releases pin
    # transformers < 5: rows for them where it installs.
    for backend in ("onnx", "openvino"):
        try:
            peer_model = SentenceTransformer(base, device="cpu", backend=backend)
        except Exception as error:  # noqa: BLE001 (any failure to build the peer's backend: report it, go on)
            print(f"sentence-transformers backend={backend!r} unavailable: {type(error).__name__}: {error}")
            continue
        peer_model.max_seq_length = args.max_length
        runs[f"sentence-transformers encode ({backend} backend)"] = lambda m=peer_model: m.encode(
            texts, batch_size=args.batch_size, normalize_embeddings=False, convert_to_numpy=True
        )

    vectors, seconds = {}, {}
    for name, run in runs.items():
        run_start = time.perf_counter()
        vectors[name] = run()
        seconds[name] = time.perf_counter() - run_start
        print(f"{name}: {count / seconds[name]:.1f} passages/s", flush=True)
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}

    reference = vectors["dpr_hf encode_passages (fp32)"]
    unit = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    peer = "sentence-transformers encode (fp32)"
    reference_hits = top20_hits(reference, question_vectors, passages, questions)
    reference_top20 = 100.0 * reference_hits.mean()
    rows = []
    for name, values in vectors.items():
        cosine = np.sum(unit * values / np.linalg.norm(values, axis=1, keepdims=True), axis=1)
        hits = top20_hits(values, question_vectors, passages, questions)
        lost, gained = int((reference_hits & ~hits).sum()), int((hits & ~reference_hits).sum())
        guard = cosine.min() >= 0.999 and lost == 0
        peak = peaks["bf16" if "bf16" in name else "fp32"]
        rows.append(
            [
                name,
                count / seconds[name],
                seconds[peer] / seconds[name],
                flops / seconds[name] / 1e9,
                f"{100 * flops / seconds[name] / 1e9 / peak:.0f}%",
                f"{cosine.min():.5f}",
                100.0 * hits.mean(),
                f"-{lost} / +{gained}",
                "(peer)" if name == peer else "pass" if guard else "FAIL",
            ]
        )
    body = "\n\n".join(
        [
            f"{count} SQuAD dev-a paragraphs ({lengths.mean():.0f} tokens on average, max length {args.max_length}), "
            f"batch {args.batch_size}, base all-MiniLM-L6-v2 (mean pooling). GFLOP/s = useful forward FLOPs "
            f"(unpadded tokens) / time. Measured matmul peak in this run: fp32 {peaks['fp32']:.1f} GFLOP/s, bf16 "
            f"{peaks['bf16']:.1f} GFLOP/s (% of peak: against the peak of the row's matmul dtype). Guard: min "
            f"cosine to dpr_hf fp32 >= 0.999 and no question lost from the top-20 hits ({reference_top20:.1f}% "
            f"fp32) of the {len(questions)} dev-a questions whose paragraph is encoded (sentence-transformers' vectors are compared the same way; cosine ignores its normalisation).",
            common.table(
                [
                    "encoder",
                    "passages/s",
                    "x sentence-transformers",
                    "GFLOP/s",
                    "% of peak",
                    "min cosine",
                    "top-20 %",
                    "top-20 questions lost / gained",
                    "guard",
                ],
                rows,
            ),
        ]
    )
    common.record("Encoding throughput: dpr_hf vs sentence-transformers", body, args.quick, started)


if __name__ == "__main__":
    main()

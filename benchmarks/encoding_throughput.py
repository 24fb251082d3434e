"""Passage encoding throughput: dpr_hf `encode_passages` vs sentence-transformers `encode`, same backbone, texts,
max length and batch size; lower-precision variants and ONNX Runtime / OpenVINO backends of dpr_hf (and the
peer's own ONNX / OpenVINO backends, where optimum installs) with a quality guard.

    python benchmarks/encoding_throughput.py [--quick] [--passages N] [--batch-size 64] [--max-length 256]
        [--process-passages 2000] [--process-runs 1] [--skip-process] [--peer-python PYTHON]

Whole process: `dpr-hf encode` as a user types it (default flags, so `--backend auto`) and a script running
sentence-transformers' default `encode` (same backbone and max length, its default batch size), each a
subprocess timed from start to exit, over the same `--process-passages` SQuAD paragraphs (every dev-a paragraph,
then seeded train paragraphs); per round, the peer, dpr-hf with an empty dpr_hf cache (cold: backend calibration
included, and ONNX export for runs of EXPORT_MIN_TEXTS or more) and then warm on that cache, best of
`--process-runs` rounds for each; each run with an empty datasets cache, so no run reuses another's corpus.
sentence-transformers' own ONNX / OpenVINO backends export through optimum-onnx, which needs transformers < 4.58
(dpr_hf needs 5.x): `--peer-python` names a Python where they install, e.g.
`python3 -m venv runs/peer-venv && runs/peer-venv/bin/pip install torch==2.13.0
"sentence-transformers[onnx,openvino]" "transformers<4.58"`, and the whole-process rounds add the peer's torch,
ONNX and OpenVINO runs there (each backend's model exported once beforehand, untimed).

Texts: SQuAD dev-a paragraphs as "title [SEP] text" (sentence-transformers) = the token ids of dpr_hf's passage
format. Guard for each variant: min cosine to dpr_hf fp32 embeddings >= 0.999 and no question lost from the top-20
hits of the dev-a questions whose paragraph is among the encoded ones (base model question vectors, fp32); the
table shows the change in questions found, either way.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import common
import numpy as np
import torch
import transformers
from datasets import concatenate_datasets
from sentence_transformers import SentenceTransformer
from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
from transformers import AutoTokenizer

from dpr_hf.cli import build_parser
from dpr_hf.data import load_passages, load_questions
from dpr_hf.encoding import encode, encode_passages
from dpr_hf.evaluation.metrics import has_answer
from dpr_hf.export import export_model_onnx, load_onnx_model
from dpr_hf.export.auto import EXPORT_MIN_TEXTS, stream_batch_size
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


ST_SCRIPT = """
import json, sys
import numpy as np
from sentence_transformers import SentenceTransformer
base, corpus, output, max_length, backend = (sys.argv[1:] + ["torch"])[:5]
rows = [json.loads(line) for line in open(corpus, encoding="utf-8")]
texts = [f"{r['title']} [SEP] {r['text']}" if r.get("title") else r["text"] for r in rows]
model = SentenceTransformer(base, device="cpu", backend=backend)
model.max_seq_length = int(max_length)
np.save(output, model.encode(texts))
"""
# the peer's ONNX / OpenVINO model, exported once (untimed) into a folder its timed runs load, as a user would
ST_EXPORT_SCRIPT = """
import sys
from sentence_transformers import SentenceTransformer
base, backend, output = sys.argv[1:]
SentenceTransformer(base, device="cpu", backend=backend).save_pretrained(output)
"""
PEER_VERSIONS_SCRIPT = """
import importlib.metadata, json
names = ("sentence-transformers", "transformers", "optimum-onnx", "onnxruntime", "optimum-intel", "openvino")
print(json.dumps({n: importlib.metadata.version(n) for n in names}))
"""
ST_DEFAULT_BATCH = 32  # SentenceTransformer.encode's default batch_size


def process_corpus(count: int, seed: int = 0):
    """`count` SQuAD paragraphs: every dev-a paragraph, then seeded train paragraphs (dev-a has ~1,065)."""
    dev = load_passages(str(common.SQUAD_DEV))
    if count <= len(dev):
        return dev.select(range(count))
    train = load_passages(str(common.SQUAD_TRAIN)).shuffle(seed=seed)
    return concatenate_datasets([dev, train.select(range(count - len(dev)))])


def encode_max_length() -> int:
    """`dpr-hf encode`'s default max length (read from its parser, so they stay in step)."""
    args = build_parser().parse_args(["encode", "--passage-encoder", "x", "--passages", "x", "--output", "x"])
    return args.max_length


def dpr_hf_command() -> list[str]:
    """`dpr-hf` as installed next to this Python (the console script a user types), else `python -m`."""
    script = Path(sys.executable).with_name("dpr-hf")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "dpr_hf.cli"]


def timed_process(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Wall seconds from start to exit, and stderr; fails loudly with the stderr's tail."""
    start = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=common.ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{command[:3]} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return seconds, result.stderr


def auto_choice(line: str) -> str:
    """The choice and why from `backend auto: ...`, less where it was cached (a temporary folder)."""
    choice = re.split(r"; (?:measured in|cached in|not cached)", line.split("backend auto:", 1)[1])[0].strip()
    return choice + ")" + (" [measured on a busy CPU]" if "the CPU was busy" in line else "")


def whole_process(base: str, count: int, runs: int, peak: float, peer_python: str | None = None) -> str:
    """The section comparing `dpr-hf encode` (cold, then warm dpr_hf cache) with sentence-transformers' encode,
    each a whole process, and with its ONNX / OpenVINO backends where `peer_python` has them; returns the Markdown
    (text and table)."""
    from datasets import load_from_disk

    max_length = encode_max_length()
    corpus_rows = process_corpus(count)
    texts = [
        f"{t} [SEP] {x}" if t else x for t, x in zip(corpus_rows["title"], corpus_rows["text"], strict=True)
    ]
    tokenizer = AutoTokenizer.from_pretrained(base)
    lengths = np.array(
        [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    )
    encoder = PassageEncoder.from_backbone(
        base, pooling="mean"
    )  # the base model as dpr_hf pools it, as ST does
    flops = forward_flops(lengths, encoder.config.encoder)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        encoder_dir = tmp / "passage_encoder"
        encoder.save_pretrained(encoder_dir)
        tokenizer.save_pretrained(encoder_dir)
        corpus = tmp / "passages.jsonl"
        with open(corpus, "w", encoding="utf-8") as handle:
            for row in corpus_rows:
                handle.write(json.dumps({"id": row["id"], "title": row["title"], "text": row["text"]}) + "\n")
        # dpr-hf's default backend (auto) unless the environment pins another
        env = {key: value for key, value in os.environ.items() if key != "DPR_HF_BACKEND"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(common.ROOT), env.get("PYTHONPATH")]))
        counter = iter(range(10_000))

        def dpr_hf_run(cache: Path) -> tuple[float, str, Path]:
            """One `dpr-hf encode` with `cache` as its dpr_hf cache (empty: a cold run, which calibrates)."""
            run = next(counter)
            output = tmp / f"embeddings-{run}"
            command = [*dpr_hf_command(), "encode", "--passage-encoder", str(encoder_dir)]
            command += ["--passages", str(corpus), "--output", str(output)]
            seconds, stderr = timed_process(
                command,
                {**env, "DPR_HF_CACHE": str(cache), "HF_DATASETS_CACHE": str(tmp / f"datasets-{run}")},
            )
            chosen = [line for line in stderr.splitlines() if "backend auto:" in line]
            return seconds, auto_choice(chosen[-1]) if chosen else "?", output

        def st_run(python: str = sys.executable, model: str = base, backend: str = "torch") -> float:
            """One peer run; the main peer's embeddings (st.npy) are the ones compared with dpr-hf's below."""
            output = tmp / ("st.npy" if python == sys.executable else f"st-peer-{backend}.npy")
            command = [python, "-c", ST_SCRIPT, model, str(corpus), str(output)]
            return timed_process([*command, str(max_length), backend], env)[0]

        peer_models = {}  # the peer's backends in `peer_python`: the model folder each loads
        if peer_python:
            versions = json.loads(
                subprocess.run(
                    [peer_python, "-c", PEER_VERSIONS_SCRIPT], capture_output=True, text=True, check=True
                ).stdout
            )
            peer_models["torch"] = base
            for backend in ("onnx", "openvino"):
                peer_models[backend] = str(tmp / f"st-{backend}")
                timed_process([peer_python, "-c", ST_EXPORT_SCRIPT, base, backend, peer_models[backend]], env)
        st_seconds, cold, warm = [], [], []
        peer_seconds = {backend: [] for backend in peer_models}
        for run in range(runs):  # alternate, so a change in the machine's load hits every row alike
            st_seconds.append(st_run())
            cold.append(dpr_hf_run(tmp / f"dpr_hf_cache-{run}"))  # a fresh cache: calibration included
            warm.append(dpr_hf_run(tmp / f"dpr_hf_cache-{run}"))
            for backend, model in peer_models.items():
                peer_seconds[backend].append(st_run(peer_python, model, backend))
        (cold_seconds, cold_choice, output), (warm_seconds, warm_choice, _) = min(cold), min(warm)
        peer = np.load(tmp / "st.npy")
        ours = np.asarray(load_from_disk(str(output)).with_format("numpy")["embeddings"], dtype=np.float32)
    unit = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    cosine = float(np.min(np.sum(unit * peer / np.linalg.norm(peer, axis=1, keepdims=True), axis=1)))
    st_best = min(st_seconds)

    def row(name, seconds, choice):
        gflops = flops / seconds / 1e9
        return [name, seconds, count / seconds, st_best / seconds, f"{100 * gflops / peak:.1f}%", choice]

    # auto exports ONNX models to time them only for runs of EXPORT_MIN_TEXTS or more
    cold_work = "calibration" + (", ONNX export" if count >= EXPORT_MIN_TEXTS else "")
    rows = [
        row(
            f"sentence-transformers encode (default batch_size={ST_DEFAULT_BATCH}, max_seq_length={max_length})",
            st_best,
            "torch",
        ),
        row(f"dpr-hf encode, cold cache (one-time {cold_work})", cold_seconds, cold_choice),
        row("dpr-hf encode, warm cache", warm_seconds, warm_choice),
    ]
    if peer_python:
        installed = ", ".join(f"{name} {version}" for name, version in versions.items())
        rows += [
            row(
                f"sentence-transformers {versions['sentence-transformers']} encode, {backend} backend "
                "(--peer-python)",
                min(seconds),
                backend + (" (exported once beforehand, not timed)" if backend != "torch" else ""),
            )
            for backend, seconds in peer_seconds.items()
        ]
    else:
        rows.append(
            [
                "sentence-transformers encode, onnx / openvino backends",
                "not measured: their exporter (optimum-onnx) needs transformers < 4.58; give --peer-python "
                "(a venv with sentence-transformers[onnx,openvino] and transformers < 4.58)",
                *[""] * 4,
            ]
        )
    text = (
        f"Whole process, {count} SQuAD paragraphs ({lengths.mean():.0f} tokens on average): "
        f"`dpr-hf encode --passage-encoder DIR --passages passages.jsonl --output DIR` (default flags: max length "
        f"{max_length}, backend auto, which also picks the batch size and CPU streams) against a script loading "
        f"all-MiniLM-L6-v2 in sentence-transformers and calling its default `encode(texts)` (batch_size "
        f"{ST_DEFAULT_BATCH}) at max_seq_length "
        f"{max_length}, each a subprocess timed from start to exit (imports, model load, reading the corpus and "
        f"writing the embeddings included; best of {runs} rounds of peer, cold and warm runs). Min cosine between the "
        f"dpr-hf and sentence-transformers embeddings: {cosine:.5f} (guard >= 0.999: "
        f"{'pass' if cosine >= 0.999 else 'FAIL'}). % of peak: useful forward FLOPs / wall time / fp32 matmul peak."
    )
    if peer_python:
        text += f" --peer-python runs: {installed}."
    headers = ["run", "seconds", "passages/s", "x sentence-transformers", "% of fp32 peak", "backend"]
    return text + "\n\n" + common.table(headers, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 passages")
    parser.add_argument("--passages", type=int, default=0, help="passages encoded (default 512, quick 64)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument(
        "--process-passages",
        type=int,
        default=0,
        help="passages of the whole-process runs (default 2000, quick 64)",
    )
    parser.add_argument(
        "--process-runs",
        type=int,
        default=1,
        help="rounds of peer, cold and warm dpr-hf runs (best of each kept)",
    )
    parser.add_argument("--skip-process", action="store_true", help="leave out the whole-process comparison")
    parser.add_argument(
        "--peer-python",
        help="a Python with sentence-transformers[onnx,openvino] (optimum-onnx needs transformers < 4.58, so not "
        "this venv): the whole-process comparison adds the peer's torch, ONNX and OpenVINO backends run there",
    )
    args = parser.parse_args()
    started = common.now()
    # the matmul peak first, on a machine not yet warmed by the runs
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
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

    streams = max(2, torch.get_num_threads())

    def dpr_hf_encode(model, precision, streams=1):
        batch_size = stream_batch_size(args.max_length) if streams > 1 else args.batch_size
        dataset = encode_passages(
            model, tokenizer, passages, batch_size, args.max_length, precision, False, streams=streams
        )
        return np.asarray(dataset.with_format("numpy")["embeddings"], dtype=np.float32)

    runs = {
        "sentence-transformers encode (fp32)": lambda: st_model.encode(
            texts, batch_size=args.batch_size, normalize_embeddings=False, convert_to_numpy=True
        ),
        "dpr_hf encode_passages (fp32)": lambda: dpr_hf_encode(encoder, None),
        f"dpr_hf encode_passages (fp32, {streams} streams x {stream_batch_size(args.max_length)} passages)": lambda: (
            dpr_hf_encode(encoder, None, streams)
        ),
        "dpr_hf encode_passages (bf32: fp32 tensors, bf16 matmul math)": lambda: dpr_hf_encode(
            encoder, "bf32"
        ),
        "dpr_hf encode_passages (bf16 autocast)": lambda: dpr_hf_encode(encoder, "bf16"),
        f"dpr_hf encode_passages (bf16 autocast, {streams} streams x {stream_batch_size(args.max_length)} passages)": (
            lambda: dpr_hf_encode(encoder, "bf16", streams)
        ),
        "dpr_hf encode_passages (int8 dynamic, per-channel)": lambda: dpr_hf_encode(int8, None),
        **{
            f"dpr_hf encode_passages ({backend} {'int8 dynamic, per-channel' if quantized else 'fp32'})": (
                lambda model=model: dpr_hf_encode(model, None)
            )
            for (backend, quantized), model in exported.items()
        },
    }
    # sentence-transformers' own ONNX / OpenVINO backends export through optimum, whose ONNX exporter
    # (optimum-onnx 0.1.0) needs transformers < 4.58: rows for them where it installs, else a row saying why not.
    unavailable = {}
    for backend in ("onnx", "openvino"):
        try:
            peer_model = SentenceTransformer(base, device="cpu", backend=backend)
        except Exception as error:  # noqa: BLE001 (any failure to build the peer's backend: report it, go on)
            reason = " ".join(str(error).split())
            if importlib.util.find_spec("optimum") is None:
                reason = (
                    f"optimum is not installed (optimum-onnx 0.1.0, its ONNX exporter, needs transformers < "
                    f"4.58; this run has transformers {transformers.__version__}); sentence-transformers says: "
                    f"{reason}"
                )
            unavailable[f"sentence-transformers encode ({backend} backend)"] = (
                f"{type(error).__name__}: {reason}"
            )
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
    rows += [[name, f"not available: {reason}", *[""] * 7] for name, reason in unavailable.items()]
    process = (
        []
        if args.skip_process
        else [
            whole_process(
                base,
                args.process_passages or (64 if args.quick else 2000),
                args.process_runs,
                peaks["fp32"],
                args.peer_python,
            )
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
            *process,
        ]
    )
    common.record("Encoding throughput: dpr_hf vs sentence-transformers", body, args.quick, started)


if __name__ == "__main__":
    main()

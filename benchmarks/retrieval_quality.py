"""Retrieval quality in the DPR paper's SQuAD open setting: BM25, the zero-shot base model (sentence-transformers),
dpr_hf trained with the quickstart recipe, and hybrids. Top-1/5/20/100 answer accuracy, gold-paragraph recall and
a top-k curve plot.

    python benchmarks/retrieval_quality.py [--quick] [--retriever PAIR_DIR [PAIR_DIR ...]] [--precision bf16]
        [--hybrid-weights 0.055,0.25,0.5,1.1,2.2]

Corpus: every SQuAD v1.1 train + dev-a paragraph (~20K); questions: dev-a (5,665). `--quick` (or `--questions N`):
300 random questions, their gold paragraphs plus 500 random train paragraphs as the corpus. Each trained pair gets
a row and two hybrid rows (BM25 + 1.1 * dense / the pair's temperature, and RRF); the first pair's top-20 passages
per question are saved for `reader_quality.py`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import common
import faiss
import numpy as np
import torch
import yaml
from sentence_transformers import SentenceTransformer
from transformers import AutoTokenizer

from dpr_hf.encoding import encode_passages
from dpr_hf.evaluation.retrieval import evaluate_retriever, plot_top_k_curves
from dpr_hf.export.auto import stream_batch_size
from dpr_hf.index.passage_index import PassageIndex
from dpr_hf.models.fingerprints import encoder_fingerprint
from dpr_hf.models.modeling import PassageEncoder, QuestionEncoder
from dpr_hf.retrieval import BM25Retriever, DenseRetriever, HybridRetriever

LARGER_RECIPE = "recipes/squad/retriever.yaml"
KEYS = ("top_1", "top_5", "top_20", "top_100", "gold_recall_1", "gold_recall_20", "gold_recall_100")


class SentenceTransformerRetriever:
    """The zero-shot peer: sentence-transformers' `encode` (mean pooling + normalisation, as the model was trained)
    over "title [SEP] text" (the same token ids as dpr_hf's passage format) and an exact FAISS inner-product index."""

    def __init__(self, model: SentenceTransformer, passages, batch_size: int = 64):
        self.model, self.passages, self.batch_size = model, passages, batch_size
        texts = [
            f"{t} [SEP] {x}" if t else x for t, x in zip(passages["title"], passages["text"], strict=True)
        ]
        vectors = model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=True)
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def search(self, questions: list[str], k: int) -> list[list[dict]]:
        queries = self.model.encode(list(questions), batch_size=128, convert_to_numpy=True)
        scores, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        wanted = np.unique(rows).tolist()
        table = self.passages.select_columns(["id", "title", "text"]).select(wanted)
        by_row = dict(zip(wanted, table, strict=True))
        return [
            [{**by_row[int(r)], "score": float(s)} for s, r in zip(ss, rr, strict=True)]
            for ss, rr in zip(scores, rows, strict=True)
        ]


class Memo:
    """A retriever whose hits are computed once per (questions, k): hybrid rows at several λ reuse them."""

    def __init__(self, retriever):
        self.retriever, self.hits = retriever, {}

    @property
    def temperature(self) -> float:
        return getattr(self.retriever, "temperature", 1.0)

    def search(self, questions: list[str], k: int) -> list[list[dict]]:
        key = (tuple(questions), k)
        if key not in self.hits:
            self.hits[key] = self.retriever.search(questions, k)
        return self.hits[key]


def dense_retriever(pair_dir, corpus, precision: str | None) -> tuple[DenseRetriever, float]:
    """dpr_hf's trained pair over a Flat PassageIndex of the corpus; also returns the corpus encoding seconds."""
    passage_encoder = PassageEncoder.from_pretrained(pair_dir / "passage_encoder", dtype=torch.float32).eval()
    question_encoder = QuestionEncoder.from_pretrained(pair_dir / "question_encoder", dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(pair_dir / "passage_encoder")
    # on a multi-core CPU, dpr-hf encode's streamed plan (docs/encoding.md): the same vectors, ~1.3x sooner
    streams = torch.get_num_threads()
    batch_size = stream_batch_size(passage_encoder.config.max_seq_length) if streams > 1 else 64
    start = time.perf_counter()
    embedded = encode_passages(
        passage_encoder, tokenizer, corpus, batch_size=batch_size, precision=precision, streams=streams
    )
    seconds = time.perf_counter() - start
    index = PassageIndex.build(embedded, "Flat", encoder_fingerprint=encoder_fingerprint(passage_encoder))
    return DenseRetriever(question_encoder, tokenizer, index, precision=precision), seconds


def training_summary(pair_dir: Path) -> str:
    """How the pair was trained, from its training_args.json (what the table's trained row stands for)."""
    args = common.training_args(pair_dir)
    if not args:
        return "no training_args.json"
    samples = args.get("max_train_samples") or "all"
    return (
        f"{samples} questions of `{args.get('train_file')}`, {args.get('num_train_epochs')} epoch(s), "
        f"batch {args.get('per_device_train_batch_size')}, {args.get('num_hard_negatives')} hard negative(s), "
        f"{args.get('similarity', 'dot')} / {args.get('temperature', 1.0)}, {args.get('mixed_precision', 'no')} "
        "mixed precision"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small corpus and question sample (minutes)")
    parser.add_argument("--questions", type=int, default=0, help="question sample (default all; quick 300)")
    parser.add_argument(
        "--distractors", type=int, default=500, help="train paragraphs added to a sample's corpus"
    )
    parser.add_argument(
        "--retriever",
        type=common.Path,
        nargs="+",
        help="trained pair folder(s) (default: train the quickstart recipe)",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf32", "bf16"),
        default="fp32",
        help="dpr_hf encoding precision",
    )
    parser.add_argument(
        "--hybrid-weights",
        default="1.1",
        help="comma-separated λ for the linear hybrids, BM25 + λ·dense/τ (the first is used for every pair; "
        "all of them for the first pair)",
    )
    args = parser.parse_args()
    started = common.now()
    # A sample run (--quick, or --questions N) never overwrites the full run's outputs (the reader benchmark's input).
    suffix = "quick" if args.quick else f"sample-{args.questions}" if args.questions else ""
    output = common.RUNS / "-".join(filter(None, ("retrieval", suffix)))
    output.mkdir(parents=True, exist_ok=True)
    pair_dirs = args.retriever or [common.quickstart_retriever()]
    if len({pair_dir.name for pair_dir in pair_dirs}) < len(pair_dirs):  # rows are named after the folders
        parser.error(f"--retriever folders need distinct names: {[str(p) for p in pair_dirs]}")
    corpus, questions = common.open_squad(args.questions or (300 if args.quick else 0), args.distractors)
    print(f"corpus: {len(corpus)} passages, {len(questions)} questions; trained pairs: {pair_dirs}")

    seconds: dict[str, float] = {}
    with common.timer(seconds, "BM25 index"):
        bm25 = BM25Retriever.from_passages(corpus)
    with common.timer(seconds, "zero-shot base: corpus encoding (sentence-transformers)"):
        base = SentenceTransformerRetriever(
            SentenceTransformer(common.base_model_dir(), device="cpu"), corpus
        )
    retrievers = {"BM25 (bm25s)": bm25, "zero-shot base (sentence-transformers)": base}
    weights = [float(w) for w in args.hybrid_weights.split(",")]
    memo_bm25 = Memo(bm25)
    first_dense = None
    for position, pair_dir in enumerate(pair_dirs):
        name = f"dpr_hf trained ({pair_dir.name})"
        dense, seconds[f"{name}: corpus encoding"] = dense_retriever(pair_dir, corpus, args.precision)
        retrievers[name] = dense
        first_dense = first_dense or dense
        memo_dense = Memo(dense)
        for weight in weights if position == 0 else weights[:1]:
            retrievers[f"hybrid BM25 + {weight:g} x {pair_dir.name}/τ (linear)"] = HybridRetriever(
                memo_bm25, memo_dense, weight=weight
            )
        retrievers[f"hybrid BM25 + {pair_dir.name} (RRF)"] = HybridRetriever(
            memo_bm25, memo_dense, fusion="rrf"
        )
    metrics, curves = {}, {}
    for name, retriever in retrievers.items():
        with common.timer(seconds, f"{name}: search + scoring"):
            evaluation = evaluate_retriever(retriever, questions, top_k=100, show_progress=False)
        metrics[name], curves[name] = evaluation.metrics, evaluation.curve
        print(name, {k: round(evaluation.metrics[k], 1) for k in KEYS}, flush=True)
        if retriever in (bm25, first_dense):  # the reader benchmark reads these top passages
            top = [{**row, "ctxs": row["ctxs"][:20]} for row in evaluation.results]
            file = "dpr_hf_trained_top20.json" if retriever is first_dense else "bm25_top20.json"
            (output / file).write_text(json.dumps(top, ensure_ascii=False))
        del evaluation
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plot = common.BENCH_DIR / f"retrieval_topk_squad{'_' + suffix.replace('-', '_') if suffix else ''}.png"
    plot_top_k_curves(
        curves, plot, title=f"SQuAD open, {len(questions)} dev-a questions, {len(corpus)} passages"
    )

    recipe = yaml.safe_load((common.ROOT / LARGER_RECIPE).read_text())
    # a pair trained by the larger recipe's header command records the recipe's output_dir
    larger_recipe_run = any(
        common.training_args(pair_dir).get("output_dir") == recipe["output_dir"] for pair_dir in pair_dirs
    )
    larger_recipe_note = (
        f"Larger CPU recipe ({recipe['max_train_samples']:,} SQuAD train questions, ~2 hours on 2 cores) not in "
        f"this run: `{LARGER_RECIPE}` (its header has the commands)."
    )
    bm25_top20 = metrics["BM25 (bm25s)"]["top_20"]
    rows = [[name, *(m[k] for k in KEYS), m["top_20"] / bm25_top20] for name, m in metrics.items()]
    body = "\n\n".join(
        [
            f"Corpus {len(corpus):,} paragraphs ("
            + (
                "every SQuAD v1.1 train + dev-a paragraph"
                if len(corpus) > 19_000
                else f"a sample: the questions' gold paragraphs + {args.distractors} random train paragraphs"
            )
            + f"), {len(questions):,} dev-a questions; "
            "top-k = % of questions with an answer string in the top k (DPR's has_answer); gold_recall = % with "
            f"the question's own paragraph in the top k. Trained pairs: "
            + "; ".join(f"`{pair_dir}` ({training_summary(pair_dir)})" for pair_dir in pair_dirs)
            + f". dpr_hf encoding precision {args.precision}. Plot: `{plot.relative_to(common.ROOT)}`.",
            common.table(["retriever", *KEYS, "top_20 / BM25"], rows),
            common.table(["step", "seconds"], [[k, v] for k, v in seconds.items()]),
            common.BASE_NOTE,
            *([] if larger_recipe_run else [larger_recipe_note]),
        ]
    )
    common.record("Retrieval quality: SQuAD open (dev-a)", body, args.quick, started)


if __name__ == "__main__":
    main()

"""Evaluate a dense, BM25 or hybrid retriever: DPR results JSON, metrics.json and a top-k curve.

`dpr-hf evaluate-retrieval --retriever {dense,bm25,hybrid} [--model DIR] (--index DIR | --passages FILE)
--questions FILE --output-dir DIR [--top-k 100]`. `--model` is a pair folder (question_encoder/,
passage_encoder/) or a system folder; `--passages` builds the index(es) on the fly; `--index` takes a
PassageIndex folder, a BM25 folder or a system folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import add_precision_argument

BATCH_SIZE = 128  # questions encoded and searched at once


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--retriever", choices=("dense", "bm25", "hybrid"), required=True)
    parser.add_argument("--model", help="pair or system folder (dense, hybrid)")
    corpus = parser.add_mutually_exclusive_group(required=True)
    corpus.add_argument("--index", help="PassageIndex folder, BM25 folder (bm25) or system folder")
    corpus.add_argument("--passages", help="corpus to index on the fly: DPR TSV, JSONL (.gz ok), SQuAD JSON")
    parser.add_argument("--questions", required=True, help="SQuAD JSON, DPR qas TSV/CSV or JSONL (.gz ok)")
    parser.add_argument("--split", help="split of a datasets folder or Hub dataset given as --questions")
    parser.add_argument("--output-dir", required=True, help="where results.json and metrics.json go")
    parser.add_argument("--top-k", type=int, default=100, help="passages kept per question (100)")
    parser.add_argument("--match", choices=("string", "regex"), default="string", help="has_answer mode")
    parser.add_argument(
        "--qrels", help="BEIR qrels TSV (query-id, corpus-id, score): nDCG@k, Recall@k, MRR@10, MAP@100"
    )
    parser.add_argument("--factory", default="Flat", help="FAISS factory when indexing --passages (Flat)")
    parser.add_argument(
        "--hybrid-weight",
        type=float,
        default=1.1,
        help="λ in BM25 + λ·dense/τ, τ = the pair's training temperature (DPR: 1.1)",
    )
    parser.add_argument(
        "--fusion", choices=("linear", "rrf"), default="linear", help="hybrid fusion (linear)"
    )
    parser.add_argument("--depth", type=int, default=200, help="hits per retriever fused by hybrid (200)")
    parser.add_argument(
        "--stemmer",
        help="bm25 built here from passages: PyStemmer language to stem with, e.g. english (default: none); "
        "a saved BM25 folder uses the stemmer it was built with",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"questions/passages encoded at once ({BATCH_SIZE}; with --backend auto, passed forward in what it "
        "measured fastest on this CPU unless given)",
    )
    add_precision_argument(parser)


def _bm25(args: argparse.Namespace):
    from datasets import load_from_disk

    from ..data import load_passages
    from ..index.passage_index import PASSAGES_DIR
    from ..pipelines.system import QASystem
    from ..retrieval.bm25 import CONFIG_NAME, BM25Retriever

    if args.passages:
        return BM25Retriever.from_passages(load_passages(args.passages), stemmer=args.stemmer)
    folder = Path(args.index)
    bm25 = QASystem.part_dir(folder, "bm25") or folder
    if (bm25 / CONFIG_NAME).is_file():
        return BM25Retriever.load(bm25)
    passages = (QASystem.part_dir(folder, "index") or folder) / PASSAGES_DIR
    if not passages.is_dir():
        raise FileNotFoundError(
            f"{folder} holds neither a BM25 index nor a PassageIndex with {PASSAGES_DIR}/"
        )
    return BM25Retriever.from_passages(load_from_disk(str(passages)), stemmer=args.stemmer)


def _dense(args: argparse.Namespace, num_questions: int | None = None):
    from transformers import AutoTokenizer

    from ..data import load_passages
    from ..encoding import encode_passages
    from ..export.backends import prepare_encoder
    from ..index.passage_index import PassageIndex
    from ..models.fingerprints import encoder_fingerprint
    from ..models.pair import EncoderPair
    from ..pipelines.system import QASystem
    from ..retrieval.dense import DenseRetriever

    if not args.model:
        raise FileNotFoundError(f"--retriever {args.retriever} needs --model (a pair or system folder)")
    question_dir = EncoderPair.encoder_dir(args.model, "question")
    question_plan = prepare_encoder(
        question_dir,
        "question",
        backend=args.backend,
        precision=args.precision,
        batch_size=args.batch_size or BATCH_SIZE,
        num_texts=num_questions,
    )
    question_encoder = question_plan.model
    if args.index:
        index_dir = QASystem.part_dir(args.index, "index") or Path(args.index)
        index = PassageIndex.load(index_dir, question_encoder=question_encoder)
    else:
        passage_dir = EncoderPair.encoder_dir(args.model, "passage")
        passages = load_passages(args.passages)
        # each tower has its own plan: with --backend auto the two choices may differ
        prepared = prepare_encoder(
            passage_dir,
            "passage",
            backend=args.backend,
            precision=args.precision,
            num_texts=len(passages),
            batch_size=args.batch_size or BATCH_SIZE,
        )
        passage_encoder = prepared.model
        embedded = encode_passages(
            passage_encoder,
            AutoTokenizer.from_pretrained(passage_dir),
            passages,
            **prepared.encode_kwargs(args.batch_size),
        )
        index = PassageIndex.build(
            embedded,
            factory=args.factory,
            encoder_name=str(passage_dir),
            encoder_fingerprint=encoder_fingerprint(passage_encoder),
        )
    tokenizer = AutoTokenizer.from_pretrained(question_dir)
    plan = question_plan.encode_kwargs(args.batch_size)
    return DenseRetriever(
        question_encoder,
        tokenizer,
        index,
        batch_size=args.batch_size or BATCH_SIZE,
        precision=plan["precision"],
        streams=plan["streams"],
        encode_batch_size=plan["batch_size"],
    )


def run(args: argparse.Namespace) -> int:
    from ..data import load_questions
    from ..evaluation.retrieval import evaluate_retriever, load_qrels, save_retrieval_evaluation
    from ..retrieval.hybrid import HybridRetriever

    questions = load_questions(args.questions, split=args.split)
    if args.retriever == "bm25":
        retriever = _bm25(args)
    elif args.retriever == "dense":
        retriever = _dense(args, len(questions))
    else:
        retriever = HybridRetriever(
            _bm25(args),
            _dense(args, len(questions)),
            weight=args.hybrid_weight,
            fusion=args.fusion,
            depth=args.depth,
        )
    evaluation = evaluate_retriever(
        retriever,
        questions,
        top_k=args.top_k,
        match=args.match,
        qrels=load_qrels(args.qrels) if args.qrels else None,
    )
    save_retrieval_evaluation(evaluation, args.output_dir, name=args.retriever)
    print(json.dumps(evaluation.metrics, indent=2))
    return 0

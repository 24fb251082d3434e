"""Mine hard negatives for retriever training data with BM25 or a trained dense retriever.

`dpr-hf mine-negatives --data FILE (--passages FILE | --index DIR) [--method bm25|dense --model DIR]
--output FILE.json [--num-negatives N]` replaces each question's `hard_negative_ctxs` with the top-ranked
passages that contain no answer and are not its gold passage, and writes DPR's retriever JSON.
`--beir DIR [--split train]` instead takes the positives from a BEIR dataset's qrels (every passage judged
relevant) and mines in its corpus; negatives then exclude every judged-relevant passage, and answer strings
filter only when the queries carry answers.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="retriever data: DPR JSON/JSONL, SQuAD JSON, datasets folder")
    source.add_argument(
        "--beir",
        help="BEIR folder or Hub id: positives are the passages its qrels judge relevant; corpus by default",
    )
    parser.add_argument("--split", help="split of --data (datasets folder / Hub), or of --beir (train)")
    corpus = parser.add_mutually_exclusive_group()
    corpus.add_argument("--passages", help="passage corpus: DPR TSV, JSONL, SQuAD JSON or datasets folder")
    corpus.add_argument(
        "--index",
        help="saved index: a BM25 folder (or a system folder with bm25/) for bm25, a PassageIndex for dense",
    )
    parser.add_argument(
        "--method", choices=("bm25", "dense"), default="bm25", help="retriever to mine with (bm25)"
    )
    parser.add_argument(
        "--model", help="dense only: pair or system folder (question_encoder/, passage_encoder/)"
    )
    parser.add_argument(
        "--output", required=True, help="output DPR retriever JSON (.json, .jsonl, optionally .gz)"
    )
    parser.add_argument("--num-negatives", type=int, default=30, help="hard negatives per question (30)")
    parser.add_argument("--depth", type=int, default=100, help="ranked passages searched per question (100)")
    parser.add_argument(
        "--match", choices=("string", "regex"), default="string", help="has_answer mode for answers (string)"
    )
    parser.add_argument("--batch-size", type=int, default=256, help="questions searched at once (256)")
    parser.add_argument(
        "--stemmer",
        help="bm25 built here from passages: PyStemmer language to stem with, e.g. english (default: none); "
        "a saved BM25 folder uses the stemmer it was built with",
    )


def _bm25_retriever(args: argparse.Namespace):
    from ..data import load_passages
    from ..pipelines.system import QASystem
    from ..retrieval.bm25 import CONFIG_NAME, BM25Retriever

    if args.passages:
        return BM25Retriever.from_passages(load_passages(args.passages), stemmer=args.stemmer)
    folder = Path(args.index)
    if not (folder / CONFIG_NAME).is_file():
        folder = QASystem.part_dir(folder, "bm25") or folder  # a system folder, or one laid out like it
    return BM25Retriever.load(folder)


def _dense_retriever(args: argparse.Namespace):
    from ..data import load_passages
    from ..encoding import encode_passages
    from ..index.passage_index import PassageIndex
    from ..models.pair import EncoderPair
    from ..pipelines.system import QASystem
    from ..retrieval.dense import DenseRetriever

    if not args.model:
        raise FileNotFoundError("--method dense needs --model (a pair or system folder)")
    if args.index:
        index_dir = QASystem.part_dir(args.index, "index") or args.index
        return DenseRetriever.from_pretrained(args.model, index_dir)
    pair = EncoderPair.from_pretrained(args.model)
    if pair.passage_encoder is None or pair.question_encoder is None:
        raise FileNotFoundError(f"--model {args.model} must hold both encoders to index --passages")
    index = PassageIndex.build(
        encode_passages(pair.passage_encoder, pair.passage_tokenizer, load_passages(args.passages))
    )
    return DenseRetriever(pair.question_encoder, pair.question_tokenizer, index)


def run(args: argparse.Namespace) -> int:
    from ..data import beir_retriever_data, load_beir, load_retriever_data, save_retriever_json
    from ..retrieval.negatives import mine_hard_negatives

    if args.beir:
        beir = load_beir(args.beir, args.split or "train")
        data = beir_retriever_data(beir)
        if not args.passages and not args.index:
            args.passages = beir.corpus
    else:
        if not args.passages and not args.index:
            raise FileNotFoundError("mine-negatives --data needs the corpus: --passages FILE or --index DIR")
        data = load_retriever_data(args.data, split=args.split)
    retriever = _bm25_retriever(args) if args.method == "bm25" else _dense_retriever(args)
    mined = mine_hard_negatives(
        data,
        retriever,
        num_negatives=args.num_negatives,
        depth=args.depth,
        match=args.match,
        batch_size=args.batch_size,
    )
    path = save_retriever_json(mined, args.output)
    counts = [len(negatives) for negatives in mined["hard_negative_ctxs"]]
    mean = sum(counts) / len(counts) if counts else 0.0
    print(f"{path}: {len(mined)} questions, {mean:.1f} hard negatives per question ({args.method})")
    return 0

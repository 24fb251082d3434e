"""Reader latency per question against the peer: dpr_hf's `read` and transformers' `AutoModelForQuestionAnswering`
over the top 1 / 5 / 20 passages, one question at a time and 16 at once.

    python benchmarks/reader_latency.py --reader READER_DIR --results RESULTS_JSON [--questions 32]

Reads retrieval results (`dpr-hf evaluate-retrieval`'s results.json or reader_ranking.py's cached top-20), so the
timing is the reader's alone (tokenising, the forward pass, span decoding and ranking). p50/p95 in milliseconds per
question; with a batch of 16 the batch's time is divided by 16.

The peer is what a transformers user writes now that the question-answering pipeline is gone: the same backbone
(all-MiniLM-L6-v2) as `AutoModelForQuestionAnswering` (a fresh QA head: weights do not change the time), one
tokenizer call per call of `read` (question, title + passage, `truncation="only_second"`, the reader's max length,
padded to the longest), one forward pass, the best span of each passage, and the best span score across passages.
Both sides read the same tokens (checked before timing) and are timed call by call, alternating which goes first.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import common
import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from dpr_hf.evaluation.reader import load_reader
from dpr_hf.models.tokenization import encode_reader_inputs
from dpr_hf.reader.decoding import DEFAULT_RETRIEVER_WEIGHT, best_spans, read


def peer_inputs(
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[str],
    passages: Sequence[Sequence[dict]],
    max_length: int,
):
    """Every (question, title [SEP] passage) pair of the call in one padded batch, with the context strings."""
    firsts = [question for question, found in zip(questions, passages, strict=True) for _ in found]
    contexts = [
        f"{p.get('title') or ''} {tokenizer.sep_token} {p['text']}" for found in passages for p in found
    ]
    encoded = tokenizer(
        firsts,
        contexts,
        truncation="only_second",
        max_length=max_length,
        padding=True,
        return_offsets_mapping=True,
        return_tensors="pt",
    )
    return encoded, contexts


@torch.inference_mode()
def peer_read(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[str],
    passages: Sequence[Sequence[dict]],
    max_length: int,
    max_answer_length: int = 10,
) -> list[dict | None]:
    """Per question, the span with the best start + end logit over its passages (context tokens only)."""
    encoded, contexts = peer_inputs(tokenizer, questions, passages, max_length)
    offsets = encoded.pop("offset_mapping").tolist()
    outputs = model(**encoded)
    answers, row = [], 0
    for found in passages:
        best = None
        for p in range(len(found)):
            context = torch.tensor([sequence == 1 for sequence in encoded.sequence_ids(row)])
            spans = best_spans(outputs.start_logits[row], outputs.end_logits[row], context, max_answer_length)
            if spans and (best is None or spans[0][2] > best["score"]):
                start, end, score = spans[0]
                answer = contexts[row][offsets[row][start][0] : offsets[row][end][1]]
                best = {"answer": answer, "score": score, "passage": p}
            row += 1
        answers.append(best)
    return answers


def check_same_tokens(reader_tokenizer, peer_tokenizer, rows: Sequence[dict], n: int, max_length: int) -> int:
    """Refuse to time two readers that would not read the same token ids; returns the tokens read."""
    questions, passages = [r["question"] for r in rows], [r["ctxs"][:n] for r in rows]
    ours = encode_reader_inputs(
        reader_tokenizer,
        [q for q, found in zip(questions, passages, strict=True) for _ in found],
        [p.get("title") for found in passages for p in found],
        [p["text"] for found in passages for p in found],
        max_length=max_length,
    )["input_ids"]
    encoded, _ = peer_inputs(peer_tokenizer, questions, passages, max_length)
    theirs = [
        ids[mask.bool()].tolist()
        for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"], strict=True)
    ]
    if ours != theirs:
        raise SystemExit("the peer would not read the same tokens as the dpr_hf reader: not comparable")
    return sum(len(ids) for ids in ours)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reader", type=Path, required=True)
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--questions", type=int, default=32)
    args = parser.parse_args()
    started = common.now()
    rows = json.loads(args.results.read_text())[: args.questions]
    reader, tokenizer = load_reader(args.reader)
    max_length = reader.config.max_seq_length
    peer, peer_tokenizer = common.qa_peer()
    tokens = check_same_tokens(tokenizer, peer_tokenizer, rows, 20, max_length)
    torch.set_grad_enabled(False)

    def ours(chunk: list[dict], n: int) -> None:
        # the pipeline's default ranking (the retriever's logit in the passage prior, equal answers summed)
        questions, passages = [r["question"] for r in chunk], [r["ctxs"][:n] for r in chunk]
        read(reader, tokenizer, questions, passages, retriever_weight=DEFAULT_RETRIEVER_WEIGHT)

    def theirs(chunk: list[dict], n: int) -> None:
        peer_read(
            peer, peer_tokenizer, [r["question"] for r in chunk], [r["ctxs"][:n] for r in chunk], max_length
        )

    readers = {"dpr_hf": ours, "peer": theirs}
    for run in readers.values():  # warm-up
        run(rows[:1], 5)
    table = []
    for n in (1, 5, 20):
        for batch in (b for b in (1, 16) if b <= len(rows)):
            per_question: dict[str, list[float]] = {name: [] for name in readers}
            for call, begin in enumerate(range(0, len(rows) - batch + 1, batch)):
                chunk = rows[begin : begin + batch]
                for name in sorted(readers, reverse=call % 2 == 1):
                    start = time.perf_counter()
                    readers[name](chunk, n)
                    per_question[name] += [(time.perf_counter() - start) * 1000 / batch] * batch
            (p50, p95), (peer50, peer95) = (np.percentile(per_question[k], [50, 95]) for k in readers)
            table += [["dpr_hf", n, batch, p50, p95, p50 / peer50], ["peer", n, batch, peer50, peer95, "-"]]
            print(
                f"{n:>2} passages, batch {batch:>2}: dpr_hf p50 {p50:7.1f} ms  p95 {p95:7.1f} ms | peer p50 "
                f"{peer50:7.1f} ms  p95 {peer95:7.1f} ms | x peer {p50 / peer50:.2f}",
                flush=True,
            )
    body = (
        f"Reader `{args.reader}` at {max_length} tokens, {len(rows)} questions of `{args.results}` "
        f"({tokens / sum(len(r['ctxs'][:20]) for r in rows):.0f} tokens per passage on average at 20 passages, the same token ids on both "
        f"sides); ms per question. Peer: transformers `AutoModelForQuestionAnswering` on the same backbone "
        f"({type(peer).__name__}, attention `{peer.config._attn_implementation}`; dpr_hf's backbone: "
        f"`{reader.encoder.config._attn_implementation}`), one padded batch per call, best start + end logit "
        "across passages; dpr_hf ranks as its pipeline does by default (retriever's logit in the passage prior). "
        "x peer = dpr_hf p50 / peer p50 (under 1: dpr_hf is faster); the two are timed call by call in turn.\n\n"
        + common.table(["reader", "passages", "questions per call", "p50 ms", "p95 ms", "x peer"], table)
    )
    common.record("Reader latency per question, dpr_hf vs the transformers peer", body, False, started)


if __name__ == "__main__":
    main()

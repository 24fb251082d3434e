"""Reader latency per question: `read` over the top 1 / 5 / 20 passages, one question at a time and 16 at once.

    python benchmarks/reader_latency.py --reader READER_DIR --results RESULTS_JSON [--questions 32]

Reads retrieval results (`dpr-hf evaluate-retrieval`'s results.json or reader_ranking.py's cached top-20), so the
timing is the reader's alone (tokenising, the forward pass, span decoding and ranking). p50/p95 in milliseconds per
question; with a batch of 16 the batch's time is divided by 16.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import common
import numpy as np
import torch

from dpr_hf.evaluation.reader import load_reader
from dpr_hf.reader.decoding import read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reader", type=Path, required=True)
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--questions", type=int, default=32)
    args = parser.parse_args()
    started = common.now()
    rows = json.loads(args.results.read_text())[: args.questions]
    reader, tokenizer = load_reader(args.reader)
    torch.set_grad_enabled(False)
    read(reader, tokenizer, [rows[0]["question"]], [rows[0]["ctxs"][:5]])  # warm-up
    table = []
    for n in (1, 5, 20):
        for batch in (1, 16):
            per_question = []
            for begin in range(0, len(rows) - batch + 1, batch):
                chunk = rows[begin : begin + batch]
                start = time.perf_counter()
                read(reader, tokenizer, [r["question"] for r in chunk], [r["ctxs"][:n] for r in chunk])
                per_question += [(time.perf_counter() - start) * 1000 / batch] * batch
            p50, p95 = np.percentile(per_question, [50, 95])
            table.append([n, batch, p50, p95])
            print(f"{n:>2} passages, batch {batch:>2}: p50 {p50:7.1f} ms  p95 {p95:7.1f} ms", flush=True)
    body = (
        f"Reader `{args.reader}` at {reader.config.max_seq_length} tokens, {len(rows)} questions of "
        f"`{args.results}`; ms per question.\n\n"
        + common.table(["passages", "questions per call", "p50 ms", "p95 ms"], table)
    )
    common.record("Reader latency per question", body, False, started)


if __name__ == "__main__":
    main()

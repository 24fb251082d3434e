"""Seconds of `--backend auto`'s one-time calibration (what the first `dpr-hf encode` of 2,000 passages at 256
tokens pays before encoding), with the second timed round always (the rule before commit 63af054) and only on a
close call (now), alternating on fresh caches; best of `--rounds`.

    python benchmarks/auto_calibration.py --passage-encoder runs/quickstart/retriever/passage_encoder [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from dpr_hf.export import auto

RULES = {"second round always": float("inf"), "second round on a close call": auto.CLOSE_CALL}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passage-encoder", required=True, help="passage encoder, pair or system folder")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {name: [] for name in RULES}
    for _ in range(args.rounds):
        for name, close_call in RULES.items():
            auto.CLOSE_CALL = close_call
            os.environ["DPR_HF_CACHE"] = tempfile.mkdtemp()  # empty: every call calibrates
            start = time.perf_counter()
            choice = auto.choose_backend(
                args.passage_encoder,
                "passage",
                auto.available_candidates(2000),
                max_length=256,
                batch_size=64,
                num_texts=2000,
            )
            seconds[name].append(time.perf_counter() - start)
            print(f"{name}: {seconds[name][-1]:.2f} s -> {choice.name}", flush=True)
    for name, values in seconds.items():
        print(f"{name}: best {min(values):.2f} s of {[round(v, 2) for v in values]}")


if __name__ == "__main__":
    main()

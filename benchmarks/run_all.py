"""Run every benchmark one after the other (`make bench`; `make bench-quick` passes --quick, under 10 minutes).

Each script appends its section to benchmarks/RESULTS.md. Scripts run in separate processes, in an order where
later ones reuse what earlier ones built (the quickstart models, the retrieval results read by the reader).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

SCRIPTS = (
    "encoding_throughput.py",
    "search.py",
    "training_throughput.py",
    "retrieval_quality.py",
    "reader_quality.py",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (minutes, not hours)")
    parser.add_argument("--only", nargs="*", choices=SCRIPTS, help="run just these scripts")
    args = parser.parse_args()
    here = Path(__file__).resolve().parent
    failed = []
    for script in args.only or SCRIPTS:
        command = [sys.executable, str(here / script), *(["--quick"] if args.quick else [])]
        print(f"\n=== {' '.join(command)}", flush=True)
        start = time.perf_counter()
        if subprocess.run(command).returncode != 0:
            failed.append(script)
        print(f"=== {script}: {time.perf_counter() - start:.0f} s", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

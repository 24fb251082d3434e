"""The index planner's own estimates as markdown tables (docs/indexing.md's 21M tables come from here): each family
the planner knows for N x dim, and its pick per memory budget. Nothing is built: this prints `estimate` and
`plan_index`.

    python benchmarks/planner_tables.py [--num-passages 21015324] [--dims 768 384] [--budgets 6 16 32 64 128 256]
"""

from __future__ import annotations

import argparse

from dpr_hf.index.planner import (
    FAMILIES,
    ON_DISK_FAMILIES,
    PlanError,
    estimate,
    factory_for,
    plan_index,
)


def _gb(num_bytes: float) -> str:
    return f"{num_bytes / 1e9:.2f} GB" if num_bytes < 1e9 else f"{num_bytes / 1e9:.1f} GB"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def table(num_passages: int, dim: int) -> str:
    rows = [
        f"| factory ({num_passages:,} x {dim}) | search RAM | build peak RAM | index.faiss | folder on disk "
        "| build time | recall@100 vs Flat |",
        "|---|---|---|---|---|---|---|",
    ]
    for family in (*FAMILIES, *ON_DISK_FAMILIES):
        plan = estimate(factory_for(family, num_passages, dim), num_passages, dim)
        search = _gb(plan.search_ram_bytes) + (" (+ page cache)" if plan.data_bytes else "")
        files = _gb(plan.index_bytes) + (
            f" + {_gb(plan.data_bytes)} index.ivfdata" if plan.data_bytes else ""
        )
        folder = _gb(plan.disk_bytes) + (
            f" ({_gb(plan.build_disk_bytes)} while building)" if plan.build_disk_bytes else ""
        )
        basis = plan.recall_basis.removesuffix(", synthetic 384-dim vectors")
        rows.append(
            f"| `{plan.factory}` | {search} | {_gb(plan.build_ram_bytes)} | {files} | {folder} "
            f"| {_duration(plan.build_seconds)} | {plan.recall_at_100:.2f} ({basis}) |"
        )
    return "\n".join(rows)


def picks(num_passages: int, dim: int, budgets: list[float]) -> str:
    chosen = []
    for budget in budgets:
        try:
            chosen.append(f"{budget:g}GB `{plan_index(num_passages, dim, int(budget * 1e9)).factory}`")
        except PlanError:
            chosen.append(f"{budget:g}GB refused")
    return f"picks at {num_passages:,} x {dim}: " + ", ".join(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num-passages", type=int, default=21_015_324)
    parser.add_argument("--dims", type=int, nargs="+", default=[768, 384])
    parser.add_argument("--budgets", type=float, nargs="+", default=[4, 6, 8, 16, 32, 40, 64, 128, 256])
    args = parser.parse_args()
    for dim in args.dims:
        print(table(args.num_passages, dim), end="\n\n")
        print(picks(args.num_passages, dim, args.budgets), end="\n\n")


if __name__ == "__main__":
    main()

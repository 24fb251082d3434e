"""Independent pieces of model work run in parallel CPU streams, each on its share of torch's threads.

On a small CPU, one batch on all threads synchronises the threads after every small operation and works on
activations that do not fit the cache; two smaller batches at once on one thread each run 1.3-1.4x faster there
(docs/encoding.md). The same kernels run, so results match one stream up to float rounding. (The reader's
evaluation in 2 streams measured only 4% faster than one, 242 s vs 252 s: it does not use them.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


@contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """torch's CPU threads per operation set to `count` for the block (the setting is process-wide)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def map_in_streams(fn: Callable[[T], R], items: Iterable[T], streams: int = 1) -> list[R]:
    """`[fn(item) for item in items]`, in order, under `torch.inference_mode`, `streams` items at a time.

    With `streams` > 1 each runs on its own thread with torch's threads / `streams` intra-op threads; the thread
    count is process-wide, so concurrent torch work elsewhere in the process runs with fewer threads meanwhile.
    A stream's error is raised here. Thread-local modes (autocast) must be entered by `fn` itself.
    """
    if streams < 1:
        raise ValueError(f"streams must be >= 1, got {streams}")

    def run(item: T) -> R:
        with torch.inference_mode():
            return fn(item)

    if streams == 1:
        return [run(item) for item in items]
    with intra_op_threads(max(1, torch.get_num_threads() // streams)), ThreadPoolExecutor(streams) as pool:
        return list(pool.map(run, items))


@dataclass
class StreamRace:
    """One stream of `batch_size`-text batches on all threads against `streams` single-thread streams of
    `stream_batch_size`-text batches, timed on a run's own first texts (`dpr_hf.encoding.encode`).

    Both run the same fp32 kernels, so there is no quality to guard, only a speed to measure: timing them on the
    run's texts costs no extra encoding, where timing them on a sample first costs seconds. `verdict` is the
    streams count that won (None: not raced yet); `on_verdict(verdict, seconds_per_token)` hears it once (auto caches it).
    """

    streams: int
    stream_batch_size: int
    batch_size: int
    on_verdict: Callable[[int, dict[int, float]], None] | None = None
    verdict: int | None = None

    def plan(self) -> tuple[int, int]:
        """`(streams, batch_size)`: the winner's, or the one-stream reference's before the race."""
        if self.verdict is not None and self.verdict > 1:
            return self.verdict, self.stream_batch_size
        return 1, self.batch_size

    def decide(self, seconds_per_token: dict[int, float]) -> None:
        """Keep the faster plan (streams count -> seconds per padded token) and tell `on_verdict`."""
        self.verdict = min(seconds_per_token, key=lambda streams: (seconds_per_token[streams], streams))
        if self.on_verdict is not None:
            self.on_verdict(self.verdict, seconds_per_token)

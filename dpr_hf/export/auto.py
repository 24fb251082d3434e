"""`backend="auto"`: the fastest backend whose embeddings stay within the guard of fp32's here, measured once, cached.

Which runtime is fastest depends on the CPU (AMX / AVX512-BF16 / VNNI or not), the thread count and the library
versions, so it is measured rather than guessed: on first use for an encoder shape every available candidate
encodes a fixed sample at the run's length and batch size with the actual encoder through
`dpr_hf.encoding.encode`: torch fp32 (the reference), torch fp32 in one single-thread stream per CPU thread with
small batches (`stream_batch_size`), torch bf16 (autocast) in one stream and in streams where the CPU has bf16
hardware, and ONNX Runtime / OpenVINO fp32 where installed and the run is big enough to repay their one-time
export (`EXPORT_MIN_TEXTS`, or the export exists). A candidate whose embeddings fall below cosine 0.999 to the
reference's is rejected; the fastest of the rest wins if it beats the reference by `MIN_SPEEDUP`. Where the only
candidates are torch fp32 in one stream and in CPU streams (the same kernels: nothing to guard), no sample is
timed: the run itself reads its first texts both ways and keeps the faster (`dpr_hf.cpu_streams.StreamRace`),
which costs no extra encoding. The choice is kept in `$DPR_HF_CACHE/backend_choice.json` under a key of
everything it depends on (CPU model, threads, package versions, candidates, encoder shape, sample), so later runs
read it instead of timing.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers.utils import logging

from ..atomic import staged_file
from ..cpu_streams import StreamRace

logger = logging.get_logger(__name__)

AUTO = "auto"
CHOICE_FILE = "backend_choice.json"
CACHE_VERSION = 2
GUARD_COSINE = 0.999
MIN_SPEEDUP = 1.05  # a smaller gain is within the noise of a few timed batches: keep the reference
SAMPLE_ROWS = (
    32  # texts timed per candidate and round: a batch of 32 (64 would double the cost), 2 per stream
)
SAMPLE_MAX_LENGTH = 256  # tokens of the longest sample text, at most (the run's max length when shorter)
DEFAULT_BATCH = 64  # the reference's batch size when the run's is not known
STREAM_TOKENS = 1024  # tokens per batch of a stream: 4 x 256 fastest on the 2-core box (docs/encoding.md)
TIMED_ROUNDS = 2  # the first is also the cosine check (after an untimed warm-up on a quarter of the sample)
# A round after the first only where it can change the choice: where two candidates' times (the reference's divided
# by MIN_SPEEDUP, the bar the others must beat) lie within this factor of each other. On 2 AVX2 cores streams beat
# the reference by 1.4x, so the first (cold) run skips a round worth ~1/3 of the calibration.
CLOSE_CALL = 1.2
# Texts a run must encode before auto exports the ONNX models to time them: an export and compile takes 10-20 s
# per tower on 2 cores, more than a 10% faster backend saves on fewer texts.
EXPORT_MIN_TEXTS = 20_000
# Tokens (texts x max length) a run must hold before auto times anything: the calibration reads ~150 texts at the
# run's length (~5 s for passages on 2 cores), which a 10% faster plan repays only over ~1,500 such texts; smaller
# runs use a cached choice for their shape when there is one, else the reference.
MEASURE_MIN_TOKENS = 400_000
# (backend, precision[, streams]) in order of preference on a tie; the first available one is the reference.
CANDIDATES = (
    ("torch", "fp32"),
    ("torch", "fp32", 0),
    ("torch", "bf16"),
    ("torch", "bf16", 0),
    ("onnx", "fp32"),
    ("openvino", "fp32"),
)
# streams 0 above: one stream per CPU thread (only where torch has more than one thread). bf32 (`--precision bf32`)
# is not a candidate: bf16 autocast ran faster wherever both were measured (2.4-2.6x vs 1.4x fp32 on one
# AVX512-BF16 host, 2.0x vs 0.8x on another), and both pass the guard
# what each backend needs installed: the ONNX ones also export the torch weights with onnxscript
_REQUIRED_MODULES = {
    "torch": (),
    "onnx": ("onnxruntime", "onnxscript"),
    "openvino": ("openvino", "onnxscript"),
}
_VERSIONED_PACKAGES = ("dpr-hf", "torch", "transformers", "onnxruntime", "onnxscript", "openvino")
# where bf16 matmul math can be faster than fp32 (elsewhere it is emulated)
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
_SAMPLE_TEXT = (
    "The Normans were the people who in the tenth and eleventh centuries gave their name to Normandy, a region "
    "in France. They were descended from Norse raiders and pirates from Denmark, Iceland and Norway who, under "
    "their leader Rollo, agreed to swear fealty to King Charles III of West Francia. Through generations of "
    "assimilation and mixing with the native Frankish and Roman-Gaulish populations, their descendants would "
    "gradually merge with the Carolingian-based cultures of West Francia, and the distinct cultural and "
    "ethnic identity of the Normans emerged initially in the first half of the tenth century."
).split()


@dataclass(frozen=True)
class BackendChoice:
    """What `auto` picked, why, and whether this call measured it (False: read from the cache, or no timing
    needed). `streams` > 1: encode with that many parallel CPU streams of `batch_size` texts each."""

    backend: str
    precision: str
    reason: str
    measured: bool = False
    streams: int = 1
    batch_size: int | None = None
    race: StreamRace | None = None  # one stream against CPU streams, decided on the run (then cached)

    @property
    def name(self) -> str:
        return candidate_name((self.backend, self.precision, self.streams))

    def describe(self) -> str:
        return f"backend auto: {self.name} ({self.reason})"


def candidate_name(candidate: tuple) -> str:
    """'torch fp32', or 'torch fp32 x2 streams' for a streamed candidate."""
    backend, precision, *rest = candidate
    streams = rest[0] if rest else 1
    return f"{backend} {precision}" + (f" x{streams} streams" if streams > 1 else "")


def _streams(candidate: tuple) -> int:
    return candidate[2] if len(candidate) > 2 else 1


def cache_file() -> Path:
    """`$DPR_HF_CACHE/backend_choice.json` (default ~/.cache/dpr_hf), beside the ONNX exports."""
    from .backends import cache_dir

    return cache_dir() / CHOICE_FILE


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux): the timings hold for that CPU only."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def installed(backend: str) -> bool:
    """Whether `backend`'s packages can be imported (looked up without importing them)."""
    return all(importlib.util.find_spec(module) is not None for module in _REQUIRED_MODULES[backend])


def cpu_has_bf16() -> bool:
    """Whether the CPU reports bf16 matmul hardware (/proc/cpuinfo flags): elsewhere bf32 runs as fp32 and bf16
    is emulated, slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return True  # unknown: let the measurement decide
    return any(flag in flags for flag in _BF16_CPU_FLAGS)


def available_candidates(num_texts: int | None = None, exported: bool = False) -> list[tuple]:
    """`CANDIDATES` that can run here and may pay off: packages installed; streams where torch has more than
    one thread; bf16 where the CPU has bf16 hardware; ONNX ones when `exported` (an export exists) or the run
    is big enough to repay exporting (`num_texts` None: not known, so they are tried)."""
    threads = torch.get_num_threads()
    export_pays = exported or num_texts is None or num_texts >= EXPORT_MIN_TEXTS
    found = []
    for candidate in CANDIDATES:
        backend, precision = candidate[:2]
        if not installed(backend) or (backend != "torch" and not export_pays):
            continue
        if precision == "bf16" and not cpu_has_bf16():
            continue
        if len(candidate) > 2:
            if threads < 2:
                continue
            candidate = (backend, precision, threads)
        found.append(candidate)
    return found


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _encoder_shape(folder: Path) -> dict:
    """What the speed depends on in the encoder's config.json (a torch encoder's or an ONNX export's)."""
    config = json.loads((folder / "config.json").read_text())
    backbone = config.get("encoder") or {}
    shape = {
        key: backbone.get(key)
        for key in (
            "model_type",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
        )
    }
    shape.update({key: config.get(key) for key in ("pooling", "projection_dim", "max_seq_length")})
    return shape


def stream_batch_size(max_length: int) -> int:
    """Texts per batch of a CPU stream: `STREAM_TOKENS` tokens of texts read at `max_length` (4 passages of 256
    tokens, 32 questions of 32)."""
    return max(1, STREAM_TOKENS // max_length)


def _sample_length(shape: dict, max_length: int | None = None) -> int:
    """The run's max length (else the encoder's trained one), capped at `SAMPLE_MAX_LENGTH`."""
    return min(SAMPLE_MAX_LENGTH, max_length or shape.get("max_seq_length") or SAMPLE_MAX_LENGTH)


def choice_key(
    folder: Path,
    candidates: list[tuple],
    min_cosine: float = GUARD_COSINE,
    max_length: int | None = None,
    batch_size: int | None = None,
) -> dict:
    """Everything a measured choice depends on: a change in any of these measures again."""
    shape = _encoder_shape(folder)
    return {
        "min_cosine": min_cosine,
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "packages": {name: _package_version(name) for name in _VERSIONED_PACKAGES},
        "candidates": [candidate_name(candidate) for candidate in candidates],
        "encoder": shape,
        "sample": [
            SAMPLE_ROWS,
            _sample_length(shape, max_length),
            batch_size or DEFAULT_BATCH,
            STREAM_TOKENS,
        ],
    }


def _key_id(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _sample_texts(count: int, length: int) -> list[str]:
    """`count` fixed texts (rotations of one paragraph) from 3/4 of `length` tokens to past it (truncated there):
    the lengths of the first, longest, batches of a length-sorted run."""
    words = _SAMPLE_TEXT * (1 + length // len(_SAMPLE_TEXT))
    return [
        " ".join(
            (words[i * 7 % len(_SAMPLE_TEXT) :] + words)[: int(length * (0.6 + 0.4 * i / max(1, count - 1)))]
        )
        for i in range(count)
    ]


def _read_cache(path: Path) -> dict:
    """The cached choices; a file that is not one is moved aside (`.corrupt`, nothing deleted) with a warning,
    and the choice is measured again."""
    if not path.is_file():
        return {}
    try:
        content = json.loads(path.read_text())
        if not isinstance(content, dict) or not isinstance(content.get("choices"), dict):
            raise ValueError("no 'choices' object")
        return content["choices"]
    except (OSError, ValueError) as error:  # JSONDecodeError is a ValueError
        aside = path.with_name(path.name + ".corrupt")
        try:
            os.replace(path, aside)
            where = f"moved to {aside}"
        except OSError:
            where = "left in place"
        logger.warning(f"{path} is not a backend choice cache ({error}): {where}; measuring again")
        return {}


def _valid_entry(entry: object) -> bool:
    from .backends import BACKEND_PRECISIONS

    return (
        isinstance(entry, dict)
        and entry.get("backend") in BACKEND_PRECISIONS
        and entry.get("precision") in BACKEND_PRECISIONS[entry["backend"]]
        and isinstance(entry.get("reason"), str)
    )


def _write_cache(path: Path, choices: dict) -> bool:
    """Write atomically; False (with a warning) where the cache folder is not writable: the run goes on."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with staged_file(path) as tmp:
            tmp.write_text(json.dumps({"version": CACHE_VERSION, "choices": choices}, indent=2) + "\n")
        return True
    except OSError as error:
        logger.warning(f"could not save the backend choice to {path} ({error}); it will be measured again")
        return False


def _measure(
    folder: Path,
    role: str,
    candidates: list[tuple],
    min_cosine: float,
    length: int,
    batch_size: int | None = None,
) -> dict:
    """Encode the sample (texts of up to `length` tokens) with each candidate: its embeddings' min cosine to the
    reference's (the first) and its best time over up to `TIMED_ROUNDS` interleaved rounds (interleaved, so a
    burst of load hits all alike; a round after the first only on a `close_call`). Unstreamed candidates read the
    sample in batches of the run's size, streamed ones in `stream_batch_size`s."""
    from transformers import AutoTokenizer

    from ..encoding import encode
    from .backends import load_encoder

    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = _sample_texts(SAMPLE_ROWS, length)
    batch = min(batch_size or DEFAULT_BATCH, SAMPLE_ROWS)

    def run(model, precision, streams, rows=SAMPLE_ROWS):
        size = stream_batch_size(length) if streams > 1 else batch
        return encode(
            model,
            tokenizer,
            texts[:rows],
            batch_size=size,
            max_length=length,
            precision=precision,
            streams=streams,
        )

    loaded, results, seconds, reference, torch_model = {}, {}, {}, None, None
    for candidate in candidates:
        (backend, precision), streams, name = candidate[:2], _streams(candidate), candidate_name(candidate)
        try:
            if backend == "torch" and torch_model is not None:  # torch's precisions share one model
                model, applied = torch_model, precision
            else:
                model, applied = load_encoder(folder, role, backend=backend, precision=precision)
                torch_model = model if backend == "torch" else torch_model
            run(model, applied, streams, rows=SAMPLE_ROWS // 4)  # first calls allocate and pick kernels
            start = time.perf_counter()
            vectors = torch.from_numpy(run(model, applied, streams))
            first = time.perf_counter() - start
        except Exception as error:  # noqa: BLE001 (a candidate that cannot run is rejected, never fatal)
            if reference is None:
                raise
            results[name] = {"rejected": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
            continue
        if reference is None:
            reference = vectors
        cosine = torch.nn.functional.cosine_similarity(vectors, reference).min().item()
        results[name] = {"cosine": round(cosine, 6)}
        if cosine < min_cosine:
            results[name]["rejected"] = f"cosine {cosine:.6f} < {min_cosine}"
        else:
            loaded[name] = (model, applied, streams)
            seconds[name] = first
    rounds = 1
    while rounds < TIMED_ROUNDS and close_call(seconds, candidate_name(candidates[0])):
        rounds += 1
        for name, (model, precision, streams) in loaded.items():
            start = time.perf_counter()
            run(model, precision, streams)
            seconds[name] = min(seconds[name], time.perf_counter() - start)
    for name, value in seconds.items():
        results[name].update(seconds=round(value, 5), rounds=rounds)
    return results


def close_call(seconds: dict[str, float], reference: str) -> bool:
    """Whether another timed round could change the choice: the two fastest passing candidates' times lie within
    `CLOSE_CALL` of each other, the reference's counted as its time / `MIN_SPEEDUP` (the order of the slower
    ones changes nothing)."""
    bars = sorted(value / MIN_SPEEDUP if name == reference else value for name, value in seconds.items())
    return len(bars) > 1 and bars[1] < bars[0] * CLOSE_CALL


def _decide(candidates: list[tuple], results: dict, length: int, batch_size: int | None = None) -> dict:
    """The cache entry: the fastest candidate that passed, if it beats the reference by `MIN_SPEEDUP`."""
    names = [candidate_name(candidate) for candidate in candidates]
    reference = names[0]
    timed = [name for name in names if "seconds" in results.get(name, {})]
    speedups = {name: results[reference]["seconds"] / results[name]["seconds"] for name in timed}
    best = max(timed, key=lambda name: speedups[name])  # max keeps the earlier (preferred) one on a tie
    if speedups[best] < MIN_SPEEDUP:
        best = reference
    if best == reference:
        others = []
        for name in names[1:]:
            if name in speedups:
                others.append(f"{name} {speedups[name]:.2f}x")
            else:
                others.append(f"{name} rejected: {results.get(name, {}).get('rejected', 'not run')}")
        reason = (
            f"nothing faster passed the guard on this CPU ({'; '.join(others)})"
            if others
            else "the only candidate"
        )
    else:
        reason = f"{speedups[best]:.2f}x {reference} on this CPU, cosine {results[best]['cosine']:.5f}"
    chosen = candidates[names.index(best)]
    streams = _streams(chosen)
    return {
        "backend": chosen[0],
        "precision": chosen[1],
        "streams": streams,
        "batch_size": stream_batch_size(length) if streams > 1 else batch_size,
        "reason": reason,
        "measurements": results,
        "measured_at": _now(),
    }


def choose_backend(
    path: str | os.PathLike,
    role: str,
    candidates: list[tuple] | None = None,
    min_cosine: float = GUARD_COSINE,
    max_length: int | None = None,
    batch_size: int | None = None,
    num_texts: int | None = None,
) -> BackendChoice:
    """The backend and precision (and CPU streams) `auto` encodes `role` texts of `path` with (see the module
    docstring), measured at the run's `max_length` and `batch_size` where given. A run of `num_texts` holding
    fewer than `MEASURE_MIN_TOKENS` tokens measures nothing: it takes a cached choice, else the reference.

    `candidates` default to `available_candidates()`; the first is the reference, and a candidate whose sample
    embeddings fall below `min_cosine` to the reference's is rejected. An ONNX export has no torch
    weights, so there only the ONNX candidates compete. With an accelerator, torch (fp32) runs on it untimed.
    """
    from ..models.pair import encoder_dir
    from .onnx import INFO_FILE

    folder = encoder_dir(path, role)
    candidates = list(candidates if candidates is not None else available_candidates())
    if (folder / INFO_FILE).is_file():
        candidates = [candidate for candidate in candidates if candidate[0] != "torch"]
    elif torch.accelerator.is_available():
        return BackendChoice("torch", "fp32", f"torch runs on the {torch.accelerator.current_accelerator()}")
    if not candidates:
        raise ValueError(f"backend auto: no candidate backend can run {folder}")
    if len(candidates) == 1:
        return BackendChoice(*candidates[0][:2], reason="the only candidate", streams=_streams(candidates[0]))

    key = choice_key(folder, candidates, min_cosine, max_length, batch_size)
    key_id, file = _key_id(key), cache_file()
    choices = _read_cache(file)
    entry = choices.get(key_id)
    if _valid_entry(entry) and entry.get("key") == key:
        return _choice(entry, f"{entry['reason']}; cached in {file}", measured=False)
    length = _sample_length(_encoder_shape(folder), max_length)
    if num_texts is not None and num_texts * length < MEASURE_MIN_TOKENS:
        reason = f"{num_texts} texts of <= {length} tokens: too few to repay timing the candidates"
        return BackendChoice(*candidates[0][:2], reason=reason, streams=_streams(candidates[0]))
    if _streams_only(candidates):
        return _race_choice(key, file, max(map(_streams, candidates)), length, batch_size)
    start, load = time.perf_counter(), _load_average()
    measurements = _measure(folder, role, candidates, min_cosine, length, batch_size)
    entry = {"key": key, **_decide(candidates, measurements, length, batch_size), "load_average": load}
    saved = _save_choice(file, choices, key, entry)
    busy = ""
    if load is not None and load > (os.cpu_count() or 1):
        busy = f"; the CPU was busy (load average {load:.1f} on {os.cpu_count()} cores): delete {file} to measure again"
    took = time.perf_counter() - start
    reason = f"{entry['reason']}; measured in {took:.1f}s, {saved}{busy}"
    return _choice(entry, reason, measured=True)


def _streams_only(candidates: list[tuple]) -> bool:
    """Whether the candidates are torch fp32 and torch fp32 in CPU streams alone: the same kernels, so only their
    speeds differ."""
    exact = all(candidate[:2] == ("torch", "fp32") for candidate in candidates)
    streams = sorted(map(_streams, candidates))
    return exact and len(streams) == 2 and streams[0] == 1 < streams[1]


def _race_choice(key: dict, file: Path, streams: int, length: int, batch_size: int | None) -> BackendChoice:
    """torch fp32 whose one stream and `streams` CPU streams are timed on the run's own first texts
    (`StreamRace`); the verdict is logged and cached like a measured choice."""
    reference, streamed = candidate_name(("torch", "fp32")), candidate_name(("torch", "fp32", streams))
    load = _load_average()

    def cache_verdict(verdict: int, seconds_per_token: dict[int, float]) -> None:
        speedup = seconds_per_token[1] / seconds_per_token[streams]
        if verdict > 1:
            reason = f"{speedup:.2f}x {reference} on this CPU, timed on the run's first texts"
        else:
            reason = f"nothing faster on this CPU ({streamed} {speedup:.2f}x, timed on the run's first texts)"
        entry = {
            "key": key,
            "backend": "torch",
            "precision": "fp32",
            "streams": verdict,
            "batch_size": stream_batch_size(length) if verdict > 1 else batch_size,
            "reason": reason,
            "measurements": {
                reference: {"seconds_per_token": seconds_per_token[1]},
                streamed: {"seconds_per_token": seconds_per_token[streams]},
            },
            "measured_at": _now(),
            "load_average": load,
        }
        saved = _save_choice(file, _read_cache(file), key, entry)  # read again: the run wrote others since
        logger.warning(f"backend auto: {candidate_name(('torch', 'fp32', verdict))} ({reason}; {saved})")

    race = StreamRace(
        streams, stream_batch_size(length), batch_size or DEFAULT_BATCH, on_verdict=cache_verdict
    )
    reason = f"{reference} against {streamed}, to be timed on the run's first texts"
    return BackendChoice("torch", "fp32", reason, race=race)


def _save_choice(file: Path, choices: dict, key: dict, entry: dict) -> str:
    """Add `entry` to `choices` under `key` and write them: 'cached in FILE', or 'not cached' where it could not."""
    choices[_key_id(key)] = entry
    return f"cached in {file}" if _write_cache(file, choices) else "not cached"


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _choice(entry: dict, reason: str, measured: bool) -> BackendChoice:
    return BackendChoice(
        entry["backend"],
        entry["precision"],
        reason,
        measured,
        streams=entry.get("streams", 1),
        batch_size=entry.get("batch_size"),
    )


def _load_average() -> float | None:
    """The 1-minute load average, kept with a choice: timings taken on a busy machine are suspect."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # not available on this platform
        return None


def resolve_backend(
    path: str | os.PathLike,
    role: str,
    precision: str | None = None,
    *,
    num_texts: int | None = None,
    max_length: int | None = None,
    batch_size: int | None = None,
) -> tuple[str, str, BackendChoice]:
    """`(backend, precision, choice)` for `backend="auto"`; `choice.streams` / `choice.batch_size` say how to
    encode. `num_texts`, `max_length`, `batch_size`: the run's, where known (see `available_candidates` and
    `choose_backend`).

    `precision` None: every candidate (torch bf16 included) under the cosine guard. "fp32": fp32 math only
    (bf16 left out). Any other precision is an explicit request: the first installed backend
    offering it (torch for bf32/bf16/fp16, ONNX Runtime or OpenVINO for int8), untimed.
    """
    from ..models.pair import encoder_dir
    from .backends import BACKEND_PRECISIONS, cached_onnx_export

    if precision is None or precision == "fp32":
        exported = cached_onnx_export(encoder_dir(path, role)) is not None
        candidates = available_candidates(num_texts, exported)
        if precision == "fp32":
            candidates = [candidate for candidate in candidates if candidate[1] == "fp32"]
        choice = choose_backend(
            path, role, candidates, max_length=max_length, batch_size=batch_size, num_texts=num_texts
        )
        return choice.backend, choice.precision, choice
    for backend, precisions in BACKEND_PRECISIONS.items():
        if precision in precisions and installed(backend):
            choice = BackendChoice(backend, precision, f"the first installed backend offering {precision}")
            return backend, precision, choice
    raise ValueError(f"backend auto: no installed backend offers precision {precision!r}")

"""`backend="auto"`: the fastest backend that keeps fp32's embeddings on this machine, measured once and cached.

Which runtime is fastest depends on the CPU (AMX / AVX512-BF16 / VNNI or not), the thread count and the library
versions, so it is measured rather than guessed: on first use for an encoder shape every available candidate (torch
fp32, and torch bf32, ONNX Runtime fp32 and OpenVINO fp32 where installed) encodes a small fixed sample with the
actual encoder through `dpr_hf.encoding.encode`. A candidate whose embeddings fall below cosine 0.999 to the
reference's (torch fp32) is rejected; the fastest of the rest wins if it beats the reference by `MIN_SPEEDUP`. The
choice is kept in `$DPR_HF_CACHE/backend_choice.json` under a key of everything it depends on (CPU model, threads,
package versions, candidates, encoder shape, sample), so later runs read it instead of timing.
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

logger = logging.get_logger(__name__)

AUTO = "auto"
CHOICE_FILE = "backend_choice.json"
CACHE_VERSION = 1
GUARD_COSINE = 0.999
MIN_SPEEDUP = 1.05  # a smaller gain is within the noise of a few timed batches: keep the reference
SAMPLE_ROWS = 16
SAMPLE_MAX_LENGTH = 128
TIMED_ROUNDS = 3
# (backend, precision) in order of preference on a tie; the first available one is the reference.
CANDIDATES = (("torch", "fp32"), ("torch", "bf32"), ("onnx", "fp32"), ("openvino", "fp32"))
# what each backend needs installed: the ONNX ones also export the torch weights with onnxscript
_REQUIRED_MODULES = {
    "torch": (),
    "onnx": ("onnxruntime", "onnxscript"),
    "openvino": ("openvino", "onnxscript"),
}
_VERSIONED_PACKAGES = ("torch", "transformers", "onnxruntime", "onnxscript", "openvino")
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
    needed)."""

    backend: str
    precision: str
    reason: str
    measured: bool = False

    def describe(self) -> str:
        return f"backend auto: {self.backend} {self.precision} ({self.reason})"


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


def available_candidates() -> list[tuple[str, str]]:
    """`CANDIDATES` whose packages are installed (torch's always are)."""
    return [(backend, precision) for backend, precision in CANDIDATES if installed(backend)]


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


def _sample_length(shape: dict) -> int:
    return min(SAMPLE_MAX_LENGTH, shape.get("max_seq_length") or SAMPLE_MAX_LENGTH)


def choice_key(folder: Path, candidates: list[tuple[str, str]], min_cosine: float = GUARD_COSINE) -> dict:
    """Everything a measured choice depends on: a change in any of these measures again."""
    shape = _encoder_shape(folder)
    return {
        "min_cosine": min_cosine,
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "packages": {name: _package_version(name) for name in _VERSIONED_PACKAGES},
        "candidates": [f"{backend} {precision}" for backend, precision in candidates],
        "encoder": shape,
        "sample": [SAMPLE_ROWS, _sample_length(shape)],
    }


def _key_id(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _sample_texts(count: int) -> list[str]:
    """`count` fixed texts of 60 to 90 words (rotations of one paragraph): a length mix like a sorted batch."""
    words = _SAMPLE_TEXT
    return [
        " ".join((words[i * 7 % len(words) :] + words)[: 60 + (i * 30) // max(1, count - 1)])
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


def _measure(folder: Path, role: str, candidates: list[tuple[str, str]], min_cosine: float) -> dict:
    """Encode the sample with each candidate: its embeddings' min cosine to the reference's (the first) and its
    best time over `TIMED_ROUNDS` interleaved rounds (interleaved, so a burst of load hits all alike)."""
    from transformers import AutoTokenizer

    from ..encoding import encode
    from .backends import load_encoder

    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = _sample_texts(SAMPLE_ROWS)
    length = _sample_length(_encoder_shape(folder))

    def run(model, precision):
        return encode(model, tokenizer, texts, batch_size=SAMPLE_ROWS, max_length=length, precision=precision)

    loaded, results, reference, torch_model = {}, {}, None, None
    for backend, precision in candidates:
        name = f"{backend} {precision}"
        try:
            if backend == "torch" and torch_model is not None:  # torch's precisions share one model
                model, applied = torch_model, precision
            else:
                model, applied = load_encoder(folder, role, backend=backend, precision=precision)
                torch_model = model if backend == "torch" else torch_model
            vectors = torch.from_numpy(run(model, applied))
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
            loaded[name] = (model, applied)
    seconds = {name: float("inf") for name in loaded}
    for _ in range(TIMED_ROUNDS):
        for name, (model, precision) in loaded.items():
            start = time.perf_counter()
            run(model, precision)
            seconds[name] = min(seconds[name], time.perf_counter() - start)
    for name, value in seconds.items():
        results[name]["seconds"] = round(value, 5)
    return results


def _decide(candidates: list[tuple[str, str]], results: dict) -> dict:
    """The cache entry: the fastest candidate that passed, if it beats the reference by `MIN_SPEEDUP`."""
    names = [f"{backend} {precision}" for backend, precision in candidates]
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
    backend, precision = best.split()
    return {
        "backend": backend,
        "precision": precision,
        "reason": reason,
        "measurements": results,
        "measured_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def choose_backend(
    path: str | os.PathLike,
    role: str,
    candidates: list[tuple[str, str]] | None = None,
    min_cosine: float = GUARD_COSINE,
) -> BackendChoice:
    """The backend and precision `auto` encodes `role` texts of `path` with (see the module docstring).

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
        return BackendChoice(*candidates[0], reason="the only candidate")

    key = choice_key(folder, candidates, min_cosine)
    key_id, file = _key_id(key), cache_file()
    choices = _read_cache(file)
    entry = choices.get(key_id)
    if _valid_entry(entry) and entry.get("key") == key:
        return BackendChoice(entry["backend"], entry["precision"], f"{entry['reason']}; cached in {file}")
    start, load = time.perf_counter(), _load_average()
    entry = {
        "key": key,
        **_decide(candidates, _measure(folder, role, candidates, min_cosine)),
        "load_average": load,
    }
    choices[key_id] = entry
    saved = f"cached in {file}" if _write_cache(file, choices) else "not cached"
    busy = ""
    if load is not None and load > (os.cpu_count() or 1):
        busy = f"; the CPU was busy (load average {load:.1f} on {os.cpu_count()} cores): delete {file} to measure again"
    took = time.perf_counter() - start
    reason = f"{entry['reason']}; measured in {took:.1f}s, {saved}{busy}"
    return BackendChoice(entry["backend"], entry["precision"], reason, True)


def _load_average() -> float | None:
    """The 1-minute load average, kept with a choice: timings taken on a busy machine are suspect."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # not available on this platform
        return None


def resolve_backend(
    path: str | os.PathLike, role: str, precision: str | None = None
) -> tuple[str, str, BackendChoice]:
    """`(backend, precision, choice)` for `backend="auto"`.

    `precision` None: fp32 quality, i.e. every candidate (torch bf32 included) under the cosine guard. "fp32":
    fp32 math only (bf32 left out). Any other precision is an explicit request: the first installed backend
    offering it (torch for bf32/bf16/fp16, ONNX Runtime or OpenVINO for int8), untimed.
    """
    from .backends import BACKEND_PRECISIONS

    if precision is None or precision == "fp32":
        candidates = available_candidates()
        if precision == "fp32":
            candidates = [candidate for candidate in candidates if candidate[1] == "fp32"]
        choice = choose_backend(path, role, candidates)
        return choice.backend, choice.precision, choice
    for backend, precisions in BACKEND_PRECISIONS.items():
        if precision in precisions and installed(backend):
            choice = BackendChoice(backend, precision, f"the first installed backend offering {precision}")
            return backend, precision, choice
    raise ValueError(f"backend auto: no installed backend offers precision {precision!r}")

"""File reading shared by the loaders: every decoding problem becomes a `DPRDataError` naming file and record.

Record numbers are 1-based; for line-based files (JSONL, TSV/CSV) the record number is the line number.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import inspect
import io
import itertools
import json
import logging
import os
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
from datasets.exceptions import DatasetGenerationError

from ..models.errors import DPRDataError

# Bump when the parsing rules change, so datasets' on-disk cache of an earlier parse is not reused.
PARSER_VERSION = "4"

logger = logging.getLogger(__name__)

# DPR's passage texts are long quoted fields: lift csv's 128 KiB default field limit.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

_DECODE_ERRORS = (UnicodeDecodeError, gzip.BadGzipFile, EOFError, zlib.error)


def _decode_error(path: Path, error: Exception, record: int | None = None) -> DPRDataError:
    if isinstance(error, UnicodeDecodeError):
        return DPRDataError(f"not valid UTF-8 text ({error.reason} at byte {error.start})", path, record)
    return DPRDataError(f"truncated or corrupt gzip data ({error})", path, record)


def open_text(path: str | os.PathLike) -> io.TextIOBase:
    """Open a UTF-8 text file, transparently gunzipping `*.gz` (decoding is strict: bad bytes raise)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def base_suffix(path: str | os.PathLike) -> str:
    """The format suffix of a path, ignoring a trailing `.gz` (`a.json.gz` -> `.json`)."""
    path = Path(path)
    return Path(path.stem).suffix.lower() if path.suffix.lower() == ".gz" else path.suffix.lower()


def read_json(path: str | os.PathLike) -> Any:
    """Parse a whole JSON document (plain or gzipped)."""
    path = Path(path)
    try:
        with open_text(path) as handle:
            return json.load(handle)
    except _DECODE_ERRORS as error:
        raise _decode_error(path, error) from None
    except json.JSONDecodeError as error:
        raise DPRDataError(
            f"invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}", path
        ) from None
    except (ValueError, RecursionError) as error:
        raise _unreadable_json(path, error) from None


def _unreadable_json(path: Path, error: Exception, record: int | None = None) -> DPRDataError:
    """Valid JSON syntax that Python's json refuses: nesting deeper than the recursion limit, a huge integer."""
    reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
    return DPRDataError(f"unreadable JSON: {reason}", path, record)


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield (line number, line) pairs, naming the line that cannot be decoded."""
    path = Path(path)
    number = 0
    try:
        with open_text(path) as handle:
            for number, line in enumerate(handle, start=1):
                yield number, line
    except _DECODE_ERRORS as error:
        raise _decode_error(path, error, number + 1) from None


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed object) for every non-blank line of a JSONL file."""
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DPRDataError(f"invalid JSON at column {error.colno}: {error.msg}", path, number) from None
        except (ValueError, RecursionError) as error:
            raise _unreadable_json(Path(path), error, number) from None
        yield number, record


def iter_delimited(path: str | os.PathLike, delimiter: str | None = None) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) of a TSV/CSV file.

    The delimiter defaults to a tab for `.tsv`; a `.csv` is read as tab-separated when its first record has
    tab-separated fields (DPR's qas `.csv` files are TSV), else as comma-separated. The first record, not the
    first line, decides: a quoted field may span lines.
    """
    path = Path(path)
    lines = (line for _, line in iter_lines(path))
    read: list[str] = []
    if delimiter is None:
        delimiter = "\t" if base_suffix(path) == ".tsv" else _sniff_delimiter(_recorded(lines, read))
    reader = csv.reader(itertools.chain(read, lines), delimiter=delimiter)
    try:
        for fields in reader:
            yield reader.line_num, fields
    except csv.Error as error:
        raise DPRDataError(
            f"malformed {delimiter!r}-separated line: {error}", path, reader.line_num
        ) from None


def _sniff_delimiter(lines: Iterator[str]) -> str:
    try:
        first = next(csv.reader(lines, delimiter="\t"), [])
    except csv.Error:  # reported with its line number by the real read
        first = []
    return "\t" if len(first) > 1 else ","


def _recorded(lines: Iterator[str], read: list[str]) -> Iterator[str]:
    """`lines`, each also appended to `read` so a probe can be replayed."""
    for line in lines:
        read.append(line)
        yield line


def file_fingerprint(kind: str, path: str | os.PathLike, **options: Any) -> str:
    """A cache key for a parse of `path`: changes with the file (size, mtime, inode) and the parse options."""
    path = Path(path).resolve()
    stat = path.stat()
    key = json.dumps(
        [PARSER_VERSION, kind, str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino, options],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def build_dataset(
    generator: Callable[..., Iterator[dict]],
    features: datasets.Features,
    fingerprint: str,
    **gen_kwargs: Any,
) -> datasets.Dataset:
    """Stream records into an Arrow-backed `Dataset` cached by datasets (memory stays flat for big files).

    A generator with a `report` parameter gets a list to append warnings to (skipped records); they are logged
    here and kept beside the cached Arrow file, so loading the same file again warns again. datasets wraps errors raised while
    generating in `DatasetGenerationError`; ours are unwrapped so the user sees the file, record and field.
    """
    report: list[str] = []
    if "report" in inspect.signature(generator).parameters:
        gen_kwargs["report"] = report
    produced = 0

    def counted(**kwargs: Any) -> Iterator[dict]:
        nonlocal produced
        for example in generator(**kwargs):
            produced += 1
            yield example

    try:
        dataset = datasets.Dataset.from_generator(
            counted, features=features, gen_kwargs=gen_kwargs, fingerprint=fingerprint
        )
    except DatasetGenerationError as error:
        cause = error.__cause__
        if isinstance(cause, (DPRDataError, FileNotFoundError)):
            raise cause from None
        raise
    except ValueError:
        if produced:
            raise
        # datasets cannot build a split from zero examples ("corresponds to no data"): an empty file is empty data
        dataset = datasets.Dataset.from_dict({column: [] for column in features}, features=features)
    if dataset.cache_files:
        sidecar = Path(dataset.cache_files[0]["filename"]).parent / "dpr_hf_warnings.json"
        if report:
            sidecar.write_text(json.dumps(report), encoding="utf-8")
        elif sidecar.is_file():
            report = json.loads(sidecar.read_text(encoding="utf-8"))
    for message in report:
        logger.warning(message)
    return dataset


# Suffixes (ignoring ".gz") that mean "a local file": a missing one is a FileNotFoundError, never a Hub look-up.
FILE_SUFFIXES = {".json", ".jsonl", ".tsv", ".csv"}


def resolve_source(
    source: str | os.PathLike | datasets.Dataset | datasets.DatasetDict, split: str | None = None
) -> Path | tuple[datasets.Dataset, str]:
    """A local file's `Path`, or `(dataset, name)` for a `Dataset`, a `save_to_disk` folder or a Hub name."""
    if isinstance(source, (datasets.Dataset, datasets.DatasetDict)):
        return _select_split(source, split, "dataset"), "dataset"
    path = Path(source)
    if path.is_file():
        if base_suffix(path) not in FILE_SUFFIXES:
            raise DPRDataError(
                f"unknown file format (expected one of {sorted(FILE_SUFFIXES)}, optionally .gz)", path
            )
        return path
    if path.is_dir():
        try:
            loaded = datasets.load_from_disk(str(path))
        except FileNotFoundError as error:
            raise DPRDataError(f"not a datasets folder (save_to_disk): {error}", path) from None
        return _select_split(loaded, split, str(path)), str(path)
    if base_suffix(path) in FILE_SUFFIXES or path.is_absolute() or str(source).startswith("."):
        raise FileNotFoundError(f"{path}: no such file or folder")
    return _select_split(datasets.load_dataset(str(source), split=split), split, str(source)), str(source)


def _select_split(
    loaded: datasets.Dataset | datasets.DatasetDict, split: str | None, name: str
) -> datasets.Dataset:
    if isinstance(loaded, datasets.Dataset):
        return loaded
    if split is None and len(loaded) == 1:
        return next(iter(loaded.values()))
    if split not in loaded:
        raise DPRDataError(f"choose a split with split=... among {sorted(loaded)}", name, field="split")
    return loaded[split]


def require_columns(dataset: datasets.Dataset, name: str, columns: tuple[str | tuple[str, ...], ...]) -> None:
    """Every column must be present; a tuple entry lists alternatives (BEIR's `text` for our `question`)."""
    for column in columns:
        options = (column,) if isinstance(column, str) else column
        if not any(option in dataset.column_names for option in options):
            alternatives = "".join(f" (or {option!r})" for option in options[1:])
            raise DPRDataError(
                f"missing column{alternatives} (has {dataset.column_names})", name, field=options[0]
            )


# A record's place in its source: a 1-based number, or a JSON path (`data[0].paragraphs[3]`) in SQuAD files.
Record = int | str
# A format reader: `(path, report)` -> `(record, example)` pairs, in the order the examples are stored.
RecordReader = Callable[[str, list[str]], Iterator[tuple[Record, dict]]]


def load_records(
    source: str | os.PathLike | datasets.Dataset | datasets.DatasetDict,
    split: str | None,
    *,
    kind: str,
    required: tuple[str | tuple[str, ...], ...],
    features: datasets.Features,
    normalize_batch: Callable,
    readers: dict[str, RecordReader],
    id_note: str,
) -> datasets.Dataset:
    """Shared body of the flat loaders: validate a `datasets` source, or stream a file by its format suffix.

    The `id` column must be unique: a repeated id raises `DPRDataError` naming both records (`id_note` says in
    it which id a record without one gets).
    """
    resolved = resolve_source(source, split)
    if not isinstance(resolved, Path):
        dataset, name = resolved
        require_columns(dataset, name, required)
        dataset = dataset.map(
            normalize_batch,
            batched=True,
            with_indices=True,
            fn_kwargs={"name": name},
            remove_columns=dataset.column_names,
            features=features,
            desc=f"Validating {kind}",
        )
        require_unique_ids(dataset, name, lambda rows: [row + 1 for row in rows], id_note)
        return dataset
    suffix = base_suffix(resolved)
    reader = readers[suffix]

    def generate(path: str, report: list[str]) -> Iterator[dict]:
        for _, example in reader(path, report):
            yield example

    dataset = build_dataset(
        generate, features, file_fingerprint(f"{kind}{suffix}", resolved), path=str(resolved)
    )
    require_unique_ids(dataset, resolved, lambda rows: _records_of_rows(reader, str(resolved), rows), id_note)
    return dataset


def _records_of_rows(reader: RecordReader, path: str, rows: list[int]) -> list[Record]:
    """The records that produced the given dataset rows, read again from the file (only when an error needs them)."""
    found: dict[int, Record] = {}
    for row, (record, _) in enumerate(reader(path, [])):
        if row in rows:
            found[row] = record
            if len(found) == len(set(rows)):
                break
    return [found[row] for row in rows]


def require_unique_ids(
    dataset: datasets.Dataset,
    name: str | Path,
    records_of_rows: Callable[[list[int]], list[Record]],
    note: str,
) -> None:
    """Raise `DPRDataError` at the first record whose id an earlier record already has."""
    rows = first_repeated(dataset.data.column("id"))
    if rows is None:
        return
    value = dataset[rows[1]]["id"]
    earlier, record = records_of_rows(list(rows))
    shown = repr(value[:80]) + ("..." if len(value) > 80 else "")
    raise DPRDataError(f"duplicate id {shown}: record {earlier} has it too ({note})", name, record, "id")


# Ids are hashed this many at a time: a slice's Python strings are the only per-row objects alive at once.
_HASH_SLICE = 100_000


def _hash_slices(values: pa.ChunkedArray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    for start in range(0, len(values), _HASH_SLICE):
        strings = values.slice(start, _HASH_SLICE).to_numpy(zero_copy_only=False)
        yield start, strings, pd.util.hash_array(strings, categorize=False)


def first_repeated(values: pa.ChunkedArray) -> tuple[int, int] | None:
    """`(earlier, row)` for the first row whose value an earlier row has, or None when all values differ.

    Vectorised and frugal enough for 21M passage ids: 8 bytes of hash per row, sorted in place (10M ids: 2 s on
    one core, 80 MB); the strings themselves are compared only when two hashes agree.
    """
    hashes = np.empty(len(values), dtype=np.uint64)
    for start, _, hashed in _hash_slices(values):
        hashes[start : start + len(hashed)] = hashed
    hashes.sort()
    repeated = np.unique(hashes[1:][hashes[1:] == hashes[:-1]])
    del hashes
    if not len(repeated):
        return None
    first_row: dict[str, int] = {}
    for start, strings, hashed in _hash_slices(values):
        for offset in np.flatnonzero(np.isin(hashed, repeated)):
            row = start + int(offset)
            earlier = first_row.setdefault(strings[offset], row)
            if earlier != row:
                return earlier, row
    return None  # only hash collisions of different values

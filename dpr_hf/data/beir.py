"""BEIR datasets: a corpus, queries and per-split relevance judgements (qrels), as our canonical schemas.

Two layouts are read. A local folder: `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`, `text`),
`qrels/<split>.tsv` (`query-id  corpus-id  score`, header line), each optionally `.gz`; the qrels may also sit
in a sibling `<folder>-qrels/<split>.tsv`, as a downloaded `BeIR/<name>` snapshot keeps them. The Hub layout:
`BeIR/<name>` with configs `corpus` and `queries`, and `BeIR/<name>-qrels` with one split per qrels file, read
through `datasets.load_dataset` (a local folder with that layout works the same way).
Every qrels line must name a known query and passage: a judgement of a missing passage would silently count as
a miss in every metric.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets

from ..models.errors import DPRDataError
from ._io import iter_delimited
from .passages import load_passages
from .questions import load_questions
from .schema import RETRIEVER_FEATURES

logger = logging.getLogger(__name__)

Qrels = dict[str, dict[str, int]]
QRELS_FEATURES = datasets.Features(
    {
        "query-id": datasets.Value("string"),
        "corpus-id": datasets.Value("string"),
        "score": datasets.Value("int64"),
    }
)


@dataclass
class BeirData:
    """One split of a BEIR dataset: the whole corpus, the queries judged in the split, and their qrels."""

    corpus: datasets.Dataset  # id, title, text
    queries: (
        datasets.Dataset
    )  # id, question, answers ([] unless the queries carry them), gold_passage_id ("")
    qrels: Qrels  # {query id: {passage id: graded relevance}}; > 0 is relevant
    split: str
    source: str


@dataclass
class _Judgement:
    record: int | str  # qrels line number, or row number in a Hub qrels split
    query_id: str
    passage_id: str
    score: int


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _parse_score(value: str, path: Path | str, record: int | str) -> int:
    """A graded relevance: an integer (trec_eval and pytrec_eval take integers); "1.0" is read as 1."""
    try:
        score = float(value)
    except ValueError:
        raise DPRDataError(f"relevance {value!r} is not a number", path, record, "score") from None
    if not score.is_integer():
        raise DPRDataError(f"relevance {value!r} is not an integer grade", path, record, "score")
    return int(score)


def _read_qrels_tsv(path: Path) -> Iterator[_Judgement]:
    for number, row in iter_delimited(path, delimiter="\t"):
        if not row or (number == 1 and row[0].strip().lower() in ("query-id", "query_id", "qid")):
            continue
        if len(row) != 3:
            raise DPRDataError(f"expected 3 tab-separated fields (query-id, corpus-id, score), got {len(row)}",
                               path, number)  # fmt: skip
        query_id, passage_id = row[0].strip(), row[1].strip()
        if not query_id or not passage_id:
            raise DPRDataError("empty query-id or corpus-id", path, number)
        yield _Judgement(number, query_id, passage_id, _parse_score(row[2], path, number))


def _collect(judgements: Iterator[_Judgement], name: str | Path) -> tuple[Qrels, list[_Judgement]]:
    qrels: Qrels = {}
    lines: list[_Judgement] = []
    for judgement in judgements:
        judged = qrels.setdefault(judgement.query_id, {})
        known = judged.get(judgement.passage_id)
        if known is not None and known != judgement.score:
            raise DPRDataError(
                f"query {judgement.query_id!r} judges passage {judgement.passage_id!r} twice with different"
                f" scores ({known} and {judgement.score})",
                name,
                judgement.record,
            )
        judged[judgement.passage_id] = judgement.score
        lines.append(judgement)
    return qrels, lines


def load_qrels(path: str | os.PathLike) -> Qrels:
    """A BEIR qrels TSV (`query-id  corpus-id  score`, header line; `.gz` ok) -> {query id: {passage id: grade}}."""
    return _collect(_read_qrels_tsv(Path(path)), path)[0]


def _local_qrels(folder: Path, split: str) -> tuple[Path, Qrels, list[_Judgement]]:
    candidates = [folder / "qrels", folder.with_name(f"{folder.name}-qrels")]
    for qrels_dir in candidates:
        path = _find(qrels_dir, f"{split}.tsv")
        if path is not None:
            return (path, *_collect(_read_qrels_tsv(path), path))
    found = sorted(
        {p.name.split(".")[0] for d in candidates if d.is_dir() for p in d.iterdir() if ".tsv" in p.name}
    )
    raise DPRDataError(
        f"no qrels for split {split!r}: missing {candidates[0] / f'{split}.tsv'} (splits with qrels: {found})",
        folder,
    )


def _hub_qrels(name: str, split: str) -> tuple[str, Qrels, list[_Judgement]]:
    qrels_name = f"{name}-qrels"
    loaded = datasets.load_dataset(qrels_name, features=QRELS_FEATURES)
    if split not in loaded and split == "dev" and "validation" in loaded:
        split = "validation"  # datasets names a `dev.tsv` file's split "validation"
    if split not in loaded:
        raise DPRDataError(f"no qrels for split {split!r} (splits: {sorted(loaded)})", qrels_name)
    rows = loaded[split]
    judgements = (
        _Judgement(number, str(query_id), str(passage_id), int(score))
        for number, (query_id, passage_id, score) in enumerate(
            zip(rows["query-id"], rows["corpus-id"], rows["score"], strict=True), start=1
        )
    )
    return (f"{qrels_name}[{split}]", *_collect(judgements, f"{qrels_name}[{split}]"))


def _hub_config(name: str, config: str) -> datasets.Dataset:
    try:
        return datasets.load_dataset(name, config, split=config)
    except ValueError as error:  # no such config / split in a folder or repo that is not BEIR-shaped
        raise DPRDataError(
            f"not a BEIR dataset: expected a folder with corpus.jsonl, queries.jsonl and qrels/, or a Hub"
            f" dataset with a {config!r} config ({error})",
            name,
        ) from None


def _require_known(
    lines: list[_Judgement], qrels_name: str | Path, ids: set[str], attribute: str, what: str, where: str
) -> None:
    unknown = [line for line in lines if getattr(line, attribute) not in ids]
    if unknown:
        first = unknown[0]
        raise DPRDataError(
            f"{len(unknown)} qrels lines name a {what} that is not in {where}; the first names"
            f" {getattr(first, attribute)!r}",
            qrels_name,
            first.record,
            "query-id" if attribute == "query_id" else "corpus-id",
        )


def load_beir(path_or_id: str | os.PathLike, split: str = "test") -> BeirData:
    """Load one split of a BEIR dataset: a local folder (see the module docstring) or a Hub id (`BeIR/scifact`).

    The queries are those judged in `split` (as BEIR's own loader returns them), in the queries file's order.
    Bad input raises `DPRDataError` naming the file and record: a missing corpus/queries/qrels file, a
    repeated `_id`, a query without text, a qrels line naming an unknown query or passage (with how many
    such lines there are), a split without judgements.
    """
    folder = Path(path_or_id)
    # a BEIR folder has corpus.jsonl; a folder with a dataset card and no corpus.jsonl is a Hub-layout repo
    if _find(folder, "corpus.jsonl") or (folder.is_dir() and not (folder / "README.md").is_file()):
        corpus_path = _find(folder, "corpus.jsonl")
        queries_path = _find(folder, "queries.jsonl")
        for name, found in (("corpus.jsonl", corpus_path), ("queries.jsonl", queries_path)):
            if found is None:
                raise DPRDataError(f"not a BEIR folder: missing {name} (or {name}.gz)", folder)
        qrels_name, qrels, lines = _local_qrels(folder, split)
        corpus, queries = load_passages(corpus_path), load_questions(queries_path)
        corpus_name, queries_name = str(corpus_path), str(queries_path)
    else:
        name = str(path_or_id)
        corpus, queries = (
            load_passages(_hub_config(name, "corpus")),
            load_questions(_hub_config(name, "queries")),
        )
        qrels_name, qrels, lines = _hub_qrels(name, split)
        corpus_name, queries_name = f"{name} (corpus)", f"{name} (queries)"
    if not qrels:
        raise DPRDataError(f"split {split!r} has no judgements", qrels_name)
    _require_known(lines, qrels_name, set(queries["id"]), "query_id", "query", queries_name)
    _require_known(lines, qrels_name, set(corpus["id"]), "passage_id", "passage", corpus_name)
    judged = queries.filter(
        lambda ids: [identifier in qrels for identifier in ids],
        input_columns="id",
        batched=True,
        desc=f"Selecting the {split} queries",
    )
    return BeirData(corpus, judged, qrels, split, str(path_or_id))


def beir_retriever_data(beir: BeirData) -> datasets.Dataset:
    """Retriever training data whose positives are the passages judged relevant (score > 0), resolved by id.

    Every relevant passage is a positive, the highest grade first (the trainer uses the first one unless
    `shuffle_positives`); answers come from the queries when they carry them (`[]` otherwise, so negative
    mining filters by judgement only). Queries with no relevant passage are skipped with a warning.
    """
    relevant = {
        query_id: [pid for pid, score in sorted(judged.items(), key=lambda item: -item[1]) if score > 0]
        for query_id, judged in beir.qrels.items()
    }
    needed = {pid for pids in relevant.values() for pid in pids}
    rows = [row for row, pid in enumerate(beir.corpus["id"]) if pid in needed]
    fetched = beir.corpus[rows] if rows else {"id": [], "title": [], "text": []}
    passages = {
        pid: {"id": pid, "title": title, "text": text}
        for pid, title, text in zip(fetched["id"], fetched["title"], fetched["text"], strict=True)
    }
    examples: dict[str, list] = {column: [] for column in RETRIEVER_FEATURES}
    skipped = 0
    for query in beir.queries:
        positives = [passages[pid] for pid in relevant.get(query["id"], [])]
        if not positives:
            skipped += 1
            continue
        examples["question"].append(query["question"])
        examples["answers"].append(list(query["answers"]))
        examples["positive_ctxs"].append(positives)
        examples["negative_ctxs"].append([])
        examples["hard_negative_ctxs"].append([])
    if skipped:
        logger.warning(
            "%s [%s]: skipped %d queries with no passage judged relevant (score > 0)",
            beir.source,
            beir.split,
            skipped,
        )
    return datasets.Dataset.from_dict(examples, features=RETRIEVER_FEATURES)

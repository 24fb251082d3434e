"""Writing BEIR folders: `save_beir` for any corpus/queries/qrels, `squad_to_beir` for QA data held as SQuAD.

A BEIR folder is the one format every IR toolkit reads (BEIR, MTEB, ir_datasets, Pyserini), and what
`dpr_hf.data.load_beir` and `dpr-hf mine-negatives --beir` take.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..atomic import staged_folder
from ..models.errors import DPRDataError
from ._io import read_json
from .squad import iter_squad, unanswerable_report

logger = logging.getLogger(__name__)


def save_beir(
    corpus: Iterable[Mapping],
    queries: Iterable[Mapping],
    qrels: Mapping[str, Mapping[str, Mapping[str, int]]],
    output_dir: str | os.PathLike,
) -> Path:
    """Write `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`, `text`, and `answers` when a query
    has them) and `qrels/<split>.tsv` for each `{split: {query id: {passage id: score}}}`.

    The folder appears whole or not at all (written beside it, then renamed into place).
    """
    with staged_folder(output_dir) as staging:
        with open(staging / "corpus.jsonl", "w", encoding="utf-8") as handle:
            for passage in corpus:
                record = {"_id": passage["id"], "title": passage.get("title") or "", "text": passage["text"]}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        with open(staging / "queries.jsonl", "w", encoding="utf-8") as handle:
            for query in queries:
                record = {"_id": query["id"], "text": query["question"]}
                if query.get("answers"):
                    record["answers"] = list(query["answers"])
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        (staging / "qrels").mkdir()
        for split, judged in qrels.items():
            with open(staging / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as handle:
                handle.write("query-id\tcorpus-id\tscore\n")
                for query_id, passages in judged.items():
                    for passage_id, score in passages.items():
                        handle.write(f"{query_id}\t{passage_id}\t{int(score)}\n")
    return Path(output_dir)


def squad_to_beir(
    squad_train: str | os.PathLike, squad_dev: str | os.PathLike, output_dir: str | os.PathLike
) -> Path:
    """SQuAD JSON (plain or `.gz`) -> a BEIR folder for open retrieval, as in the DPR paper's SQuAD setting.

    Corpus: every paragraph of both files, with the ids `load_passages` gives them (`{article title}-{index}`),
    so results line up with the `gold_passage_id` of `load_questions`; when an article title occurs in both
    files (a train/dev split of the same articles), the dev file's numbering continues the train file's, and a
    paragraph present in both is one passage. Queries: every answerable question, with its answers (so top-k
    accuracy can be measured too). Qrels: `train` = the train questions -> their paragraph, `test` = the dev
    questions -> theirs (score 1). Unanswerable (v2.0) questions are left out; a question id used twice
    raises `DPRDataError`.
    """
    corpus: dict[str, dict[str, str]] = {}
    id_of_content: dict[tuple[str, str], str] = {}
    queries: dict[str, dict] = {}
    where_query: dict[str, str] = {}
    qrels: dict[str, dict[str, dict[str, int]]] = {"train": {}, "test": {}}
    seen_per_title: dict[str, int] = {}  # paragraphs of each article title in the files read before
    for split, path in (("train", squad_train), ("test", squad_dev)):
        unanswerable = 0
        in_file: dict[str, int] = {}
        for paragraph in iter_squad(read_json(path), Path(path)):
            title, _, index = paragraph.passage["id"].rpartition("-")
            in_file[title] = in_file.get(title, 0) + 1
            content = (paragraph.passage["title"], paragraph.passage["text"])
            passage_id = id_of_content.get(content)
            if passage_id is None:
                passage_id = f"{title}-{seen_per_title.get(title, 0) + int(index)}"
                id_of_content[content] = passage_id
                corpus[passage_id] = {**paragraph.passage, "id": passage_id}
            for question in paragraph.questions:
                if not question.answers:
                    unanswerable += 1
                    continue
                if question.id in queries:
                    raise DPRDataError(
                        f"question id {question.id!r} is already used by {where_query[question.id]}",
                        path,
                        question.record,
                        "id",
                    )
                queries[question.id] = {
                    "id": question.id,
                    "question": question.question,
                    "answers": question.answers,
                }
                where_query[question.id] = f"{path}, {question.record}"
                qrels[split][question.id] = {passage_id: 1}
        for title, count in in_file.items():
            seen_per_title[title] = seen_per_title.get(title, 0) + count
        if unanswerable:
            logger.warning(unanswerable_report(path, unanswerable))
    return save_beir(corpus.values(), queries.values(), qrels, output_dir)

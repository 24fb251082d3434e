"""SQuAD-format JSON (plain or gzipped), read as paragraphs and their questions.

A paragraph's id is `f"{article_title}-{index}"`, `index` counting the paragraphs of articles with that title (so
an article whose title repeats, or several untitled ones, never reuse an id), and its title the article title with
"_" as space, so the ids of `load_passages`, `load_questions` and `load_retriever_data` on the same file agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .schema import Where, get_id, get_string, require_mapping


@dataclass
class SquadQuestion:
    record: str  # its JSON path, `data[a].paragraphs[p].qas[q]`
    id: str
    question: str
    answers: list[str]  # unique answer texts, in file order; empty for an unanswerable (v2.0) question


@dataclass
class SquadParagraph:
    record: str  # its JSON path, `data[a].paragraphs[p]`
    passage: dict[str, str]
    questions: list[SquadQuestion] = field(default_factory=list)


def is_squad(document: Any) -> bool:
    return isinstance(document, dict) and "data" in document


def iter_squad(document: Any, path: Path) -> Iterator[SquadParagraph]:
    """Validate and walk a parsed SQuAD document; records are named by their JSON path (`data[3].paragraphs[1]`)."""
    articles = require_mapping(document, Where(path, None)).get("data")
    if not isinstance(articles, list):
        raise Where(path, None).error(f"expected a list of articles, got {type(articles).__name__}", "data")
    paragraphs_per_title: dict[str, int] = {}
    for a, article in enumerate(articles):
        where = Where(path, f"data[{a}]")
        article = require_mapping(article, where)
        article_title = get_string(article, "title", where, required=False)
        paragraphs = article.get("paragraphs")
        if not isinstance(paragraphs, list):
            raise where.error(f"expected a list of paragraphs, got {type(paragraphs).__name__}", "paragraphs")
        first = paragraphs_per_title.get(article_title, 0)
        paragraphs_per_title[article_title] = first + len(paragraphs)
        for p, paragraph in enumerate(paragraphs):
            where = Where(path, f"data[{a}].paragraphs[{p}]")
            paragraph = require_mapping(paragraph, where)
            context = get_string(paragraph, "context", where)
            passage = {
                "id": f"{article_title}-{first + p}",
                "title": article_title.replace("_", " "),
                "text": context,
            }
            questions = list(_iter_questions(paragraph.get("qas"), path, a, p))
            yield SquadParagraph(where.record, passage, questions)


def iter_answerable(
    paragraphs: Iterable[SquadParagraph], path: Any, report: list[str]
) -> Iterator[tuple[SquadParagraph, SquadQuestion]]:
    """The answerable questions of `paragraphs` (from `iter_squad`), each with its paragraph.

    Unanswerable (v2.0) questions are skipped and counted; once the walk ends, a count above zero is appended to
    `report` as `unanswerable_report(path, count)`.
    """
    unanswerable = 0
    for paragraph in paragraphs:
        for question in paragraph.questions:
            if question.answers:
                yield paragraph, question
            else:
                unanswerable += 1
    if unanswerable:
        report.append(unanswerable_report(path, unanswerable))


def unanswerable_report(path: Any, count: int) -> str:
    """The warning for `count` skipped unanswerable questions, the same for every loader."""
    return f"{path}: skipped {count} unanswerable questions (SQuAD v2.0 is_impossible, or no answer text)"


def _iter_questions(qas: Any, path: Path, a: int, p: int) -> Iterator[SquadQuestion]:
    if qas is None:
        return
    if not isinstance(qas, list):
        raise Where(path, f"data[{a}].paragraphs[{p}]").error(
            f"expected a list of questions, got {type(qas).__name__}", "qas"
        )
    for q, qa in enumerate(qas):
        where = Where(path, f"data[{a}].paragraphs[{p}].qas[{q}]")
        qa = require_mapping(qa, where)
        question = get_string(qa, "question", where, non_empty=True)
        identifier = get_id(qa, ("id",), where) or f"{a}-{p}-{q}"
        answers = qa.get("answers") or []
        if not isinstance(answers, list):
            raise where.error(f"expected a list of answers, got {type(answers).__name__}", "answers")
        texts = []
        for i, answer in enumerate(answers):
            answer = require_mapping(answer, where, f"answers[{i}]")
            texts.append(get_string(answer, "text", where, f"answers[{i}].text"))
        if qa.get("is_impossible") is True:
            texts = []
        yield SquadQuestion(where.record, identifier, question, list(dict.fromkeys(texts)))

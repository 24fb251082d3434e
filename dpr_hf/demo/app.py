"""The demo page of a QA system: a question box, the answers highlighted in their passages, the passages read.

The work is done by plain functions (`load_qa`, `answer_question`, `highlight`) that return data and HTML, so they
are tested without a browser; `build_demo` only wires them into a `gr.Blocks` page. The system is loaded once, when
the page is built, and every question is one call of the `open-domain-qa` pipeline. Errors (an empty question, a
system that does not load, a failed call) become a message on the page; their traceback goes to the server log.
"""

from __future__ import annotations

import html
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import gradio as gr

    from dpr_hf import OpenDomainQAPipeline, QASystem

logger = logging.getLogger(__name__)

RETRIEVER_LABELS = {"dense": "dense (DPR)", "bm25": "BM25", "hybrid": "hybrid (BM25 + dense)"}
MAX_PASSAGES = 100
MAX_ANSWERS = 10
PASSAGE_HEADERS = ["rank", "title", "score", "retriever", "id"]
CSS = """
.dpr-answer { margin: 0 0 1em 0; }
.dpr-answer-text { font-size: 1.3em; font-weight: 600; }
.dpr-score { color: #666; margin-left: 0.5em; }
.dpr-passage { margin-top: 0.3em; line-height: 1.5; }
.dpr-passage mark { background: #ffe066; padding: 0 2px; border-radius: 2px; }
.dpr-error { color: #b00020; font-weight: 600; }
"""


def require_gradio() -> Any:
    """gradio, imported only when a page is built: dpr_hf itself works without the `demo` extra."""
    try:
        import gradio
    except ImportError as error:
        raise ImportError("the demo page needs gradio: pip install 'dpr-hf[demo]'") from error
    return gradio


def load_qa(system_or_path: OpenDomainQAPipeline | QASystem | str | os.PathLike) -> OpenDomainQAPipeline:
    """The `open-domain-qa` pipeline over a loaded system, or over a system folder / Hub id loaded here once (a
    pipeline is used as it is).

    The passage encoder is not loaded: answering needs only the question encoder, the index, BM25 and the reader.
    """
    from transformers import pipeline

    from dpr_hf import OpenDomainQAPipeline, QASystem

    if isinstance(system_or_path, OpenDomainQAPipeline):
        return system_or_path
    system = system_or_path
    if not isinstance(system, QASystem):
        system = QASystem.from_pretrained(system_or_path, with_passage_encoder=False)
    return pipeline("open-domain-qa", model=system)


def available_retrievers(system: QASystem) -> list[str]:
    """The retrievers a system can run: BM25 and hybrid need its `bm25/` index."""
    return ["dense"] if system.bm25 is None else ["dense", "bm25", "hybrid"]


def highlight(text: str, start: int, end: int) -> str:
    """The passage as HTML (escaped), with the answer span `text[start:end]` wrapped in <mark>."""
    if not 0 <= start <= end <= len(text):
        raise ValueError(
            f"answer span [{start}, {end}) lies outside the passage text ({len(text)} characters)"
        )
    before, span, after = text[:start], text[start:end], text[end:]
    return f"{html.escape(before)}<mark>{html.escape(span)}</mark>{html.escape(after)}"


def error_html(message: str) -> str:
    return f'<div class="dpr-error">{html.escape(message)}</div>'


def _answers_html(answers: list[dict], num_passages: int) -> str:
    if not answers:
        if not num_passages:
            return error_html("No answer: no passage was retrieved for this question.")
        return error_html(f"No answer: the reader found no answer span in the {num_passages} passages read.")
    blocks = []
    for answer in answers:
        passage = answer["passage"]
        blocks.append(
            '<div class="dpr-answer">'
            f'<span class="dpr-answer-text">{html.escape(answer["answer"])}</span>'
            f'<span class="dpr-score">score {answer["score"]:.2f}</span>'
            f'<div class="dpr-passage"><b>{html.escape(passage["title"])}</b> '
            f'<span class="dpr-score">(passage {html.escape(str(passage["id"]))}, '
            f"retrieval score {passage['score']:.2f})</span><br>"
            f"{highlight(passage['text'], answer['start'], answer['end'])}</div></div>"
        )
    return "\n".join(blocks)


def answer_question(
    qa: OpenDomainQAPipeline,
    question: str,
    retriever: str | None = None,
    num_passages: int | None = None,
    top_k: int | None = None,
) -> dict[str, Any]:
    """One question through the pipeline: the page's data and HTML, or an `error` message (never an exception).

    Returns `{"question", "retriever", "answers", "passages", "answer_html", "passage_rows", "error"}`: `answers`
    as the pipeline returns them (with `start`/`end` in their passage's text), `passages` the ones read, and
    `passage_rows` the passages table (`PASSAGE_HEADERS`).
    """
    retriever = retriever or qa.model.config.retriever
    result = {"question": question, "retriever": retriever, "answers": [], "passages": []}
    result.update(answer_html="", passage_rows=[], error=None)
    if not isinstance(question, str) or not question.strip():
        result["error"] = "Type a question first."
    elif retriever not in available_retrievers(qa.model):
        result["error"] = f"This system has no {RETRIEVER_LABELS.get(retriever, retriever)} retriever."
    if result["error"]:
        result["answer_html"] = error_html(result["error"])
        return result
    try:
        output = qa(
            question.strip(),
            retriever=retriever,
            num_passages=int(num_passages) if num_passages else None,
            top_k=int(top_k) if top_k else None,
            return_passages=True,
        )
    except Exception as error:  # the page shows what went wrong; the traceback goes to the server log only
        logger.exception("answering %r failed", question)
        result["error"] = f"Could not answer: {error}"
        result["answer_html"] = error_html(result["error"])
        return result
    result["answers"], result["passages"] = output["answers"], output["passages"]
    result["answer_html"] = _answers_html(output["answers"], len(output["passages"]))
    result["passage_rows"] = [
        [rank, passage["title"], round(float(passage["score"]), 4), retriever, str(passage["id"])]
        for rank, passage in enumerate(output["passages"], start=1)
    ]
    return result


def build_demo(
    system_or_path: OpenDomainQAPipeline | QASystem | str | os.PathLike, title: str | None = None
) -> gr.Blocks:
    """The demo page of one QA system (a loaded `QASystem` or pipeline, a system folder or a Hub id), loaded once.

    A system that does not load gives a page that says why. Launch with `.launch()` (`dpr-hf demo` does).
    """
    gr = require_gradio()
    name = title or (str(system_or_path) if isinstance(system_or_path, (str, os.PathLike)) else "QA system")
    if title is None and isinstance(system_or_path, (str, os.PathLike)) and Path(system_or_path).is_dir():
        name = Path(system_or_path).resolve().name  # a folder: its name, not the whole path
    try:
        qa = load_qa(system_or_path)
    except Exception as error:  # the page says what went wrong; the traceback goes to the server log only
        logger.exception("loading the QA system %s failed", name)
        with gr.Blocks(title=f"dpr-hf demo: {name}", analytics_enabled=False) as demo:
            gr.Markdown(f"# Open-domain QA: {name}")
            gr.HTML(
                error_html(f"Could not load the QA system {system_or_path}: {error}"), elem_id="load-error"
            )
        return demo

    system, config = qa.model, qa.model.config
    retrievers = available_retrievers(system)
    max_passages = max(1, min(MAX_PASSAGES, len(system.index)))
    with gr.Blocks(title=f"dpr-hf demo: {name}", analytics_enabled=False) as demo:
        gr.Markdown(
            f"# Open-domain QA: {name}\nDense Passage Retrieval over {len(system.index):,} passages, "
            "then an extractive reader picks the answer span."
        )
        with gr.Row():
            with gr.Column(scale=3):
                question = gr.Textbox(label="Question", placeholder="Ask a question", elem_id="question")
                ask = gr.Button("Answer", variant="primary", elem_id="ask")
                if system.examples:
                    gr.Examples(examples=[[q] for q in system.examples], inputs=[question], label="Examples")
            with gr.Column(scale=2):
                retriever = gr.Radio(
                    [(RETRIEVER_LABELS[r], r) for r in retrievers],
                    value=config.retriever if config.retriever in retrievers else "dense",
                    label="Retriever",
                    info=None if system.bm25 is not None else "BM25 and hybrid need the system's bm25/ index",
                    elem_id="retriever",
                )
                num_passages = gr.Slider(
                    1, max_passages, value=min(config.num_passages, max_passages), step=1,
                    label="Passages read", elem_id="num-passages",
                )  # fmt: skip
                top_k = gr.Slider(
                    1, MAX_ANSWERS, value=min(config.top_k, MAX_ANSWERS), step=1, label="Answers",
                    elem_id="top-k",
                )  # fmt: skip
        answers = gr.HTML(label="Answers", elem_id="answers", css_template=CSS)
        passages = gr.Dataframe(headers=PASSAGE_HEADERS, label="Passages read", elem_id="passages")
        with gr.Accordion("Raw output", open=False):
            raw = gr.JSON(label="Answers as the pipeline returns them")

        def respond(question: str, retriever: str, num_passages: float, top_k: float):
            result = answer_question(qa, question, retriever, int(num_passages), int(top_k))
            raw_output = {key: result[key] for key in ("question", "retriever", "answers", "error")}
            return result["answer_html"], result["passage_rows"], raw_output

        inputs, outputs = [question, retriever, num_passages, top_k], [answers, passages, raw]
        ask.click(respond, inputs, outputs, api_name="answer")
        question.submit(respond, inputs, outputs, api_visibility="private")
    return demo

"""Demo page latency: one question through `dpr_hf.demo.answer_question` (what the page runs) and through the page
served on 127.0.0.1 (gradio_client), each against the bare `open-domain-qa` pipeline call on the same system.

    python benchmarks/demo_latency.py [--quick] [--system DIR] [--questions N] [--rounds R] [--num-passages N]

Goal: the page answers in the pipeline's time plus at most 10%. The system is `--system` (e.g. the quickstart's
runs/quickstart/system) or, by default, one built here without training at the quickstart's sizes: both towers
and the reader on all-MiniLM-L6-v2 (the reader's span heads untrained, so its answers mean nothing but its compute
is the trained reader's), a Flat index and BM25 over every paragraph of data/quickstart (694; --quick: the 97
dev paragraphs). Questions: the dev subset's. Each request is compared with the pipeline call made inside it (timed
by a pipeline subclass), so the ratio is the page's own overhead, not the noise between two separate calls.
"""

from __future__ import annotations

import argparse
import socket
import time

import common

DEV_FILE = common.ROOT / "data" / "quickstart" / "squad-dev-subset.json.gz"
TRAIN_FILE = common.ROOT / "data" / "quickstart" / "squad-train-subset.json.gz"
GOAL = 1.10


def build_system(quick: bool):
    """A MiniLM-sized system from the base weights (no training), at the quickstart's corpus size."""
    from datasets import concatenate_datasets
    from transformers import AutoTokenizer

    from dpr_hf import ExtractiveReader, PassageEncoder, QASystem, QASystemConfig, QuestionEncoder
    from dpr_hf.data import load_passages, load_questions
    from dpr_hf.encoding import encode_passages
    from dpr_hf.index import PassageIndex
    from dpr_hf.models.fingerprints import encoder_fingerprint
    from dpr_hf.retrieval import BM25Retriever

    base = common.base_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(base)
    towers = {"pooling": "mean", "normalize": True, "temperature": 0.05}
    question_encoder = QuestionEncoder.from_backbone(base, **towers).eval()
    passage_encoder = PassageEncoder.from_backbone(base, **towers).eval()
    reader = ExtractiveReader.from_backbone(base).eval()
    files = [DEV_FILE] if quick else [TRAIN_FILE, DEV_FILE]
    passages = concatenate_datasets([load_passages(str(f)) for f in files])
    start = time.perf_counter()
    embedded = encode_passages(passage_encoder, tokenizer, passages, show_progress=False)
    print(f"encoded {len(passages)} passages in {time.perf_counter() - start:.0f} s", flush=True)
    system = QASystem(
        question_encoder=question_encoder,
        question_tokenizer=tokenizer,
        index=PassageIndex.build(embedded, encoder_fingerprint=encoder_fingerprint(passage_encoder)),
        reader=reader,
        reader_tokenizer=tokenizer,
        bm25=BM25Retriever.from_passages(passages),
        config=QASystemConfig(num_passages=20),
        examples=list(load_questions(str(DEV_FILE))["question"][:3]),
    )
    return system, f"all-MiniLM-L6-v2 towers and reader (untrained heads), {len(passages)} passages"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed_pipeline(system):
    """The `open-domain-qa` pipeline, recording how long each of its calls takes: the page's time for a question
    is then compared with the pipeline call made inside that very request (no noise between two separate calls)."""
    from dpr_hf import OpenDomainQAPipeline

    class TimedPipeline(OpenDomainQAPipeline):
        def __call__(self, *args, **kwargs):
            start = time.perf_counter()
            try:
                return super().__call__(*args, **kwargs)
            finally:
                self.seconds.append(time.perf_counter() - start)

    qa = TimedPipeline(model=system)
    qa.seconds = []
    return qa


def measure(qa, questions: list[str], rounds: int, call) -> tuple[float, float]:
    """(seconds of `call` over every question and round, seconds of the pipeline calls made inside them)."""
    qa.seconds.clear()
    total = 0.0
    for _ in range(rounds):
        for question in questions:
            start = time.perf_counter()
            call(question)
            total += time.perf_counter() - start
    assert len(qa.seconds) == rounds * len(questions), "each question must make exactly one pipeline call"
    return total, sum(qa.seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="97 dev passages, 5 questions, 1 round")
    parser.add_argument("--system", type=common.Path, help="a saved system folder (default: build one here)")
    parser.add_argument("--questions", type=int, default=0, help="dev questions timed (default 20; quick 5)")
    parser.add_argument(
        "--rounds", type=int, default=0, help="rounds over the questions (default 2; quick 1)"
    )
    parser.add_argument("--num-passages", type=int, default=20, help="passages read per question")
    parser.add_argument("--top-k", type=int, default=3, help="answers per question")
    args = parser.parse_args()
    started = common.now()
    import gradio_client

    from dpr_hf import QASystem
    from dpr_hf.data import load_questions
    from dpr_hf.demo import answer_question, build_demo

    if args.system:
        system = QASystem.from_pretrained(args.system, with_passage_encoder=False)
        described = f"`{args.system}`"
    else:
        system, described = build_system(args.quick)
    qa = timed_pipeline(system)
    retrievers = ["dense", "bm25", "hybrid"] if system.bm25 is not None else ["dense"]
    count = args.questions or (5 if args.quick else 20)
    rounds = args.rounds or (1 if args.quick else 2)
    questions = list(load_questions(str(DEV_FILE))["question"][:count])
    n, k = args.num_passages, args.top_k

    demo = build_demo(qa, title="latency")
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    rows, ratios = [], []
    try:
        client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
        for retriever in retrievers:

            def function_call(question: str, retriever: str = retriever):
                result = answer_question(qa, question, retriever, n, k)
                assert result["error"] is None, result["error"]

            def page_call(question: str, retriever: str = retriever):
                client.predict(question, retriever, n, k, api_name="/answer")

            page_call(questions[0])  # warm-up: the first calls allocate
            for name, call in (
                ("answer_question (page function)", function_call),
                ("page via gradio_client (HTTP)", page_call),
            ):
                side_s, pipeline_s = measure(qa, questions, rounds, call)
                calls = rounds * len(questions)
                ratios.append(side_s / pipeline_s)
                rows.append(
                    [retriever, name, 1000 * pipeline_s / calls, 1000 * side_s / calls, side_s / pipeline_s]
                )
    finally:
        demo.close()

    verdict = "pass" if max(ratios) <= GOAL else "FAIL"
    body = (
        f"System: {described}; {len(questions)} dev-subset questions x {rounds} round(s), {n} passages read, {k} "
        f"answers. Each question's time (the function call in this process, or the client's request to the page "
        f"served on 127.0.0.1) is compared with the `open-domain-qa` pipeline call made inside that same request, "
        f"timed by a `OpenDomainQAPipeline` subclass. Goal: ratio <= {GOAL:.2f}: {verdict} (max "
        f"{max(ratios):.3f}).\n\n"
        + common.table(["retriever", "side", "pipeline ms/question", "side ms/question", "ratio"], rows)
    )
    common.record("Demo page latency: page vs pipeline", body, args.quick, started)
    if verdict == "FAIL":
        raise SystemExit(f"the page took more than {GOAL:.2f}x the pipeline's time")


if __name__ == "__main__":
    main()

"""Reader span decoding and answer ranking.

Every pair is `[CLS] question [SEP] title [SEP] passage [SEP]` (token types all zero, as in the original DPR reader).
Answers may only lie in the passage text: which tokens those are comes from the fast tokenizer's sequence ids and
character offsets, never from "whatever follows the first [SEP]" (transformers' `decode_best_spans` lets the title
win that way). The answer string is sliced from the original passage by character offsets, so it keeps its case,
accents and spacing instead of showing wordpieces.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..evaluation.metrics import normalize_answer
from ..models.errors import MismatchError
from ..models.tokenization import encode_reader_inputs, tokenizer_fingerprint


def best_spans(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    span_mask: torch.Tensor,
    max_answer_length: int = 10,
    num_spans: int = 1,
    word_ids: Sequence[int | None] | None = None,
) -> list[tuple[int, int, float]]:
    """The `num_spans` best non-overlapping spans `(start, end, score)` (inclusive token indices), best first.

    score = start logit + end logit; both ends must be `span_mask` tokens and the span at most
    `max_answer_length` tokens. With `word_ids`, spans grow to whole words (as DPR does for wordpieces) before the
    overlap check, so "##ly" alone is never an answer.

    Only the band of `length x max_answer_length` (start, end) pairs is scored, not the whole square: small enough
    that torch runs it on the calling thread, where the square made every passage wait on the intra-op thread pool
    (milliseconds each on an idle 2-core machine, tens when the other core is busy).
    """
    start_logits, end_logits = start_logits.float(), end_logits.float()
    allowed = span_mask.bool()
    length = start_logits.shape[0]
    positions = torch.arange(length)
    ends = positions[:, None] + torch.arange(max(max_answer_length, 0))[None, :]  # (start, width) -> end
    inside = ends < length
    ends = ends.clamp(max=length - 1)
    valid = allowed[:, None] & allowed[ends] & inside
    scores = start_logits[:, None] + end_logits[ends]
    candidates = valid.nonzero()  # (start, width), in the (start, end) order of the square
    candidate_scores = scores[valid]
    order = candidate_scores.argsort(descending=True)
    mask = allowed.tolist()
    chosen: list[tuple[int, int, float]] = []
    for index in order.tolist():
        start, width = candidates[index].tolist()
        end = start + width
        if word_ids is not None:
            while start > 0 and mask[start - 1] and word_ids[start - 1] == word_ids[start]:
                start -= 1
            while end + 1 < length and mask[end + 1] and word_ids[end + 1] == word_ids[end]:
                end += 1
        if any(start <= other_end and other_start <= end for other_start, other_end, _ in chosen):
            continue
        chosen.append((start, end, float(candidate_scores[index])))
        if len(chosen) == num_spans:
            break
    return chosen


@dataclass
class PassageReading:
    """What the reader makes of one (question, passage) pair: its relevance logit and its best spans."""

    relevance: float
    spans: list[dict] = field(default_factory=list)


def _passage_dict(passage: dict) -> dict:
    return {
        "id": passage.get("id"),
        "title": passage.get("title") or "",
        "text": passage["text"],
        "score": passage.get("score"),
    }


def check_reader_tokenizer(reader: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Refuse a tokenizer that is not the reader's: ids past its embeddings, another padding id, or (for readers
    that record it) another vocabulary than the one it was trained with.

    Each would otherwise surface as an index error deep in torch or as silently wrong answers.
    """
    backbone = getattr(reader.config, "encoder", reader.config)
    name = reader.name_or_path or type(reader).__name__
    tokenizer_name = tokenizer.name_or_path or type(tokenizer).__name__
    if len(tokenizer) > backbone.vocab_size:
        raise MismatchError(
            f"the tokenizer ({tokenizer_name}) has {len(tokenizer)} tokens but reader {name} embeds only "
            f"{backbone.vocab_size}: use the tokenizer saved with the reader"
        )
    pad_id = getattr(backbone, "pad_token_id", None)
    if pad_id is not None and tokenizer.pad_token_id != pad_id:
        raise MismatchError(
            f"the tokenizer ({tokenizer_name}) pads with id {tokenizer.pad_token_id} but reader {name} with id "
            f"{pad_id}: use the tokenizer saved with the reader"
        )
    recorded = getattr(reader.config, "tokenizer_fingerprint", None)
    if recorded is not None and (found := tokenizer_fingerprint(tokenizer)) != recorded:
        raise MismatchError(
            f"reader {name} was trained with vocabulary {recorded[:19]}... but the tokenizer ({tokenizer_name}) "
            f"has vocabulary {found[:19]}...: use the tokenizer saved with the reader"
        )


@dataclass
class PassageLogits:
    """The reader's raw output for one (question, passage) pair, with what decoding needs to map its tokens back
    to passage text: what a pipeline's forward pass hands to its postprocessing."""

    relevance: float
    start_logits: torch.Tensor
    end_logits: torch.Tensor
    span_mask: list[int]
    word_ids: list[int | None]
    offsets: list[tuple[int, int]]


# What one forward pass costs beyond its tokens, in tokens. CPU: a pass of the 6-layer MiniLM reader on 2 threads
# costs ~5 ms of dispatch and thread-pool work besides ~0.17 ms per padded token (1 to 16 pairs of 32 to 192 tokens
# on benchmarks/reader_latency.py's 2-core machine), ~32 tokens; on 40 questions' top 20 at 192 tokens any cost from
# 16 to 128 estimates within 1.5% of the others, and 64 takes a quarter fewer passes than 32 (each pass waits on
# the thread pool once per operation, which costs most when another process holds a core). Other devices (GPU) pad
# nearly for free: fewest passes there.
PASS_COST_TOKENS = {"cpu": 64}


def length_batches(lengths: Sequence[int], max_batch: int, pass_cost: int | None = None) -> list[list[int]]:
    """Indices of `lengths` in length-sorted batches of at most `max_batch`.

    With `pass_cost`, the batches minimise the padded tokens read plus `pass_cost` per batch: one question's 20
    passages, read as one batch, pad ~12% of their tokens at 192 (the longest passages are cut there, the others
    are not); cutting where the lengths jump saves most of that for a few more passes. Without it: the fewest
    passes (consecutive runs of `max_batch`).
    """
    if max_batch < 1:
        raise ValueError(f"batch_size must be at least 1, got {max_batch}")
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    if pass_cost is None:
        return [order[begin : begin + max_batch] for begin in range(0, len(order), max_batch)]
    cost = [0] + [math.inf] * len(order)  # cost[end]: the cheapest batching of order[:end]
    cut = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        longest = lengths[order[end - 1]]
        for start in range(max(0, end - max_batch), end):
            candidate = cost[start] + (end - start) * longest + pass_cost
            if candidate < cost[end]:
                cost[end], cut[end] = candidate, start
    batches, end = [], len(order)
    while end:
        batches.append(order[cut[end] : end])
        end = cut[end]
    return batches[::-1]


@torch.inference_mode()
def run_reader(
    reader: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[str],
    passages: Sequence[Sequence[dict]],
    max_length: int | None = None,
    batch_size: int = 32,
) -> list[list[PassageLogits]]:
    """Tokenise every (question, passage) pair and run the reader on them; results keep the input passage order.

    Pairs are batched by length to spend little compute on padding (`length_batches`, at most `batch_size` pairs a
    pass), and read at the reader's trained `config.max_seq_length` tokens unless `max_length` says otherwise.
    """
    if len(questions) != len(passages):
        raise ValueError(f"got {len(questions)} questions but passage lists for {len(passages)}")
    check_reader_tokenizer(reader, tokenizer)
    pairs = [(q, p) for q, question_passages in enumerate(passages) for p in range(len(question_passages))]
    if not pairs:  # nothing retrieved (BM25 finds no passage sharing a term with a question): nothing to read
        return [[] for _ in passages]
    encoded = encode_reader_inputs(
        tokenizer,
        [questions[q] for q, _ in pairs],
        [passages[q][p].get("title") for q, p in pairs],
        [passages[q][p]["text"] for q, p in pairs],
        max_length=max_length or reader.config.max_seq_length,
    )
    logits: list[list[PassageLogits | None]] = [[None] * len(p) for p in passages]
    lengths = [len(ids) for ids in encoded["input_ids"]]
    was_training = reader.training
    if was_training:  # eval()/train() walk every submodule: ~1 ms each on the 6-layer reader, per call
        reader.eval()
    for rows in length_batches(lengths, batch_size, PASS_COST_TOKENS.get(reader.device.type)):
        batch = tokenizer.pad(
            {key: [encoded[key][i] for i in rows] for key in ("input_ids", "attention_mask")},
            return_tensors="pt",
        )
        outputs = reader(
            input_ids=batch["input_ids"].to(reader.device),
            attention_mask=batch["attention_mask"].to(reader.device),
        )
        for j, row in enumerate(rows):
            q, p = pairs[row]
            n_tokens = len(encoded["input_ids"][row])
            logits[q][p] = PassageLogits(
                relevance=float(outputs.relevance_logits[j]),
                start_logits=outputs.start_logits[j, :n_tokens].cpu(),
                end_logits=outputs.end_logits[j, :n_tokens].cpu(),
                span_mask=encoded["span_mask"][row],
                word_ids=encoded.word_ids(row),
                offsets=encoded["text_offsets"][row],
            )
    if was_training:
        reader.train()
    return logits


def decode_passage(
    logits: PassageLogits, text: str, max_answer_length: int = 10, num_spans: int = 1
) -> PassageReading:
    """The best spans of one passage as `{"answer", "score", "log_prob", "start", "end"}` (character offsets into
    `text`): `score` is the start + end logit, `log_prob` the span's start + end log-probability within its passage,
    which is what makes spans of different passages comparable (`rank_answers`)."""
    start_logits, end_logits = logits.start_logits.float(), logits.end_logits.float()
    span_mask = torch.tensor(logits.span_mask)
    allowed = span_mask.bool()
    normalizer = float(torch.logsumexp(start_logits[allowed], 0) + torch.logsumexp(end_logits[allowed], 0))
    spans = best_spans(
        start_logits,
        end_logits,
        span_mask,
        max_answer_length=max_answer_length,
        num_spans=num_spans,
        word_ids=logits.word_ids,
    )
    offsets = logits.offsets
    return PassageReading(
        relevance=logits.relevance,
        spans=[
            {
                "answer": text[offsets[start][0] : offsets[end][1]],
                "score": score,
                "log_prob": score - normalizer,
                "start": offsets[start][0],
                "end": offsets[end][1],
            }
            for start, end, score in spans
        ],
    )


def score_passages(
    reader: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[str],
    passages: Sequence[Sequence[dict]],
    max_answer_length: int = 10,
    num_spans: int = 1,
    max_length: int | None = None,
    batch_size: int = 32,
) -> list[list[PassageReading]]:
    """Run the reader over every (question, passage) pair and decode each one's best spans (`run_reader`, then
    `decode_passage`); results keep the input passage order."""
    logits = run_reader(reader, tokenizer, questions, passages, max_length=max_length, batch_size=batch_size)
    return [
        [
            decode_passage(passage_logits, passage["text"], max_answer_length, num_spans)
            for passage_logits, passage in zip(question_logits, question_passages, strict=True)
        ]
        for question_logits, question_passages in zip(logits, passages, strict=True)
    ]


RANKINGS = ("dpr", "span", "joint", "marginal")
# weight of the retriever's logit in the passage prior of a QA system: chosen on the quickstart's dev subset, where
# 1.5-2 beat 1 at 20 passages with the windowed quickstart reader (docs/reader.md has the measurements)
DEFAULT_RETRIEVER_WEIGHT = 2.0


def default_ranking(retriever_weight: float) -> str:
    """`marginal` with the retriever's logit in the passage prior, else DPR's rule: without that prior, a reader's
    own relevance head is trusted most when it alone picks the passage (docs/reader.md, measured at 20 passages)."""
    return "marginal" if retriever_weight else "dpr"


def answer_keys(
    readings: Sequence[PassageReading],
    passages: Sequence[dict],
    ranking: str | None = None,
    retriever_weight: float = 0.0,
    retriever_temperature: float = 1.0,
) -> list[tuple[tuple[float, ...], int, int]]:
    """Every candidate span as `(sort key, passage index, span index)`, unsorted; larger keys rank first.

    - `dpr`: DPR's rule: the most relevant passage (relevance logit), then its spans by start + end logit.
    - `span`: the start + end logit alone, compared across passages (transformers' QA pipeline over many contexts).
    - `joint`: log P(passage) + log P(span | passage): relevance logits (plus `retriever_weight` times the retriever's
      logit `score / retriever_temperature`) softmaxed over the passages read, and the span's start and end
      log-probabilities within its passage. Reading one more passage rescales every old candidate alike, so it can
      only lose a right answer to a better span of the new passage.
    - `marginal`: `joint`, with the probabilities of spans that normalise to the same answer string summed, so an
      answer several passages agree on gains (an answer key is `(log of the sum, own joint)`).
    """
    ranking = ranking or default_ranking(retriever_weight)
    if ranking not in RANKINGS:
        raise ValueError(f"unknown ranking {ranking!r}: expected one of {', '.join(RANKINGS)}")
    if len(readings) != len(passages):
        raise ValueError(f"got {len(readings)} readings for {len(passages)} passages")
    candidates = [(p, s) for p, reading in enumerate(readings) for s in range(len(reading.spans))]
    if ranking == "dpr":
        return [((readings[p].relevance, readings[p].spans[s]["score"]), p, s) for p, s in candidates]
    if ranking == "span":
        return [((readings[p].spans[s]["score"],), p, s) for p, s in candidates]
    if not candidates:
        return []
    selection = torch.tensor([reading.relevance for reading in readings], dtype=torch.float64)
    if retriever_weight:
        scores = [passage.get("score") for passage in passages]
        if any(score is None for score in scores):
            raise ValueError("retriever_weight needs every passage's retriever `score`")
        retriever_logits = torch.tensor(scores, dtype=torch.float64) / retriever_temperature
        selection = selection + retriever_weight * retriever_logits
    log_selection = torch.log_softmax(selection, dim=0).tolist()
    joint = [log_selection[p] + readings[p].spans[s]["log_prob"] for p, s in candidates]
    if ranking == "joint":
        return [((score,), p, s) for score, (p, s) in zip(joint, candidates, strict=True)]
    strings = [normalize_answer(readings[p].spans[s]["answer"]) for p, s in candidates]
    groups: dict[str, list[float]] = {}
    for string, score in zip(strings, joint, strict=True):
        groups.setdefault(string, []).append(score)
    totals = {string: torch.logsumexp(torch.tensor(scores), 0).item() for string, scores in groups.items()}
    return [
        ((totals[string], score), p, s)
        for string, score, (p, s) in zip(strings, joint, candidates, strict=True)
    ]


def rank_answers(
    readings: Sequence[PassageReading],
    passages: Sequence[dict],
    top_k: int = 1,
    ranking: str | None = None,
    retriever_weight: float = 0.0,
    retriever_temperature: float = 1.0,
) -> list[dict]:
    """The `top_k` best answers of one question under `ranking` (see `answer_keys`; default: `default_ranking`).

    `score` is the answer's probability among the passages read under `joint` and `marginal` (where each answer
    string appears once, shown with its most probable span), else the span's start + end logit; `span_score`
    is always that logit.
    """
    ranking = ranking or default_ranking(retriever_weight)
    keyed = answer_keys(readings, passages, ranking, retriever_weight, retriever_temperature)
    keyed.sort(key=lambda item: (item[0], -item[1], -item[2]), reverse=True)
    answers, seen = [], set()
    for key, p, s in keyed:
        span = readings[p].spans[s]
        if ranking == "marginal":
            string = normalize_answer(span["answer"])
            if string in seen:
                continue
            seen.add(string)
        answers.append(
            {
                **span,
                "score": math.exp(key[0]) if ranking in ("joint", "marginal") else span["score"],
                "span_score": span["score"],
                "relevance": readings[p].relevance,
                "passage": _passage_dict(passages[p]),
            }
        )
        if len(answers) == top_k:
            break
    return answers


def read(
    reader: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[str],
    passages: Sequence[Sequence[dict]],
    max_answer_length: int = 10,
    top_k: int = 1,
    max_length: int | None = None,
    batch_size: int = 32,
    num_spans: int = 1,
    ranking: str | None = None,
    retriever_weight: float = 0.0,
    retriever_temperature: float = 1.0,
) -> list[list[dict]]:
    """Extract answers for each question from its passages (dicts with `text`, and `id`/`title`/`score`).

    Each passage contributes its `num_spans` best non-overlapping spans, ranked across passages by `ranking`
    (`rank_answers`; `retriever_weight` > 0 adds the retriever's logit, each passage's `score / retriever_temperature`,
    to the reader's relevance). Returns, per question, up to `top_k` dicts `{"answer", "score", "span_score", "log_prob",
    "start", "end", "relevance", "passage": {"id", "title", "text", "score"}}`, best first; `start`/`end` are
    character offsets in the passage text.
    """
    readings = score_passages(
        reader,
        tokenizer,
        questions,
        passages,
        max_answer_length=max_answer_length,
        num_spans=num_spans,
        max_length=max_length,
        batch_size=batch_size,
    )
    return [
        rank_answers(
            question_readings,
            question_passages,
            top_k=top_k,
            ranking=ranking,
            retriever_weight=retriever_weight,
            retriever_temperature=retriever_temperature,
        )
        for question_readings, question_passages in zip(readings, passages, strict=True)
    ]

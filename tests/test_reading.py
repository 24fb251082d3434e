"""Reader inputs and span decoding: answers only from the passage text, cut from the original string."""

from __future__ import annotations

import pytest
import torch

from dpr_hf.models.tokenization import encode_reader_inputs
from dpr_hf.reader.decoding import best_spans, length_batches, read

QUESTION = "Where did Zürich's café open?"
TITLE = "Café Zürich"
TEXT = "The Café Zürich opened naïvely in Zürich in 1890, near Beyoncé's hotel."


def test_encode_marks_only_passage_text_tokens(tokenizer):
    encoded = encode_reader_inputs(tokenizer, [QUESTION], [TITLE], [TEXT], max_length=64)
    ids, mask, offsets = encoded["input_ids"][0], encoded["span_mask"][0], encoded["text_offsets"][0]
    assert ids[0] == tokenizer.cls_token_id and ids.count(tokenizer.sep_token_id) == 3
    first_text = mask.index(1)
    # [CLS] question [SEP] title [SEP] | text [SEP]: the text starts right after the second [SEP]
    assert (
        ids[first_text - 1] == tokenizer.sep_token_id and ids[first_text:].count(tokenizer.sep_token_id) == 1
    )
    text_tokens = [i for i, m in enumerate(mask) if m]
    assert text_tokens == list(range(first_text, len(ids) - 1))
    # every text token's offsets slice its own characters out of the original passage
    pieces = [TEXT[offsets[i][0] : offsets[i][1]] for i in text_tokens]
    assert "".join(pieces) == TEXT.replace(" ", "")
    assert pieces[:3] == ["The", "Café", "Zürich"]


def test_encode_truncates_only_the_passage(tokenizer):
    encoded = encode_reader_inputs(tokenizer, [QUESTION], [TITLE], [TEXT * 20], max_length=40)
    assert len(encoded["input_ids"][0]) == 40
    question_ids = tokenizer(QUESTION, add_special_tokens=False)["input_ids"]
    assert encoded["input_ids"][0][1 : 1 + len(question_ids)] == question_ids
    assert sum(encoded["span_mask"][0]) > 0


def test_encode_without_title(tokenizer):
    encoded = encode_reader_inputs(tokenizer, ["q?"], [None], ["Paris is big."], max_length=32)
    offsets = encoded["text_offsets"][0]
    texts = [("Paris is big.")[s:e] for (s, e), m in zip(offsets, encoded["span_mask"][0], strict=True) if m]
    assert texts == ["Paris", "is", "big", "."]


def _logits(length: int, peaks: dict[int, float]) -> torch.Tensor:
    logits = torch.zeros(length)
    for position, value in peaks.items():
        logits[position] = value
    return logits


def test_best_spans_rules():
    mask = torch.tensor([0, 0, 1, 1, 1, 1, 1, 1, 1, 0])
    # highest logits sit on masked positions 0 and 9: never chosen
    start = _logits(10, {0: 100.0, 2: 5.0, 3: 4.0, 6: 1.0})
    end = _logits(10, {9: 100.0, 4: 5.0, 3: 3.0, 8: 1.0})
    spans = best_spans(start, end, mask, max_answer_length=3, num_spans=3)
    assert spans[0] == (2, 4, 10.0)
    for s, e, _ in spans:
        assert mask[s] and mask[e] and 0 <= e - s < 3
    # non-overlapping: (3, 4) scores 9 but overlaps (2, 4); (3, 3) scores 7 but also overlaps
    assert all(not (s <= 4 and 2 <= e) for s, e, _ in spans[1:])
    assert [score for *_, score in spans] == sorted((score for *_, score in spans), reverse=True)


def test_best_spans_max_length():
    mask = torch.ones(12)
    start, end = _logits(12, {1: 10.0}), _logits(12, {9: 10.0, 4: 1.0})
    (span,) = best_spans(start, end, mask, max_answer_length=4, num_spans=1)
    assert span[:2] == (1, 4)  # (1, 9) scores higher but is 9 tokens long
    (span,) = best_spans(start, end, mask, max_answer_length=9, num_spans=1)
    assert span[:2] == (1, 9)


def test_best_spans_score_every_allowed_span_once():
    # best_spans scores only the band of span lengths; near the end of the sequence that band runs past it, and no
    # span may be lost, invented or counted twice there: compare with greedy picking over every allowed span
    generator = torch.Generator().manual_seed(0)
    for length, max_answer_length in ((1, 10), (7, 3), (12, 12), (30, 5)):
        start, end = torch.randn(length, generator=generator), torch.randn(length, generator=generator)
        mask = torch.rand(length, generator=generator) > 0.2
        allowed = [
            (s, e, float(start[s] + end[e]))
            for s in range(length)
            for e in range(s, min(length, s + max_answer_length))
            if mask[s] and mask[e]
        ]
        expected = []
        for s, e, score in sorted(allowed, key=lambda span: -span[2]):
            if not any(s <= other_end and other_start <= e for other_start, other_end, _ in expected):
                expected.append((s, e, score))
        assert best_spans(start, end, mask, max_answer_length, num_spans=length) == expected


def test_best_spans_extend_to_whole_words():
    mask = torch.tensor([0, 1, 1, 1, 1])
    word_ids = [None, 0, 1, 1, 2]  # tokens 2 and 3 are one word ("naive", "##ly")
    start, end = _logits(5, {3: 5.0}), _logits(5, {3: 5.0})
    (span,) = best_spans(start, end, mask, num_spans=1, word_ids=word_ids)
    assert span[:2] == (2, 3)


def _force_logits(reader, tokenizer, target_token_ids: dict[int, float]):
    """Make the reader's span logits peak on chosen vocabulary ids (a forward hook on its span head)."""
    captured = {}

    def remember_ids(module, args, kwargs):
        captured["ids"] = kwargs["input_ids"].reshape(-1, kwargs["input_ids"].shape[-1])

    def override(module, inputs, output):
        ids = captured["ids"]
        boost = torch.zeros(ids.shape, dtype=output.dtype)
        for token_id, value in target_token_ids.items():
            boost = torch.where(ids == token_id, torch.tensor(value, dtype=output.dtype), boost)
        return output * 0.0 + boost[..., None]

    handles = [
        reader.register_forward_pre_hook(remember_ids, with_kwargs=True),
        reader.qa_outputs.register_forward_hook(override),
    ]
    return handles


def test_read_never_answers_from_question_or_title(tiny_reader, tokenizer):
    # "where" (question only) gets the highest logits and "zurich" (question, title and text) the next:
    # the answer must still be the text's "Zürich", then the text's "hotel".
    text = "The café opened naïvely in Zürich in 1890, near Beyoncé's hotel."
    question_only = tokenizer.convert_tokens_to_ids("where")
    zurich = tokenizer.convert_tokens_to_ids("zurich")
    hotel = tokenizer.convert_tokens_to_ids("hotel")
    handles = _force_logits(tiny_reader, tokenizer, {question_only: 50.0, zurich: 20.0, hotel: 5.0})
    try:
        passages = [[{"id": "p1", "title": TITLE, "text": text, "score": 1.5}]]
        (answers,) = read(
            tiny_reader, tokenizer, [QUESTION], passages, top_k=3, num_spans=3, ranking="marginal"
        )
    finally:
        for handle in handles:
            handle.remove()
    assert [a["answer"] for a in answers[:2]] == ["Zürich", "hotel"]  # original characters, not "zurich"
    assert (answers[0]["start"], answers[0]["end"]) == (text.index("Zürich"), text.index("Zürich") + 6)
    assert answers[0]["span_score"] == pytest.approx(40.0)
    assert 0.0 < answers[1]["score"] < answers[0]["score"] <= 1.0  # probabilities among the passages read
    assert answers[0]["passage"] == {"id": "p1", "title": TITLE, "text": text, "score": 1.5}
    for answer in answers:
        assert text[answer["start"] : answer["end"]] == answer["answer"]
        assert "where" not in answer["answer"].lower()


def test_read_ranks_passages_by_relevance(tiny_reader, tokenizer):
    passages = [
        {"id": str(i), "title": f"T{i}", "text": f"Passage number {i} talks about topic {i} at length."}
        for i in range(5)
    ]
    (answers,) = read(
        tiny_reader, tokenizer, ["which topic?"], [passages], top_k=5, num_spans=1, ranking="dpr"
    )
    relevances = [a["relevance"] for a in answers]
    assert relevances == sorted(relevances, reverse=True)
    assert len({a["passage"]["id"] for a in answers}) == 5
    for answer in answers:
        assert {"answer", "score", "start", "end", "relevance", "passage"} <= set(answer)


def test_read_is_independent_of_batching(tiny_reader, tokenizer):
    passages = [
        [
            {"id": "a", "title": "A", "text": "Short text."},
            {"id": "b", "title": "B", "text": TEXT * 3},
            {"id": "c", "title": "C", "text": TEXT * 3 + " Again."},
        ]
    ]
    one = read(tiny_reader, tokenizer, [QUESTION], passages, top_k=3, batch_size=1)
    three = read(tiny_reader, tokenizer, [QUESTION], passages, top_k=3, batch_size=3)
    assert [a["answer"] for a in one[0]] == [a["answer"] for a in three[0]]
    assert [a["score"] for a in one[0]] == pytest.approx([a["score"] for a in three[0]], abs=1e-4)


def test_read_a_training_reader_in_eval_mode_and_leave_it_training(tiny_reader, tokenizer):
    passages = [[{"id": "b", "title": "B", "text": TEXT * 3}]]
    expected = read(tiny_reader, tokenizer, [QUESTION], passages)
    tiny_reader.train()
    try:
        # dropout would change the logits if the reader were read as it is (training)
        assert read(tiny_reader, tokenizer, [QUESTION], passages) == expected
        assert tiny_reader.training and all(module.training for module in tiny_reader.modules())
    finally:
        tiny_reader.eval()


def test_length_batches_trade_padding_for_passes():
    lengths = [100, 10, 98, 12, 100, 11]
    # without a pass cost: the fewest passes, consecutive in length order
    assert length_batches(lengths, 4) == [[1, 5, 3, 2], [0, 4]]
    # cheap passes: the short pairs are not padded to 100
    assert length_batches(lengths, 32, pass_cost=10) == [[1, 5, 3], [2, 0, 4]]
    # passes dearer than all the padding saved: one batch
    assert length_batches(lengths, 32, pass_cost=1000) == [[1, 5, 3, 2, 0, 4]]
    # never more than max_batch pairs, each index once, whatever the cost
    for cost in (0, 10, 1000):
        batches = length_batches(lengths, 2, pass_cost=cost)
        assert all(len(batch) <= 2 for batch in batches)
        assert sorted(i for batch in batches for i in batch) == list(range(6))
    assert length_batches([], 8, pass_cost=32) == []
    with pytest.raises(ValueError, match="at least 1"):
        length_batches(lengths, 0)


def test_read_rejects_mismatched_inputs(tiny_reader, tokenizer):
    with pytest.raises(ValueError, match="2 questions"):
        read(tiny_reader, tokenizer, ["a?", "b?"], [[{"text": "x"}]])


def test_read_defaults_to_the_length_the_reader_was_trained_at(tiny_reader, tokenizer):
    passages = [[{"id": "long", "title": TITLE, "text": TEXT * 5}]]
    trained = tiny_reader.config.max_seq_length
    tiny_reader.config.max_seq_length = 32  # train_reader saves its max_length here
    try:
        default = read(tiny_reader, tokenizer, [QUESTION], passages, top_k=3, num_spans=3)
    finally:
        tiny_reader.config.max_seq_length = trained
    assert default == read(tiny_reader, tokenizer, [QUESTION], passages, top_k=3, num_spans=3, max_length=32)
    assert max(answer["end"] for answer in default[0]) < len(TEXT)  # only the first 32 tokens were read

"""Reader loss, data (answer location, counts, malformed input), collator, evaluation and evaluate-reader."""

from __future__ import annotations

import gzip
import json
import logging
import math

import pytest
import torch

from dpr_hf.data.reader import ReaderCollator, load_reader_data, locate_answer_spans, tokenize_reader_data
from dpr_hf.evaluation.metrics import exact_match_score, f1_score
from dpr_hf.evaluation.reader import evaluate_reader, evaluate_reader_on_results
from dpr_hf.losses import reader_loss
from dpr_hf.models.errors import DPRDataError
from dpr_hf.models.tokenization import encode_reader_inputs

# ------------------------------------------------------------------------------------------------------ loss


def test_reader_loss_hand_computed():
    # one question, two passages of 4 tokens; answer occurrences (1, 2) and (3, 3) in the positive (passage 0)
    start = torch.tensor([[[0.0, 2.0, 0.5, 1.0], [9.0, 9.0, 9.0, 9.0]]])
    end = torch.tensor([[[1.0, 0.0, 3.0, 2.0], [9.0, 9.0, 9.0, 9.0]]])
    relevance = torch.tensor([[1.0, 3.0]])
    loss = reader_loss(
        start, end, relevance, torch.tensor([[1, 3, 0]]), torch.tensor([[2, 3, 0]]), torch.tensor([[1, 1, 0]])
    )
    z_start = sum(math.exp(x) for x in (0.0, 2.0, 0.5, 1.0))
    z_end = sum(math.exp(x) for x in (1.0, 0.0, 3.0, 2.0))
    p_spans = (
        math.exp(2.0) / z_start * math.exp(3.0) / z_end + math.exp(1.0) / z_start * math.exp(2.0) / z_end
    )
    selection = -math.log(math.exp(1.0) / (math.exp(1.0) + math.exp(3.0)))
    assert loss.item() == pytest.approx(selection - math.log(p_spans), rel=1e-6)


def test_reader_loss_masks_and_batch_mean():
    start = torch.tensor([[[0.0, 2.0, 0.5, 1.0], [0.0] * 4], [[1.0, 1.0, 1.0, 1.0], [0.0] * 4]])
    end = start.clone()
    relevance = torch.tensor([[1.0, 5.0], [2.0, 0.0]])
    span_mask = torch.tensor([[[0, 1, 1, 0], [0] * 4], [[1, 1, 1, 1], [0] * 4]])
    passage_mask = torch.tensor([[1, 0], [1, 1]])  # question 0's second passage is padding
    positions = torch.tensor([[1], [0]])
    answer_mask = torch.tensor([[1], [0]])  # question 1 has no located answer: selection term only
    loss = reader_loss(start, end, relevance, positions, positions, answer_mask, span_mask, passage_mask)
    # question 0: selection over one real passage = 0; span softmax over tokens 1-2 only
    p_span = (math.exp(2.0) / (math.exp(2.0) + math.exp(0.5))) ** 2
    question_0 = -math.log(p_span)
    question_1 = -math.log(math.exp(2.0) / (math.exp(2.0) + 1.0))
    assert loss.item() == pytest.approx((question_0 + question_1) / 2, rel=1e-6)


def test_reader_loss_gradients_are_finite_without_answers():
    start = torch.randn(2, 3, 5, requires_grad=True)
    end = torch.randn(2, 3, 5, requires_grad=True)
    relevance = torch.randn(2, 3, requires_grad=True)
    zeros = torch.zeros(2, 2, dtype=torch.long)
    loss = reader_loss(start, end, relevance, zeros, zeros, zeros)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(start.grad).all() and torch.isfinite(relevance.grad).all()
    assert start.grad.abs().sum() == 0  # no answer, no span gradient


# ------------------------------------------------------------------------------------------------------ data


def _write(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _results():
    return [
        {
            "question": "when was the hotel built?",
            "answers": ["1890", "the 19th century"],
            "ctxs": [
                {
                    "id": "1",
                    "title": "Hotel",
                    "text": "Built in 1890, rebuilt 1890s; opened 1890.",
                    "score": 9.5,
                    "has_answer": True,
                },
                {
                    "id": "2",
                    "title": "Other",
                    "text": "Nothing relevant here.",
                    "score": 7,
                    "has_answer": False,
                },
                {"id": "3", "title": "Third", "text": "The 19th Century saw it built.", "score": "6.5"},
            ],
        },
        {
            "question": "who?",
            "answers": ["nobody"],
            "ctxs": [
                {"id": "4", "title": "", "text": "No answer in this one.", "score": 1.0, "has_answer": False}
            ],
        },
    ]


def test_locate_answer_spans_by_offsets(tokenizer):
    text = "Built in 1890, rebuilt 1890s; opened 1890. Beyoncé sang."
    encoded = encode_reader_inputs(tokenizer, ["q"], ["t"], [text], max_length=64)
    offsets, mask = encoded["text_offsets"][0], encoded["span_mask"][0]
    spans = locate_answer_spans(text, ["1890", "beyoncé sang"], offsets, mask)
    pieces = [text[offsets[s][0] : offsets[e][1]] for s, e in spans]
    # "1890s" is one token: "1890" inside it is not a token-aligned occurrence
    assert pieces == ["1890", "1890", "Beyoncé sang"]
    assert locate_answer_spans(text, ["1890"], offsets, mask, max_n_answers=1) == spans[:1]
    assert locate_answer_spans(text, ["uilt"], offsets, mask) == []


def test_load_results_json(tmp_path):
    dataset = load_reader_data(_write(tmp_path / "results.json", _results()))
    assert len(dataset) == 2
    ctxs = dataset[0]["ctxs"]
    assert [c["id"] for c in ctxs] == ["1", "2", "3"]
    assert ctxs[2]["score"] == pytest.approx(6.5)
    assert ctxs[2]["has_answer"] is True  # missing has_answer: DPR's string match on the text
    assert dataset[0]["answers"] == ["1890", "the 19th century"]


@pytest.mark.parametrize(
    ("record", "field", "message"),
    [
        ({"answers": ["x"], "ctxs": []}, "question", "missing"),
        ({"question": "q", "answers": "x", "ctxs": []}, "answers", "list"),
        ({"question": "q", "answers": ["x"]}, "ctxs", "missing"),
        ({"question": "q", "answers": ["x"], "ctxs": [{"title": "t"}]}, "ctxs[0].text", "missing"),
        (
            {"question": "q", "answers": ["x"], "ctxs": [{"text": "t", "score": [1]}]},
            "ctxs[0].score",
            "number",
        ),
        (
            {"question": "q", "answers": ["x"], "ctxs": [{"text": "t", "has_answer": "yes"}]},
            "ctxs[0].has_answer",
            "true or false",
        ),
    ],
)
def test_malformed_results_name_file_record_field(tmp_path, record, field, message):
    path = _write(tmp_path / "bad.json", [_results()[0], record])
    with pytest.raises(DPRDataError, match=message) as error:
        load_reader_data(path)
    assert error.value.record == 2 and error.value.field == field and str(path) in str(error.value)


def test_not_a_results_file(tmp_path):
    with pytest.raises(DPRDataError, match="expected a list"):
        load_reader_data(_write(tmp_path / "x.json", {"question": "q"}))
    with pytest.raises(DPRDataError, match="invalid JSON"):
        (tmp_path / "broken.json").write_text("[{", encoding="utf-8")
        load_reader_data(tmp_path / "broken.json")
    with pytest.raises(FileNotFoundError):
        load_reader_data(tmp_path / "missing.json")


def test_tokenize_counts_what_is_left_out(tmp_path, tokenizer, caplog):
    records = _results() + [
        {  # the answer lies past the truncation: its positive is unlocatable
            "question": "what is at the end?",
            "answers": ["ending"],
            "ctxs": [{"id": "5", "title": "Long", "text": "word " * 80 + "ending", "has_answer": True}],
        }
    ]
    dataset = load_reader_data(_write(tmp_path / "results.json", records))
    with caplog.at_level(logging.WARNING, logger="dpr_hf.data.reader"):
        tokenized, stats = tokenize_reader_data(dataset, tokenizer, max_length=48, stride=0)
    assert stats.to_dict() == {
        "questions": 3,
        "kept": 1,
        "without_positive": 1,
        "unlocated_positives": 1,
        "unlocated_questions": 1,
    }
    assert "kept 1 of 3 questions" in caplog.text
    example = tokenized[0]
    assert len(example["positive_input_ids"]) == 2 and len(example["negative_texts"]) == 1
    ids = example["positive_input_ids"][0]
    found = [
        tokenizer.decode(ids[s : e + 1])
        for s, e in zip(example["positive_starts"][0], example["positive_ends"][0], strict=True)
    ]
    assert found == ["1890", "1890"]
    second = example["positive_input_ids"][1]
    assert tokenizer.decode(
        second[example["positive_starts"][1][0] : example["positive_ends"][1][0] + 1]
    ) == ("the 19th century")


def test_windows_keep_an_answer_past_the_cut(tmp_path, tokenizer):
    long_text = "word " * 80 + "ending here"
    records = [
        {
            "question": "what is at the end?",
            "answers": ["ending"],
            "ctxs": [
                {"id": "5", "title": "Long", "text": long_text, "has_answer": True},
                {"id": "6", "title": "Other", "text": "word " * 80, "has_answer": False},
            ],
        },
        {  # the answer is in the first window too: that one is kept
            "question": "what is first?",
            "answers": ["first"],
            "ctxs": [{"id": "7", "title": "Start", "text": "first " + "word " * 80, "has_answer": True}],
        },
    ]
    dataset = load_reader_data(_write(tmp_path / "results.json", records))
    tokenized, stats = tokenize_reader_data(dataset, tokenizer, max_length=48)
    assert stats.kept == 2 and stats.unlocated_positives == 0
    late, early = tokenized[0], tokenized[1]
    ids = late["positive_input_ids"][0]
    (start,), (end,) = late["positive_starts"][0], late["positive_ends"][0]
    assert len(ids) <= 48 and tokenizer.decode(ids[start : end + 1]) == "ending"
    assert early["positive_starts"][0] == [early["positive_input_ids"][0].index(tokenizer.sep_token_id) + 3]
    # the negative stays whole text: the collator cuts it at its max_length
    assert late["negative_texts"] == ["word " * 80]
    batch = ReaderCollator(tokenizer, passages_per_question=2, max_length=48)([late])
    assert batch["input_ids"].shape == (1, 2, 48)
    start_row = batch["start_positions"][0, 0].item()
    assert tokenizer.decode(batch["input_ids"][0, 0, start_row]) == "ending"


def test_squad_source_with_bm25_negatives(tmp_path, caplog):
    squad = {
        "data": [
            {
                "title": "Paris_France",
                "paragraphs": [
                    {
                        "context": "Paris is the capital of France.",
                        "qas": [
                            {
                                "id": "q1",
                                "question": "What is the capital of France?",
                                "answers": [{"text": "Paris", "answer_start": 0}],
                            },
                            {"id": "q2", "question": "Unanswerable?", "answers": [], "is_impossible": True},
                        ],
                    },
                    {"context": "France is a country whose capital city is large.", "qas": []},
                    {"context": "Paris Hilton visited the capital.", "qas": []},
                ],
            }
        ]
    }
    path = tmp_path / "squad.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        json.dump(squad, handle)
    for _ in range(2):  # the second load comes from datasets' cache and must warn all the same
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="dpr_hf"):
            train = load_reader_data(path, num_retrieved=5)
        assert "skipped 1 unanswerable questions" in caplog.text
    (row,) = train
    assert row["id"] == "q1"
    assert [(c["id"], c["has_answer"]) for c in row["ctxs"]] == [
        ("Paris_France-0", True),
        ("Paris_France-1", False),
    ]
    assert row["ctxs"][0]["title"] == "Paris France"
    evaluation = load_reader_data(path, num_retrieved=5, gold_positive=False)
    ids = [c["id"] for c in evaluation[0]["ctxs"]]
    assert set(ids) == {"Paris_France-0", "Paris_France-1", "Paris_France-2"}  # retrieval order, answers kept
    scores = [c["score"] for c in evaluation[0]["ctxs"]]
    assert scores == sorted(scores, reverse=True)

    results = [
        {
            "id": "q1",
            "question": "x",
            "answers": ["Paris"],
            "ctxs": [
                {"id": "Paris_France-2", "title": "", "text": "Paris Hilton visited the capital."},
                {"id": "z", "title": "Z", "text": "Unrelated words.", "score": 2},
            ],
        }
    ]
    with_results = load_reader_data(path, retrieval_results=_write(tmp_path / "r.json", results))
    assert [c["id"] for c in with_results[0]["ctxs"]] == ["Paris_France-0", "z"]


def test_collator_shapes_and_sampling(tmp_path, tokenizer):
    records = [
        {
            "question": f"question {i}?",
            "answers": ["gold"],
            "ctxs": [
                {"id": f"p{i}{j}", "title": "T", "text": f"the gold answer {j}", "has_answer": True}
                for j in range(2)
            ]
            + [
                {"id": f"n{i}{j}", "title": "N", "text": f"negative text {j} " * (j + 1)}
                for j in range(i + 1)
            ],
        }
        for i in range(3)
    ]
    tokenized, _ = tokenize_reader_data(load_reader_data(_write(tmp_path / "r.json", records)), tokenizer)
    features = [tokenized[i] for i in range(3)]
    collator = ReaderCollator(tokenizer, passages_per_question=3, max_n_answers=2, seed=1)
    batch = collator(features)
    assert batch["input_ids"].shape[:2] == (3, 3)
    assert batch["passage_mask"].tolist() == [[1, 1, 0], [1, 1, 1], [1, 1, 1]]
    assert batch["answer_mask"].tolist() == [[1, 0]] * 3
    for q in range(3):
        start, end = batch["start_positions"][q, 0], batch["end_positions"][q, 0]
        assert tokenizer.decode(batch["input_ids"][q, 0, start : end + 1]) == "gold"
        assert batch["span_mask"][q, 0, start] == 1
    # padding passage: [CLS] [SEP], attended, never a span
    assert batch["input_ids"][0, 2, :2].tolist() == [tokenizer.cls_token_id, tokenizer.sep_token_id]
    assert batch["span_mask"][0, 2].sum() == 0 and batch["attention_mask"][0, 2].sum() == 2
    # seeded by (seed, epoch, question): same batch again, other draws in another epoch
    assert torch.equal(collator(features)["input_ids"], batch["input_ids"])
    draws = set()
    for epoch in range(8):
        collator.set_epoch(epoch)
        draws.add(tuple(collator(features)["input_ids"][2].flatten().tolist()))
    assert len(draws) > 1
    ordered = ReaderCollator(tokenizer, passages_per_question=3, shuffle=False)(features)
    first_positive = features[1]["positive_input_ids"][0]
    assert ordered["input_ids"][1, 0, : len(first_positive)].tolist() == first_positive
    # negatives are tokenised when drawn, as the positives were: (question, title [SEP] text) at the same length
    negative = encode_reader_inputs(
        tokenizer,
        [features[1]["question"]],
        ["N"],
        [features[1]["negative_texts"][0]],
        max_length=collator.max_length,
    )
    ids, mask = negative["input_ids"][0], negative["span_mask"][0]
    assert ordered["input_ids"][1, 1, : len(ids)].tolist() == ids
    assert ordered["span_mask"][1, 1, : len(mask)].tolist() == mask
    assert ordered["attention_mask"][1, 1].sum() == len(ids)


# ------------------------------------------------------------------------------------------------ evaluation


def test_squad_metrics_match_the_official_script():
    # values of the official SQuAD v1.1 evaluate script (the same normalisation as `evaluate`'s squad metric)
    assert exact_match_score("The Eiffel Tower!", ["eiffel tower"]) == 1.0
    assert f1_score("in the year 1890", ["1890"]) == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))
    assert f1_score("", ["x"]) == 0.0


def test_evaluate_reader_thresholds(tiny_reader, tokenizer):
    examples = [
        {
            "question": "q one?",
            "answers": ["alpha"],
            "ctxs": [{"id": str(i), "title": "t", "text": f"alpha beta gamma {i}"} for i in range(3)],
        },
        {"question": "q two?", "answers": ["zzz"], "ctxs": []},
    ]
    metrics, predictions = evaluate_reader(
        tiny_reader, tokenizer, examples, top_n=(1, 2, 5), show_progress=False
    )
    assert metrics["num_questions"] == 2 and set(metrics["em"]) == {"1", "2", "5"}
    for n in ("1", "2", "5"):
        expected = [exact_match_score(p["predictions"][n]["answer"], p["answers"]) for p in predictions]
        assert metrics["em"][n] == pytest.approx(100 * sum(expected) / 2)
        assert 0 <= metrics["f1"][n] <= 100
    assert predictions[1]["predictions"]["1"]["answer"] == ""  # no passage: empty prediction, counted wrong
    top1 = predictions[0]["predictions"]["1"]
    assert top1["passage"]["rank"] == 1 and top1["answer"] in examples[0]["ctxs"][0]["text"]
    with pytest.raises(ValueError, match="positive"):
        evaluate_reader(tiny_reader, tokenizer, examples, top_n=(0,))


def test_evaluate_reader_cli(tmp_path, tiny_reader, tokenizer):
    from dpr_hf.cli import main

    system = tmp_path / "system"
    tiny_reader.save_pretrained(system / "reader")
    tokenizer.save_pretrained(system / "reader")
    results = _write(tmp_path / "results.json", _results())
    out = tmp_path / "eval"
    code = main(
        [
            "evaluate-reader",
            "--model",
            str(system),
            "--retrieval-results",
            str(results),
            "--output-dir",
            str(out),
            "--top-n",
            "1,2",
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"em", "f1", "num_questions"} and metrics["num_questions"] == 2
    assert set(metrics["em"]) == {"1", "2"}
    predictions = json.loads((out / "predictions.json").read_text())
    assert [p["question"] for p in predictions] == [r["question"] for r in _results()]
    # a reader folder works too, and gives the same metrics
    again = evaluate_reader_on_results(system / "reader", results, tmp_path / "eval2", top_n=(1, 2))
    assert again == metrics
    bad = _write(tmp_path / "bad.json", [{"question": "q"}])
    assert (
        main(
            [
                "evaluate-reader",
                "--model",
                str(system),
                "--retrieval-results",
                str(bad),
                "--output-dir",
                str(out),
            ]
        )
        == 2
    )


def test_evaluate_reader_reads_a_seeded_sample_of_questions(tmp_path, tiny_reader, tokenizer):
    """`--max-questions N` reads N of the questions, drawn with `--seed`: the same ones on every run; 0 reads every
    question, a negative count is refused."""
    from dpr_hf.cli import main

    tiny_reader.save_pretrained(tmp_path / "reader")
    tokenizer.save_pretrained(tmp_path / "reader")
    rows = [{**row, "question": f"{row['question']} ({i})"} for i in range(5) for row in _results()]
    results = _write(tmp_path / "results.json", rows)
    full = evaluate_reader_on_results(tmp_path / "reader", results, tmp_path / "all", top_n=(1, 2))
    assert full["num_questions"] == 10
    by_question = {p["question"]: p for p in json.loads((tmp_path / "all" / "predictions.json").read_text())}
    samples = []
    for run in ("a", "b"):
        argv = ["evaluate-reader", "--model", str(tmp_path / "reader"), "--retrieval-results", str(results)]
        assert (
            main([*argv, "--output-dir", str(tmp_path / run), "--top-n", "1,2", "--max-questions", "4"]) == 0
        )
        assert json.loads((tmp_path / run / "metrics.json").read_text())["num_questions"] == 4
        samples.append(json.loads((tmp_path / run / "predictions.json").read_text()))
    assert samples[0] == samples[1]
    assert len({p["question"] for p in samples[0]}) == 4
    assert all(p["answers"] == by_question[p["question"]]["answers"] for p in samples[0])
    with pytest.raises(ValueError, match="max_questions must be >= 0"):
        evaluate_reader_on_results(tmp_path / "reader", results, tmp_path / "bad", max_questions=-1)


def test_evaluate_reader_ranks_with_the_retriever_prior(tiny_reader, tokenizer):
    texts = ["alpha beta gamma", "delta epsilon zeta", "eta theta iota"]
    examples = [
        {
            "question": "q?",
            "answers": ["x"],
            "ctxs": [
                {"id": str(i), "title": "t", "text": text, "score": score}
                for i, (text, score) in enumerate(zip(texts, [0.1, 0.9, 0.2], strict=True))
            ],
        }
    ]
    # at τ = 0.001 the retriever's logits are 100, 900 and 200: its best passage decides
    _, predictions = evaluate_reader(
        tiny_reader,
        tokenizer,
        examples,
        top_n=(3,),
        show_progress=False,
        retriever_weight=1.0,
        retriever_temperature=0.001,
    )
    best = predictions[0]["predictions"]["3"]
    assert best["passage"]["rank"] == 2 and best["answer"] in texts[1]

"""Settings travel with the model: a pair and reader whose configs record the lengths they were trained at are
served at those lengths by the index, `DenseRetriever` and the pipelines, unless an argument says otherwise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import pipeline

from dpr_hf import (
    DenseRetriever,
    ExtractiveReader,
    ExtractiveReaderConfig,
    PassageEncoder,
    PassageEncoderConfig,
    PassageIndex,
    QASystem,
    QASystemConfig,
    QuestionEncoder,
    QuestionEncoderConfig,
    encode_passages,
    format_passages,
    format_questions,
)
from dpr_hf.reader.decoding import read

QUESTION_LENGTH, PASSAGE_LENGTH, READER_LENGTH = 16, 40, 96
LONG_QUESTION = "which famous river flows through the old capital city of france " * 4  # ~50 tokens
PASSAGES = [
    {
        "id": str(i),
        "title": f"Article {i}",
        "text": f"Passage {i}: " + "the river seine flows through paris. " * 12,
    }
    for i in range(6)
]  # ~100 tokens each: longer than all three trained lengths


@pytest.fixture(scope="module")
def trained(tokenizer, tiny_bert_config):
    """Encoders and reader configured as a training run at 16/40/96 tokens saves them."""
    torch.manual_seed(0)
    question_encoder = QuestionEncoder(
        QuestionEncoderConfig(encoder=tiny_bert_config, max_seq_length=QUESTION_LENGTH)
    ).eval()
    passage_encoder = PassageEncoder(
        PassageEncoderConfig(encoder=tiny_bert_config, max_seq_length=PASSAGE_LENGTH)
    ).eval()
    reader = ExtractiveReader(
        ExtractiveReaderConfig(encoder=tiny_bert_config, max_seq_length=READER_LENGTH)
    ).eval()
    return question_encoder, passage_encoder, reader


@pytest.fixture(scope="module")
def system_dir(trained, tokenizer, tmp_path_factory):
    question_encoder, passage_encoder, reader = trained
    index = PassageIndex.build(
        encode_passages(passage_encoder, tokenizer, Dataset.from_list(PASSAGES), show_progress=False)
    )
    system = QASystem(
        question_encoder=question_encoder,
        question_tokenizer=tokenizer,
        index=index,
        reader=reader,
        reader_tokenizer=tokenizer,
        passage_encoder=passage_encoder,
        config=QASystemConfig(num_passages=3),
    )
    path = tmp_path_factory.mktemp("lengths") / "system"
    system.save_pretrained(path)
    return path


def _question_vector(encoder, tokenizer, max_length: int) -> np.ndarray:
    with torch.inference_mode():
        return encoder(
            **format_questions(tokenizer, [LONG_QUESTION], max_length=max_length)
        ).pooler_output.numpy()


def _input_lengths(model: torch.nn.Module) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    """Record the token length of every batch the model is run on (an observation of its real inputs)."""
    lengths: list[int] = []
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    return lengths, handle


def test_the_index_holds_passages_encoded_at_the_trained_length(trained, tokenizer, system_dir):
    _, passage_encoder, _ = trained
    index = PassageIndex.load(system_dir / "index")
    stored = np.asarray(index.embeddings([0]))
    with torch.inference_mode():
        at = {
            n: passage_encoder(
                **format_passages(tokenizer, [PASSAGES[0]["title"]], [PASSAGES[0]["text"]], max_length=n)
            ).pooler_output.numpy()
            for n in (PASSAGE_LENGTH, 256)
        }
    np.testing.assert_allclose(stored, at[PASSAGE_LENGTH], atol=1e-5)
    assert not np.allclose(stored, at[256], atol=1e-3)  # the old fixed 256 tokens would read more of it


def test_dense_retriever_reads_questions_at_the_trained_length(trained, tokenizer, system_dir):
    question_encoder = trained[0]
    retriever = DenseRetriever.from_pretrained(system_dir, system_dir / "index")
    trained_vector = _question_vector(question_encoder, tokenizer, QUESTION_LENGTH)
    np.testing.assert_allclose(retriever.encode_questions([LONG_QUESTION]), trained_vector, atol=1e-5)
    assert not np.allclose(trained_vector, _question_vector(question_encoder, tokenizer, 64), atol=1e-3)
    # An explicit max_length still overrides the config.
    explicit = DenseRetriever(question_encoder, tokenizer, retriever.index, max_length=64)
    np.testing.assert_allclose(
        explicit.encode_questions([LONG_QUESTION]),
        _question_vector(question_encoder, tokenizer, 64),
        atol=1e-5,
    )


def test_pipelines_serve_at_the_trained_lengths(trained, tokenizer, system_dir):
    question_encoder = trained[0]
    qa = pipeline("open-domain-qa", model=str(system_dir), device="cpu")
    question_lengths, question_hook = _input_lengths(qa.model.question_encoder)
    reader_lengths, reader_hook = _input_lengths(qa.model.reader)
    result = qa(LONG_QUESTION, return_passages=True)
    question_hook.remove()
    reader_hook.remove()
    assert question_lengths == [QUESTION_LENGTH]
    assert reader_lengths and max(reader_lengths) == READER_LENGTH

    # The scores are those of the question read at 16 tokens, not at the former fixed 64.
    index = qa.model.index
    expected = index.search(_question_vector(question_encoder, tokenizer, QUESTION_LENGTH), 3)[0]
    assert [p["id"] for p in result["passages"]] == [p["id"] for p in expected]
    np.testing.assert_allclose(
        [p["score"] for p in result["passages"]], [p["score"] for p in expected], rtol=1e-5
    )
    at_64 = index.search(_question_vector(question_encoder, tokenizer, 64), 3)[0]
    assert not np.allclose([p["score"] for p in expected], [p["score"] for p in at_64], rtol=1e-3)

    retrieve = pipeline(
        "dense-retrieval", model=str(system_dir), device="cpu", model_kwargs={"with_reader": False}
    )
    hits = retrieve(LONG_QUESTION, top_k=3)
    np.testing.assert_allclose([p["score"] for p in hits], [p["score"] for p in expected], rtol=1e-5)


def test_reading_uses_the_reader_length_unless_told_otherwise(trained, tokenizer):
    reader = trained[2]
    lengths, hook = _input_lengths(reader)
    read(reader, tokenizer, ["where does the seine flow?"], [PASSAGES[:2]])
    assert max(lengths) == READER_LENGTH
    lengths.clear()
    read(reader, tokenizer, ["where does the seine flow?"], [PASSAGES[:2]], max_length=64)
    hook.remove()
    assert max(lengths) == 64

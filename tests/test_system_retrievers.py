"""The system builds its retrievers once, and the pipelines split work as transformers' do."""

from __future__ import annotations

import pytest
import torch
from tiny_qa_system import PASSAGES, QUESTIONS, build_tiny_system
from transformers import pipeline

from dpr_hf import PassageIndex, encode_passages
from dpr_hf.reader.decoding import PassageLogits


@pytest.fixture(scope="module")
def system(tokenizer, tiny_bert_config):
    return build_tiny_system(tokenizer, tiny_bert_config)


def test_retrievers_are_built_once_and_rebuilt_when_a_part_changes(system, tokenizer):
    dense, hybrid = system.retriever("dense"), system.retriever("hybrid")
    system.retrieve(QUESTIONS, 3, retriever="hybrid")
    system.retrieve(QUESTIONS, 3)
    assert system.retriever("dense") is dense and system.retriever("hybrid") is hybrid
    assert hybrid.dense is dense and hybrid.sparse is system.bm25

    index, bm25, weight = system.index, system.bm25, system.config.hybrid_lambda
    try:
        system.index = PassageIndex.build(
            encode_passages(system.passage_encoder, tokenizer, PASSAGES, show_progress=False)
        )
        assert system.retriever("dense") is not dense and system.retriever("dense").index is system.index
        system.config.hybrid_lambda = 0.5
        assert system.retriever("hybrid").weight == 0.5
        system.bm25 = None
        with pytest.raises(ValueError, match="BM25"):
            system.retriever("hybrid")
    finally:
        system.index, system.bm25, system.config.hybrid_lambda = index, bm25, weight


def test_pipeline_tokenises_in_preprocess_and_decodes_in_postprocess(system):
    qa = pipeline("open-domain-qa", model=system, device="cpu")
    inputs = qa.preprocess(QUESTIONS[0])
    assert inputs["question"] == QUESTIONS[0] and inputs["input_ids"].shape[0] == 1
    with torch.inference_mode():
        outputs = qa._forward(inputs, k=3)
    assert len(outputs["passages"]) == 3 and all(isinstance(x, PassageLogits) for x in outputs["logits"])
    answers = qa.postprocess(outputs, top_k=2)
    assert answers == system.answer(QUESTIONS[:1], top_k=2, num_passages=3)[0][0]
    assert qa(QUESTIONS[0], top_k=2, num_passages=3) == answers

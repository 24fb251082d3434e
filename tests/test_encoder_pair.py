"""EncoderPair: the one owner of the pair folder layout, read from pair, system and single-encoder folders."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset

from dpr_hf import EncoderPair, PassageIndex, QASystem, encode_passages
from dpr_hf.models.pair import encoder_dir


@pytest.fixture
def pair(tiny_question_encoder, tiny_passage_encoder, tokenizer) -> EncoderPair:
    return EncoderPair(tiny_question_encoder, tiny_passage_encoder, tokenizer, tokenizer)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_save_and_load_a_pair_folder(pair, tmp_path):
    (tmp_path / "pair").mkdir()
    (tmp_path / "pair" / "stale.txt").write_text("from an older save")
    pair.save_pretrained(tmp_path / "pair")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pair"]  # replaced whole, nothing staged left
    assert sorted(p.name for p in (tmp_path / "pair").iterdir()) == ["passage_encoder", "question_encoder"]
    for role in ("question", "passage"):
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
            p.name for p in (tmp_path / "pair" / f"{role}_encoder").iterdir()
        }
    loaded = EncoderPair.from_pretrained(tmp_path / "pair")
    assert _same_weights(loaded.question_encoder, pair.question_encoder)
    assert _same_weights(loaded.passage_encoder, pair.passage_encoder)
    assert loaded.tokenizer.get_vocab() == pair.tokenizer.get_vocab()
    assert encoder_dir(tmp_path / "pair", "passage") == tmp_path / "pair" / "passage_encoder"


def test_an_encoder_folder_is_one_role(pair, tmp_path):
    pair.save_pretrained(tmp_path / "pair")
    folder = tmp_path / "pair" / "passage_encoder"
    loaded = EncoderPair.from_pretrained(folder)
    assert loaded.question_encoder is None and loaded.passage_encoder is not None
    with pytest.raises(FileNotFoundError, match="is a passage encoder, not a question encoder"):
        EncoderPair.from_pretrained(folder, roles=("question",))
    with pytest.raises(FileNotFoundError, match="holds no question encoder"):
        EncoderPair.from_pretrained(tmp_path / "empty", roles=("question",))


def test_a_system_folder_gives_the_towers_its_config_names(pair, tokenizer, tmp_path):
    index = PassageIndex.build(
        encode_passages(
            pair.passage_encoder,
            tokenizer,
            Dataset.from_list([{"id": "1", "title": "T", "text": "some text"}]),
            show_progress=False,
        )
    )
    system = QASystem(
        question_encoder=pair.question_encoder,
        question_tokenizer=tokenizer,
        index=index,
        passage_encoder=None,
    )
    system.save_pretrained(tmp_path / "system")
    assert json.loads((tmp_path / "system" / "config.json").read_text())["passage_encoder"] is None
    loaded = EncoderPair.from_pretrained(tmp_path / "system")
    assert loaded.passage_encoder is None and _same_weights(loaded.question_encoder, pair.question_encoder)
    with pytest.raises(FileNotFoundError, match="holds no passage encoder"):
        EncoderPair.from_pretrained(tmp_path / "system", roles=("passage",))
    assert QASystem.part_dirs(tmp_path / "system")["passage_encoder"] is None

"""The flat 0.1 import paths keep working for one release (issue 15): each resolves names where they live now."""

import importlib
import subprocess
import sys

import pytest

from dpr_hf._compat import MOVED

OLD_NAMES = {
    "dpr_hf.configuration": "QuestionEncoderConfig",
    "dpr_hf.modeling": "PassageEncoder",
    "dpr_hf.tokenization": "format_passages",
    "dpr_hf.convert": "convert",
    "dpr_hf.indexing": "PassageIndex",
    "dpr_hf.system": "QASystem",
    "dpr_hf.pipeline": "OpenDomainQAPipeline",
    "dpr_hf.reading": "read",
    "dpr_hf.negatives": "mine_hard_negatives",
    "dpr_hf.retriever_training": "train_retriever",
    "dpr_hf.reader_training": "train_reader",
    "dpr_hf.retrieval_evaluation": "save_retrieval_evaluation",
    "dpr_hf.reader_evaluation": "evaluate_reader",
}


def test_every_moved_module_is_listed_here():
    assert set(OLD_NAMES) == set(MOVED)


@pytest.mark.parametrize(("old", "name"), sorted(OLD_NAMES.items()))
def test_old_path_resolves_the_same_object(old, name):
    module = importlib.import_module(old)
    owners = [importlib.import_module(target) for target in MOVED[old]]
    assert any(getattr(owner, name, None) is getattr(module, name) for owner in owners)
    with pytest.raises(AttributeError, match="no 'not_a_name'"):
        module.not_a_name  # noqa: B018


def test_old_paths_split_across_new_modules_and_warn():
    script = (
        "import warnings; warnings.simplefilter('error')\n"
        "try:\n    from dpr_hf.indexing import encode_corpus\nexcept DeprecationWarning as w:\n    print(w)\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "dpr_hf.indexing moved to" in completed.stdout, completed.stderr[-2000:]
    from dpr_hf.indexing import encode_corpus as old
    from dpr_hf.indexing import replace_folder

    from dpr_hf.atomic import replace_folder as new_replace
    from dpr_hf.encoding import encode_corpus

    assert old is encode_corpus and replace_folder is new_replace

"""dpr_hf: Dense Passage Retrieval (Karpukhin et al., 2020) as transformers models.

Importing the package registers the models and the QA system with the Auto classes (each saved with its code, so
a folder also loads with `trust_remote_code=True` where dpr_hf is not installed) and the `open-domain-qa` and
`dense-retrieval` pipeline tasks, so `pipeline("open-domain-qa", model=folder_or_repo)` loads a whole system.

The pipeline tasks are registered when transformers' pipelines module is imported (at once if it already is):
importing it takes ~4.5 s on a 2-core CPU (every task's processors), which a `dpr-hf encode` or a training job
never needs. The pipeline classes load on first use too (`dpr_hf.OpenDomainQAPipeline`).
"""

import importlib
import importlib.abc
import importlib.machinery
import sys
from typing import Any

from transformers import AutoConfig, AutoModel

from . import pipelines
from ._compat import MovedModuleFinder
from .encoding import encode_corpus, encode_passages
from .errors import DPRDataError, MismatchError
from .index import PassageIndex
from .models import (
    DPREncoder,
    DPREncoderConfig,
    EncoderOutput,
    EncoderPair,
    ExtractiveReader,
    ExtractiveReaderConfig,
    PassageEncoder,
    PassageEncoderConfig,
    QuestionEncoder,
    QuestionEncoderConfig,
    ReaderOutput,
    format_passages,
    format_questions,
)
from .pipelines.system import QASystem, QASystemConfig
from .retrieval import BM25Retriever, DenseRetriever, HybridRetriever

__version__ = "0.1.0"

_PIPELINES = "transformers.pipelines"

# dpr_hf 0.1 import paths (dpr_hf.indexing, dpr_hf.system, ...) keep working for one release.
if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(MovedModuleFinder())

for _config_class, _model_class in (
    (QuestionEncoderConfig, QuestionEncoder),
    (PassageEncoderConfig, PassageEncoder),
    (ExtractiveReaderConfig, ExtractiveReader),
):
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
    AutoModel.register(_config_class, _model_class, exist_ok=True)
    _config_class.register_for_auto_class()
    _model_class.register_for_auto_class("AutoModel")

AutoConfig.register(QASystemConfig.model_type, QASystemConfig, exist_ok=True)
AutoModel.register(QASystemConfig, QASystem, exist_ok=True)


_TASKS_MODULE = "dpr_hf.pipelines.open_domain_qa"  # registers the tasks when it is imported


class _RegisterWithPipelines(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Loads `transformers.pipelines` as usual, then imports dpr_hf's pipelines module, which registers the tasks
    (if that module is what is importing transformers' pipelines, it registers them once it is loaded)."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _PIPELINES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            self.loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        self.loader.exec_module(module)
        importlib.import_module(_TASKS_MODULE)


if _PIPELINES in sys.modules:
    importlib.import_module(_TASKS_MODULE)
elif not any(isinstance(finder, _RegisterWithPipelines) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWithPipelines())


def __getattr__(name: str) -> Any:
    if name in pipelines.PIPELINE_CLASSES:  # loaded on first use, like transformers' pipelines module
        return getattr(pipelines, name)
    raise AttributeError(f"module 'dpr_hf' has no attribute {name!r}")


__all__ = [
    "BM25Retriever",
    "DPREncoder",
    "DPRDataError",
    "DPREncoderConfig",
    "DenseRetrievalPipeline",
    "DenseRetriever",
    "EncoderOutput",
    "EncoderPair",
    "ExtractiveReader",
    "ExtractiveReaderConfig",
    "HybridRetriever",
    "MismatchError",
    "OpenDomainQAPipeline",
    "PassageEncoder",
    "PassageEncoderConfig",
    "PassageIndex",
    "QASystem",
    "QASystemConfig",
    "QuestionEncoder",
    "QuestionEncoderConfig",
    "ReaderOutput",
    "encode_corpus",
    "encode_passages",
    "format_passages",
    "format_questions",
]

"""dpr_hf: Dense Passage Retrieval (Karpukhin et al., 2020) as transformers models.

Importing the package registers the models and the QA system with the Auto classes (each saved with its code, so
a folder also loads with `trust_remote_code=True` where dpr_hf is not installed) and the `open-domain-qa` and
`dense-retrieval` pipeline tasks, so `pipeline("open-domain-qa", model=folder_or_repo)` loads a whole system.
"""

import sys

from transformers import AutoConfig, AutoModel
from transformers.pipelines import PIPELINE_REGISTRY

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
from .pipelines import DenseRetrievalPipeline, OpenDomainQAPipeline, QASystem, QASystemConfig
from .retrieval import BM25Retriever, DenseRetriever, HybridRetriever

__version__ = "0.1.0"

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
PIPELINE_REGISTRY.register_pipeline(
    "open-domain-qa", pipeline_class=OpenDomainQAPipeline, pt_model=AutoModel, type="text"
)
PIPELINE_REGISTRY.register_pipeline(
    "dense-retrieval", pipeline_class=DenseRetrievalPipeline, pt_model=AutoModel, type="text"
)

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

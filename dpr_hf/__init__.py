"""dpr_hf: Dense Passage Retrieval (Karpukhin et al., 2020) as transformers models.

Importing the package registers the models and the QA system with the Auto classes (each saved with its code, so
a folder also loads with `trust_remote_code=True` where dpr_hf is not installed) and the `open-domain-qa` and
`dense-retrieval` pipeline tasks, so `pipeline("open-domain-qa", model=folder_or_repo)` loads a whole system.
"""

from transformers import AutoConfig, AutoModel
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration import (
    DPREncoderConfig,
    ExtractiveReaderConfig,
    PassageEncoderConfig,
    QuestionEncoderConfig,
)
from .indexing import PassageIndex, encode_corpus, encode_passages
from .modeling import (
    DPREncoder,
    EncoderOutput,
    ExtractiveReader,
    PassageEncoder,
    QuestionEncoder,
    ReaderOutput,
)
from .pipeline import DenseRetrievalPipeline, OpenDomainQAPipeline
from .retrieval import BM25Retriever, DenseRetriever, HybridRetriever
from .system import QASystem, QASystemConfig
from .tokenization import format_passages, format_questions

__version__ = "0.1.0"

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
    "DPREncoderConfig",
    "DenseRetrievalPipeline",
    "DenseRetriever",
    "EncoderOutput",
    "ExtractiveReader",
    "ExtractiveReaderConfig",
    "HybridRetriever",
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

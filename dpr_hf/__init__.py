"""dpr_hf: Dense Passage Retrieval (Karpukhin et al., 2020) as transformers models.

Importing the package registers the models with the Auto classes (and saves them with their code, so a folder
also loads with `trust_remote_code=True` where dpr_hf is not installed).
"""

from transformers import AutoConfig, AutoModel

from .configuration import (
    DPREncoderConfig,
    ExtractiveReaderConfig,
    PassageEncoderConfig,
    QuestionEncoderConfig,
)
from .modeling import (
    DPREncoder,
    EncoderOutput,
    ExtractiveReader,
    PassageEncoder,
    QuestionEncoder,
    ReaderOutput,
)
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

__all__ = [
    "DPREncoder",
    "DPREncoderConfig",
    "EncoderOutput",
    "ExtractiveReader",
    "ExtractiveReaderConfig",
    "PassageEncoder",
    "PassageEncoderConfig",
    "QuestionEncoder",
    "QuestionEncoderConfig",
    "ReaderOutput",
    "format_passages",
    "format_questions",
]

# QA systems and their pipelines (dpr_hf/system.py, dpr_hf/pipeline.py): `AutoModel` resolves a system folder to
# `QASystem`, which is what lets `pipeline("open-domain-qa", model=folder_or_repo)` load a whole system.
from transformers.pipelines import PIPELINE_REGISTRY  # noqa: E402

from .pipeline import DenseRetrievalPipeline, OpenDomainQAPipeline  # noqa: E402
from .system import QASystem, QASystemConfig  # noqa: E402

AutoConfig.register(QASystemConfig.model_type, QASystemConfig, exist_ok=True)
AutoModel.register(QASystemConfig, QASystem, exist_ok=True)
PIPELINE_REGISTRY.register_pipeline(
    "open-domain-qa", pipeline_class=OpenDomainQAPipeline, pt_model=AutoModel, type="text"
)
PIPELINE_REGISTRY.register_pipeline(
    "dense-retrieval", pipeline_class=DenseRetrievalPipeline, pt_model=AutoModel, type="text"
)
__all__ += ["DenseRetrievalPipeline", "OpenDomainQAPipeline", "QASystem", "QASystemConfig"]

"""Serving: `QASystem` (one folder: encoders, reader, index, BM25) and the transformers pipelines over it."""

from .open_domain_qa import DenseRetrievalPipeline, OpenDomainQAPipeline
from .system import QASystem, QASystemConfig

__all__ = ["DenseRetrievalPipeline", "OpenDomainQAPipeline", "QASystem", "QASystemConfig"]

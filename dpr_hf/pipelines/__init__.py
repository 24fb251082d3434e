"""Serving: `QASystem` (one folder: encoders, reader, index, BM25) and the transformers pipelines over it.

The pipeline classes import transformers' pipelines module (seconds): they load on first use.
"""

from typing import Any

from .system import QASystem, QASystemConfig

PIPELINE_CLASSES = ("DenseRetrievalPipeline", "OpenDomainQAPipeline")  # in .open_domain_qa, loaded on use
__all__ = [*PIPELINE_CLASSES, "QASystem", "QASystemConfig"]


def __getattr__(name: str) -> Any:
    if name in PIPELINE_CLASSES:
        from . import open_domain_qa

        return getattr(open_domain_qa, name)
    raise AttributeError(f"module 'dpr_hf.pipelines' has no attribute {name!r}")

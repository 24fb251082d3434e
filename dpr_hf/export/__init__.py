"""Exports of trained dpr_hf models to other runtimes: sentence-transformers (`export_sentence_transformers`)."""

from .sentence_transformers import export_sentence_transformers, read_pair_settings

__all__ = ["export_sentence_transformers", "read_pair_settings"]

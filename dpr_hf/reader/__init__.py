"""The reader at inference: span decoding, passage scores and answer ranking over retrieved passages."""

from .decoding import best_spans, check_reader_tokenizer, rank_answers, read, score_passages

__all__ = ["best_spans", "check_reader_tokenizer", "rank_answers", "read", "score_passages"]

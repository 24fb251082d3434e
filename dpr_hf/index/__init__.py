"""The passage index: passages and a FAISS inner-product index over their vectors, saved as one folder."""

from .passage_index import PassageIndex

__all__ = ["PassageIndex"]

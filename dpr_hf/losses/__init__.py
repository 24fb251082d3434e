"""Training losses: the retriever's in-batch NLL (training stream) and the reader's span/selection loss."""

from .reader import reader_loss
from .retriever import gather_with_local_grad, in_batch_nll_loss, similarity_scores

__all__ = ["gather_with_local_grad", "in_batch_nll_loss", "reader_loss", "similarity_scores"]

"""DPR's reader loss: passage selection + marginal likelihood of every answer span in the positive passage."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def reader_loss(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    relevance_logits: torch.Tensor,
    start_positions: torch.Tensor,
    end_positions: torch.Tensor,
    answer_mask: torch.Tensor,
    span_mask: torch.Tensor | None = None,
    passage_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over questions of selection cross-entropy + span negative marginal log-likelihood.

    Args:
        start_logits / end_logits: `(questions, passages, seq_len)`; passage 0 of each question is its positive.
        relevance_logits: `(questions, passages)`.
        start_positions / end_positions: `(questions, max_n_answers)` token indices of the answer occurrences in
            the positive passage; `answer_mask` `(questions, max_n_answers)` marks the real ones.
        span_mask: optional `(questions, passages, seq_len)`, tokens where a span may start or end (the passage
            text); the span softmax runs over those only, as decoding does.
        passage_mask: optional `(questions, passages)`, real passages (padding passages take no part in selection).

    Selection: -log softmax(relevance)[0]. Span: -log sum_spans P(start) P(end), i.e. DPR's MML over all
    occurrences of any answer (the data does not say which occurrence is meant). Questions without an answer
    span contribute the selection term only. DPR sums over questions; the mean keeps the scale independent of
    the batch size.
    """
    relevance_logits = relevance_logits.float()
    if passage_mask is not None:
        relevance_logits = relevance_logits.masked_fill(~passage_mask.bool(), torch.finfo(torch.float32).min)
    targets = torch.zeros(relevance_logits.shape[0], dtype=torch.long, device=relevance_logits.device)
    selection = F.cross_entropy(relevance_logits, targets, reduction="none")

    start, end = start_logits[:, 0].float(), end_logits[:, 0].float()
    if span_mask is not None:
        allowed = span_mask[:, 0].bool()
        start = start.masked_fill(~allowed, torch.finfo(torch.float32).min)
        end = end.masked_fill(~allowed, torch.finfo(torch.float32).min)
    span_log_probs = F.log_softmax(start, dim=-1).gather(1, start_positions) + F.log_softmax(
        end, dim=-1
    ).gather(1, end_positions)
    answered = answer_mask.bool()
    # a finite fill: an all-(-inf) row would give NaN gradients through logsumexp even when not selected
    span_log_probs = span_log_probs.masked_fill(~answered, torch.finfo(torch.float32).min)
    has_span = answered.any(dim=1)
    marginal = torch.where(has_span, -torch.logsumexp(span_log_probs, dim=1), torch.zeros_like(selection))
    return (selection + marginal).mean()

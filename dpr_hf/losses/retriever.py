"""DPR's in-batch negative log-likelihood, with the passages of every process as negatives.

Each question is scored against every passage of the global batch: its positive, the other questions' positives
and every hard/other negative (Karpukhin et al., 2020, section 3.2). Under several processes the question and
passage vectors are gathered; only the local slice keeps its autograd graph (no gradient crosses processes, as in
the original DPR), and the loss gradient is scaled by the world size so that the gradient averaging of DDP/FSDP
yields exactly the gradient of the global-batch loss a single process would compute.

A paragraph that several processes hold (SQuAD-style data: questions on one paragraph fall into different
processes' batches) would otherwise be a false negative of its own question and a doubled negative of the others.
With `passage_keys` each question sees every distinct passage once, as one process on the global batch (whose
collator encodes a repeated paragraph once) does: its positive's own column, and the first column of every other
passage.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

SIMILARITIES = ("dot", "cosine")


def similarity_scores(
    q_vectors: torch.Tensor,
    p_vectors: torch.Tensor,
    similarity: str = "dot",
    temperature: float = 1.0,
    normalized: bool = False,
) -> torch.Tensor:
    """`(num_questions, num_passages)` scores: dot product (DPR) or cosine, divided by `temperature`.

    `normalized`: the vectors are already unit length (what encoders with `normalize=True` output), so cosine is
    their dot product and they are not normalised a second time. Computed in float32 even under mixed precision:
    half-precision scores tie and round the softmax.
    """
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    with torch.autocast(q_vectors.device.type, enabled=False):
        q_vectors, p_vectors = q_vectors.float(), p_vectors.float()
        if similarity == "cosine" and not normalized:
            q_vectors = F.normalize(q_vectors, dim=-1)
            p_vectors = F.normalize(p_vectors, dim=-1)
        return q_vectors @ p_vectors.T / temperature


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def gather_with_local_grad(tensor: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Concatenate `tensor` (any first-dim size) from every process in rank order; returns it and the sizes.

    The other processes' slices are constants; the local slice is `tensor` itself, so gradients reach it.
    """
    world_size, rank = _world()
    if world_size == 1:
        return tensor, [tensor.shape[0]]
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world_size)]
    dist.all_gather(sizes, size)
    sizes = [int(s.item()) for s in sizes]
    # all_gather needs equal shapes: pad to the largest slice, trim afterwards
    padded = tensor.detach().new_zeros((max(sizes), *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor.detach()
    slices = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(slices, padded.contiguous())
    slices = [s[:n] for s, n in zip(slices, sizes, strict=True)]
    slices[rank] = tensor
    return torch.cat(slices), sizes


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; multiplies the gradient by `scale` (the world size, undoing DDP's averaging)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def repeated_passage_mask(passage_keys: torch.Tensor, positive_idx: torch.Tensor) -> torch.Tensor:
    """`(num_questions, num_passages)` True where a column repeats a passage the question already sees.

    A question sees its positive's own column and the first column of every other passage key; the other copies
    of its positive and the later copies of any passage are masked. Unique keys mask nothing.
    """
    columns = torch.arange(passage_keys.shape[0], device=passage_keys.device)
    _, inverse = torch.unique(passage_keys, return_inverse=True)
    first = torch.full_like(columns, passage_keys.shape[0]).scatter_reduce(0, inverse, columns, "amin")
    repeated = first[inverse] != columns
    shares_positive = inverse[None, :] == inverse[positive_idx][:, None]
    return torch.where(shares_positive, columns[None, :] != positive_idx[:, None], repeated[None, :])


def in_batch_nll_loss(
    q_vectors: torch.Tensor,
    p_vectors: torch.Tensor,
    positive_idx: torch.Tensor,
    similarity: str = "dot",
    temperature: float = 1.0,
    gather: bool = True,
    normalized: bool = False,
    passage_keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean negative log-likelihood of each question's positive among all passages of the (global) batch.

    Args:
        q_vectors: `(num_questions, dim)` local question embeddings.
        p_vectors: `(num_passages, dim)` local passage embeddings (positives and negatives, any order).
        positive_idx: `(num_questions,)` index of each question's positive in the local `p_vectors`.
        similarity: "dot" (DPR) or "cosine".
        temperature: scores are divided by it (1.0 for DPR's dot product; ~0.05 suits cosine).
        gather: under `torch.distributed`, score against the passages of every process (in-batch negatives
            across devices). The returned value then equals the single-process loss on the global batch.
        normalized: the vectors are unit length already (encoders with `normalize=True`): cosine does not
            normalise them again.
        passage_keys: `(num_passages,)` integer identity of each local passage (the collator's `passage_keys`):
            repeated passages of the (global) batch count once per question (`repeated_passage_mask`).
    """
    if positive_idx.shape[0] != q_vectors.shape[0]:
        raise ValueError(f"{positive_idx.shape[0]} positive indices for {q_vectors.shape[0]} questions")
    if passage_keys is not None:
        if passage_keys.shape != p_vectors.shape[:1]:
            raise ValueError(f"{tuple(passage_keys.shape)} passage keys for {p_vectors.shape[0]} passages")
        passage_keys = passage_keys.to(p_vectors.device)
    world_size, rank = _world()
    if gather and world_size > 1:
        p_vectors, p_sizes = gather_with_local_grad(p_vectors)
        q_vectors, _ = gather_with_local_grad(q_vectors)
        offset = sum(p_sizes[:rank])
        positive_idx, _ = gather_with_local_grad(positive_idx + offset)
        if passage_keys is not None:
            passage_keys, _ = gather_with_local_grad(passage_keys)
    scores = similarity_scores(q_vectors, p_vectors, similarity, temperature, normalized)
    if passage_keys is not None:
        scores = scores.masked_fill(repeated_passage_mask(passage_keys, positive_idx), float("-inf"))
    loss = F.cross_entropy(scores, positive_idx)
    if gather and world_size > 1:
        loss = _ScaleGradient.apply(loss, float(world_size))
    return loss

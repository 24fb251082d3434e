"""In-batch NLL: the loss against a hand computation, and the 2-process gather against one process."""

from __future__ import annotations

import datetime
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from dpr_hf.losses import in_batch_nll_loss, similarity_scores
from dpr_hf.losses.retriever import repeated_passage_mask


def _nll(scores: list[float], positive: int) -> float:
    return -scores[positive] + math.log(sum(math.exp(s) for s in scores))


def test_dot_product_loss_matches_hand_computation():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], requires_grad=True)
    loss = in_batch_nll_loss(q, p, torch.tensor([0, 1]))
    # q0 . p = [1, 0, 1]; q1 . p = [0, 2, 1]
    expected = (_nll([1, 0, 1], 0) + _nll([0, 2, 1], 1)) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # d loss / d q_i = (softmax_i . p - p_pos(i)) / n
    loss.backward()
    for i, (row, pos) in enumerate((([1.0, 0.0, 1.0], 0), ([0.0, 2.0, 1.0], 1))):
        weights = torch.softmax(torch.tensor(row), 0)
        grad = (weights[:, None] * p.detach()).sum(0) - p.detach()[pos]
        torch.testing.assert_close(q.grad[i], grad / 2)


def test_cosine_temperature_loss_matches_hand_computation():
    q = torch.tensor([[3.0, 0.0]])
    p = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, -5.0]])
    loss = in_batch_nll_loss(q, p, torch.tensor([1]), similarity="cosine", temperature=0.5)
    cosines = [1.0, 1 / math.sqrt(2), 0.0]
    assert loss.item() == pytest.approx(_nll([c / 0.5 for c in cosines], 1), abs=1e-6)


def test_cosine_of_vectors_already_normalised_is_their_dot_product():
    """Encoders with normalize=True output unit vectors: the training loss scores them without normalising twice."""
    q = torch.tensor([[3.0, 0.0]])
    p = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    raw = similarity_scores(q, p, "cosine", 0.5, normalized=True)
    torch.testing.assert_close(raw, q @ p.T / 0.5)  # taken as given: not normalised
    unit_q, unit_p = torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(p, dim=-1)
    torch.testing.assert_close(
        similarity_scores(unit_q, unit_p, "cosine", 0.5, normalized=True),
        similarity_scores(q, p, "cosine", 0.5),
    )
    loss = in_batch_nll_loss(unit_q, unit_p, torch.tensor([1]), "cosine", 0.5, normalized=True)
    assert loss.item() == pytest.approx(_nll([1.0 / 0.5, (1 / math.sqrt(2)) / 0.5], 1), abs=1e-6)


def test_rejects_unknown_similarity_and_mismatched_positives():
    with pytest.raises(ValueError, match="similarity"):
        similarity_scores(torch.ones(1, 2), torch.ones(1, 2), similarity="l2")
    with pytest.raises(ValueError, match="positive"):
        in_batch_nll_loss(torch.ones(2, 2), torch.ones(3, 2), torch.tensor([0]))


# The global batch: 5 questions over 11 passages, split unevenly between two processes.
SPLITS = [(slice(0, 3), slice(0, 7)), (slice(3, 5), slice(7, 11))]
POSITIVES = [torch.tensor([0, 2, 5]), torch.tensor([1, 0])]  # local indices


def _global_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(5, 8, generator=generator)
    p = torch.randn(11, 8, generator=generator)
    positives = torch.cat([POSITIVES[0], POSITIVES[1] + 7])
    return q, p, positives


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=120))
    try:
        q, p, _ = _global_batch()
        q_slice, p_slice = SPLITS[rank]
        q_local = q[q_slice].clone().requires_grad_()
        p_local = p[p_slice].clone().requires_grad_()
        loss = in_batch_nll_loss(q_local, p_local, POSITIVES[rank], similarity="cosine", temperature=0.1)
        loss.backward()
        save_file(
            {"loss": loss.detach(), "q_grad": q_local.grad, "p_grad": p_local.grad},
            f"{out_dir}/{rank}.safetensors",
        )
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_two_processes(worker, tmp_path) -> list[dict[str, torch.Tensor]]:
    """`worker` as rank 1 in a fresh process and rank 0 here (one interpreter start instead of two); the tensors
    each rank saved."""
    args = (2, _free_port(), str(tmp_path))
    child = mp.get_context("spawn").Process(target=worker, args=(1, *args))
    child.start()
    worker(0, *args)
    child.join(timeout=120)
    assert child.exitcode == 0
    return [load_file(tmp_path / f"{rank}.safetensors") for rank in range(2)]


def test_two_processes_give_the_single_process_loss_and_gradient(tmp_path):
    results = _run_two_processes(_worker, tmp_path)
    q, p, positives = _global_batch()
    q.requires_grad_()
    p.requires_grad_()
    loss = in_batch_nll_loss(q, p, positives, similarity="cosine", temperature=0.1)
    loss.backward()
    for result, (q_slice, p_slice) in zip(results, SPLITS, strict=True):
        torch.testing.assert_close(result["loss"], loss.detach())
        # each process back-propagates into its own slice; DDP then averages over the 2 processes
        torch.testing.assert_close(result["q_grad"] / 2, q.grad[q_slice])
        torch.testing.assert_close(result["p_grad"] / 2, p.grad[p_slice])


# ------------------------------------------------------------------------------------------- repeated passages
def test_repeated_passages_count_once_per_question():
    keys = torch.tensor([7, 3, 7, 5, 3])
    # q0's positive is column 2 (key 7), q1's column 1 (key 3), q2's column 3 (key 5)
    mask = repeated_passage_mask(keys, torch.tensor([2, 1, 3]))
    assert mask.tolist() == [
        [True, False, False, False, True],  # its positive's other copy and the second copy of key 3
        [False, False, True, False, True],
        [False, False, True, False, True],
    ]
    q = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    p = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    p[2], p[4] = p[0], p[1]
    masked = in_batch_nll_loss(q, p, torch.tensor([2, 1, 3]), passage_keys=keys)
    # the same as the batch with each passage once (the collator's batch within one process)
    assert masked.item() == pytest.approx(
        in_batch_nll_loss(q, p[[0, 1, 3]], torch.tensor([0, 1, 2])).item(), abs=1e-6
    )
    unique = torch.tensor([1, 2, 3, 4, 5])  # nothing repeated: exactly the loss without keys
    assert torch.equal(
        in_batch_nll_loss(q, p, torch.tensor([2, 1, 3]), passage_keys=unique),
        in_batch_nll_loss(q, p, torch.tensor([2, 1, 3])),
    )
    with pytest.raises(ValueError, match="passage keys"):
        in_batch_nll_loss(q, p, torch.tensor([2, 1, 3]), passage_keys=keys[:4])


# Two processes that both hold passages "A" and "C": rank 0 [A B C D], rank 1 [C E A]; one process on the global
# batch holds [A B C D E] once each.
DUPLICATE_KEYS = [torch.tensor([10, 11, 12, 13]), torch.tensor([12, 14, 10])]
DUPLICATE_POSITIVES = [torch.tensor([0, 2]), torch.tensor([0, 2, 1])]  # local: A, C | C, A, E
GLOBAL_OF_LOCAL = [[0, 1, 2, 3], [2, 4, 0]]  # each local passage's column in the one-process batch


def _duplicate_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return torch.randn(5, 8, generator=generator), torch.randn(5, 8, generator=generator)


def _duplicate_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=120))
    try:
        q, p = _duplicate_batch()
        q_local = q[[0, 1]] if rank == 0 else q[[2, 3, 4]]
        q_local = q_local.clone().requires_grad_()
        p_local = p[GLOBAL_OF_LOCAL[rank]].clone().requires_grad_()
        results = {}
        for name, keys in (("keys", DUPLICATE_KEYS[rank]), ("no_keys", None)):
            loss = in_batch_nll_loss(q_local, p_local, DUPLICATE_POSITIVES[rank], passage_keys=keys)
            loss.backward()
            results[f"{name}.loss"] = loss.detach()
            results[f"{name}.q_grad"] = q_local.grad.clone()
            results[f"{name}.p_grad"] = p_local.grad.clone()
            q_local.grad = p_local.grad = None
        save_file(results, f"{out_dir}/{rank}.safetensors")
    finally:
        dist.destroy_process_group()


def test_two_processes_holding_one_paragraph_give_the_single_process_loss_and_gradient(tmp_path):
    results = _run_two_processes(_duplicate_worker, tmp_path)
    q, p = _duplicate_batch()
    q.requires_grad_()
    p.requires_grad_()
    positives = torch.tensor([0, 2, 2, 0, 4])
    loss = in_batch_nll_loss(q, p, positives)
    loss.backward()
    p_grad = torch.zeros_like(p)
    for rank, result in enumerate(results):
        torch.testing.assert_close(result["keys.loss"], loss.detach())
        torch.testing.assert_close(result["keys.q_grad"] / 2, q.grad[[0, 1] if rank == 0 else [2, 3, 4]])
        # a passage held twice gets its gradient in two parts, one per process; DDP sums them
        p_grad.index_add_(0, torch.tensor(GLOBAL_OF_LOCAL[rank]), result["keys.p_grad"] / 2)
        # without the keys the copies are false negatives: a different loss
        assert abs(result["no_keys.loss"].item() - loss.item()) > 1e-3
    torch.testing.assert_close(p_grad, p.grad)

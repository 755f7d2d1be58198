"""Process-group helpers: torchrun environment, gradient all-reduce, gathers with uneven sizes.

A method with one optimiser and one backward per step (``gradient_sync = "ddp"``: RotNet, DeepCluster,
supervised) is wrapped in ``DistributedDataParallel`` (``Method.replicate``), whose all-reduce overlaps the backward
pass. The GAN methods step several networks with several optimizers per batch and the WGAN-GP penalty needs a double
backward, two things DDP's hooks handle poorly: their gradients are all-reduced explicitly after each backward
(:func:`allreduce_grads`, DDP's arithmetic: gradients averaged over ranks, parameters broadcast from rank 0 at start).
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn


def env_world() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment; (0, 0, 1) when not launched by it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, local, world


def init(device: torch.device) -> None:
    """Join the process group when launched under torchrun (NCCL on CUDA, gloo on CPU)."""
    _, _, world = env_world()
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def broadcast_module(module: nn.Module) -> None:
    """Make every rank start from rank 0's parameters and buffers (what DDP does at construction)."""
    if not is_dist():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def allreduce_grads(params: list[Tensor]) -> None:
    """Average gradients over ranks, flattened into one buffer per dtype to keep the message count low."""
    if not is_dist():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for g in grads:
        by_dtype.setdefault(g.dtype, []).append(g)
    ws = world_size()
    for group in by_dtype.values():
        flat = torch.cat([g.reshape(-1) for g in group])
        dist.all_reduce(flat)
        flat.div_(ws)
        offset = 0
        for g in group:
            n = g.numel()
            g.copy_(flat[offset:offset + n].view_as(g))
            offset += n


def all_reduce_sum(t: Tensor) -> Tensor:
    if is_dist():
        dist.all_reduce(t)
    return t


def broadcast(t: Tensor, src: int = 0) -> Tensor:
    if is_dist():
        dist.broadcast(t, src=src)
    return t


def broadcast_object(obj):
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj) -> list:
    if not is_dist():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_rows(t: Tensor, comm_device: torch.device) -> Tensor | None:
    """Concatenate 2-D (or 1-D) tensors with different first dimensions from all ranks onto rank 0.

    Returns the concatenation (on ``t``'s device) on rank 0 and None elsewhere. Rows are padded to the largest
    rank's count for the collective and trimmed after. ``comm_device`` is where the collective runs (CUDA for
    NCCL).
    """
    if not is_dist():
        return t
    ws = world_size()
    n = torch.tensor([t.shape[0]], device=comm_device)
    sizes = [torch.zeros_like(n) for _ in range(ws)]
    dist.all_gather(sizes, n)
    counts = [int(s.item()) for s in sizes]
    width = max(counts)
    padded = torch.zeros((width, *t.shape[1:]), dtype=t.dtype, device=comm_device)
    padded[: t.shape[0]] = t.to(comm_device)
    if rank() == 0:
        bufs = [torch.empty_like(padded) for _ in range(ws)]
        dist.gather(padded, gather_list=bufs, dst=0)
        return torch.cat([b[:c] for b, c in zip(bufs, counts, strict=True)]).to(t.device)
    dist.gather(padded, dst=0)
    return None


def check_in_sync(module: nn.Module, what: str = "parameters") -> None:
    """Raise if ranks hold different parameters: a broken gradient all-reduce would otherwise go unnoticed.

    Parameters must agree exactly (every rank applies the same averaged gradient); BatchNorm running
    statistics legitimately differ per rank and are not compared.
    """
    if not is_dist():
        return
    with torch.no_grad():
        local = torch.stack([p.detach().double().sum() for p in module.parameters()]).sum().cpu()
    sums = all_gather_object(float(local))
    if max(sums) - min(sums) > 1e-9 * max(1.0, abs(sums[0])):
        raise RuntimeError(f"ranks hold different {what} (sums {sums}); data-parallel training is broken")

"""Multi-process training under `torchrun` (DDP), with no code change for the user.

`torchrun --nproc_per_node=N -m workbench.train --config medtrim` sets RANK / WORLD_SIZE /
LOCAL_RANK; `init_distributed` reads them, joins the process group (NCCL on GPUs, gloo on
CPU) and pins each rank to its GPU. Contrastive methods see every rank's negatives through
`all_gather_with_grad`: gradients flow back to the rank that produced each embedding, so the
DDP gradient equals the single-process gradient on the combined batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, List, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank among world_size processes, its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device, backend: Optional[str] = None) -> DistContext:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); else one process.

    With CUDA each rank takes GPU LOCAL_RANK; a process group created by the caller (tests
    spawning gloo workers) is used as is.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        return DistContext(device=device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"))
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=device)


def all_gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate `x` from every rank along dim 0, keeping the autograd graph.

    torch.distributed.nn's all_gather sums the incoming gradients across ranks in backward
    (a reduce-scatter), so each rank's embeddings receive the gradient of every rank's loss.
    Identity when not distributed.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def wrap_ddp(module: nn.Module, ctx: DistContext, find_unused_parameters: bool = False) -> nn.Module:
    """DistributedDataParallel around `module` when distributed, else `module` unchanged."""
    if not ctx.is_distributed:
        return module
    if not any(p.requires_grad for p in module.parameters()):
        return module
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids,
                                               find_unused_parameters=find_unused_parameters)


def mean_across_ranks(values: List[float], ctx: DistContext) -> List[float]:
    """Average logged scalars over ranks (each rank's loss is of its own shard)."""
    if not ctx.is_distributed or not values:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / ctx.world_size).tolist()


def all_gather_bytes(data: bytes, ctx: DistContext) -> List[bytes]:
    """Every rank's `data`, in rank order (a checkpoint collects each rank's RNG state this
    way: as bytes in tensors, so nothing is pickled). `[data]` when not distributed."""
    if not ctx.is_distributed:
        return [data]
    device = ctx.device if ctx.device.type == "cuda" else torch.device("cpu")  # NCCL needs CUDA tensors
    payload = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device)
    size = torch.tensor([payload.numel()], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(ctx.world_size)]
    dist.all_gather(sizes, size)
    longest = int(max(int(s.item()) for s in sizes))
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[: payload.numel()] = payload
    chunks = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(chunks, padded)
    return [chunk[: int(n.item())].cpu().numpy().tobytes() for chunk, n in zip(chunks, sizes)]


def barrier(ctx: DistContext) -> None:
    if ctx.is_distributed:
        dist.barrier()


class EpochSampler(torch.utils.data.Sampler[int]):
    """Deterministic random order per (seed, epoch), sharded over ranks.

    Each epoch draws `epoch_size` indices from fresh permutations of the dataset (so a pool
    larger than an epoch, such as MedTrim's triplets, is sampled without repeats until it
    is exhausted), rank r takes every world_size-th. Determinism per epoch is what lets a
    resumed run see exactly the batches an uninterrupted run would. Use `set_epoch`, as with
    torch's DistributedSampler.
    """

    def __init__(self, dataset_size: int, epoch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True) -> None:
        if dataset_size <= 0:
            raise ValueError("The training set is empty; check the split and the data folder.")
        self.dataset_size = dataset_size
        self.epoch_size = epoch_size - epoch_size % world_size  # equal shards keep DDP in step
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> Tensor:
        if not self.shuffle:
            return torch.arange(self.epoch_size) % self.dataset_size
        # An endless sequence of permutations (the k-th seeded by (seed, k)) laid end to end;
        # epoch e takes the window [e * epoch_size, (e + 1) * epoch_size) of it.
        start = self.epoch * self.epoch_size
        first = start // self.dataset_size
        last = (start + self.epoch_size - 1) // self.dataset_size
        perms = [torch.randperm(self.dataset_size, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + k))
                 for k in range(first, last + 1)]
        flat = torch.cat(perms)
        offset = start - first * self.dataset_size
        return flat[offset: offset + self.epoch_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.rank:: self.world_size].tolist())

    def __len__(self) -> int:
        return self.epoch_size // self.world_size

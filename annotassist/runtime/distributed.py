"""One process or many under torchrun: NCCL on GPUs, gloo on CPU; each rank its shard of the data."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str | None = None) -> DistInfo:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and join the process group if there is one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistInfo(rank, world, local, dev)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on any rank (to stop all ranks at the same step)."""
    if world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


class ShardSampler(Sampler[int]):
    """A seeded shuffle per epoch; rank r takes every world-th index; `start_batch` skips batches already done
    (resume). With world=1 and batch 2B the indices of a step are the union of what 2 ranks with batch B get."""

    def __init__(self, n: int, batch_size: int, rank: int = 0, world: int = 1, seed: int = 0, epoch: int = 0,
                 start_batch: int = 0, shuffle: bool = True):
        self.n, self.batch_size, self.rank, self.world = n, batch_size, rank, world
        self.seed, self.epoch, self.start_batch, self.shuffle = seed, epoch, start_batch, shuffle

    def _indices(self) -> list[int]:
        order = np.random.default_rng([self.seed, self.epoch, 7]).permutation(self.n) if self.shuffle \
            else np.arange(self.n)
        per_rank = (self.n // self.world) // self.batch_size * self.batch_size
        # interleave so that step t of every rank together covers one contiguous block of the shuffle
        block = order[: per_rank * self.world].reshape(-1, self.world, self.batch_size)
        mine = block[:, self.rank, :].reshape(-1) if self.world > 1 else order[:per_rank]
        return mine[self.start_batch * self.batch_size:].tolist()

    def __iter__(self):
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices())


def batches_per_epoch(n: int, batch_size: int, world: int) -> int:
    return (n // world) // batch_size

"""Ranks of a preprocessing run started by the training launcher (`NUM_GPUS`, `HOSTFILE`): each rank takes a
disjoint part of the work; barriers go through a gloo process group (nothing but barriers is exchanged)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

__all__ = ["Ranks", "launcher_ranks"]


@dataclass
class Ranks:
    rank: int
    world_size: int
    local_rank: int
    barrier: Callable[[], None]

    def close(self) -> None:
        import torch.distributed as dist

        if self.world_size > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def launcher_ranks() -> Ranks:
    """This process's rank from the launcher's environment (RANK / WORLD_SIZE / LOCAL_RANK; one process when
    unset). With several, a gloo group is joined (env:// rendezvous on MASTER_ADDR / MASTER_PORT)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if world <= 1:
        return Ranks(0, 1, 0, lambda: None)
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=world)
    return Ranks(rank, world, local, dist.barrier)

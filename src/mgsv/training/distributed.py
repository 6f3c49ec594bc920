"""torchrun DDP for the trainer: this process's place in the job, the device it trains on, and gathering results.

A single process is world size 1, and every helper here is then a no-op; `mgsv train` under `torchrun` joins the
process group (NCCL on CUDA, Gloo on CPU), trains on its share of every batch and gathers validation outputs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from mgsv.devices import device_name


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on CUDA, Gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Dist(rank, world, local)


def gather(value: Any, dist_info: Dist) -> list[Any]:
    if dist_info.world_size == 1:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * dist_info.world_size
    dist.all_gather_object(out, value)
    return out


def rank_device(device: str, dist_info: Dist) -> str:
    """The device this rank trains on: `device` as `mgsv.devices.device_name` resolves it ("auto": cuda when
    available, else cpu), and under torchrun "cuda" becomes this rank's GPU, cuda:LOCAL_RANK."""
    device = device_name(device)
    if device == "cuda" and dist_info.world_size > 1:
        device = device_name(f"cuda:{dist_info.local_rank}")
    return device

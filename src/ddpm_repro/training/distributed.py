"""torch.distributed set-up: a single process by default, DDP when launched by torchrun
(NCCL on GPUs, gloo on CPU). No MPI."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import UserError


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job: its rank of world_size processes and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0, the one process that writes checkpoints, logs and prints."""
        return self.rank == 0


def pick_device(preference: str) -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda' fails clearly when there is none."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device is 'cuda' but no CUDA device is available")
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(preference)


def setup_distributed(preference: str = "auto") -> DistContext:
    """Join the process group if torchrun started us (WORLD_SIZE > 1), else run alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(preference)
    if world_size == 1:
        return DistContext(0, 1, device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), device)


def cleanup_distributed() -> None:
    """Leave the process group if one was joined; a no-op when running alone."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

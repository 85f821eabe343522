"""One process or many: the device, the process group under torchrun, and who writes files.

Under ``torchrun`` (which sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``) every
process trains a replica wrapped in DistributedDataParallel, over NCCL on GPUs
and gloo on CPUs; rank 0 alone writes the run directory.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Process:
    """Where this process runs and its place among the training processes."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but torch sees no CUDA GPU "
                           f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}); use --device cpu")
    return torch.device(device)


def start(device: str) -> Process:
    """Set up this process: alone, or as one rank of a torchrun job."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    resolved = resolve_device(device)
    if world_size == 1:
        return Process(resolved)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if resolved.type == "cuda":
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    logger.info("rank %d of %d on %s (%s)", rank, world_size, resolved, dist.get_backend())
    return Process(resolved, rank, world_size, owns_group)


def stop(process: Process) -> None:
    """Leave the process group, if :func:`start` created it (not one the caller set up)."""
    if process.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def average(process: Process, value: float) -> float:
    """The mean of ``value`` over all ranks."""
    if not process.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64,
                          device=process.device if process.device.type == "cuda" else "cpu")
    dist.all_reduce(tensor)
    return float(tensor.item()) / process.world_size


def all_ranks(process: Process, flag: bool) -> bool:
    """Whether ``flag`` holds on every rank (so that all ranks take the same branch)."""
    return average(process, float(flag)) == 1.0


def check_replicas(process: Process, model: torch.nn.Module) -> None:
    """Raise if the ranks' weights differ (DistributedDataParallel keeps them identical)."""
    if not process.distributed:
        return
    checksum = torch.stack([parameter.detach().double().sum() for parameter in model.parameters()]).sum()
    gathered = [torch.zeros_like(checksum) for _ in range(process.world_size)]
    dist.all_gather(gathered, checksum)
    if any(not torch.equal(value, gathered[0]) for value in gathered):
        raise RuntimeError(f"the {process.world_size} replicas' weights differ: {[v.item() for v in gathered]}")
    logger.info("the %d replicas' weights are identical", process.world_size)

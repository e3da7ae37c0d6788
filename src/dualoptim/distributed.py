"""Which process this is, for the one rule of a multi-process run (``torchrun`` or
``accelerate launch``): every process computes (training is collective), the first one
alone writes caches, records and reports, and the others wait where a file decides what runs.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank: the process group's, else the launcher's ``RANK`` (set before the
    group exists), else 0."""
    return dist.get_rank() if _initialized() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if _initialized() else int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def has_gpu() -> bool:
    """Whether torch sees a CUDA or MPS device (the alternative: CPU only)."""
    return torch.cuda.is_available() or torch.backends.mps.is_available()


def fsdp_in_environment() -> bool:
    """Whether the launcher asked for FSDP (``accelerate launch`` with an FSDP config sets
    ``ACCELERATE_USE_FSDP``; accelerate drops the plugin on CPU but the variable stays)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")


def launch() -> dict[str, object]:
    """How this run was launched, for its records: processes, whether the engine shards the
    model (FSDP2, several processes), and accelerate's mixed precision."""
    processes = world_size()
    return {
        "processes": processes,
        "fsdp2": fsdp_in_environment() and processes > 1,
        "mixed_precision": os.environ.get("ACCELERATE_MIXED_PRECISION", "no"),
    }


def barrier() -> None:
    """Wait for every process (nothing to wait for in one process)."""
    if _initialized():
        dist.barrier()

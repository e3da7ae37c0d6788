"""Deterministic, resumable batch streams over a data set's indices.

Pass k over a set of n examples visits ``randperm(n)`` drawn from a generator seeded by
(seed, k), so a stream's whole future is fixed by (seed, pass, position): a checkpoint stores
two integers, and a resumed run draws exactly the batches an uninterrupted one would.

Under data parallelism every rank holds the same stream and takes its own shard of each
global batch. The last batch of a pass is topped up from the start of the same permutation
to a multiple of the number of processes, so every rank's shard has the same size and the
mean of the ranks' losses is the global batch's mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

_SEED_STRIDE = 1_000_003  # a prime: (seed, pass) pairs never collide for realistic values


@dataclass
class BatchStream:
    """Global batches of indices into a set of ``size`` examples."""

    size: int
    batch_size: int
    seed: int
    world_size: int = 1
    pass_index: int = 0
    position: int = 0

    def __post_init__(self) -> None:
        if self.size <= 0:
            raise ValueError("a batch stream needs at least one example")
        if self.batch_size <= 0:
            raise ValueError(f"batch size must be positive, got {self.batch_size}")
        if self.batch_size % self.world_size:
            raise ValueError(
                f"batch size {self.batch_size} is not divisible by {self.world_size} processes"
            )
        self._order = self._permutation(self.pass_index)

    @property
    def batches_per_pass(self) -> int:
        return -(-self.size // self.batch_size)

    def _permutation(self, pass_index: int) -> Tensor:
        gen = torch.Generator().manual_seed(self.seed * _SEED_STRIDE + pass_index)
        return torch.randperm(self.size, generator=gen)

    def next(self) -> Tensor:
        """The next global batch (advancing to a new pass after the last one)."""
        batch = self._order[self.position : self.position + self.batch_size]
        short = -len(batch) % self.world_size
        if short:
            batch = torch.cat([batch, self._order[:short].repeat(-(-short // self.size))[:short]])
        self.position += self.batch_size
        if self.position >= self.size:
            self.pass_index += 1
            self.position = 0
            self._order = self._permutation(self.pass_index)
        return batch

    def shard(self, batch: Tensor, rank: int) -> Tensor:
        """This rank's part of a global batch."""
        return batch[rank :: self.world_size]

    def state_dict(self) -> dict[str, int]:
        return {"pass_index": self.pass_index, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.pass_index, self.position = int(state["pass_index"]), int(state["position"])
        self._order = self._permutation(self.pass_index)

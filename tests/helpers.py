"""Test helpers: a mixed forget/retain step sequence, prescribed gradients, round trips."""

from __future__ import annotations

import io
from typing import Any

import torch

#: A mixed sequence as the issue asks: F, R x5, F, R, F, F, R.
MIXED = ("forget", *["retain"] * 5, "forget", "retain", "forget", "forget", "retain")


def grads_for(n: int, steps: int, seed: int = 0) -> list[torch.Tensor]:
    """Prescribed gradients of varied magnitude (so that Adam and SGD differ visibly)."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-2, 1, n, dtype=torch.float64)
    return [torch.randn(n, generator=gen, dtype=torch.float64) * scale for _ in range(steps)]


def roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    """Serialise and reload a state dict the way a checkpoint would (weights_only)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)

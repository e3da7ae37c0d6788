"""Block-wise 8-bit quantisation of optimizer states (SPEC §1.5).

A state tensor is cut into blocks of 256 values; each block stores one fp32 absmax and 256
uint8 indices into a 256-entry *dynamic* code (fine near zero, coarse near one). The code
tables are bitsandbytes' (``create_dynamic_map``): signed for first moments and residual
second moments, unsigned for non-negative second moments. Encoding rounds to the nearest code
value, as bitsandbytes' ``quantize_blockwise`` does.

The encode/decode functions are plain tensor code so that torch.compile can fuse them into
the optimizer update; the eager path runs the very same functions.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

BLOCK = 256


@functools.cache
def code_tables(signed: bool, device: torch.device) -> tuple[Tensor, Tensor]:
    """(code, midpoints between consecutive code values) on ``device``."""
    try:
        from bitsandbytes.functional import create_dynamic_map
    except ImportError as err:
        raise ImportError(
            "8-bit optimizer states need bitsandbytes: pip install 'dualoptim[bnb]'"
        ) from err
    code = create_dynamic_map(signed=signed).float()
    if not bool((code[1:] >= code[:-1]).all()):
        raise AssertionError("bitsandbytes' dynamic code is expected sorted")
    midpoints = (code[1:] + code[:-1]) / 2
    return code.to(device), midpoints.to(device)


def num_blocks(numel: int) -> int:
    return -(-numel // BLOCK)


def quantize(x: Tensor, midpoints: Tensor) -> tuple[Tensor, Tensor]:
    """Encode flat ``x`` as (uint8 indices padded to whole blocks, fp32 absmax per block)."""
    n = x.numel()
    blocks = torch.nn.functional.pad(x.float(), (0, num_blocks(n) * BLOCK - n)).view(-1, BLOCK)
    absmax = blocks.abs().amax(dim=1)
    scaled = blocks / absmax.clamp_min(torch.finfo(torch.float32).tiny).unsqueeze(1)
    index = torch.bucketize(scaled, midpoints)
    return index.to(torch.uint8).view(-1), absmax


def dequantize(index: Tensor, absmax: Tensor, code: Tensor, numel: int) -> Tensor:
    """Decode to a flat fp32 tensor of ``numel`` values."""
    values = code[index.long()].view(-1, BLOCK) * absmax.unsqueeze(1)
    return values.view(-1)[:numel]


def max_relative_error(code: Tensor) -> float:
    """The worst rounding error relative to absmax: half the widest gap between neighbouring
    codes, or the distance from the range's end (-1 or 0, and 1) to the nearest code."""
    low = -1.0 if float(code[0]) < 0 else 0.0
    ends = max(float(code[0]) - low, 1.0 - float(code[-1]))
    return max(float((code[1:] - code[:-1]).max()) / 2, ends)

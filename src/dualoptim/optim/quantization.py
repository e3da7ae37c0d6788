"""Block-wise 8-bit quantisation of optimizer states (SPEC §1.5).

A state tensor is cut into blocks of 256 values; each block stores one fp32 absmax and 256
uint8 indices into a 256-entry *dynamic* code (fine near zero, coarse near one). The code
tables are bitsandbytes' (``create_dynamic_map``): signed for first moments and residual
second moments, unsigned for non-negative second moments. Encoding rounds to the nearest code
value (bitsandbytes' CPU ``quantize_blockwise`` picks a neighbour for ~0.2% of values).

The encode/decode functions are plain tensor code so that torch.compile can fuse them into
the optimizer update; the eager path runs the very same functions.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

BLOCK = 256


#: Encoding looks the nearest code up by the top bits of the float32 (sign, exponent and 8
#: mantissa bits): each key covers a range 0.39% wide, narrower than any gap between codes, so
#: the nearest code is the table's entry or the next one. This keeps encoding elementwise and
#: fusible (a binary search over the code compiles to a slow, unfused loop).
_KEY_SHIFT = 15
_KEY_COUNT = 1 << (32 - _KEY_SHIFT)


@functools.cache
def code_tables(signed: bool, device: torch.device) -> tuple[Tensor, Tensor]:
    """(code, lookup table from float32 key to the lower candidate code index) on ``device``."""
    try:
        from bitsandbytes.functional import create_dynamic_map
    except ImportError as err:
        raise ImportError(
            "8-bit optimizer states need bitsandbytes: pip install 'dualoptim[bnb]'"
        ) from err
    code = create_dynamic_map(signed=signed).float()
    if not bool((code[1:] >= code[:-1]).all()):
        raise AssertionError("bitsandbytes' dynamic code is expected sorted")
    return code.to(device), _lookup_table(code).to(device)


def _lookup_table(code: Tensor) -> Tensor:
    keys = np.arange(_KEY_COUNT, dtype=np.uint32) << np.uint32(_KEY_SHIFT)
    ends = np.stack([keys, keys | np.uint32((1 << _KEY_SHIFT) - 1)]).view(np.float32)
    with np.errstate(invalid="ignore"):  # the NaN keys
        ends = ends.astype(np.float64)
    # scaled values lie in [-1, 1]; keys beyond (inf and NaN included) clamp to the sign's end
    ends = np.clip(np.where(np.isfinite(ends), ends, np.copysign(1.0, ends)), -1.0, 1.0)
    values = code.double().numpy()
    midpoints = (values[1:] + values[:-1]) / 2
    nearest = np.searchsorted(midpoints, ends, side="left")  # nearest code of each range end
    if int(np.abs(nearest[1] - nearest[0]).max()) > 1:
        raise AssertionError("a lookup key spans more than two codes")
    low = np.minimum(nearest.min(axis=0), len(values) - 2)
    return torch.from_numpy(low.astype(np.int32))


def num_blocks(numel: int) -> int:
    return -(-numel // BLOCK)


def quantize_blocks(blocks: Tensor, code: Tensor, table: Tensor) -> tuple[Tensor, Tensor]:
    """Encode fp32 ``blocks`` of shape (..., 256): (uint8 indices of the same shape, absmax of
    shape (...)). The block is the last dimension, so a compiled kernel reduces over a fixed
    256 values instead of computing each value's block from symbolic sizes."""
    absmax = blocks.abs().amax(dim=-1, keepdim=True)
    scaled = blocks / absmax.clamp_min(torch.finfo(torch.float32).tiny)
    key = (scaled.view(torch.int32) >> _KEY_SHIFT) & (_KEY_COUNT - 1)
    low = table[key].long()
    high = low + 1
    closer_high = (scaled - code[high]).abs() < (scaled - code[low]).abs()
    index = torch.where(closer_high, high, low)
    return index.to(torch.uint8), absmax.squeeze(-1)


def dequantize_blocks(index: Tensor, absmax: Tensor, code: Tensor) -> Tensor:
    """Decode indices of shape (..., 256) with absmax (...) to fp32 of the indices' shape."""
    return code[index.long()] * absmax.unsqueeze(-1)


def row_blocks(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(rows, row length, blocks per row) of a parameter of ``shape`` under row-aligned blocks
    (SPEC §1.5): dim 0 gives the rows, each row is cut into whole blocks of its own."""
    rows = shape[0]
    row_len = 1
    for size in shape[1:]:
        row_len *= size
    return rows, row_len, num_blocks(row_len)


def to_row_blocks(x: Tensor, per_row: int) -> Tensor:
    """(rows, row length) -> (rows, blocks per row, 256) in fp32, each row zero-padded to
    whole blocks: no block crosses a row, so a shard of whole rows (FSDP's dim-0 sharding)
    encodes exactly as its rows do in the whole tensor."""
    rows, row_len = x.shape
    padded = torch.nn.functional.pad(x.float(), (0, per_row * BLOCK - row_len))
    return padded.view(rows, per_row, BLOCK)


def max_relative_error(code: Tensor) -> float:
    """The worst rounding error relative to absmax: half the widest gap between neighbouring
    codes, or the distance from the range's end (-1 or 0, and 1) to the nearest code."""
    low = -1.0 if float(code[0]) < 0 else 0.0
    ends = max(float(code[0]) - low, 1.0 - float(code[-1]))
    return max(float((code[1:] - code[:-1]).max()) / 2, ends)

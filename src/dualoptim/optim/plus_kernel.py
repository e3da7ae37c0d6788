"""The DualOptim+ update of one flat tensor (SPEC §1.4), fp32 and 8-bit states.

One function holds the math; the fp32 and 8-bit kernels only differ in how they read and write
the states. Every kernel runs either eagerly or through ``torch.compile`` -- the compiled form
fuses the ~25 elementwise operations into one pass over memory (the eager form makes one pass
per operation and is tens of times slower on large tensors). Both give the same numbers up to
float rounding (see tests/test_plus.py for the stated tolerance).

Scalars travel in one small ``coef`` tensor so that a new step size or step count never
triggers a recompilation.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from dualoptim.optim.quantization import BLOCK, dequantize_blocks, quantize_blocks, to_row_blocks

log = logging.getLogger(__name__)

#: Order of the scalars in ``coef``.
COEF_FIELDS = (
    "lr",
    "weight_decay",
    "alpha",
    "beta1",
    "beta2",
    "base_beta1",
    "base_beta2",
    "eps",
    "base_m_correction",  # 1 / (1 - base_beta1^(t-1)), 0 at t = 1
    "base_v_correction",
    "residual_m_correction",  # 1 / (1 - beta1^s_o)
    "residual_v_correction",
)


def plus_math(
    p: Tensor,
    g: Tensor,
    bm: Tensor,
    bv: Tensor,
    dm: Tensor,
    dv: Tensor,
    coef: Tensor,
    bound_step: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Return (θ, B_m, B_v, Δ_m, Δ_v) after one step of the current objective, all fp32.

    ``bound_step`` caps each coordinate of the update at 1 (denominator >= |numerator|).
    SPEC §1.4's rule has no such bound: its denominator sqrt|Δ̂_v + α·B̂_v| is a difference of
    moments that can cancel to ~0 when the objectives conflict (|u| up to 322 on constant
    conflicting gradients with 1:5 alternation, 321 in float64). The cancellation is exact
    only if ``coef``'s corrections are 1/(1 - β^k) of the same fp32 β whose 1 - β weights the
    EMAs here (DualOptimPlus._coef sees to it). 8-bit states make it worse: where
    |g| is below ~1e-3.5 of its block's absmax, g² is under the smallest unsigned code, B_v and
    Δ_v decode to exactly 0 while the first moments do not, and u = m/ε (measured: θ off by
    0.56 after 33 steps of lr 1e-2 where fp32 moves it by 0.34). See docs/optimizers.md.
    """
    lr, wd, alpha, b1, b2, b1b, b2b, eps, cbm, cbv, crm, crv = coef.unbind()
    g = g.float()
    theta = p.float() * (1 - lr * wd)  # 1. decoupled decay
    bm_hat = bm * cbm  # 2. lagged, bias-corrected base
    bv_hat = bv * cbv
    dm = b1 * dm + (1 - b1) * (g - alpha * bm_hat)  # 3. residual EMA
    dv = b2 * dv + (1 - b2) * (g * g - alpha * bv_hat)
    numerator = dm * crm + alpha * bm_hat  # 4.-5. corrected residual + base
    denominator = (dv * crv + alpha * bv_hat).abs().sqrt()
    if bound_step:
        denominator = torch.maximum(denominator, numerator.abs())
    denominator = denominator + eps
    theta = theta - lr * numerator / denominator
    bm = b1b * bm + (1 - b1b) * g  # 6. base update with the raw gradient
    bv = b2b * bv + (1 - b2b) * g * g
    return theta, bm, bv, dm, dv


def update_fp32(
    p: Tensor,
    g: Tensor,
    bm: Tensor,
    bv: Tensor,
    dm: Tensor,
    dv: Tensor,
    coef: Tensor,
    bound_step: bool,
) -> None:
    """In-place DO+ step of flat ``p`` with fp32 states."""
    theta, bm_new, bv_new, dm_new, dv_new = plus_math(p, g, bm, bv, dm, dv, coef, bound_step)
    p.copy_(theta)
    bm.copy_(bm_new)
    bv.copy_(bv_new)
    dm.copy_(dm_new)
    dv.copy_(dv_new)


def update_8bit(
    p: Tensor,
    g: Tensor,
    states: list[Tensor],
    coef: Tensor,
    signed: tuple[Tensor, Tensor],
    unsigned: tuple[Tensor, Tensor],
    bound_step: bool,
) -> None:
    """In-place DO+ step of ``p`` (rows, row length) with row-aligned block-wise 8-bit states.

    ``states`` is [B_m, B_m absmax, B_v, B_v absmax, Δ_m, Δ_m absmax, Δ_v, Δ_v absmax], codes
    of shape (rows, blocks per row × 256) and absmax (rows, blocks per row); B_v is
    non-negative and uses the unsigned (code, lookup table), the others the signed.

    The math runs on (rows, blocks per row, 256), the states' own layout: ``p`` and ``g`` are
    zero-padded to it and the padding is zeroed again before encoding, as a row alone would
    be padded. With the block a fixed last dimension, the compiled kernel needs no per-value
    division and modulo by symbolic sizes: decoding to (rows, row length) and padding back
    took 0.54 s per step of SmolLM2's matrix shapes (4.6 M values, 2 cores), this 0.09 s, with
    the same numbers bit for bit (tests/test_quantization.py compares it with that rule).
    """
    rows, row_len = p.shape
    per_row = states[1].shape[1]
    tables = (signed, unsigned, signed, signed)
    decoded = [
        dequantize_blocks(states[2 * i].view(rows, per_row, BLOCK), states[2 * i + 1], tables[i][0])
        for i in range(4)
    ]
    blocks = (to_row_blocks(p, per_row), to_row_blocks(g, per_row))
    theta, *new_states = plus_math(*blocks, *decoded, coef, bound_step)
    p.copy_(theta.view(rows, -1)[:, :row_len])
    in_row = (torch.arange(per_row * BLOCK, device=p.device) < row_len).view(per_row, BLOCK)
    for i, value in enumerate(new_states):
        index, absmax = quantize_blocks(torch.where(in_row, value, 0.0), *tables[i])
        states[2 * i].copy_(index.view(rows, -1))
        states[2 * i + 1].copy_(absmax)


@functools.cache
def _compiled(kernel: Callable[..., None]) -> Callable[..., None]:
    # dynamic=True is for correctness too: torch 2.13's static-shape compile of update_8bit
    # miscomputes each row's last, partly padded block (tests/test_plus.py catches it).
    return torch.compile(kernel, dynamic=True, fullgraph=True)


class KernelRunner:
    """Runs a kernel compiled when asked (or when possible, for ``compile=None``), else eager.

    With ``compile=None`` a failure to compile (no C compiler, unsupported device) is logged
    once and the eager kernel is used from then on.
    """

    def __init__(self, compile: bool | None) -> None:
        self.compile = compile

    def __call__(self, kernel: Callable[..., None], *args: Any) -> None:
        if self.compile is False:
            kernel(*args)
            return
        try:
            _compiled(kernel)(*args)
        except Exception as err:  # compilation fails before any input is written
            if self.compile:
                raise
            log.warning("DualOptimPlus: torch.compile failed (%s); using the eager kernel", err)
            self.compile = False
            kernel(*args)

"""DualOptimPlus (DO+): a shared base Adam state plus per-objective residual states (SPEC §1.4).

Every gradient, of either objective, updates the base moments (B_m, B_v); each objective
additionally keeps residual moments (Δ_m, Δ_v) of what its gradients add beyond the base.
When the objectives agree the residuals vanish and DO+ behaves like one shared Adam; when they
oppose, B_m cancels and each objective effectively runs its own Adam, as DualOptim does.
``alpha`` scales the base's part in the residual and the update: alpha = 0 is exactly DO with
Adam/Adam.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from dualoptim.optim.inner import is_dtensor
from dualoptim.optim.objective import Objective, ObjectiveOptimizer, check_objective
from dualoptim.optim.plus_kernel import KernelRunner, update_8bit, update_fp32
from dualoptim.optim.quantization import BLOCK, code_tables, row_blocks

_STATE_KEYS = ("base_m", "base_v", "forget_m", "forget_v", "retain_m", "retain_v")


class DualOptimPlus(ObjectiveOptimizer):
    """DualOptim+ with fp32 or block-wise 8-bit states.

    Args:
        params: parameters or groups. A group may override any option below and carry
            per-objective ``forget_options`` / ``retain_options`` (``weight_decay``).
        forget_lr, retain_lr: step sizes of the two objectives (both on Adam's scale).
        lr: the schedulable factor on both step sizes.
        betas: (β1, β2) of the residual moments.
        base_betas: (β1b, β2b) of the shared base moments.
        eps: added to the denominator.
        weight_decay: decoupled weight decay, scaled by the step's step size.
        alpha: weight of the base state (1 = published behaviour, 0 = DO with Adam/Adam).
        state_bits: 32 or 8. With 8, tensors of at least ``min_8bit_size`` elements keep
            their moments block-wise quantised (put embeddings in a group with
            ``state_bits=32``); smaller ones stay fp32.
        bound_update: cap each coordinate of the update at 1 (denominator >= |numerator|),
            the default. False runs SPEC §1.4's rule exactly; that rule's denominator can
            cancel to ~0 under conflicting objectives, and with 8-bit states second moments
            underflow to 0. Measured side by side (benchmarks/plus_bound.py, digits, 3
            seeds): without the cap RL's Gap is 14.2 (a seed collapses to RA 64%) and
            SalUn's 5.3, against 1.6 and 0.7 with it. See docs/optimizers.md.
        compile: True compiles the fused update with torch.compile, False runs it eagerly,
            None (default) compiles when possible and falls back to eager otherwise.

    States are kept in fp32 (or 8-bit) whatever the parameter dtype.
    """

    def __init__(
        self,
        params: Iterable[Any],
        forget_lr: float = 1e-4,
        retain_lr: float = 1e-4,
        lr: float = 1.0,
        betas: tuple[float, float] = (0.9, 0.95),
        base_betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        alpha: float = 1.0,
        state_bits: int = 32,
        min_8bit_size: int = 4096,
        bound_update: bool = True,
        compile: bool | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "forget_lr": forget_lr,
            "retain_lr": retain_lr,
            "betas": betas,
            "base_betas": base_betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "alpha": alpha,
            "state_bits": state_bits,
            "min_8bit_size": min_8bit_size,
            "bound_update": bound_update,
        }
        super().__init__(params, defaults)
        for group in self.param_groups:
            _validate_group(group)
        self._runner = KernelRunner(compile)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        _validate_group(self.param_groups[-1])

    # ------------------------------------------------------------------ state
    def kind(self) -> dict[str, Any]:
        return {**super().kind(), "state_bits": [g["state_bits"] for g in self.param_groups]}

    def _quantized(self, param: Tensor, group: int) -> bool:
        """8-bit states for a matrix (or higher) of at least ``min_8bit_size`` elements of the
        whole tensor (a shard's size never decides it) whose rows are long enough for 8-bit to
        save memory: row-aligned blocks pad each row to whole blocks, so a LoRA B matrix
        (rows of 8 values) would hold 32.5 bytes per value in 8-bit against 4 in fp32.
        Vectors stay fp32 (SPEC §1.5)."""
        g = self.param_groups[group]
        if g["state_bits"] != 8 or param.dim() < 2 or param.numel() < g["min_8bit_size"]:
            return False
        _, row_len, per_row = row_blocks(tuple(param.shape))
        return per_row * (BLOCK + 4) < 4 * row_len  # codes + absmax per row < fp32 per row

    def _expected_state(self, param: Tensor, group: int) -> dict[str, Any]:
        """Counters t, s_f, s_r and the six moments on the meta device (shapes only): fp32 of
        the parameter's shape, or row-aligned 8-bit codes (rows, blocks per row × 256) with
        one absmax per block (rows, blocks per row). Both shard along dim 0 as the parameter
        does, so FSDP2 keeps each rank's states beside its rows."""
        state: dict[str, Any] = {"step": 0, "forget_step": 0, "retain_step": 0}
        rows, _, per_row = row_blocks(tuple(param.shape)) if param.dim() else (1, 1, 1)
        for key in _STATE_KEYS:
            if self._quantized(param, group):
                state[key] = torch.empty(rows, per_row * BLOCK, dtype=torch.uint8, device="meta")
                state[key + "_absmax"] = torch.empty(
                    rows, per_row, dtype=torch.float32, device="meta"
                )
            else:
                state[key] = torch.empty(param.shape, dtype=torch.float32, device="meta")
        return state

    def _init_param_state(self, p: Tensor, group: int) -> dict[str, Any]:
        state = self.state[p]
        for key, value in self._expected_state(p, group).items():
            state[key] = _zeros_like(value, p) if isinstance(value, Tensor) else value
        return state

    @staticmethod
    def is_quantized(state: dict[str, Any]) -> bool:
        return state["base_m"].dtype == torch.uint8

    def state_bytes(self) -> dict[str, int]:
        """Bytes of moment state: over all parameters, and over the quantised ones only."""
        total = quantized = 0
        for state in self.state.values():
            nbytes = sum(
                v.numel() * v.element_size()
                for k, v in state.items()
                if isinstance(v, Tensor) and not k.endswith("_mask")
            )
            total += nbytes
            if state and self.is_quantized(state):
                quantized += nbytes
        return {"all": total, "quantized": quantized}

    def reset_residuals(self) -> None:
        """Zero each objective's residual moments and step counter s_o, keeping the shared
        base (B_m, B_v) and its counter t: the ``carry_base`` policy between forget requests
        (optim/continual.py)."""
        for index, group in enumerate(self.param_groups):
            for p in group["params"]:
                state = self.state.get(p, {})
                if "step" not in state:
                    continue
                expected = self._expected_state(p, index)
                for key, meta in expected.items():
                    if key.startswith(("forget_", "retain_")):
                        state[key] = _zeros_like(meta, p) if isinstance(meta, Tensor) else 0

    # ------------------------------------------------------------------ step
    def _coef(self, group: dict[str, Any], objective: Objective, state: dict[str, Any]) -> list:
        t, s = state["step"], state[f"{objective}_step"]
        # The kernel's EMA weights (1 - β) come from the fp32 β in ``coef``; the corrections
        # must divide by the same β's powers or -δ·B̂_v stays in Δ̂_v + α·B̂_v (SPEC §1.4).
        beta1, beta2, base_beta1, base_beta2 = map(_fp32, (*group["betas"], *group["base_betas"]))
        weight_decay = group.get(f"{objective}_options", {}).get(
            "weight_decay", group["weight_decay"]
        )
        lagged = t - 1
        return [
            group["lr"] * group[f"{objective}_lr"],
            weight_decay,
            group["alpha"],
            beta1,
            beta2,
            base_beta1,
            base_beta2,
            group["eps"],
            0.0 if lagged == 0 else 1.0 / (1.0 - base_beta1**lagged),
            0.0 if lagged == 0 else 1.0 / (1.0 - base_beta2**lagged),
            1.0 / (1.0 - beta1**s),
            1.0 / (1.0 - beta2**s),
        ]

    @torch.no_grad()
    def _step_objective(self, objective: Objective) -> None:
        objective = check_objective(objective)
        coef_cache: dict[tuple, Tensor] = {}
        for index, group in enumerate(self.param_groups):
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("DualOptimPlus does not support sparse gradients")
                if is_dtensor(p):
                    _check_row_sharded(p)
                state = (
                    self.state[p] if "step" in self.state[p] else self._init_param_state(p, index)
                )
                state["step"] += 1
                state[f"{objective}_step"] += 1
                values = self._coef(group, objective, state)
                key = (p.device, *values)
                if key not in coef_cache:
                    coef_cache[key] = torch.tensor(values, dtype=torch.float32, device=p.device)
                self._update(p, state, objective, coef_cache[key], group["bound_update"])

    def _update(
        self, p: Tensor, state: dict[str, Any], objective: Objective, coef: Tensor, bound: bool
    ) -> None:
        """One step on this rank's part: the local shard of a DTensor parameter, its gradient
        and states (all sharded alike), or the whole tensor."""
        param = _local(p.detach())
        names = ["base_m", "base_v", f"{objective}_m", f"{objective}_v"]
        if self.is_quantized(state):
            rows = param.shape[0] if param.dim() else 1
            data = param.contiguous()
            matrix = data.view(rows, -1)
            grad = _local(p.grad).reshape(rows, -1)
            states = [_local(t) for n in names for t in (state[n], state[n + "_absmax"])]
            tables = code_tables(True, p.device), code_tables(False, p.device)
            self._runner(update_8bit, matrix, grad, states, coef, *tables, bound)
        else:
            data = param.contiguous()
            flat, grad = data.view(-1), _local(p.grad).reshape(-1)
            moments = [_local(state[n]).view(-1) for n in names]
            self._runner(update_fp32, flat, grad, *moments, coef, bound)
        if data is not param:
            param.copy_(data)


def _local(tensor: Tensor) -> Tensor:
    """This rank's part of a DTensor (sharing its storage), or the tensor itself."""
    return tensor.to_local() if is_dtensor(tensor) else tensor


def _zeros_like(meta: Tensor, param: Tensor) -> Tensor:
    """Zeros of ``meta``'s shape and dtype, placed as ``param``: on its device, and for a
    DTensor parameter sharded over the same mesh and placements."""
    if is_dtensor(param):
        from torch.distributed.tensor import zeros

        return zeros(
            tuple(meta.shape),
            dtype=meta.dtype,
            device_mesh=param.device_mesh,
            placements=param.placements,
        )
    return torch.zeros(meta.shape, dtype=meta.dtype, device=param.device)


def _check_row_sharded(param: Tensor) -> None:
    """Refuse a DTensor sharded along another dimension than 0: row-aligned states would not
    follow its shards (FSDP2 shards dim 0; tensor parallelism may not)."""
    from torch.distributed.tensor import Replicate, Shard

    for placement in param.placements:
        if not (isinstance(placement, Replicate) or placement == Shard(0)):
            raise ValueError(
                f"DualOptimPlus: a parameter of shape {tuple(param.shape)} is placed "
                f"{param.placements}; its states shard along dim 0 only (FSDP2's layout)"
            )


@functools.cache
def _fp32(value: float) -> float:
    """``value`` as the kernel's fp32 ``coef`` tensor holds it (1 - β is then exact in fp32
    for β in [0.5, 1), so the EMA weights and the float64 corrections agree)."""
    return struct.unpack("f", struct.pack("f", value))[0]


def _validate_group(group: dict[str, Any]) -> None:
    if group["state_bits"] not in (8, 32):
        raise ValueError(f"state_bits must be 8 or 32, got {group['state_bits']!r}")
    for key in ("betas", "base_betas"):
        b1, b2 = group[key]
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"{key} must lie in [0, 1), got {group[key]!r}")
    for key in ("forget_lr", "retain_lr", "lr", "eps", "weight_decay"):
        if not group[key] >= 0.0:
            raise ValueError(f"{key} must be >= 0, got {group[key]!r}")
    if group["state_bits"] == 8:
        code_tables(True, torch.device("cpu"))  # fail early, not at the first step

"""DualOptimPlus (DO+): a shared base Adam state plus per-objective residual states (SPEC §1.4).

Every gradient, of either objective, updates the base moments (B_m, B_v); each objective
additionally keeps residual moments (Δ_m, Δ_v) of what its gradients add beyond the base.
When the objectives agree the residuals vanish and DO+ behaves like one shared Adam; when they
oppose, B_m cancels and each objective effectively runs its own Adam, as DualOptim does.
``alpha`` scales the base's part in the residual and the update: alpha = 0 is exactly DO with
Adam/Adam.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from dualoptim.optim.objective import Objective, ObjectiveOptimizer, check_objective
from dualoptim.optim.plus_kernel import KernelRunner, update_8bit, update_fp32
from dualoptim.optim.quantization import BLOCK, code_tables, num_blocks

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
            cancel to ~0 under conflicting objectives (measured: SCRUB with fp32 DO+ on digits
            ends with RA 0%, with the cap RA 97%), and with 8-bit states second moments
            underflow to 0. See docs/optimizers.md.
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

    def _expected_state(self, param: Tensor, group: int) -> dict[str, Any]:
        """Counters t, s_f, s_r and the six moments: flat fp32, or block-wise 8-bit codes
        (whole blocks) with one absmax per block, on the meta device (shapes only)."""
        g = self.param_groups[group]
        state: dict[str, Any] = {"step": 0, "forget_step": 0, "retain_step": 0}
        n, quantized = param.numel(), g["state_bits"] == 8 and param.numel() >= g["min_8bit_size"]
        for key in _STATE_KEYS:
            if quantized:
                state[key] = torch.empty(num_blocks(n) * BLOCK, dtype=torch.uint8, device="meta")
                state[key + "_absmax"] = torch.empty(
                    num_blocks(n), dtype=torch.float32, device="meta"
                )
            else:
                state[key] = torch.empty(n, dtype=torch.float32, device="meta")
        return state

    def _init_state(self, p: Tensor, group: int) -> dict[str, Any]:
        state = self.state[p]
        for key, value in self._expected_state(p, group).items():
            state[key] = (
                torch.zeros_like(value, device=p.device) if isinstance(value, Tensor) else value
            )
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

    # ------------------------------------------------------------------ step
    def _coef(self, group: dict[str, Any], objective: Objective, state: dict[str, Any]) -> list:
        t, s = state["step"], state[f"{objective}_step"]
        beta1, beta2 = group["betas"]
        base_beta1, base_beta2 = group["base_betas"]
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
                state = self.state[p] if "step" in self.state[p] else self._init_state(p, index)
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
        flat = p.detach().view(-1) if p.is_contiguous() else p.detach().reshape(-1).clone()
        grad = p.grad.reshape(-1)
        names = ["base_m", "base_v", f"{objective}_m", f"{objective}_v"]
        if self.is_quantized(state):
            states = [t for n in names for t in (state[n], state[n + "_absmax"])]
            self._runner(
                update_8bit,
                flat,
                grad,
                states,
                coef,
                code_tables(True, p.device),
                code_tables(False, p.device),
                bound,
            )
        else:
            self._runner(update_fp32, flat, grad, *(state[n] for n in names), coef, bound)
        if not p.is_contiguous():
            p.detach().copy_(flat.view_as(p))


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

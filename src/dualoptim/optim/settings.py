"""Optimizer settings by name: each baseline and variant is one config value (SPEC §1.1-1.5).

=================  ===========================================================================
``joint``          one (pretraining) optimizer, one step per forget/retain batch pair on
                   c_f·L_f + c_r·L_r -- the engine sums the losses; the optimizer is shared
``alternate``      one (pretraining) optimizer shared by the alternating phases; per-phase
                   step sizes optional
``dual``           DualOptimizer: Optim_f for forget steps, Optim_r for retain steps
``dual_8bit``      the same with bitsandbytes' 8-bit versions of both
``dual_plus``      DualOptimPlus, fp32 states
``dual_plus_8bit`` DualOptimPlus, block-wise 8-bit states
=================  ===========================================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dualoptim.optim.dual import DualOptimizer, SharedOptimizer, SpecLike
from dualoptim.optim.inner import OptimizerSpec
from dualoptim.optim.objective import ObjectiveOptimizer
from dualoptim.optim.plus import DualOptimPlus

SETTINGS = ("joint", "alternate", "dual", "dual_8bit", "dual_plus", "dual_plus_8bit")
#: Keys a ``plus`` mapping may hold (DualOptimPlus arguments).
PLUS_KEYS = frozenset(
    {
        "forget_lr",
        "retain_lr",
        "betas",
        "base_betas",
        "eps",
        "weight_decay",
        "alpha",
        "min_8bit_size",
        "bound_update",
        "compile",
    }
)


def is_joint(setting: str) -> bool:
    """Whether the engine should sum the two losses into one step (the Joint baseline)."""
    return check_setting(setting) == "joint"


def check_setting(setting: str) -> str:
    if setting not in SETTINGS:
        raise ValueError(
            f"unknown optimizer setting {setting!r}; choose one of {', '.join(SETTINGS)}"
        )
    return setting


def build_optimizer(
    setting: str,
    params: Iterable[Any],
    *,
    forget: SpecLike,
    retain: SpecLike,
    plus: Mapping[str, Any] | None = None,
    per_phase_lr: bool = False,
    lr: float = 1.0,
) -> ObjectiveOptimizer:
    """Build the optimizer of ``setting``.

    Args:
        forget / retain: Optim_f and Optim_r (the shared baselines use ``retain``, the
            pretraining optimizer).
        plus: DualOptimPlus options. Its ``retain_lr`` is on Adam's scale (DO+ is Adam-type on
            both sides); ``forget_lr`` and ``weight_decay`` default to ``forget``'s.
        per_phase_lr: Alternate only -- forget phases use ``forget``'s lr instead of the
            shared one (the official classification RL/SalUn/SCRUB baselines do this).
        lr: schedulable factor on every step size.
    """
    check_setting(setting)
    forget_spec, retain_spec = OptimizerSpec.parse(forget), OptimizerSpec.parse(retain)
    if per_phase_lr and setting != "alternate":
        raise ValueError("per_phase_lr applies to the 'alternate' setting only")
    if plus is not None and not setting.startswith("dual_plus"):
        raise ValueError(f"'plus' options apply to dual_plus settings, not {setting!r}")
    if setting in ("joint", "alternate"):
        return SharedOptimizer(
            params,
            retain_spec,
            forget_lr=forget_spec.lr if per_phase_lr else None,
            lr=lr,
        )
    if setting == "dual":
        return DualOptimizer(params, forget_spec, retain_spec, lr=lr)
    if setting == "dual_8bit":
        return DualOptimizer(params, forget_spec.eight_bit(), retain_spec.eight_bit(), lr=lr)
    options = dict(plus or {})
    unknown = options.keys() - PLUS_KEYS
    if unknown:
        raise ValueError(
            f"unknown DualOptimPlus option(s) {sorted(unknown)}; allowed: {sorted(PLUS_KEYS)}"
        )
    if "retain_lr" not in options:
        raise ValueError(
            "dual_plus needs plus.retain_lr (on Adam's scale, e.g. 1e-4 for classifiers)"
        )
    options.setdefault("forget_lr", forget_spec.lr)
    options.setdefault("weight_decay", forget_spec.kwargs.get("weight_decay", 0.0))
    state_bits = 8 if setting == "dual_plus_8bit" else 32
    return DualOptimPlus(params, lr=lr, state_bits=state_bits, **options)

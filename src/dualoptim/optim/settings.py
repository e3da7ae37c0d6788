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
from dataclasses import dataclass
from typing import Any, Literal, get_args

from dualoptim.optim.dual import DualOptimizer, SharedOptimizer, SpecLike
from dualoptim.optim.inner import OptimizerSpec
from dualoptim.optim.objective import ObjectiveOptimizer
from dualoptim.optim.plus import DualOptimPlus

SettingName = Literal["joint", "alternate", "dual", "dual_8bit", "dual_plus", "dual_plus_8bit"]
SETTINGS: tuple[str, ...] = get_args(SettingName)
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


@dataclass(frozen=True)
class Setting:
    """What a setting name means, resolved once: tasks, the engine and reports ask these
    properties instead of testing the name's spelling."""

    name: str

    def __post_init__(self) -> None:
        check_setting(self.name)

    @property
    def joint(self) -> bool:
        """The engine sums the two losses into one step (the Joint baseline)."""
        return self.name == "joint"

    @property
    def shared(self) -> bool:
        """One optimizer state for both objectives (Joint, Alternate): it steps at η_f."""
        return self.name in ("joint", "alternate")

    @property
    def alternate(self) -> bool:
        """One shared state stepping in alternating phases: the one setting whose phases may
        take their own step sizes (``per_phase_lr``)."""
        return self.name == "alternate"

    @property
    def plus(self) -> bool:
        """DualOptimPlus (Adam-type on both sides: η_r is on Adam's scale)."""
        return self.name.startswith("dual_plus")

    @property
    def eight_bit(self) -> bool:
        return self.name.endswith("_8bit")

    @property
    def base(self) -> str:
        """The setting with full-precision states: 8-bit variants share its defaults."""
        return self.name.removesuffix("_8bit")


def is_joint(setting: str) -> bool:
    """Whether the engine should sum the two losses into one step (the Joint baseline)."""
    return Setting(setting).joint


def check_setting(setting: str) -> str:
    if setting not in SETTINGS:
        raise ValueError(
            f"unknown optimizer setting {setting!r}; choose one of {', '.join(SETTINGS)}"
        )
    return setting


def check_per_phase_lr(setting: str, per_phase_lr: bool | None, run: str) -> None:
    """Refuse a run spec's ``per_phase_lr`` (None: unset) outside Alternate; ``run`` names
    the run in the message (its method)."""
    if per_phase_lr is not None and not Setting(setting).alternate:
        raise ValueError(
            f"per_phase_lr applies to the 'alternate' setting only, and {run} runs under "
            f"{setting!r}: remove per_phase_lr, or set setting: alternate"
        )


def setting_label(setting: str, per_phase_lr: bool | None) -> str:
    """A row label's setting part: with a run spec's ``per_phase_lr`` set, Alternate at DO's
    per-phase step sizes and Alternate at one step size sit apart in one table; unset, the
    name alone (the task's default, and the labels of records made before the option)."""
    if per_phase_lr is None:
        return setting
    return f"{setting}, {'per-phase η' if per_phase_lr else 'one η'}"


def _at(spec: SpecLike, lr: float | None, side: str) -> SpecLike:
    """``spec`` with step size ``lr``; a spec that names its own lr as well is ambiguous."""
    if lr is None:
        return spec
    if not isinstance(spec, Mapping) or "lr" in spec:
        raise ValueError(
            f"give the {side} step size once: as {side}_lr, with {side} a mapping without 'lr'"
        )
    return {**spec, "lr": lr}


def build_optimizer(
    setting: str,
    params: Iterable[Any],
    *,
    forget: SpecLike,
    retain: SpecLike,
    plus: Mapping[str, Any] | None = None,
    per_phase_lr: bool = False,
    lr: float = 1.0,
    forget_lr: float | None = None,
    retain_lr: float | None = None,
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
        forget_lr / retain_lr: η_f and η_r, with ``forget`` and ``retain`` mappings that name
            no lr. The rule of the shared settings is applied here, once: their one state
            steps at η_f (η_r only in Alternate's retain phases with ``per_phase_lr``), and
            DO+ takes η_r as its (Adam-scale) ``retain_lr``.
    """
    resolved = Setting(setting)
    if retain_lr is not None and resolved.shared and not per_phase_lr:
        retain_lr = forget_lr
    if retain_lr is not None and resolved.plus:
        plus = {"retain_lr": retain_lr, **(plus or {})}
    forget, retain = _at(forget, forget_lr, "forget"), _at(retain, retain_lr, "retain")
    forget_spec, retain_spec = OptimizerSpec.parse(forget), OptimizerSpec.parse(retain)
    if per_phase_lr and setting != "alternate":
        raise ValueError("per_phase_lr applies to the 'alternate' setting only")
    if plus is not None and not resolved.plus:
        raise ValueError(f"'plus' options apply to dual_plus settings, not {setting!r}")
    if resolved.shared:
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
    state_bits = 8 if resolved.eight_bit else 32
    return DualOptimPlus(params, lr=lr, state_bits=state_bits, **options)

"""Shared vs decoupled heavy-ball momentum on a noisy quadratic: the talk's variance theorem.

The theorem (seed 003, "Variance Bound Comparison for Decoupled vs. Shared Momentum"): with
heavy-ball momentum ``m ← α·m + ĝ, θ ← θ − η·m`` and alternating forget/retain steps, one
momentum buffer per objective (decoupled, DualOptim) leaves θ with no more variance than one
buffer shared by both objectives (shared, Alternate), at every step. This module measures it.

The problem. Each of the ``n_seeds`` rows of θ ∈ R^(n_seeds × dim) is an independent run: the
losses are summed over rows, so rows never interact and the variance across rows is the
variance across seeds. With anchors a = +1 and b = −1 (the objectives pull apart)::

    retain:             L_r(θ) =  ½‖θ − b‖² + ⟨ξ, θ⟩     gradient  θ − b + ξ
    forget "descent":   L_f(θ) =  ½‖θ − a‖² + ⟨ξ, θ⟩     gradient  θ − a + ξ
    forget "ascent":    L_f(θ) = −½‖θ − a‖² + ⟨ξ, θ⟩     gradient  a − θ + ξ

ξ ~ N(0, noise²) is fresh at every step and comes from one seeded generator drawn in the same
order for both settings, so both see the same noise sequence. "ascent" is gradient ascent on
the forget data, as in GA-style unlearning: curvature −1 and no lower bound.

Both settings run torch SGD with momentum and dampening 0, which is exactly the theorem's
heavy-ball recursion. The dynamics are linear, so the variance does not depend on a, b or the
start θ₀ = 0 -- only on η, α, the sign of the forget curvature and the T_f:T_r schedule -- and
it has a closed form (:func:`exact_variance`): a check on the simulation, and through the
spectral radius of one schedule cycle, the answer to whether the variance stays bounded.

The proof assumes forget and retain gradients uncorrelated; here, as in real unlearning, both
depend on the same θ, so the measurement also shows where the claim survives without that
assumption (small η, descent) and where it does not (η ≥ 2(1 − α), gradient ascent).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import nn

from dualoptim.optim import (
    DualOptimizer,
    Objective,
    ObjectiveOptimizer,
    OptimizerSpec,
    SharedOptimizer,
)

ForgetLoss = Literal["descent", "ascent"]
FORGET_LOSSES: tuple[ForgetLoss, ...] = get_args(ForgetLoss)
Setting = Literal["shared", "decoupled"]

#: Where the forget and the retain loss pull θ (the variance does not depend on them).
FORGET_ANCHOR, RETAIN_ANCHOR = 1.0, -1.0
#: The study grid: step sizes and T_f:T_r ratios, crossed with both forget losses.
STUDY_LRS = (0.01, 0.05, 0.1, 0.2)
STUDY_RATIOS = ((1, 1), (1, 5))


@dataclass(frozen=True)
class VarianceConfig:
    """One cell of the experiment. ``diverge_at`` is in units of noise²."""

    lr: float = 0.05
    momentum: float = 0.9
    forget_loss: ForgetLoss = "descent"
    ratio: tuple[int, int] = (1, 1)
    n_seeds: int = 512
    dim: int = 16
    steps: int = 300
    noise: float = 1.0
    seed: int = 0
    diverge_at: float = 1e3

    def __post_init__(self) -> None:
        if self.forget_loss not in FORGET_LOSSES:
            raise ValueError(
                f"forget_loss must be one of {FORGET_LOSSES}, got {self.forget_loss!r}"
            )
        if len(self.ratio) != 2 or min(self.ratio) < 1:
            raise ValueError(f"ratio must be two positive step counts (T_f, T_r), got {self.ratio}")
        if self.n_seeds < 2 or self.dim < 1 or self.steps < 1:
            raise ValueError("need n_seeds >= 2 (a variance), dim >= 1 and steps >= 1")
        if not (self.lr > 0 and self.noise > 0 and 0 <= self.momentum < 1):
            raise ValueError("need lr > 0, noise > 0 and 0 <= momentum < 1")

    @property
    def forget_curvature(self) -> float:
        return 1.0 if self.forget_loss == "descent" else -1.0

    def cycle(self) -> list[Objective]:
        """One outer iteration of Algorithm 1: T_f forget steps, then T_r retain steps."""
        t_f, t_r = self.ratio
        return ["forget"] * t_f + ["retain"] * t_r

    def schedule(self) -> list[Objective]:
        """The objective of every step: the cycle repeated, cut at ``steps``."""
        cycle = self.cycle()
        return [cycle[k % len(cycle)] for k in range(self.steps)]


@dataclass(frozen=True, eq=False)  # array fields: == would be ambiguous
class Trace:
    """One setting's across-seed variance of θ after every step, measured and in closed form."""

    measured: np.ndarray
    exact: np.ndarray
    growth: float  # per-step spectral radius of the noise-free map; >= 1: variance unbounded
    diverged: bool  # the measured variance went non-finite or above ``diverge_at``·noise²
    cycle_mean: float  # mean over the last T_f + T_r steps: a summary free of the cycle's phase

    @property
    def final(self) -> float:
        """The variance after the last step (after a retain step when a whole cycle ends)."""
        return float(self.measured[-1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "final": self.final,
            "cycle_mean": self.cycle_mean,
            "exact_final": float(self.exact[-1]),
            "growth": self.growth,
            "diverged": self.diverged,
            "measured": self.measured.tolist(),
            "exact": self.exact.tolist(),
        }


@dataclass(frozen=True, eq=False)
class VarianceResult:
    """Both settings of one :class:`VarianceConfig`, driven by the same noise."""

    config: VarianceConfig
    shared: Trace
    decoupled: Trace

    @property
    def ratio(self) -> float:
        """Final variance, decoupled / shared: below 1 is what the theorem predicts."""
        return self.decoupled.final / self.shared.final

    @property
    def cycle_ratio(self) -> float:
        """The same over the last cycle: within a cycle the variance swings with the phase."""
        return self.decoupled.cycle_mean / self.shared.cycle_mean

    @property
    def exact_ratio(self) -> float:
        return float(self.decoupled.exact[-1] / self.shared.exact[-1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "ratio": self.ratio,
            "cycle_ratio": self.cycle_ratio,
            "exact_ratio": self.exact_ratio,
            "shared": self.shared.to_dict(),
            "decoupled": self.decoupled.to_dict(),
        }


def _optimizer(
    setting: Setting, params: list[nn.Parameter], config: VarianceConfig
) -> ObjectiveOptimizer:
    # foreach=False selects torch's single-tensor SGD (same math). OptimizerSpec.build would
    # otherwise pick the fused CPU kernel, which opens an OpenMP region even for this small
    # tensor and cost ~1-10 ms per step on a busy 2-core machine (~50x the single-tensor path).
    spec = OptimizerSpec("sgd", {"lr": config.lr, "momentum": config.momentum, "foreach": False})
    if setting == "shared":
        return SharedOptimizer(params, spec)
    return DualOptimizer(params, forget=spec, retain=spec)


def simulate(config: VarianceConfig, setting: Setting) -> np.ndarray:
    """Run one setting; return the variance across seeds (mean over dims) after every step."""
    dtype = torch.float64
    theta = nn.Parameter(torch.zeros(config.n_seeds, config.dim, dtype=dtype))
    optimizer = _optimizer(setting, [theta], config)
    generator = torch.Generator().manual_seed(config.seed)
    anchor = {"forget": FORGET_ANCHOR, "retain": RETAIN_ANCHOR}
    curvature = {"forget": config.forget_curvature, "retain": 1.0}
    curve = np.empty(config.steps)
    for k, objective in enumerate(config.schedule()):
        xi = config.noise * torch.randn(theta.shape, generator=generator, dtype=dtype)
        quadratic = 0.5 * (theta - anchor[objective]).square().sum()
        loss = curvature[objective] * quadratic + (xi * theta).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step(objective=objective)
        curve[k] = theta.detach().var(dim=0).mean().item()
    return curve


def exact_variance(config: VarianceConfig, setting: Setting) -> tuple[np.ndarray, float]:
    """The expected variance after every step, and the per-step growth of the noise-free map.

    Per coordinate the state x = (θ, m) (shared) or (θ, m_f, m_r) (decoupled) follows
    x ← A_o·x + B_o·ξ for the step's objective o, so Cov ← A_o·Cov·A_oᵀ + noise²·B_o·B_oᵀ.
    The growth is the spectral radius of the product of the A_o over one cycle, to the power
    1/(T_f + T_r): below 1 the variance converges; at or above 1 it grows without bound.
    """
    shared = setting == "shared"
    n = 2 if shared else 3
    maps: dict[Objective, tuple[np.ndarray, np.ndarray]] = {}
    for objective, h in (("forget", config.forget_curvature), ("retain", 1.0)):
        j = 1 if shared or objective == "forget" else 2  # the buffer this objective updates
        a, b = np.eye(n), np.zeros(n)
        a[j] = 0.0
        a[j, j], a[j, 0], b[j] = config.momentum, h, 1.0  # m_j ← α·m_j + h·θ + ξ
        a[0] -= config.lr * a[j]  # θ ← θ − η·m_j
        b[0] = -config.lr
        maps[objective] = (a, b)
    cov, curve = np.zeros((n, n)), np.empty(config.steps)
    with np.errstate(over="ignore", invalid="ignore"):  # diverging cells overflow to inf
        for k, objective in enumerate(config.schedule()):
            a, b = maps[objective]
            cov = a @ cov @ a.T + config.noise**2 * np.outer(b, b)
            curve[k] = cov[0, 0]
    cycle = np.eye(n)
    for objective in config.cycle():
        cycle = maps[objective][0] @ cycle
    radius = float(np.abs(np.linalg.eigvals(cycle)).max())
    return curve, radius ** (1.0 / len(config.cycle()))


def _trace(config: VarianceConfig, setting: Setting) -> Trace:
    measured = simulate(config, setting)
    exact, growth = exact_variance(config, setting)
    limit = config.diverge_at * config.noise**2
    diverged = bool((~np.isfinite(measured) | (measured > limit)).any())
    cycle_mean = float(measured[-len(config.cycle()) :].mean())
    return Trace(measured, exact, growth, diverged, cycle_mean)


def run_variance(config: VarianceConfig | None = None) -> VarianceResult:
    """Run shared and decoupled momentum on the same noise (defaults: η 0.05, 1:1, descent)."""
    config = config or VarianceConfig()
    return VarianceResult(config, _trace(config, "shared"), _trace(config, "decoupled"))


def study_configs(
    base: VarianceConfig | None = None,
    lrs: Sequence[float] = STUDY_LRS,
    forget_losses: Sequence[ForgetLoss] = FORGET_LOSSES,
    ratios: Sequence[tuple[int, int]] = STUDY_RATIOS,
) -> list[VarianceConfig]:
    """The grid η × forget loss × T_f:T_r around ``base``."""
    base = base or VarianceConfig()
    return [
        replace(base, lr=lr, forget_loss=loss, ratio=tuple(ratio))
        for lr in lrs
        for loss in forget_losses
        for ratio in ratios
    ]


def variance_study(
    configs: Sequence[VarianceConfig] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[VarianceResult]:
    """Run every cell (default: :func:`study_configs`); ``progress(done, total)`` after each."""
    configs = study_configs() if configs is None else list(configs)
    results = []
    for config in configs:
        results.append(run_variance(config))
        if progress is not None:
            progress(len(results), len(configs))
    return results

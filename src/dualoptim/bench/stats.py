"""The paper's stability numbers (SPEC §3.1): Gap to retraining and Std across seeds; and
what decides a claim (SPEC §3.4): per-seed gaps, paired by seed, with bootstrap intervals."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


def _table(runs: Sequence[Mapping[str, float]], name: str, metrics: Sequence[str]) -> np.ndarray:
    """(seeds, metrics) array of ``runs``; names the first run and metric that is missing."""
    if not runs:
        raise ValueError(f"{name}: no runs")
    for i, run in enumerate(runs):
        missing = [k for k in metrics if k not in run]
        if missing:
            raise ValueError(f"{name} run {i} lacks metric(s) {', '.join(missing)}")
    return np.array([[float(run[k]) for k in metrics] for run in runs])


def gap_and_std(
    method: Sequence[Mapping[str, float]],
    reference: Sequence[Mapping[str, float]],
    metrics: Sequence[str],
) -> tuple[float, float, dict[str, dict[str, float]]]:
    """The paper's Gap and Std of ``method`` (one mapping of metrics per seed) against
    ``reference`` (RT, measured on the same forget sets).

    Gap = mean over ``metrics`` of |mean over seeds(method) − mean over seeds(reference)|;
    Std = mean over ``metrics`` of the population std (ddof 0) of ``method`` across seeds.
    Also returns ``{metric: {"mean", "std", "gap"}}`` of ``method`` for tables.
    """
    if not metrics:
        raise ValueError("metrics is empty")
    m = _table(method, "method", metrics)
    r = _table(reference, "reference", metrics)
    mean, std = m.mean(0), m.std(0)
    gap = np.abs(mean - r.mean(0))
    per_metric = {
        k: {"mean": float(mean[i]), "std": float(std[i]), "gap": float(gap[i])}
        for i, k in enumerate(metrics)
    }
    return float(gap.mean()), float(std.mean()), per_metric


def seed_gaps(
    method: Sequence[Mapping[str, float]],
    reference: Sequence[Mapping[str, float]],
    metrics: Sequence[str],
) -> np.ndarray:
    """Per seed, the mean over ``metrics`` of |method_s − reference_s| (the same forget set
    and RT): the unit of a paired comparison (SPEC §3.4)."""
    m, r = _table(method, "method", metrics), _table(reference, "reference", metrics)
    if m.shape != r.shape:
        raise ValueError(f"{len(method)} runs against {len(reference)} references: pair by seed")
    return np.abs(m - r).mean(1)


#: Bootstrap resamples: the 2.5% and 97.5% percentiles of 10,000 move by well under 1% of
#: the interval's width between random streams.
RESAMPLES = 10_000


@dataclass(frozen=True)
class Interval:
    """A statistic and its 95% percentile-bootstrap interval over seeds."""

    value: float
    low: float
    high: float
    seeds: int

    def verdict(self, better: str = "lower") -> str:
        """``reproduced`` when the interval lies on the better side of 0, ``contradicted``
        when on the other, else ``not resolved`` (SPEC §3.4)."""
        if self.seeds < 2 or not (self.low > 0 or self.high < 0):
            return "not resolved"
        improved = self.high < 0 if better == "lower" else self.low > 0
        return "reproduced" if improved else "contradicted"

    def text(self, digits: int) -> str:
        """``+value [low, high]`` to ``digits`` decimals: the precision of the table the
        difference comes from (a ΔOVR of −0.003 must not read −0.00)."""
        return f"{self.value:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def bootstrap(
    statistic: Callable[[np.ndarray], np.ndarray],
    seeds: int,
    resamples: int = RESAMPLES,
    random_seed: int = 0,
) -> Interval:
    """The 95% percentile-bootstrap interval of ``statistic`` over seeds resampled with
    replacement, jointly for everything it compares (paired).

    ``statistic(index)`` takes an integer array of seed positions of shape (B, seeds) and
    returns B values, vectorised: one resampling serves several rows at once (every η_f of
    two settings, and RT), which scipy.stats.bootstrap's one-sample-per-argument interface
    does not express. ``index`` of shape (1, seeds) in seed order gives the point estimate.
    """
    if seeds < 1:
        raise ValueError("a bootstrap over no seeds")
    value = float(statistic(np.arange(seeds)[None, :])[0])
    rng = np.random.default_rng(random_seed)
    draws = statistic(rng.integers(0, seeds, size=(resamples, seeds)))
    low, high = np.percentile(draws, [2.5, 97.5])
    return Interval(value, float(low), float(high), seeds)


def mean_difference(differences: np.ndarray) -> Interval:
    """The mean of paired per-seed differences with its bootstrap interval."""
    d = np.asarray(differences, dtype=np.float64)
    return bootstrap(lambda index: d[index].mean(1), len(d))

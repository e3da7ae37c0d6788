"""The paper's stability numbers (SPEC §3.1): Gap to retraining and Std across seeds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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

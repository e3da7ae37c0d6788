"""Loss pieces shared by the tasks' methods."""

from __future__ import annotations

from torch import Tensor


def adaptive_ascent(losses: Tensor, lam: float, alpha: float) -> Tensor:
    """SFR-on's forget loss: -α·Σ_i w_i·l_i with w_i = c_i / Σ_j c_j, c_i = 1/(l_i^λ + 1e-15).

    The weights are detached: samples the model already gets wrong (large l_i) are pushed
    less, so ascent concentrates on what is still remembered instead of diverging on outliers.
    """
    c = 1.0 / (losses.detach() ** lam + 1e-15)
    return -alpha * (c / c.sum() * losses).sum()

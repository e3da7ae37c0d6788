"""Hand-written reference update rules in float64, element by element, straight from the papers.

Deliberately naive (Python scalars, no torch ops on tensors) so they share no code with the
implementations under test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class AdamWRef:
    """AdamW (Loshchilov & Hutter): decoupled decay, bias-corrected moments."""

    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    m: list[float] = field(default_factory=list)
    v: list[float] = field(default_factory=list)
    t: int = 0

    def step(self, theta: list[float], grad: list[float]) -> list[float]:
        b1, b2 = self.betas
        if not self.m:
            self.m, self.v = [0.0] * len(theta), [0.0] * len(theta)
        self.t += 1
        out = []
        for i, (p, g) in enumerate(zip(theta, grad, strict=True)):
            p *= 1 - self.lr * self.weight_decay
            self.m[i] = b1 * self.m[i] + (1 - b1) * g
            self.v[i] = b2 * self.v[i] + (1 - b2) * g * g
            m_hat = self.m[i] / (1 - b1**self.t)
            v_hat = self.v[i] / (1 - b2**self.t)
            out.append(p - self.lr * m_hat / (math.sqrt(v_hat) + self.eps))
        return out


@dataclass
class SGDRef:
    """SGD with heavy-ball momentum and L2 weight decay, as torch defines it (dampening 0)."""

    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    buf: list[float] = field(default_factory=list)

    def step(self, theta: list[float], grad: list[float]) -> list[float]:
        first = not self.buf
        if first:
            self.buf = [0.0] * len(theta)
        out = []
        for i, (p, g) in enumerate(zip(theta, grad, strict=True)):
            d = g + self.weight_decay * p
            self.buf[i] = d if first else self.momentum * self.buf[i] + d
            out.append(p - self.lr * (self.buf[i] if self.momentum else d))
        return out


@dataclass
class PlusRef:
    """DualOptim+ exactly as SPEC §1.4 lists its six steps."""

    lrs: dict[str, float]
    betas: tuple[float, float] = (0.9, 0.95)
    base_betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.0
    alpha: float = 1.0
    t: int = 0
    s: dict[str, int] = field(default_factory=lambda: {"forget": 0, "retain": 0})
    base: dict[str, list[float]] = field(default_factory=dict)
    res: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def step(self, theta: list[float], grad: list[float], objective: str) -> list[float]:
        n = len(theta)
        if not self.base:
            self.base = {"m": [0.0] * n, "v": [0.0] * n}
            self.res = {o: {"m": [0.0] * n, "v": [0.0] * n} for o in ("forget", "retain")}
        self.t += 1
        self.s[objective] += 1
        t, s, a = self.t, self.s[objective], self.alpha
        b1, b2 = self.betas
        b1b, b2b = self.base_betas
        lr = self.lrs[objective]
        r = self.res[objective]
        out = []
        for i in range(n):
            p, g = theta[i], grad[i]
            p *= 1 - lr * self.weight_decay  # 1
            if t == 1:  # 2
                bm_hat = bv_hat = 0.0
            else:
                bm_hat = self.base["m"][i] / (1 - b1b ** (t - 1))
                bv_hat = self.base["v"][i] / (1 - b2b ** (t - 1))
            r["m"][i] = b1 * r["m"][i] + (1 - b1) * (g - a * bm_hat)  # 3
            r["v"][i] = b2 * r["v"][i] + (1 - b2) * (g * g - a * bv_hat)
            m_hat = r["m"][i] / (1 - b1**s)  # 4
            v_hat = r["v"][i] / (1 - b2**s)
            u = (m_hat + a * bm_hat) / (math.sqrt(abs(v_hat + a * bv_hat)) + self.eps)  # 5
            out.append(p - lr * u)
            self.base["m"][i] = b1b * self.base["m"][i] + (1 - b1b) * g  # 6
            self.base["v"][i] = b2b * self.base["v"][i] + (1 - b2b) * g * g
        return out

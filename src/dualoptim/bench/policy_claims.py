"""Carried against reset optimizer states in a continual sweep (SPEC §2.6): for each run
whose states were carried across requests (``carry``, ``carry_base``), the same run with its
states reset at every request, paired by seed (the same requests, the same RT_k).

Three differences (policy − reset), each with its 95% bootstrap interval over seeds:
the score after the last request, the score averaged over every request (the whole
sequence, not only its end) and the utility drift from request 1 to K. The score is the Gap
to RT_k where the task has one, else its first headline metric. An interval on the better
side of 0 says the carried policy is better, on the other side that reset is, and one
containing 0 resolves nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dualoptim.bench.claims import Claim
from dualoptim.bench.stats import Interval, mean_difference
from dualoptim.optim.continual import policy_label, without_policy

Key = tuple[str, float]  # (group, η_f multiple)
#: {run: {request: {seed: score}}}
Scores = Mapping[Key, Mapping[int, Mapping[int, float]]]
#: {run: {seed: utility after request 1 − after request K}}
Drift = Mapping[Key, Mapping[int, float]]

BASELINE = "reset"


def _policy(record: Mapping[str, Any]) -> str | None:
    return record.get("extra", {}).get("state_policy")


def counterparts(
    first: Mapping[Key, Mapping[str, Any]], order: Sequence[Key]
) -> list[tuple[Key, Key]]:
    """(run, its reset twin) for every run whose states were carried, in ``order``: the same
    label, method, setting and η_f multiple, with policy ``reset``."""
    out = []
    for key in order:
        policy = _policy(first[key])
        if policy in (None, BASELINE):
            continue
        twin = (policy_label(without_policy(key[0], policy), BASELINE), key[1])
        if twin in first and _policy(first[twin]) == BASELINE:
            out.append((key, twin))
    return out


def _paired(a: Mapping[int, float], b: Mapping[int, float]) -> tuple[Interval | None, str]:
    """The mean of a − b over the seeds both have a finite value for (a failed seed is NaN:
    left out, and said when it leaves too few)."""
    both = a.keys() & b.keys()
    seeds = sorted(s for s in both if np.isfinite(a[s]) and np.isfinite(b[s]))
    if len(seeds) < 2:
        failed = ", failed seeds left out" if len(seeds) < len(both) else ""
        return None, f"{len(seeds)} paired seed(s){failed}"
    return mean_difference(np.array([a[s] - b[s] for s in seeds])), ""


def _mean_over_requests(by_request: Mapping[int, Mapping[int, float]], last: int) -> dict:
    """Per seed, the score averaged over requests 1..last (seeds that made all of them)."""
    seeds = set.intersection(*(set(by_request.get(k, {})) for k in range(1, last + 1)))
    return {s: float(np.mean([by_request[k][s] for k in range(1, last + 1)])) for s in seeds}


def policy_claims(
    first: Mapping[Key, Mapping[str, Any]],
    order: Sequence[Key],
    scores: Scores,
    drift: Drift,
    last: int,
    score: tuple[str, str],
    utility: str | None,
    digits: int,
) -> list[Claim]:
    """A :class:`Claim` per carried run (in ``order``) against its reset twin; ``score``:
    (name, better) of the per-request score, ``utility``: the drift's metric (None: no
    drift claim)."""
    name, better = score
    out = []
    for key, twin in counterparts(first, order):
        measures = {
            f"{name} after {last}": (scores[key].get(last, {}), scores[twin].get(last, {})),
            f"mean {name}": (
                _mean_over_requests(scores[key], last),
                _mean_over_requests(scores[twin], last),
            ),
        }
        wants = {f"{name} after {last}": better, f"mean {name}": better}
        if utility is not None:
            measures[f"{utility} drift"] = (drift.get(key, {}), drift.get(twin, {}))
            wants[f"{utility} drift"] = "lower"
        found = {claim: _paired(a, b) for claim, (a, b) in measures.items()}
        policy = _policy(first[key]) or ""
        out.append(
            Claim(
                method=first[key].get("method") or "",
                run=run_label(key),
                baseline=run_label(twin),
                intervals={claim: interval for claim, (interval, _) in found.items()},
                notes={claim: note for claim, (_, note) in found.items()},
                better=wants,
                digits=digits,
                outcomes=(f"{policy} better", f"{BASELINE} better"),
            )
        )
    return out


def run_label(key: Key) -> str:
    """A run's row: its label, with its η_f multiple unless it is the tuned one."""
    group, scale = key
    return group if scale in (None, 1.0) else f"{group} at η_f ×{scale:g}"

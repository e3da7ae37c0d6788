"""The paper's three claims, per method, decided by intervals (SPEC §3.4): against its
shared-state Alternate baseline, does DO (or DO+) give a lower Gap, a lower Std across seeds,
and less sensitivity to η_f?

Each claim is a difference (setting − Alternate) resampled over seeds with a 95% bootstrap
interval, the two settings paired by seed (the same forget set and RT):
- Gap: the mean of per-seed gap differences at each setting's tuned η_f;
- Std: the difference of Std (mean over metrics of the std across seeds), tuned η_f;
- η_f sensitivity: the difference of Gap spreads (max − min) over the multiples of each
  one's tuned η_f that both ran within ×1/10…×10 of it (``tables.WINDOW``).

An interval below 0 reproduces the claim, above 0 contradicts it, and one containing 0
leaves it unresolved, whatever the point estimates say.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dualoptim.bench.stats import Interval, bootstrap, mean_difference
from dualoptim.bench.tables import Row, Summary, offset
from dualoptim.unlearn.task import Layout, is_failed

#: The shared-state baseline each decoupled setting is compared with.
BASELINE = "alternate"
CHALLENGERS = ("dual", "dual_plus", "dual_8bit", "dual_plus_8bit")
CLAIMS = ("Gap", "Std", "η_f sensitivity")
#: A claim's name in the header of its difference column.
SHORT = {"η_f sensitivity": "η_f"}


@dataclass(frozen=True)
class Claim:
    """A run (its row label) against a baseline run of the same method on each claim (None:
    not measurable, with ``notes`` saying why); ``better``: the direction each claim wants;
    ``digits``: the decimals its differences are shown with (its table's)."""

    method: str
    run: str  # the challenger's row label
    baseline: str  # the baseline's row label
    intervals: Mapping[str, Interval | None]
    notes: Mapping[str, str]
    better: Mapping[str, str]
    digits: int = 2
    #: what a verdict is called when the run is better / worse than its baseline
    outcomes: tuple[str, str] = ("reproduced", "contradicted")

    def verdict(self, claim: str) -> str:
        interval = self.intervals[claim]
        found = "not resolved" if interval is None else interval.verdict(self.better[claim])
        return dict(zip(("reproduced", "contradicted"), self.outcomes, strict=True)).get(
            found, found
        )


def pairs(
    groups: Sequence[tuple[str | None, str | None, str, str | None]],
) -> list[tuple[str, str, str]]:
    """(method, challenger label, baseline label) for each decoupled run and each Alternate
    run of the same method and state policy (there may be two: one step size, or η_f and η_r
    per phase; a carried DO is compared with a carried Alternate, never a reset one);
    ``groups``: (method, setting, label, state policy) of the runs. Ordered by method, then
    as :data:`CHALLENGERS`, whatever order the records were read in."""
    baselines = [(m, policy, label) for m, setting, label, policy in groups if setting == BASELINE]
    challengers = sorted(
        (g for g in groups if g[1] in CHALLENGERS),
        key=lambda g: (g[0] or "", CHALLENGERS.index(g[1])),
    )
    return [
        (m or "", label, base)
        for m, _, label, policy in challengers
        for bm, bpolicy, base in baselines
        if (bm, bpolicy) == (m, policy)
    ]


def claims(
    summary: Summary, metrics: Sequence[str], seeds: Collection[int] | None = None
) -> list[Claim]:
    """A :class:`Claim` per decoupled run and Alternate run of a method, both tuned. With
    ``seeds`` (the tuned rows' out-of-sample seeds, :meth:`Summary.new_seeds`), the Gap and
    Std claims on those seeds alone."""
    tuned = {row.group: row for row in summary.tuned()}
    measures = _MEASURES if seeds is None else {c: _MEASURES[c] for c in ("Gap", "Std")}
    within = set(seeds) if seeds is not None else None
    out = []
    for method, label, base in pairs(
        [(r.method, r.setting, r.group, r.policy) for r in tuned.values()]
    ):
        found = {claim: measure(summary, tuned[label], tuned[base], metrics, within)
                 for claim, measure in measures.items()}  # fmt: skip
        intervals = {claim: interval for claim, (interval, _) in found.items()}
        notes = {claim: note for claim, (_, note) in found.items()}
        out.append(Claim(method, label, base, intervals, notes, dict.fromkeys(measures, "lower")))
    return out


#: A claim's interval (None: not measurable) and a note on what it was measured over.
Outcome = tuple[Interval | None, str]


def _common_seeds(rows: Sequence[Row], within: set[int] | None = None) -> list[int]:
    shared = set(rows[0].seeds) if within is None else within & set(rows[0].seeds)
    for row in rows[1:]:
        shared &= set(row.seeds)
    return sorted(shared)


def _array(
    summary: Summary, row: Row | None, seeds: list[int], metrics: Sequence[str]
) -> np.ndarray:
    """(seeds, metrics) values of ``row`` (RT when None) on ``seeds``."""
    key = (summary.rt.group, None) if row is None else (row.group, row.lr_scale)
    by_seed = summary.samples[key]
    return np.array([[float(by_seed[s][m]) for m in metrics] for s in seeds])


def _gap(
    summary: Summary, row: Row, base: Row, metrics: Sequence[str], within: set[int] | None
) -> Outcome:
    seeds = _common_seeds([row, base], within)
    if len(seeds) < 2:
        return None, f"{len(seeds)} common seed(s)"
    rt = _array(summary, None, seeds, metrics)
    a, b = _array(summary, row, seeds, metrics), _array(summary, base, seeds, metrics)
    d = np.abs(a - rt).mean(1) - np.abs(b - rt).mean(1)  # per-seed gaps, paired
    return bootstrap(lambda index: d[index].mean(1), len(seeds)), ""


def _std(
    summary: Summary, row: Row, base: Row, metrics: Sequence[str], within: set[int] | None
) -> Outcome:
    seeds = _common_seeds([row, base], within)
    if len(seeds) < 2:
        return None, f"{len(seeds)} common seed(s)"
    a, b = _array(summary, row, seeds, metrics), _array(summary, base, seeds, metrics)

    def difference(index: np.ndarray) -> np.ndarray:
        return a[index].std(1).mean(-1) - b[index].std(1).mean(-1)

    return bootstrap(difference, len(seeds)), ""


def _sensitivity(
    summary: Summary,
    row: Row,
    base: Row,
    metrics: Sequence[str],
    within: set[int] | None,  # noqa: ARG001
) -> Outcome:
    """Gap spreads over the multiples of each one's tuned η_f within ``WINDOW`` that both
    ran, measured on the seeds every such multiple ran (the tuning seeds), whatever
    ``within`` says: the grid never ran the tuned rows' extra seeds."""
    grids: dict[str, dict[float, Row]] = {}
    for tuned in (row, base):
        assert tuned.lr_scale is not None  # a tuned run row has one
        grids[tuned.group] = {
            step: r
            for r in summary.complete()
            if r.group == tuned.group and r.failure is None and r.lr_scale is not None
            if (step := offset(r.lr_scale, tuned.lr_scale)) is not None
        }
    steps = sorted(set(grids[row.group]) & set(grids[base.group]))
    if len(steps) < 2:
        return None, f"{len(steps)} common η_f multiple(s) near the tuned ones"
    rows = [grids[g][s] for g in (row.group, base.group) for s in steps]
    seeds = _common_seeds(rows)
    if len(seeds) < 2:
        return None, f"{len(seeds)} common seed(s)"
    rt = _array(summary, None, seeds, metrics)
    values = {g: [_array(summary, grids[g][s], seeds, metrics) for s in steps] for g in grids}

    def spread(group: str, index: np.ndarray) -> np.ndarray:
        reference = rt[index].mean(1)
        gaps = np.stack([np.abs(v[index].mean(1) - reference).mean(-1) for v in values[group]])
        return gaps.max(0) - gaps.min(0)

    def difference(index: np.ndarray) -> np.ndarray:
        return spread(row.group, index) - spread(base.group, index)

    multiples = ", ".join(f"{math.exp(s):.3g}" for s in steps)
    return bootstrap(difference, len(seeds)), f"tuned η_f × {multiples}"


Measure = Callable[[Summary, Row, Row, Sequence[str], set[int] | None], Outcome]
_MEASURES: dict[str, Measure] = {"Gap": _gap, "Std": _std, "η_f sensitivity": _sensitivity}


def claims_table(found: Sequence[Claim]) -> tuple[list[str], list[list[str]]]:
    """(header, cells): per claim, the difference with its interval, and the verdict."""
    names = list(found[0].intervals)
    header = ["method", "run vs baseline"]
    for claim in names:
        arrow = "↓" if found[0].better[claim] == "lower" else "↑"
        header += [f"Δ{SHORT.get(claim, claim)} [95% CI]", f"{claim} {arrow}"]
    cells = []
    for c in found:
        row = [c.method, f"{c.run} vs {c.baseline}"]
        for claim in names:
            interval = c.intervals[claim]
            shown = "–" if interval is None else interval.text(c.digits)
            row += [shown, _verdict_cell(c, claim)]
        cells.append(row)
    return header, cells


def _verdict_cell(claim: Claim, name: str) -> str:
    note = claim.notes[name]
    verdict = claim.verdict(name)
    return f"{verdict} ({note})" if note and claim.intervals[name] is None else verdict


def claims_csv(found: Sequence[Claim]) -> str:
    """One line per (method, setting, claim) with the numbers, for scripts."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["method", "run", "baseline", "claim", "difference", "low", "high", "seeds", "verdict"]
    )
    for c in found:
        for claim in c.intervals:
            interval = c.intervals[claim]
            numbers = (
                ["", "", "", ""]
                if interval is None
                else [
                    *(f"{v:.6g}" for v in (interval.value, interval.low, interval.high)),
                    str(interval.seeds),
                ]
            )
            writer.writerow([c.method, c.run, c.baseline, claim, *numbers, c.verdict(claim)])
    return out.getvalue()


def metric_claims(records: Sequence[Mapping[str, Any]], layout: Layout) -> list[Claim]:
    """For tables without a Gap (TOFU, diffusion): each decoupled run against each Alternate
    run of its method at every η_f multiple both ran, on the layout's ``headline`` metrics:
    the mean of the paired differences (setting − Alternate) with its bootstrap interval.
    The unit of pairing is a seed (and, with ``split_by``, a forgotten class of it)."""
    if not layout.headline:
        return []
    by: dict[tuple[str, float], dict[tuple, Mapping[str, float]]] = defaultdict(dict)
    kinds: dict[str, tuple[str | None, str | None, str | None]] = {}
    for r in records:
        if r["kind"] == "run" and not is_failed(r):
            split = r["extra"][layout.split_by] if layout.split_by else None
            by[(r["group"], r["lr_scale"])][(r["seed"], split)] = r["metrics"]
            policy = r.get("extra", {}).get("state_policy")
            kinds[r["group"]] = (r.get("method"), r.get("setting"), policy)
    out = []
    for method, label, base in pairs([(m, s, g, p) for g, (m, s, p) in kinds.items()]):
        scales = {sc for g, sc in by if g == label} & {sc for g, sc in by if g == base}
        for scale in sorted(scales):
            a, b = by[(label, scale)], by[(base, scale)]
            units = sorted(a.keys() & b.keys(), key=str)
            intervals: dict[str, Interval | None] = {}
            for column in layout.headline:
                d = np.array([a[u][column.metric] - b[u][column.metric] for u in units])
                intervals[column.label] = mean_difference(d) if len(units) >= 2 else None
            note = f"{len(units)} paired seed(s)" if len(units) < 2 else ""
            out.append(
                Claim(
                    method,
                    f"{label} at η_f ×{scale:g}",
                    base,
                    intervals,
                    dict.fromkeys(intervals, note),
                    {c.label: c.better or "higher" for c in layout.headline},
                    layout.digits,
                )
            )
    return out

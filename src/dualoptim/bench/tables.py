"""Tables from records alone: the paper's layout, and the η_f sensitivity (SPEC §3.1, §3.4).

A run is identified by its group ("method (setting)") and η_f scale; its seeds are compared
with the reference (RT) records of the same seeds, that is, the same forget sets.

A group at a scale where a seed failed (diverged, out of memory) gets no numbers: a mean over
the seeds that survived would hide the failure and flatter the run. Its cells say what
stopped it ("diverged at step 12 (2 of 5 seeds)"), tuning passes it over, and the
sensitivity table shows the failure at that scale.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dualoptim.bench.records import failure_text
from dualoptim.bench.stats import gap_and_std, seed_gaps
from dualoptim.optim.settings import SETTINGS
from dualoptim.unlearn.task import is_failed


@dataclass(frozen=True)
class Row:
    """One group at one η_f scale over its seeds (or RT when ``lr_scale`` is None)."""

    group: str
    method: str | None
    setting: str | None
    lr_scale: float | None
    forget_lr: float | None
    seeds: tuple[int, ...]
    metrics: dict[str, dict[str, float]]  # {metric: {"mean", "std", "gap"}}
    gap: float  # NaN, as every number of the row, when a seed failed
    std: float
    seconds: float
    time_vs_rt: float
    failure: str | None = None  # what stopped its failed seeds, None when all finished
    seed_gaps: tuple[float, ...] = ()  # per seed (as ``seeds``), against that seed's RT
    policy: str | None = None  # a continual run's state policy (SPEC §2.6)


#: How far from a tuned η_f the sensitivity study looks (SPEC §3.4): ×1/3…×10 of it on the
#: paper's grid, ×1/9…×9 on a ×3 grid; a multiple farther off is shown, not in the spread.
WINDOW = 10.0


def offset(scale: float, tuned: float) -> float | None:
    """``scale`` as a multiple of the tuned scale (log, rounded so that 1/3 written two ways
    is one offset), or None outside the sensitivity window."""
    log = math.log(scale / tuned)
    return round(log, 6) if abs(log) <= math.log(WINDOW) + 1e-9 else None


@dataclass(frozen=True)
class Summary:
    rt: Row
    rows: tuple[Row, ...]  # every (group, η_f scale), in method then setting order
    #: other references compared with RT as runs are (the original: "no unlearning")
    baselines: tuple[Row, ...] = ()
    #: {(group, η_f scale): {seed: metrics}}, RT under ("RT", None): what claims resample
    samples: Mapping[tuple[str, float | None], Mapping[int, Mapping[str, float]]] = field(
        default_factory=dict
    )
    metrics: tuple[str, ...] = ()  # what Gap and Std are taken over

    def tuning_seeds(self, group: str) -> frozenset[int]:
        """The seeds a group's η_f scales are compared on: the seed set most of its scales
        ran (on a tie the larger). A scale still running has fewer; a tuned η_f run again on
        more seeds (``bench --tuned-seeds``) keeps being compared on these."""
        counts = Counter(frozenset(row.seeds) for row in self.rows if row.group == group)
        return max(counts, key=lambda seeds: (counts[seeds], len(seeds), sorted(seeds)))

    def complete(self) -> list[Row]:
        """The rows that ran all their group's tuning seeds: a scale whose seeds have not all
        run yet takes no part in tuning or sensitivity."""
        tuning = {group: self.tuning_seeds(group) for group in {row.group for row in self.rows}}
        return [row for row in self.rows if tuning[row.group] <= set(row.seeds)]

    def tuning_gap(self, row: Row) -> float:
        """``row``'s Gap on its group's tuning seeds: what tuning and sensitivity compare
        (the row's own Gap, over all its seeds, when those are the tuning seeds)."""
        seeds = sorted(self.tuning_seeds(row.group))
        if row.failure is not None or list(row.seeds) == seeds:
            return row.gap
        runs, rt = self.samples[(row.group, row.lr_scale)], self.samples[(self.rt.group, None)]
        return gap_and_std([runs[s] for s in seeds], [rt[s] for s in seeds], self.metrics)[0]

    def tuned(self) -> list[Row]:
        """Per group, the complete row of the η_f scale with the lowest Gap on the tuning
        seeds (SPEC §1.3); a scale where a seed failed takes no part."""
        best: dict[str, tuple[float, Row]] = {}
        for row in self.complete():
            gap = self.tuning_gap(row)
            if row.failure is None and (row.group not in best or gap < best[row.group][0]):
                best[row.group] = (gap, row)
        return [row for _, row in best.values()]

    def confirmed(self) -> list[Row]:
        """The tuned rows run on more seeds than they were tuned on."""
        return [r for r in self.tuned() if len(r.seeds) > len(self.tuning_seeds(r.group))]

    def new_seeds(self) -> tuple[int, ...]:
        """The seeds of the confirmed tuned rows that η_f was not tuned on: out of sample."""
        rows = self.confirmed()
        if not rows:
            return ()
        return tuple(sorted({s for r in rows for s in r.seeds} - self.tuning_seeds(rows[0].group)))

    def main_rows(self) -> list[Row]:
        """The main table: each group's tuned row, or, for a group failed at every scale, its
        failure at the scale nearest its configured η_f (a group is never left out)."""
        tuned = {row.group: row for row in self.tuned()}
        failed: dict[str, Row] = {}
        for row in self.complete():
            distance = abs(math.log(row.lr_scale))
            if row.group not in failed or distance < abs(math.log(failed[row.group].lr_scale)):
                failed[row.group] = row
        return [tuned.get(group) or failed[group] for group in failed]

    def edges(self, row: Row) -> tuple[str, ...]:
        """Where ``row``'s η_f sits on its group's grid: () when both neighbours ran (a failed
        neighbour counts: the grid reached it), else the sides with none ("lowest",
        "highest"): such an η_f is not tuned (SPEC §3.4). () for RT and the baselines."""
        if row.lr_scale is None:
            return ()
        scales = [r.lr_scale for r in self.complete() if r.group == row.group]
        return tuple(
            side
            for side, end in (("lowest", min(scales)), ("highest", max(scales)))
            if row.lr_scale == end
        )

    def table_rows(self) -> list[Row]:
        """The main table's rows: RT, the baselines (no unlearning), each group's tuned row."""
        return [self.rt, *self.baselines, *self.main_rows()]

    def tuned_scales(self) -> dict[str, float]:
        """Each group's tuned η_f scale (none for a group failed at every scale)."""
        return {row.group: row.lr_scale for row in self.tuned() if row.lr_scale is not None}

    def sensitivity(self) -> dict[str, dict[float, float | str]]:
        """Gap (on the tuning seeds) by η_f scale for each group run (completely) at more
        than one scale; at a scale where a seed failed, what stopped it."""
        gaps: dict[str, dict[float, float | str]] = defaultdict(dict)
        for row in self.complete():
            gaps[row.group][row.lr_scale] = (
                self.tuning_gap(row) if row.failure is None else row.failure
            )
        return {g: dict(sorted(by.items())) for g, by in gaps.items() if len(by) > 1}


def record_order(record: Mapping[str, Any]) -> tuple:
    """Rows by method, setting (SETTINGS' order), label, η_f: never by the order read in."""
    setting, group = record.get("setting"), record.get("group") or ""
    rank = SETTINGS.index(setting) if setting in SETTINGS else len(SETTINGS)
    return (record.get("method") or "", rank, group, record.get("lr_scale") or 0.0)


def summarize(
    records: Iterable[Mapping[str, Any]], metrics: Sequence[str], gap_to: str = "RT"
) -> Summary:
    """Aggregate run and reference records into rows; Gap/Std per SPEC §3.1. References of
    another group than ``gap_to`` (the original model) are rows compared with it too."""
    references: dict[int, Mapping[str, Any]] = {}
    runs: dict[tuple[str, float], list[Mapping[str, Any]]] = defaultdict(list)
    others: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for record in records:
        if record["kind"] == "run":
            runs[(record["group"], record["lr_scale"])].append(record)
            continue
        if record["group"] != gap_to:
            others[record["group"]].append(record)
            continue
        if record["seed"] in references:
            check_one_experiment([references[record["seed"]], record])
            raise ValueError(f"two reference (RT) records for seed {record['seed']}")
        references[record["seed"]] = record
    if not references:
        raise ValueError("no reference (RT) records: Gap is measured against RT")
    check_one_experiment(list(references.values()))
    rt_seconds = float(np.mean([r["seconds"] for r in references.values()]))
    by_seed = [references[seed] for seed in sorted(references)]
    rt = _row(gap_to, by_seed, by_seed, metrics, rt_seconds)
    samples = {(gap_to, None): {r["seed"]: r["metrics"] for r in by_seed}}

    def compared(name: str, group: list[Mapping[str, Any]]) -> Row:
        group = sorted(group, key=lambda r: r["seed"])
        missing = [r["seed"] for r in group if r["seed"] not in references]
        if missing:
            raise ValueError(f"{name}: no {gap_to} record for seed(s) {missing}")
        if not any(is_failed(r) for r in group):
            samples[(group[0]["group"], group[0].get("lr_scale"))] = {
                r["seed"]: r["metrics"] for r in group
            }
        return _row(
            group[0]["group"], group, [references[r["seed"]] for r in group], metrics, rt_seconds
        )

    baselines = tuple(compared(g, others[g]) for g in sorted(others))
    rows = [
        compared(f"{key[0]} at η_f ×{key[1]:g}", runs[key])
        for key in sorted(runs, key=lambda k: record_order(runs[k][0]))
    ]
    return Summary(rt, tuple(rows), baselines, samples, tuple(metrics))


def experiment(config: Mapping[str, Any]) -> dict[str, Any]:
    """What records of one experiment share (data, model, training): a record's config
    without its runs, seeds and cache folder."""
    return {k: v for k, v in config.items() if k not in ("runs", "seeds", "cache_dir")}


def check_one_experiment(
    references: Sequence[Mapping[str, Any]], folder: Path | None = None
) -> None:
    """Refuse records of different experiments (data, model, training) in one table, or of
    the same config on other data (another data fingerprint): their runs would be compared
    with the wrong RT. ``folder``: the output folder the records come from."""
    shared = [experiment(r["config"]) for r in references]
    for record, config in zip(references[1:], shared[1:], strict=True):
        if config != shared[0]:
            keys = sorted(
                k for k in config.keys() | shared[0].keys() if config.get(k) != shared[0].get(k)
            )
            raise ValueError(
                f"{f'{folder} holds ' if folder is not None else ''}records of different "
                f"experiments in one report (they differ in {keys}, seed {record['seed']}); "
                "give each experiment its own output folder"
            )
        if record.get("data") != references[0].get("data"):
            where = f"{folder} holds records" if folder is not None else "records"
            raise ValueError(
                f"{where} made on other data (data fingerprint {references[0].get('data')}, "
                f"not {record.get('data')}): the data changed since they were made; use "
                "another --out for this data"
            )


def _row(
    group: str,
    runs: list[Mapping[str, Any]],
    reference: list[Mapping[str, Any]],
    metrics: Sequence[str],
    rt_seconds: float,
) -> Row:
    first = runs[0]
    failed = [r["error"] for r in runs if is_failed(r)]
    if failed:  # no numbers from the survivors: a mean over them would hide the failure
        gap, std, per_metric, seconds = math.nan, math.nan, {}, math.nan
    else:
        gap, std, per_metric = gap_and_std(
            [r["metrics"] for r in runs], [r["metrics"] for r in reference], metrics
        )
        seconds = float(np.mean([r["seconds"] for r in runs]))
        per_seed = seed_gaps(
            [r["metrics"] for r in runs], [r["metrics"] for r in reference], metrics
        )
    return Row(
        group=group,
        method=first.get("method"),
        setting=first.get("setting"),
        lr_scale=first.get("lr_scale"),
        forget_lr=first.get("forget_lr"),
        seeds=tuple(r["seed"] for r in runs),
        metrics=per_metric,
        gap=gap,
        std=std,
        seconds=seconds,
        time_vs_rt=seconds / rt_seconds,
        failure=failure_text(failed, len(runs)) if failed else None,
        seed_gaps=() if failed else tuple(float(g) for g in per_seed),
        policy=first.get("extra", {}).get("state_policy"),
    )


def main_table(
    rows: Sequence[Row],
    metrics: Sequence[str],
    edges: Callable[[Row], tuple[str, ...]] = lambda _: (),
) -> tuple[list[str], list[list[str]]]:
    """(header, cells) in the paper's layout: mean ± std (|gap to RT|) per metric, Gap, Std.
    An η_f at the edge of its grid (``edges``, :meth:`Summary.edges`) says so."""
    header = ["method", "η_f", *metrics, "Gap ↓", "Std ↓", "time / RT", "seeds"]
    cells = []
    for row in rows:
        eta = "" if row.forget_lr is None else f"{row.forget_lr:.3g}" + _edge_note(edges(row))
        if row.failure is not None:  # said once, in the first metric's column
            blank = ["–"] * (len(metrics) + 2)
            cells.append([row.group, eta, row.failure, *blank, str(len(row.seeds))])
            continue
        cells.append(
            [
                row.group,
                eta,
                *(
                    f"{m['mean']:.2f} ± {m['std']:.2f} ({m['gap']:.2f})"
                    for m in (row.metrics[k] for k in metrics)
                ),
                f"{row.gap:.2f}",
                f"{row.std:.2f}",
                f"{row.time_vs_rt:.2f}",
                str(len(row.seeds)),
            ]
        )
    return header, cells


def _edge_note(sides: tuple[str, ...]) -> str:
    if not sides:
        return ""
    return " (only one tried)" if len(sides) == 2 else f" ({sides[0]} tried)"


def sensitivity_table(
    gaps: Mapping[str, Mapping[float, float | str]], tuned: Mapping[str, float]
) -> tuple[list[str], list[list[str]]]:
    """(header, cells): Gap at each η_f scale (or what stopped the run there), then its
    spread (max − min) and population std over the scales within ``WINDOW`` of the group's
    ``tuned`` scale; none for a group failed there (a failure is no number to take a spread
    of) or without a tuned scale."""
    scales = sorted({s for by in gaps.values() for s in by})
    header = ["method", *(f"η_f ×{s:.3g}" for s in scales), "spread ↓", "std ↓"]
    cells = []
    for group, by in gaps.items():
        shown = [_gap_cell(by.get(s)) for s in scales]
        near = [v for s, v in by.items() if group in tuned and offset(s, tuned[group]) is not None]
        if len(near) < 2 or any(isinstance(v, str) for v in near):
            spread = ["–", "–"]
        else:
            values = np.array(near)
            spread = [f"{values.max() - values.min():.2f}", f"{values.std():.2f}"]
        cells.append([group, *shown, *spread])
    return header, cells


def _gap_cell(gap: float | str | None) -> str:
    """A sensitivity cell: the Gap, what stopped the run at that scale, or "" (not run)."""
    if gap is None or isinstance(gap, str):
        return gap or ""
    return f"{gap:.2f}"


def markdown(header: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def rows_csv(rows: Sequence[Row], metrics: Sequence[str]) -> str:
    """The rows as numbers, one column per statistic, for spreadsheets and scripts; when
    runs failed, a last column ``failed`` says what stopped them (their numbers are empty)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    stats = [f"{k}_{s}" for k in metrics for s in ("mean", "std", "gap")]
    failed = any(row.failure is not None for row in rows)
    writer.writerow(
        [
            "group",
            "method",
            "setting",
            "lr_scale",
            "forget_lr",
            "seeds",
            *stats,
            "gap",
            "std",
            "seconds",
            "time_vs_rt",
        ]
        + ["failed"] * failed
    )
    for row in rows:
        numbers = [""] * (len(stats) + 4)  # a failed row has none
        if row.failure is None:
            numbers = [
                *(f"{row.metrics[k][s]:.6g}" for k in metrics for s in ("mean", "std", "gap")),
                *(f"{v:.6g}" for v in (row.gap, row.std, row.seconds, row.time_vs_rt)),
            ]
        writer.writerow(
            [
                row.group,
                row.method or "",
                row.setting or "",
                "" if row.lr_scale is None else row.lr_scale,
                "" if row.forget_lr is None else row.forget_lr,
                " ".join(map(str, row.seeds)),
                *numbers,
            ]
            + [row.failure or ""] * failed
        )
    return out.getvalue()

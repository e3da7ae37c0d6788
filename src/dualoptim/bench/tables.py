"""Tables from records alone: the paper's layout, and the η_f sensitivity (SPEC §3.1, §3.4).

A run is identified by its group ("method (setting)") and η_f scale; its seeds are compared
with the reference (RT) records of the same seeds, that is, the same forget sets.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dualoptim.bench.stats import gap_and_std
from dualoptim.optim.settings import SETTINGS


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
    gap: float
    std: float
    seconds: float
    time_vs_rt: float


@dataclass(frozen=True)
class Summary:
    rt: Row
    rows: tuple[Row, ...]  # every (group, η_f scale), in method then setting order

    def complete(self) -> list[Row]:
        """The rows with as many seeds as their group's best-covered scale: a scale whose
        seeds have not all run yet takes no part in tuning or sensitivity."""
        most: dict[str, int] = {}
        for row in self.rows:
            most[row.group] = max(most.get(row.group, 0), len(row.seeds))
        return [row for row in self.rows if len(row.seeds) == most[row.group]]

    def tuned(self) -> list[Row]:
        """Per group, the complete row of the η_f scale with the lowest Gap (SPEC §1.3)."""
        best: dict[str, Row] = {}
        for row in self.complete():
            if row.group not in best or row.gap < best[row.group].gap:
                best[row.group] = row
        return list(best.values())

    def sensitivity(self) -> dict[str, dict[float, float]]:
        """Gap by η_f scale for each group run (completely) at more than one scale."""
        gaps: dict[str, dict[float, float]] = defaultdict(dict)
        for row in self.complete():
            gaps[row.group][row.lr_scale] = row.gap
        return {g: dict(sorted(by.items())) for g, by in gaps.items() if len(by) > 1}


def record_order(record: Mapping[str, Any]) -> tuple:
    setting = record.get("setting")
    return (
        record.get("method") or "",
        SETTINGS.index(setting) if setting in SETTINGS else len(SETTINGS),
        record.get("lr_scale") or 0.0,
    )


def summarize(records: Iterable[Mapping[str, Any]], metrics: Sequence[str]) -> Summary:
    """Aggregate run and reference records into rows; Gap/Std per SPEC §3.1."""
    references: dict[int, Mapping[str, Any]] = {}
    runs: dict[tuple[str, float], list[Mapping[str, Any]]] = defaultdict(list)
    for record in records:
        if record["kind"] == "run":
            runs[(record["group"], record["lr_scale"])].append(record)
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
    rt = _row("RT", by_seed, by_seed, metrics, rt_seconds)
    rows = []
    for key in sorted(runs, key=lambda k: record_order(runs[k][0])):
        group_runs = sorted(runs[key], key=lambda r: r["seed"])
        missing = [r["seed"] for r in group_runs if r["seed"] not in references]
        if missing:
            raise ValueError(f"{key[0]} at η_f ×{key[1]:g}: no RT record for seed(s) {missing}")
        reference = [references[r["seed"]] for r in group_runs]
        rows.append(_row(key[0], group_runs, reference, metrics, rt_seconds))
    return Summary(rt, tuple(rows))


def check_one_experiment(references: Sequence[Mapping[str, Any]]) -> None:
    """Refuse records of different experiments (data, model, training) in one table: their
    runs would be compared with the wrong RT."""
    shared = [
        {k: v for k, v in r["config"].items() if k not in ("runs", "seeds", "cache_dir")}
        for r in references
    ]
    for record, config in zip(references[1:], shared[1:], strict=True):
        if config != shared[0]:
            keys = sorted(
                k for k in config.keys() | shared[0].keys() if config.get(k) != shared[0].get(k)
            )
            raise ValueError(
                f"records of different experiments in one report (they differ in {keys}, "
                f"seed {record['seed']}); give each experiment its own output folder"
            )


def _row(
    group: str,
    runs: list[Mapping[str, Any]],
    reference: list[Mapping[str, Any]],
    metrics: Sequence[str],
    rt_seconds: float,
) -> Row:
    gap, std, per_metric = gap_and_std(
        [r["metrics"] for r in runs], [r["metrics"] for r in reference], metrics
    )
    seconds = float(np.mean([r["seconds"] for r in runs]))
    first = runs[0]
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
    )


def main_table(rows: Sequence[Row], metrics: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """(header, cells) in the paper's layout: mean ± std (|gap to RT|) per metric, Gap, Std."""
    header = ["method", "η_f", *metrics, "Gap ↓", "Std ↓", "time / RT", "seeds"]
    cells = []
    for row in rows:
        cells.append(
            [
                row.group,
                "" if row.forget_lr is None else f"{row.forget_lr:.3g}",
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


def sensitivity_table(
    gaps: Mapping[str, Mapping[float, float]],
) -> tuple[list[str], list[list[str]]]:
    """(header, cells): Gap at each η_f scale, then its spread (max − min) and population std."""
    scales = sorted({s for by in gaps.values() for s in by})
    header = ["method", *(f"η_f ×{s:.3g}" for s in scales), "spread ↓", "std ↓"]
    cells = []
    for group, by in gaps.items():
        values = np.array(list(by.values()))
        cells.append(
            [
                group,
                *(f"{by[s]:.2f}" if s in by else "" for s in scales),
                f"{values.max() - values.min():.2f}",
                f"{values.std():.2f}",
            ]
        )
    return header, cells


def markdown(header: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def rows_csv(rows: Sequence[Row], metrics: Sequence[str]) -> str:
    """The rows as numbers, one column per statistic, for spreadsheets and scripts."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    stats = [f"{k}_{s}" for k in metrics for s in ("mean", "std", "gap")]
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
    )
    for row in rows:
        writer.writerow(
            [
                row.group,
                row.method or "",
                row.setting or "",
                "" if row.lr_scale is None else row.lr_scale,
                "" if row.forget_lr is None else row.forget_lr,
                " ".join(map(str, row.seeds)),
                *(f"{row.metrics[k][s]:.6g}" for k in metrics for s in ("mean", "std", "gap")),
                f"{row.gap:.6g}",
                f"{row.std:.6g}",
                f"{row.seconds:.6g}",
                f"{row.time_vs_rt:.6g}",
            ]
        )
    return out.getvalue()

"""Tables of plain metrics (mean ± std over seeds) from records, for tasks whose paper tables
have no reference gap: TOFU's forget efficacy / model utility / overall (Table 3), and the
generation task's FA / FID (Table 2). Reference records (the target before unlearning, the
retain model) come first, then the runs in method and setting order.

A metric of a group with a failed seed (diverged, out of memory) is not averaged over the
seeds that finished, which would hide the failure: its cell says what stopped the run and at
which optimizer step ("diverged at step 12 (1 of 3 seeds)").
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dualoptim.bench.records import failure_text
from dualoptim.bench.tables import record_order
from dualoptim.unlearn.task import is_failed


@dataclass(frozen=True)
class MetricRow:
    group: str
    kind: str  # "reference" or "run"
    method: str | None
    setting: str | None
    forget_lr: float | None
    seeds: tuple[int, ...]
    mean: dict[str, float]  # NaN where no record of the row has the metric
    std: dict[str, float]  # population std over seeds (ddof 0)
    seconds: float  # NaN when no seed finished
    failures: dict[str, str] = field(default_factory=dict)  # metric -> what stopped its runs

    def failure(self, metrics: Sequence[str]) -> str:
        """The row's failures in one text ("" when none): each text once, with the metrics
        it stopped when it did not stop them all."""
        by_text: dict[str, list[str]] = defaultdict(list)
        for name in metrics:
            if name in self.failures:
                by_text[self.failures[name]].append(name)
        return "; ".join(
            text if len(names) == len(metrics) else f"{text} ({', '.join(names)})"
            for text, names in by_text.items()
        )


def present(records: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> list[str]:
    """The ``metrics`` some record has, in order: a column no record fills (downstream
    benchmarks not configured, or unavailable offline, which the intro says) is left out;
    all of them when no record has any (every run failed: the cells say why)."""
    found = [m for m in metrics if any(m in r.get("metrics", {}) for r in records)]
    return found or list(metrics)


def errors(record: Mapping[str, Any], metrics: Sequence[str]) -> dict[str, Mapping[str, Any]]:
    """The error that stopped each metric of ``record``: all of a failed run's, or those a
    table's merged record lists in ``errors`` (e.g. one forgotten class of several)."""
    if is_failed(record):
        return dict.fromkeys(metrics, record["error"])
    return {m: e for m, e in record.get("errors", {}).items() if m in metrics}


def metric_rows(
    records: Iterable[Mapping[str, Any]],
    metrics: Sequence[str],
    reference_order: Sequence[str] = (),
) -> list[MetricRow]:
    """One row per (group, η_f): references first (those named in ``reference_order`` in
    that order, then by name), then runs in method and setting order. The order never
    depends on the order of ``records``, so a report rebuilt from a folder is the same."""
    groups: dict[tuple[str, float | None], list[Mapping[str, Any]]] = defaultdict(list)
    for record in records:
        groups[(record["group"], record.get("forget_lr"))].append(record)
    if not groups:
        raise ValueError("no records to tabulate")
    named = {g: i for i, g in enumerate(reference_order)}
    keys = sorted(
        groups,
        key=lambda k: (
            groups[k][0]["kind"] != "reference",
            named.get(k[0], len(named)),
            record_order(groups[k][0]),
            k[0],
        ),
    )
    rows = []
    for key in keys:
        members = sorted(groups[key], key=lambda r: r["seed"])
        seeds = [r["seed"] for r in members]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"{key[0]}: two records of one seed ({seeds}); one per seed")
        mean, std, failures = {}, {}, {}
        stopped = [errors(r, metrics) for r in members]
        for name in metrics:
            failed = [e[name] for e in stopped if name in e]
            if failed:
                failures[name] = failure_text(failed, len(members))
            values = np.array([r["metrics"].get(name, math.nan) for r in members], dtype=float)
            mean[name] = math.nan if failed else float(values.mean())
            std[name] = math.nan if failed else float(values.std())
        seconds = [
            r["seconds"] for r in members if not is_failed(r) and math.isfinite(r["seconds"])
        ]
        first = members[0]
        rows.append(
            MetricRow(
                group=key[0],
                kind=first["kind"],
                method=first.get("method"),
                setting=first.get("setting"),
                forget_lr=key[1],
                seeds=tuple(seeds),
                mean=mean,
                std=std,
                # the median: one repeat slowed by a competing process does not move it
                seconds=float(np.median(seconds)) if seconds else math.nan,
                failures=failures,
            )
        )
    return rows


def _cell(row: MetricRow, name: str, digits: int) -> str:
    if name in row.failures:
        return row.failures[name]
    if math.isnan(row.mean[name]):
        return "–"
    value = f"{row.mean[name]:.{digits}f}"
    return value if len(row.seeds) == 1 else f"{value} ± {row.std[name]:.{digits}f}"


def metric_table(
    rows: Sequence[MetricRow],
    metrics: Sequence[str],
    labels: Mapping[str, str] | None = None,
    digits: int = 3,
) -> tuple[list[str], list[list[str]]]:
    """(header, cells): mean (± std when several seeds) per metric, median time, seeds. A
    failure is said once: the next cells it stopped too show "–"."""
    labels = labels or {}
    header = ["model", "η_f", *(labels.get(m, m) for m in metrics), "seconds (median)", "seeds"]
    cells = []
    for row in rows:
        values = [_cell(row, m, digits) for m in metrics]
        for i in range(len(values) - 1, 0, -1):
            if metrics[i] in row.failures and values[i] == values[i - 1]:
                values[i] = "–"
        cells.append(
            [
                row.group,
                "" if row.forget_lr is None else f"{row.forget_lr:.3g}",
                *values,
                "–" if math.isnan(row.seconds) else f"{row.seconds:.0f}",
                str(len(row.seeds)),
            ]
        )
    return header, cells


def metric_csv(rows: Sequence[MetricRow], metrics: Sequence[str]) -> str:
    """The rows as numbers, for spreadsheets and scripts; when runs failed, a last column
    ``failed`` says what stopped them (their numbers are empty: nan)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    stats = [f"{m}_{s}" for m in metrics for s in ("mean", "std")]
    failed = any(row.failures for row in rows)
    writer.writerow(
        ["group", "kind", "method", "setting", "forget_lr", "seeds", *stats, "seconds"]
        + ["failed"] * failed
    )
    for row in rows:
        writer.writerow(
            [
                row.group,
                row.kind,
                row.method or "",
                row.setting or "",
                "" if row.forget_lr is None else row.forget_lr,
                " ".join(map(str, row.seeds)),
                *(f"{getattr(row, s)[m]:.6g}" for m in metrics for s in ("mean", "std")),
                f"{row.seconds:.6g}",
            ]
            + [row.failure(metrics)] * failed
        )
    return out.getvalue()

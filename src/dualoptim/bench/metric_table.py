"""Tables of plain metrics (mean ± std over seeds) from records, for tasks whose paper tables
have no reference gap: TOFU's forget efficacy / model utility / overall (Table 3), and the
generation task's FA / FID (Table 2). Reference records (the target before unlearning, the
retain model) come first, then the runs in method and setting order.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dualoptim.bench.tables import record_order


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
    seconds: float


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
        mean, std = {}, {}
        for name in metrics:
            values = np.array([r["metrics"].get(name, math.nan) for r in members], dtype=float)
            mean[name] = float(values.mean())
            std[name] = float(values.std())
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
                seconds=float(np.median([r["seconds"] for r in members])),
            )
        )
    return rows


def _cell(row: MetricRow, name: str, digits: int) -> str:
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
    """(header, cells): mean (± std when several seeds) per metric, median time, seeds."""
    labels = labels or {}
    header = ["model", "η_f", *(labels.get(m, m) for m in metrics), "seconds (median)", "seeds"]
    cells = [
        [
            row.group,
            "" if row.forget_lr is None else f"{row.forget_lr:.3g}",
            *(_cell(row, m, digits) for m in metrics),
            f"{row.seconds:.0f}",
            str(len(row.seeds)),
        ]
        for row in rows
    ]
    return header, cells


def metric_csv(rows: Sequence[MetricRow], metrics: Sequence[str]) -> str:
    """The rows as numbers, for spreadsheets and scripts."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    stats = [f"{m}_{s}" for m in metrics for s in ("mean", "std")]
    writer.writerow(["group", "kind", "method", "setting", "forget_lr", "seeds", *stats, "seconds"])
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
        )
    return out.getvalue()

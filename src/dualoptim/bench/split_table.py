"""Tables of a task whose runs each belong to one sub-experiment (diffusion: one forgotten
class per run): the layout's columns once per sub-experiment (the paper's Table 2), then
averages over the sub-experiments. Which record field names the sub-experiment, and which
labels it, the task's Layout says (``split_by``, ``split_name``)."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from dualoptim.bench.metric_table import metric_csv, metric_rows, metric_table, present
from dualoptim.unlearn.task import Cells, Layout, is_failed


def _row_key(record: Mapping[str, Any]) -> tuple:
    return (record["group"], record.get("forget_lr"), record["seed"])


def _merged(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` as the start of a row merged from several: its metrics and errors to come."""
    kept = {k: v for k, v in record.items() if k not in ("status", "error")}
    return {**kept, "metrics": {}, "errors": {}}


def by_split(records: Sequence[Mapping[str, Any]], layout: Layout) -> list[dict[str, Any]]:
    """One record per (group, η_f, seed) whose metrics are ``"<name>/<metric>"`` for every
    sub-experiment: the shape of Table 2, fed to the task-agnostic metric tables. A failed
    run's columns carry its error (``errors``), so the table says where it stopped."""
    merged: dict[tuple, dict[str, Any]] = {}
    seconds: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        k = _row_key(r)
        name = r["extra"][layout.split_name]
        row = merged.setdefault(k, _merged(r))
        if any(m.startswith(f"{name}/") for m in [*row["metrics"], *row["errors"]]):
            raise ValueError(
                f"two records of {r['group']!r} (η_f {k[1]}, seed {k[2]}) for {name}: "
                "runs that differ in more than their row label would share a row"
            )
        if is_failed(r):
            row["errors"].update({f"{name}/{m}": r["error"] for m in layout.metrics})
            continue
        row["metrics"].update({f"{name}/{m}": v for m, v in r["metrics"].items()})
        seconds[k].append(r["seconds"])
    for k, row in merged.items():
        row["seconds"] = statistics.median(seconds[k]) if seconds[k] else math.nan
    return list(merged.values())


def split_columns(
    records: Sequence[Mapping[str, Any]], layout: Layout
) -> tuple[list[str], dict[str, str]]:
    """The columns in sub-experiment order (``split_by``), and their labels."""
    splits = sorted({(r["extra"][layout.split_by], r["extra"][layout.split_name]) for r in records})
    shown = present(records, layout.metrics)
    short = {c.metric: c.label for c in layout.columns}
    columns = [f"{name}/{m}" for _, name in splits for m in shown]
    labels = {f"{name}/{m}": f"{name} {short[m]}" for _, name in splits for m in shown}
    return columns, labels


def averages(records: Sequence[Mapping[str, Any]], layout: Layout) -> list[dict[str, Any]]:
    """One record per (group, η_f, seed): each metric averaged over the sub-experiments,
    left empty where the group has not yet run every one (an average over fewer would not
    compare with the others), and the error instead where one of its runs failed."""
    metrics = [c.metric for c in layout.averages]
    splits = {r["extra"][layout.split_by] for r in records}
    groups: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        groups[_row_key(r)].append(r)
    out = []
    for members in groups.values():
        complete = {r["extra"][layout.split_by] for r in members} == splits
        failed = [r["error"] for r in members if is_failed(r)]
        means = {
            m: sum(r["metrics"][m] for r in members) / len(members)
            for m in metrics
            if complete and not failed and all(m in r["metrics"] for r in members)
        }
        finished = [r["seconds"] for r in members if not is_failed(r)]
        row = _merged(members[0])
        row["errors"] = dict.fromkeys(metrics, failed[0]) if failed else {}
        seconds = statistics.median(finished) if finished else math.nan
        out.append({**row, "metrics": means, "seconds": seconds})
    return out


def split_tables(records: Sequence[Mapping[str, Any]], layout: Layout) -> tuple[Cells, Cells, str]:
    """(the per-sub-experiment table, the averages, the first as CSV); tables are
    (header, cells)."""
    columns, labels = split_columns(records, layout)
    rows = metric_rows(by_split(records, layout), columns, layout.references)
    means = averages(records, layout)
    shown = present(means, [c.metric for c in layout.averages])
    average_rows = metric_rows(means, shown, layout.references)
    average_labels = {c.metric: c.label for c in layout.averages}
    return (
        metric_table(rows, columns, labels, digits=layout.digits),
        metric_table(average_rows, shown, average_labels, digits=layout.digits),
        metric_csv(rows, columns),
    )

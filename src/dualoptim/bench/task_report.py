"""Any task's report, laid out as its Layout says: Gap to a reference with η_f sensitivity
(classification), plain metrics with curves (TOFU), or per sub-experiment with averages
(diffusion). The same function serves the end of a sweep and ``dualoptim report``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dualoptim.bench.claims import claims, claims_table, metric_claims
from dualoptim.bench.metric_table import metric_csv, metric_rows, metric_table, present
from dualoptim.bench.plots import plot_curves
from dualoptim.bench.records import RecordStore
from dualoptim.bench.report import claims_section, timing_note, write_report, write_text_report
from dualoptim.bench.requests_report import report_requests, request_of
from dualoptim.bench.split_table import split_tables
from dualoptim.bench.tables import main_table, markdown, sensitivity_table
from dualoptim.tasks import registry
from dualoptim.unlearn.task import Task, is_failed

Table = tuple[str, list[str], list[list[str]]]  # (title, header, cells)
CLAIMS_TITLE = "Claims: each decoupled setting against Alternate (SPEC §3.4)"


@dataclass
class Shown:
    """What a report shows on the terminal besides the files it writes."""

    tables: list[Table]
    notes: list[str] = field(default_factory=list)
    tuned: list[tuple[str, float]] = field(default_factory=list)  # (group, best η_f): Gap only


def rebuild(out_dir: Path) -> Shown:
    """The report of ``out_dir`` from its records only, in the layout of their task."""
    records = list(RecordStore(out_dir / "records"))
    if not records:
        raise FileNotFoundError(f"{out_dir / 'records'}: no records to report")
    return report(registry.get(records[0]["task"]), records, out_dir, out_dir.name)


def report(task: Task, records: Sequence[Mapping[str, Any]], out_dir: Path, title: str) -> Shown:
    """Write ``out_dir``'s report.md, table.csv and figures from ``records`` (a continual
    sweep's: its last request's, then every request's, bench/requests_report.py)."""
    if any(request_of(r) is not None for r in records):
        return report_requests(task, records, out_dir, title, _one_report)
    return _one_report(task, records, out_dir, title)


def _one_report(
    task: Task, records: Sequence[Mapping[str, Any]], out_dir: Path, title: str
) -> Shown:
    layout = task.layout
    if layout.gap_to is not None:
        return _gap_report(task, records, out_dir, title)
    if layout.split_by is not None:
        (header, cells), (a_header, a_cells), table_csv = split_tables(records, layout)
        body = (
            task.intro(records)
            + markdown(header, cells)
            + f"\n## {layout.averages_title}\n\n"
            + markdown(a_header, a_cells)
        )
        split = layout.split_by.replace("_", " ")
        tables = [(f"{title}: by {split}", header, cells), ("averages", a_header, a_cells)]
    else:
        metrics = present(records, layout.metrics)
        rows = metric_rows(records, metrics, layout.references)
        header, cells = metric_table(rows, metrics, layout.labels, digits=layout.digits)
        body = task.intro(records) + markdown(header, cells)
        table_csv = metric_csv(rows, metrics)
        tables = [(title, header, cells)]
    found = metric_claims(records, layout)
    body += claims_section(found, out_dir)
    if found:
        tables.append((CLAIMS_TITLE, *claims_table(found)))
    appendix = _curve_figures(task, records, out_dir) + task.appendix(records, out_dir)
    write_text_report(records, out_dir, title, body, appendix, table_csv, task.run_options)
    return Shown(tables)


def _gap_report(
    task: Task, records: Sequence[Mapping[str, Any]], out_dir: Path, title: str
) -> Shown:
    metrics = task.layout.metrics
    intro, appendix = task.intro(records), task.appendix(records, out_dir)
    summary = write_report(records, out_dir, metrics, title, intro, appendix, task.run_options)
    seeds = len(summary.rt.seeds)
    tables = [
        (f"{title}: {seeds} seeds", *main_table(summary.table_rows(), metrics, summary.edges))
    ]
    if summary.sensitivity():
        gaps = sensitivity_table(summary.sensitivity(), summary.tuned_scales())
        tables.append(("Gap by η_f (× the run's η_f)", *gaps))
    found = claims(summary, metrics)
    if found:
        tables.append((CLAIMS_TITLE, *claims_table(found)))
    seeds = summary.new_seeds()
    if found and seeds:
        title = f"{CLAIMS_TITLE}, out of sample (seeds {', '.join(map(str, seeds))})"
        tables.append((title, *claims_table(claims(summary, metrics, seeds))))
    note = timing_note(records)
    tuned = [(row.group, row.forget_lr) for row in summary.tuned()]
    return Shown(tables, [note] if note else [], tuned)


def _curve_figures(task: Task, records: Sequence[Mapping[str, Any]], out_dir: Path) -> str:
    """A figure of the layout's curves per η_f multiple, the last reference dashed."""
    layout = task.layout
    if not layout.curves:
        return ""
    runs = [r for r in records if r["kind"] == "run" and not is_failed(r)]
    dashed = layout.references[-1]
    reference = [r for r in records if r["group"] == dashed]
    parts = []
    for scale in sorted({r["lr_scale"] for r in runs}):
        shown = [r for r in runs if r["lr_scale"] == scale]
        if any(name.startswith("eval/") for r in shown for name in r.get("curves", {})):
            name = f"curves_x{scale:g}.png"
            plot_curves([*shown, *reference], out_dir / name, layout.curves, unit="")
            parts.append(
                f"\n## {layout.curves_title} (η_f ×{scale:g})\n\n"
                f"Dashed: the {dashed}.\n\n![curves]({name})\n"
            )
    return "".join(parts)

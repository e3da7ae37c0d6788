"""Class-unlearning runs × forgotten classes × seeds, one record each, and the paper's Table 2
layout from the records: per forgotten class, FA and FID, per method and setting.

The original model is recorded once per forgotten class as the reference (what each run
starts from). Records are written as runs finish; a rerun skips the runs whose records exist.
Sample grids (one row per class) go to ``grids/`` beside the records.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from dualoptim.bench.metric_table import metric_csv, metric_rows, metric_table
from dualoptim.bench.records import is_failed, make_record, record_id
from dualoptim.bench.report import write_text_report
from dualoptim.bench.sweeps import (
    attempt,
    lr_grid,
    match_grid,
    note_failures,
    open_store,
    run_record,
    scaled,
    stored_or_made,
)
from dualoptim.bench.tables import markdown
from dualoptim.config import to_dict
from dualoptim.tasks.diffusion.config import DiffusionExperiment, GenUnlearnSpec
from dualoptim.tasks.diffusion.run import run_unlearning
from dualoptim.tasks.diffusion.world import World

REFERENCE = "original"
#: Per forgotten class (Table 2), then averages over the classes.
CLASS_METRICS = ("FA", "FID", "FID_inception")
AVERAGE_METRICS = (
    "FA",
    "FID",
    "FID_inception",
    "remaining_accuracy",
    "FID_forgotten",
    "FID_inception_forgotten",
)
LABELS = {
    "FA": "FA ↓ (%)",
    "FID": "FID ↓ (own classifier)",
    "FID_inception": "FID ↓ (Inception-v3)",
    "FID_forgotten": "forgotten class's FID ↑ (own classifier)",
    "FID_inception_forgotten": "forgotten class's FID ↑ (Inception-v3)",
    "remaining_accuracy": "remaining classes recognised (%)",
}
#: Table 2's column labels, after the class name.
SHORT = {"FA": "FA ↓", "FID": "FID ↓", "FID_inception": "FID-Inception ↓"}


def _config(exp: DiffusionExperiment, spec: GenUnlearnSpec | None, seed: int) -> dict[str, Any]:
    return to_dict(replace(exp, runs=(spec,) if spec else exp.runs, seeds=(seed,)))


def _grid_name(label: str, forgotten: int, seed: int) -> str:
    slug = "".join(ch if ch.isalnum() else "-" for ch in label.lower()).strip("-")
    return f"grids/{slug}-class{forgotten}-seed{seed}.png"


def sweep(
    exp: DiffusionExperiment,
    out_dir: Path | None = None,
    lr_scales: Sequence[float] = (1.0,),
    progress: bool = False,
    retry_failed: bool = False,
) -> list[dict[str, Any]]:
    """Run (or read back) every run of ``exp`` for every forgotten class at each η_f
    multiple; returns the reference and run records. Failed runs (diverged, out of memory)
    are run again only with ``retry_failed``."""
    world = World(exp, progress=progress)
    store = open_store(out_dir, _config(exp, None, 0), world.fingerprint)
    key = world.key

    def reference(forgotten: int, id: str) -> dict[str, Any]:
        grid = _grid_name(REFERENCE, forgotten, exp.train.seed)
        if out_dir is not None:
            world.grid(world.original_samples, out_dir / grid, "original model")
        return make_record(
            id=id,
            kind="reference",
            group=REFERENCE,
            seed=exp.train.seed,
            metrics=world.reference(forgotten),
            seconds=world.original[1],
            config=_config(exp, None, 0),
            task="diffusion",
            extra=_extra(world, forgotten, grid),
            data_fingerprint=world.fingerprint,
        )

    def run(scale: float, spec: GenUnlearnSpec, forgotten: int, seed: int, id: str) -> dict:
        # two rows may share a label (SalUn at two η_f), never a label and an η_f
        grid = _grid_name(f"{spec.label}-lr{spec.eta_f:g}", forgotten, seed)
        path = out_dir / grid if out_dir is not None else None
        checkpoints = world.cache / "runs" / id
        result = attempt(
            partial(
                run_unlearning, spec, world, forgotten, seed, grid=path, checkpoint_dir=checkpoints
            )
        )
        return run_record(
            spec,
            result,
            id=id,
            setting=spec.resolved_setting,
            seed=seed,
            scale=scale,
            config=_config(exp, spec, seed),
            task="diffusion",
            extra=_extra(world, forgotten, grid),
            data_fingerprint=world.fingerprint,
        )

    records = []
    for forgotten in exp.data.forget_classes:
        ref_id = record_id("diffusion-reference", key, forgotten)
        records.append(stored_or_made(store, ref_id, partial(reference, forgotten, ref_id)))
    for scale in lr_grid(match_grid(store, lr_scales)):
        for forgotten in exp.data.forget_classes:
            for spec in exp.runs:
                spec = replace(spec, forget_lr=scaled(spec.eta_f, scale))
                for seed in exp.seeds:
                    run_id = record_id("diffusion-run", key, spec, forgotten, seed)
                    make = partial(run, scale, spec, forgotten, seed, run_id)
                    records.append(stored_or_made(store, run_id, make, retry_failed))
    note_failures(records)
    return records


def _extra(world: World, forgotten: int, grid: str) -> dict[str, Any]:
    return {
        "forget_class": forgotten,
        "class_name": world.data.class_names[forgotten],
        "grid": grid,
        "classifier_accuracy": world.classifier_accuracy,
    }


def _present(records: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> list[str]:
    return [m for m in metrics if any(m in r["metrics"] for r in records)]


def by_class(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One record per (group, η_f, seed) whose metrics are ``"<class>/<metric>"`` for every
    forgotten class: the shape of Table 2, fed to the task-agnostic metric tables. A failed
    run's class columns carry its error (``errors``), so the table says where it stopped."""
    merged: dict[tuple, dict[str, Any]] = {}
    seconds: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        k = (r["group"], r.get("forget_lr"), r["seed"])
        name = r["extra"]["class_name"]
        row = merged.setdefault(k, _merged(r))
        if any(m.startswith(f"{name}/") for m in [*row["metrics"], *row["errors"]]):
            raise ValueError(
                f"two records of {r['group']!r} (η_f {k[1]}, seed {k[2]}) forget {name}: "
                "runs that differ in more than their row label would share a row"
            )
        if is_failed(r):
            row["errors"].update({f"{name}/{m}": r["error"] for m in CLASS_METRICS})
            continue
        row["metrics"].update({f"{name}/{m}": v for m, v in r["metrics"].items()})
        seconds[k].append(r["seconds"])
    for k, row in merged.items():
        row["seconds"] = statistics.median(seconds[k]) if seconds[k] else math.nan
    return list(merged.values())


def _merged(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` as the start of a row merged from several: its metrics and errors to come."""
    kept = {k: v for k, v in record.items() if k not in ("status", "error")}
    return {**kept, "metrics": {}, "errors": {}}


def class_columns(records: Sequence[Mapping[str, Any]]) -> tuple[list[str], dict[str, str]]:
    """Table 2's columns in class order, and their labels."""
    classes = sorted({(r["extra"]["forget_class"], r["extra"]["class_name"]) for r in records})
    present = _present(records, CLASS_METRICS)
    columns = [f"{name}/{m}" for _, name in classes for m in present]
    labels = {f"{name}/{m}": f"{name} {SHORT[m]}" for _, name in classes for m in present}
    return columns, labels


Table = tuple[list[str], list[list[str]]]


def tables(records: Sequence[Mapping[str, Any]]) -> tuple[Table, Table, str]:
    """(Table 2, the averages over the forgotten classes, Table 2 as CSV); tables are
    (header, cells)."""
    columns, labels = class_columns(records)
    rows = metric_rows(by_class(records), columns, (REFERENCE,))
    averages = _averages(records)
    present = _present(averages, AVERAGE_METRICS)
    average_rows = metric_rows(averages, present, (REFERENCE,))
    return (
        metric_table(rows, columns, labels, digits=2),
        metric_table(average_rows, present, LABELS, digits=2),
        metric_csv(rows, columns),
    )


def _averages(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One record per (group, η_f, seed): each metric averaged over the forgotten classes,
    left empty where the group has not yet run every class (an average over fewer classes
    would not compare with the others), and the error instead where a class's run failed."""
    classes = {r["extra"]["forget_class"] for r in records}
    groups: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["group"], r.get("forget_lr"), r["seed"])].append(r)
    out = []
    for members in groups.values():
        complete = {r["extra"]["forget_class"] for r in members} == classes
        failed = [r["error"] for r in members if is_failed(r)]
        metrics = {
            m: sum(r["metrics"][m] for r in members) / len(members)
            for m in AVERAGE_METRICS
            if complete and not failed and all(m in r["metrics"] for r in members)
        }
        finished = [r["seconds"] for r in members if not is_failed(r)]
        row = _merged(members[0])
        row["errors"] = dict.fromkeys(AVERAGE_METRICS, failed[0]) if failed else {}
        seconds = statistics.median(finished) if finished else math.nan
        out.append({**row, "metrics": metrics, "seconds": seconds})
    return out


def report(records: Sequence[Mapping[str, Any]], out_dir: Path, title: str) -> str:
    """report.md and table.csv in Table 2's layout, with the sample grids; returns Table 2."""
    table2_cells, average_cells, table_csv = tables(records)
    table2, average = markdown(*table2_cells), markdown(*average_cells)
    first = records[0]
    evaluation = first["config"]["eval"]
    accuracy = first["extra"]["classifier_accuracy"]
    n_classes = len({r["extra"]["forget_class"] for r in records})
    intro = (
        f"{first['config']['data']['name']}, class-wise unlearning of a class-conditional "
        f"diffusion model ({first['config']['model']['kind']}), {n_classes} forgotten "
        "class(es). Table 2 of the paper: per forgotten class, FA (% of "
        f"{evaluation['forget_images']} generated images of that class that our classifier "
        "assigns to it) and FID of generated images of the remaining classes "
        f"({evaluation['images_per_class']} per class) against "
        f"{evaluation['real_per_class']} real test images per class, in the penultimate "
        f"features of our own classifier (test accuracy {accuracy:.1f}%). Row `original` is "
        "the model before unlearning. `seconds`: median unlearning time per run (training for "
        "the original). FIDs on small samples are biased upwards: compare rows, not papers."
        "\n\n"
    )
    body = intro + table2 + "\n## Averages over the forgotten classes\n\n" + average
    grids = [
        "\n## Samples (one row per class, the same noise for every model)\n\n"
        "The first seed of each row; the other seeds' grids are in `grids/`, named by seed.\n"
    ]
    # no grid: a failed run, or one read from the cache's record store (its grid is in the
    # output folder it was run for)
    drawn = [r for r in records if not is_failed(r) and (out_dir / r["extra"]["grid"]).exists()]

    def row(r: Mapping[str, Any]) -> tuple:
        return (
            r["extra"]["forget_class"],
            r["kind"] != "reference",
            r["group"],
            -(r.get("forget_lr") or 0),
        )

    first_seed: dict[tuple, int] = {}
    for r in drawn:
        first_seed[row(r)] = min(first_seed.get(row(r), r["seed"]), r["seed"])
    shown = sorted((r for r in drawn if first_seed[row(r)] == r["seed"]), key=row)
    for r in shown:
        eta = f" at η_f {r['forget_lr']:g}" if r["kind"] == "run" else ""
        grids.append(
            f"\n**{r['group']}**{eta}, forgetting {r['extra']['class_name']} (seed {r['seed']}):"
            f"\n\n![{r['group']}]({r['extra']['grid']})\n"
        )
    write_text_report(records, out_dir, title, body, "".join(dict.fromkeys(grids)), table_csv)
    return table2

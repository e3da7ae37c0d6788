"""Sweeps of classification runs: {runs} × {seeds} × {η_f grid}, one record per run.

Each seed's original model and RT are built once (cached) and shared by every run of that
seed. Records are written as runs finish, so a killed sweep restarts where it stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from dualoptim.bench.records import RecordStore, make_record, record_id
from dualoptim.bench.tables import check_one_experiment
from dualoptim.config import to_dict
from dualoptim.tasks.vision.experiment import (
    METRICS,
    UnlearnSpec,
    VisionExperiment,
    World,
    forget_split,
    load_experiment_data,
    prepare,
    reference_key,
    run_unlearning,
)

__all__ = ["METRICS", "Job", "jobs", "sweep"]


@dataclass(frozen=True)
class Job:
    """One run: ``spec`` with its η_f resolved, ``lr_scale`` = η_f / the spec's own η_f."""

    spec: UnlearnSpec
    lr_scale: float
    seed: int


def jobs(
    exp: VisionExperiment, lr_scales: Sequence[float] = (1.0,), absolute: bool = False
) -> list[Job]:
    """Every run of the sweep, the η_f the config names (×1) first, so the main table fills
    early. ``absolute``: the grid holds η_f values rather than multipliers."""
    if not lr_scales or any(not s > 0 for s in lr_scales):
        raise ValueError(f"the η_f grid must be non-empty and positive, got {list(lr_scales)}")
    out = []
    for spec in exp.runs:
        base = spec.eta_f
        for scale, eta_f in [
            (_round(v / base), v) if absolute else (v, _round(v * base)) for v in lr_scales
        ]:
            out += [Job(replace(spec, forget_lr=eta_f), scale, seed) for seed in exp.seeds]
    return sorted(out, key=lambda j: (j.lr_scale != 1.0, j.lr_scale, j.seed))


def _round(x: float) -> float:
    """3 × 1e-4 is 3.0000000000000003e-4 in floats; records and tables should say 3e-4."""
    return float(f"{x:.12g}")


def _run_id(exp: VisionExperiment, job: Job) -> str:
    return record_id("run", reference_key(exp, job.seed), exp.train_seed, job.spec, job.seed)


def _config(exp: VisionExperiment, spec: UnlearnSpec | None, seed: int) -> dict[str, Any]:
    """The whole resolved experiment as it applies to this one record."""
    return to_dict(replace(exp, runs=(spec,) if spec else exp.runs, seeds=(seed,)))


def sweep(
    exp: VisionExperiment,
    out_dir: Path | None = None,
    lr_scales: Sequence[float] = (1.0,),
    absolute: bool = False,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Run (or read back) every job of ``exp``; returns the reference and run records.

    With ``out_dir``, records go to ``out_dir/records`` and finished runs are not redone.
    """
    todo = jobs(exp, lr_scales, absolute)
    store = RecordStore(out_dir / "records") if out_dir is not None else None
    if store is not None:  # one experiment per folder, checked before anything runs
        earlier = [r for r in store if r["kind"] == "reference"]
        this = {"config": _config(exp, None, exp.seeds[0]), "seed": exp.seeds[0]}
        check_one_experiment([*earlier[:1], this])
    data = load_experiment_data(exp)
    for seed in exp.seeds:  # every forget set is checked before anything trains
        forget_split(exp, data, seed)
    worlds: dict[int, World] = {}
    references: dict[int, dict[str, Any]] = {}
    runs: list[dict[str, Any]] = []

    def world(seed: int) -> World:
        if seed not in worlds:
            worlds[seed] = prepare(exp, seed, data)
        return worlds[seed]

    def reference(seed: int) -> None:
        """RT's record of this seed: read back, or made from the (cached) RT model."""
        if seed in references:
            return
        ref_id = record_id("reference", reference_key(exp, seed))
        record = store.get(ref_id) if store is not None else None
        if record is None:
            record = make_record(
                id=ref_id,
                kind="reference",
                group="RT",
                seed=seed,
                metrics=world(seed).rt_metrics,
                seconds=world(seed).rt_seconds,
                config=_config(exp, None, seed),
            )
            if store is not None:
                store.put(record)
        references[seed] = record

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("sweep", total=len(todo))
        for job in todo:
            run_id = _run_id(exp, job)
            done = store.get(run_id) if store is not None else None
            reference(job.seed)
            if done is not None:
                runs.append(done)
                bar.advance(task)
                continue
            bar.update(
                task,
                description=f"seed {job.seed}: {job.spec.label} η_f={job.spec.eta_f:.3g}",
            )
            result = run_unlearning(job.spec, world(job.seed), job.seed)
            seconds, curves = result.pop("seconds"), result.pop("curves")
            record = make_record(
                id=run_id,
                kind="run",
                group=job.spec.label,
                seed=job.seed,
                metrics=result,
                seconds=seconds,
                curves=curves,
                config=_config(exp, job.spec, job.seed),
                method=job.spec.method,
                setting=job.spec.setting,
                lr_scale=job.lr_scale,
                forget_lr=job.spec.eta_f,
            )
            if store is not None:
                store.put(record)
            runs.append(record)
            bar.advance(task)
    return [*references.values(), *runs]

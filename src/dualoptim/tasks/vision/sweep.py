"""Sweeps of classification runs: {runs} × {seeds} × {η_f grid}, one record per run.

Each seed's original model and RT are built once (cached) and shared by every run of that
seed. Records are written as runs finish, so a killed sweep restarts where it stopped; the
store, the failed runs and the reuse across output folders are bench.sweeps'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
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

from dualoptim.bench.records import make_record, record_id
from dualoptim.bench.sweeps import (
    attempt,
    lr_grid,
    match_grid,
    note_failures,
    open_store,
    run_record,
    stored_or_made,
)
from dualoptim.config import to_dict
from dualoptim.tasks.images.sets import ImageData
from dualoptim.tasks.vision.config import METRICS, UnlearnSpec, VisionExperiment
from dualoptim.tasks.vision.experiment import (
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
    lr_grid(lr_scales)  # checks the grid
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


def _run_id(exp: VisionExperiment, data: ImageData, job: Job) -> str:
    key = reference_key(exp, data, job.seed)
    return record_id("run", key, exp.train_seed, job.spec, job.seed)


def _config(exp: VisionExperiment, spec: UnlearnSpec | None, seed: int) -> dict[str, Any]:
    """The whole resolved experiment as it applies to this one record."""
    return to_dict(replace(exp, runs=(spec,) if spec else exp.runs, seeds=(seed,)))


def sweep(
    exp: VisionExperiment,
    out_dir: Path | None = None,
    lr_scales: Sequence[float] = (1.0,),
    absolute: bool = False,
    progress: bool = False,
    retry_failed: bool = False,
) -> list[dict[str, Any]]:
    """Run (or read back) every job of ``exp``; returns the reference and run records.

    With ``out_dir``, records go to ``out_dir/records`` (and the store under ``cache_dir``):
    recorded runs are not redone, failed ones (diverged, out of memory) only with
    ``retry_failed``.
    """
    lr_grid(lr_scales)  # the grid is checked before anything is read or trained
    data = load_experiment_data(exp)
    store = open_store(out_dir, _config(exp, None, exp.seeds[0]), data.fingerprint)
    todo = jobs(exp, lr_scales if absolute else match_grid(store, lr_scales), absolute)
    for seed in exp.seeds:  # every forget set is checked before anything trains
        forget_split(exp, data, seed)
    worlds: dict[int, World] = {}
    references: dict[int, dict[str, Any]] = {}
    runs: list[dict[str, Any]] = []

    def world(seed: int) -> World:
        if seed not in worlds:
            worlds[seed] = prepare(exp, seed, data)
        return worlds[seed]

    def reference(seed: int, id: str) -> dict[str, Any]:
        """RT's record of this seed, made from the (cached) RT model."""
        return make_record(
            id=id,
            kind="reference",
            group="RT",
            seed=seed,
            metrics=world(seed).rt_metrics,
            seconds=world(seed).rt_seconds,
            config=_config(exp, None, seed),
            data_fingerprint=data.fingerprint,
        )

    def run(job: Job, id: str) -> dict[str, Any]:
        bar.update(task, description=f"seed {job.seed}: {job.spec.label} η_f={job.spec.eta_f:.3g}")
        result = attempt(partial(_unlearn, job.spec, world(job.seed), job.seed))
        return run_record(
            job.spec,
            result,
            id=id,
            setting=job.spec.setting,
            seed=job.seed,
            scale=job.lr_scale,
            config=_config(exp, job.spec, job.seed),
            task="vision",
            extra={},
            data_fingerprint=data.fingerprint,
        )

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
            if job.seed not in references:
                ref_id = record_id("reference", reference_key(exp, data, job.seed))
                make = partial(reference, job.seed, ref_id)
                references[job.seed] = stored_or_made(store, ref_id, make)
            run_id = _run_id(exp, data, job)
            runs.append(stored_or_made(store, run_id, partial(run, job, run_id), retry_failed))
            bar.advance(task)
    note_failures(runs)
    return [*references.values(), *runs]


def _unlearn(spec: UnlearnSpec, world: World, seed: int) -> dict[str, Any]:
    """run_unlearning's result in the shape every task's run record is made from (the
    classification records keep no step counts)."""
    result = run_unlearning(spec, world, seed)
    seconds, curves = result.pop("seconds"), result.pop("curves")
    return {"metrics": result, "steps": {}, "seconds": seconds, "curves": curves}

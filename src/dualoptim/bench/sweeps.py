"""The one sweep: any task's runs × seeds × an η_f grid, one record per run.

Through the Task protocol (``unlearn/task.py``) a task says what its runs and references
are; this module does the rest for every task: checks the grid and the output folder before
anything trains, reads back what is recorded instead of running it again, makes each
reference just before the first run compared with it, records a run that diverged or ran
out of memory as a failed run and goes on, writes each record as its run finishes (a killed
sweep resumes where it stopped), and shows progress.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from dualoptim.bench.records import make_record
from dualoptim.bench.store import labelled, match_grid, open_store, stored_or_made
from dualoptim.bench.tables import summarize
from dualoptim.tasks import registry
from dualoptim.unlearn.errors import RunDivergedError
from dualoptim.unlearn.task import Job, Outcome, Plan, Reference, RunSpec, Task, is_failed


def lr_grid(lr_scales: Sequence[float]) -> list[float]:
    """The η_f multiples, ×1 first (the configured runs come before the grid's)."""
    if not lr_scales or any(not s > 0 for s in lr_scales):
        raise ValueError(f"the η_f grid must be non-empty and positive, got {list(lr_scales)}")
    return sorted(lr_scales, key=lambda s: s != 1.0)


def scaled(eta: float, scale: float) -> float:
    """η·scale rounded to 12 significant digits, so ids and tables never show 3.0000000004e-05."""
    return float(f"{eta * scale:.12g}")


def at_scale(spec: RunSpec, scale: float) -> RunSpec:
    """``spec`` with its η_f multiplied by ``scale``."""
    return replace(spec, forget_lr=scaled(spec.effective_forget_lr, scale))


def at_grid(
    runs: Sequence[RunSpec], grid: Sequence[float], absolute: bool = False
) -> list[tuple[RunSpec, float]]:
    """Each run at each grid point: (the run with its η_f set, the η_f multiple). ``grid``
    holds multiples of each run's η_f, or with ``absolute`` the η_f values themselves."""
    out = []
    for spec in runs:
        base = spec.effective_forget_lr
        for value in grid:
            scale, eta = (
                (scaled(value / base, 1), value) if absolute else (value, scaled(base, value))
            )
            out.append((replace(spec, forget_lr=eta), scale))
    return out


def attempt(run: Callable[[], Outcome]) -> tuple[Outcome, dict[str, Any] | None]:
    """``run()``'s outcome and None; for a run that diverged (non-finite loss) or ran out of
    memory, an empty outcome (its seconds only) and what failed, at which optimizer step.
    Any other error is a bug or a bad input and ends the sweep (the records written so far
    stay)."""
    import torch

    start = time.perf_counter()
    try:
        return run(), None
    except (RunDivergedError, MemoryError, torch.OutOfMemoryError) as err:
        failure = {
            "type": type(err).__name__,
            "message": str(err),
            "step": getattr(err, "step", None),
        }
        return Outcome({}, time.perf_counter() - start), failure


def note_failures(records: Iterable[Mapping[str, Any]]) -> None:
    """One line at the end of a sweep when runs failed: the report shows which."""
    failed = sum(is_failed(r) for r in records)
    if failed:
        print(f"{failed} run{'s' if failed > 1 else ''} failed (see report)")


def reference_record(task: str, ref: Reference, outcome: Outcome, data: str | None) -> dict:
    return make_record(
        id=ref.id,
        kind="reference",
        group=ref.group,
        seed=ref.seed,
        metrics=outcome.metrics,
        seconds=outcome.seconds,
        config=ref.config,
        task=task,
        extra=outcome.extra,
        data_fingerprint=data,
    )


def run_record(
    task: str, job: Job, outcome: Outcome, failure: Mapping[str, Any] | None, data: str | None
) -> dict[str, Any]:
    """The record of one run: its metrics with the engine's step counts as ``steps/forget``
    … (Joint makes fewer steps), its curves and time; a failed run's with its error."""
    steps = {f"steps/{k}": float(v) for k, v in outcome.steps.items()}
    return make_record(
        id=job.id,
        kind="run",
        group=job.group,
        seed=job.seed,
        metrics={**outcome.metrics, **steps},
        seconds=outcome.seconds,
        curves=outcome.curves,
        config=job.config,
        method=job.method,
        setting=job.setting,
        lr_scale=job.lr_scale,
        forget_lr=job.forget_lr,
        task=task,
        extra={**job.extra, **outcome.extra},
        data_fingerprint=data,
        failure=failure,
    )


def plan_jobs(
    plan: Plan, runs: Sequence[RunSpec], grid: Sequence[float], absolute: bool = False
) -> list[Job]:
    """Every run of the sweep (``runs``: the config's), the configured η_f (×1) first, then
    the grid's multiples from the smallest; within a multiple seed by seed, so one seed's
    table fills early."""
    lr_grid(grid)
    jobs = [job for spec, scale in at_grid(runs, grid, absolute) for job in plan.jobs(spec, scale)]
    return sorted(jobs, key=lambda j: (j.lr_scale != 1.0, j.lr_scale, j.seed))


def sweep(
    config: Any,
    out_dir: Path | None = None,
    grid: Sequence[float] = (1.0,),
    absolute: bool = False,
    progress: bool = False,
    retry_failed: bool = False,
    extend: int = 0,
    tuned_seeds: int = 0,
) -> list[dict[str, Any]]:
    """Run (or read back) every run of ``config`` (of the task its ``task`` names) at each
    grid point; returns the reference records, then the run records.

    With ``out_dir``, records go to ``out_dir/records`` (and the store under the config's
    ``cache_dir``): recorded runs are not redone, failed ones (diverged, out of memory) only
    with ``retry_failed``. Tasks with a Gap (SPEC §3.4): ``extend``, up to that many rounds
    of one more ×3 step past each best η_f that sits at its grid's edge; then
    ``tuned_seeds``, each tuned η_f run again on new seeds (after the config's) until it
    has that many, for a main table and claims on more seeds than tuning needed."""
    lr_grid(grid)  # the grid is checked before anything is read or trained
    task = registry.get(config.task)
    if (extend or tuned_seeds) and task.layout.gap_to is None:
        raise ValueError(
            f"{task.name} tables have no Gap to tune η_f on: --extend and --tuned-seeds need "
            "one; give the grid and seeds you want instead"
        )
    if 0 < tuned_seeds < len(config.seeds):
        raise ValueError(
            f"--tuned-seeds {tuned_seeds} is fewer than the config's {len(config.seeds)} seeds"
        )
    plan = task.plan(config, out_dir, progress)
    store = open_store(out_dir, plan.store_config(), plan.fingerprint)
    grid = grid if absolute else match_grid(store, grid)
    todo = plan_jobs(plan, config.runs, grid, absolute)
    references = {ref.id: ref for ref in plan.references()}
    made: dict[str, dict[str, Any]] = {}

    def reference(id: str) -> None:
        if id not in made:
            made[id] = stored_or_made(store, id, partial(_reference, task, references[id], plan))

    def run_all(jobs: list[Job]) -> list[dict[str, Any]]:
        out = []
        # progress on a terminal only: a log or a pipe gets the records, not bar frames
        with tqdm(total=len(jobs), desc="sweep", disable=None if progress else True) as bar:
            for job in jobs:
                for id in job.references:
                    reference(id)
                bar.set_description(job.description)
                run = partial(_run, task, job, plan)
                out.append(labelled(store, stored_or_made(store, job.id, run, retry_failed), job))
                bar.update()
        return out

    runs = run_all(todo)
    for id in references:  # references no run is compared with are recorded too
        reference(id)
    for _ in range(extend):
        beyond = past_edges(task, plan, config.runs, [*made.values(), *runs])
        if not beyond:
            break
        runs += run_all(beyond)
    if tuned_seeds > len(config.seeds):
        more = replace(config, seeds=new_seeds(config.seeds, tuned_seeds))
        more = task.plan(more, out_dir, progress)
        references.update((ref.id, ref) for ref in more.references())
        runs += run_all(at_tuned(task, more, config.runs, [*made.values(), *runs]))
    note_failures(runs)
    return [*(made[id] for id in references), *runs]


def past_edges(
    task: Task, plan: Plan, specs: Sequence[RunSpec], records: Sequence[Mapping[str, Any]]
) -> list[Job]:
    """The jobs of one more ×3 step past each best η_f at the edge of its grid (both ways for
    a run tried at one η_f only), seed by seed."""
    summary = summarize(records, task.layout.metrics, task.layout.gap_to)
    by_label = {spec.label: spec for spec in specs}
    jobs = []
    for row in summary.tuned():
        spec = by_label.get(row.group)
        for side in summary.edges(row) if spec is not None else ():
            scale = scaled(row.lr_scale, 1 / 3 if side == "lowest" else 3)
            jobs += plan.jobs(at_scale(spec, scale), scale)
    return sorted(jobs, key=lambda j: (j.lr_scale, j.seed))


def new_seeds(seeds: Sequence[int], total: int) -> tuple[int, ...]:
    """The seeds after ``seeds`` that bring them to ``total``."""
    return tuple(range(max(seeds) + 1, max(seeds) + 1 + total - len(seeds)))


def at_tuned(
    task: Task, plan: Plan, specs: Sequence[RunSpec], records: Sequence[Mapping[str, Any]]
) -> list[Job]:
    """``plan``'s jobs (its seeds) of each run at its tuned η_f, seed by seed."""
    summary = summarize(records, task.layout.metrics, task.layout.gap_to)
    by_label = {spec.label: spec for spec in specs}
    jobs = []
    for row in summary.tuned():
        spec = by_label.get(row.group)
        if spec is not None:
            jobs += plan.jobs(at_scale(spec, row.lr_scale), row.lr_scale)
    return sorted(jobs, key=lambda j: (j.seed, j.group))


def _reference(task: Task, ref: Reference, plan: Plan) -> dict[str, Any]:
    return reference_record(task.name, ref, ref.make(), plan.fingerprint)


def _run(task: Task, job: Job, plan: Plan) -> dict[str, Any]:
    return run_record(task.name, job, *attempt(job.run), plan.fingerprint)

"""What every task's sweep does around its own runs: check the η_f grid and the output
folder, read a run's record back instead of running it again (from the folder, or from the
experiment's store under ``cache_dir`` when another folder ran it), and record a run that
diverged or ran out of memory as a failed run, so the sweep goes on with the next."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from dualoptim.bench.records import (
    RecordStore,
    RecordWriteError,
    is_failed,
    keep_elsewhere,
    make_record,
)
from dualoptim.bench.tables import check_one_experiment, experiment
from dualoptim.errors import WriteError
from dualoptim.unlearn.errors import RunDivergedError

#: How near (relative) a grid multiple must be to a recorded run's to be taken as it.
GRID_MATCH = 1e-3


def lr_grid(lr_scales: Sequence[float]) -> list[float]:
    """The η_f multiples, ×1 first (the configured runs come before the grid's)."""
    if not lr_scales or any(not s > 0 for s in lr_scales):
        raise ValueError(f"the η_f grid must be non-empty and positive, got {list(lr_scales)}")
    return sorted(lr_scales, key=lambda s: s != 1.0)


def scaled(eta: float, scale: float) -> float:
    """η·scale rounded to 12 significant digits, so ids and tables never show 3.0000000004e-05."""
    return float(f"{eta * scale:.12g}")


class SweepStore:
    """A sweep's records: its output folder's, backed by the store of every run under the
    experiment's ``cache_dir`` (``<cache_dir>/records``). A run recorded for one output
    folder is copied, not run again, for another: the record id decides."""

    def __init__(
        self,
        folder: RecordStore,
        shared: RecordStore | None,
        config: Mapping[str, Any],
        data: str | None,
    ) -> None:
        self.folder, self.shared = folder, shared
        self.experiment, self.data = experiment(config), data

    def get(self, id: str) -> dict[str, Any] | None:
        record = self.folder.get(id)
        if record is None and self.shared is not None:
            record = self.shared.get(id)
            if record is not None:
                self._write([self.folder], record)
        return record

    def put(self, record: Mapping[str, Any]) -> None:
        """Into the cache's store first, then the folder (a report reads the folder)."""
        self._write([s for s in (self.shared, self.folder) if s is not None], record)

    def _write(self, stores: Iterable[RecordStore], record: Mapping[str, Any]) -> None:
        """Write ``record`` to each store; where one cannot take it (full disk, no
        permission), the record is kept elsewhere and the error says where: a computed
        result is never lost to a failed write."""
        failed, kept = [], []
        for store in stores:
            path = store.path(record["id"])
            try:
                store.put(record)
                kept.append(path)
            except OSError as err:
                failed.append(str(err) if isinstance(err, WriteError) else f"{path}: {err}")
        if failed:
            if kept:
                where = f"{kept[0]}, where a rerun finds it"
            else:
                target = self.folder.path(record["id"])
                where = f"{keep_elsewhere(record)}: copy it to {target}, then rerun"
            raise RecordWriteError(
                f"cannot write the record of {record['group']} (seed {record['seed']}): "
                f"{'; '.join(failed)}. The record is kept in {where}"
            )

    def recorded_scales(self) -> set[float]:
        """The η_f multiples of this experiment's runs in the folder and the cache's store."""
        return {
            r["lr_scale"]
            for store in (self.folder, self.shared)
            if store is not None
            for r in store
            if r["kind"] == "run"
            and r.get("data") == self.data
            and experiment(r["config"]) == self.experiment
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.folder)


def open_store(
    out_dir: Path | None, config: Mapping[str, Any], data: str | None = None
) -> SweepStore | None:
    """The folder's record store (None: keep nothing), backed by the store under the
    config's ``cache_dir``. Refuses, before anything runs, a folder that cannot take records
    or whose records come from another experiment (data, model, training) or were made on
    other data (``data``: the fingerprint of this experiment's)."""
    if out_dir is None:
        return None
    cache_dir = config.get("cache_dir")
    shared = RecordStore(Path(cache_dir) / "records") if cache_dir is not None else None
    store = SweepStore(RecordStore(out_dir / "records"), shared, config, data)
    for records in (store.folder, shared):
        if records is not None:
            records.check_writable()
    earlier = [r for r in store if r["kind"] == "reference"]
    check_one_experiment([*earlier[:1], {"config": dict(config), "seed": 0, "data": data}], out_dir)
    return store


def match_grid(store: SweepStore | None, lr_scales: Sequence[float]) -> list[float]:
    """The grid with each multiple within GRID_MATCH (relative) of a recorded run's multiple
    of this experiment replaced by that one: ``0.333`` finds the runs at ×0.333333333333
    instead of running them again at a step size that differs in the third digit."""
    recorded = sorted(store.recorded_scales()) if store is not None else []
    out, notes = [], []
    for scale in lr_scales:
        near = [r for r in recorded if r != scale and abs(r - scale) <= GRID_MATCH * r]
        if near:
            notes.append(f"×{scale:g} as ×{near[0]:.12g}")
            scale = near[0]
        out.append(scale)
    if notes:
        print(f"note: η_f grid matched to the recorded runs: {', '.join(notes)}")
    return list(dict.fromkeys(out))


def stored_or_made(
    store: SweepStore | None,
    id: str,
    make: Callable[[], dict[str, Any]],
    retry_failed: bool = False,
) -> dict[str, Any]:
    """The record ``id`` from ``store`` when it is there, else ``make()``'s, stored at once.
    A failed run's record counts as there (a rerun does not repeat a divergence) unless
    ``retry_failed``."""
    record = store.get(id) if store is not None else None
    if record is None or (retry_failed and is_failed(record)):
        record = make()
        if store is not None:
            store.put(record)
    return record


def attempt(run: Callable[[], Mapping[str, Any]]) -> Mapping[str, Any]:
    """``run()``'s result; for a run that diverged (non-finite loss) or ran out of memory,
    the result of a failed run instead: what failed, at which optimizer step, after how many
    seconds. Any other error is a bug or a bad input and ends the sweep (the records written
    so far stay)."""
    import torch

    start = time.perf_counter()
    try:
        return run()
    except (RunDivergedError, MemoryError, torch.OutOfMemoryError) as err:
        failure = {
            "type": type(err).__name__,
            "message": str(err),
            "step": getattr(err, "step", None),
        }
        seconds = time.perf_counter() - start
        return {"metrics": {}, "steps": {}, "curves": {}, "seconds": seconds, "failure": failure}


def note_failures(records: Iterable[Mapping[str, Any]]) -> None:
    """One line at the end of a sweep when runs failed: the report shows which."""
    failed = sum(is_failed(r) for r in records)
    if failed:
        print(f"{failed} run{'s' if failed > 1 else ''} failed (see report)")


class RunSpec(Protocol):
    """What a run record needs of a task's run spec."""

    @property
    def label(self) -> str: ...

    @property
    def method(self) -> str: ...

    @property
    def eta_f(self) -> float: ...


def run_record(
    spec: RunSpec,
    result: Mapping[str, Any],
    *,
    id: str,
    setting: str,
    seed: int,
    scale: float,
    config: Mapping[str, Any],
    task: str,
    extra: Mapping[str, Any],
    data_fingerprint: str | None = None,
) -> dict[str, Any]:
    """The record of one run: its metrics, with the engine's step counts as ``steps/forget``
    … (Joint makes fewer steps), its curves and time, under the spec's label; a failed run's
    (``attempt``) with its error instead."""
    steps = {f"steps/{k}": float(v) for k, v in result["steps"].items()}
    return make_record(
        id=id,
        kind="run",
        group=spec.label,
        seed=seed,
        metrics={**result["metrics"], **steps},
        seconds=result["seconds"],
        curves=result["curves"],
        config=dict(config),
        method=spec.method,
        setting=setting,
        lr_scale=scale,
        forget_lr=spec.eta_f,
        task=task,
        extra=dict(extra),
        data_fingerprint=data_fingerprint,
        failure=result.get("failure"),
    )

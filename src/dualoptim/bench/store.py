"""A sweep's records: its output folder's, backed by the store of every run under the
experiment's ``cache_dir``. The folder is checked before anything runs; a run already recorded
(here, or for another folder) is read back, not run again; a result that cannot be written is
kept elsewhere, never lost."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from dualoptim.bench.records import RecordStore, RecordWriteError, keep_elsewhere
from dualoptim.bench.tables import check_one_experiment, experiment
from dualoptim.distributed import is_main
from dualoptim.errors import WriteError
from dualoptim.unlearn.task import Job, is_failed

#: How near (relative) a grid multiple must be to a recorded run's to be taken as it.
GRID_MATCH = 1e-3


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
        """Into the cache's store first, then the folder (a report reads the folder); in a
        multi-process run by the first process only (every process made the same record)."""
        if is_main():
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


def labelled(store: SweepStore | None, record: dict[str, Any], job: Job) -> dict[str, Any]:
    """``record`` under its run's label as the code gives it now, stored so: the id decides
    which run a record is, the label only names its row, and a record read back under an
    older label would split one run's seeds into two rows."""
    if record["group"] == job.group:
        return record
    record = {**record, "group": job.group}
    if store is not None:
        store.put(record)
    return record

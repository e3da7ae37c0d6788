"""What every task's sweep does around its own runs: check the η_f grid and the output
folder, and read a finished run's record back instead of running it again."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from dualoptim.bench.records import RecordStore, make_record
from dualoptim.bench.tables import check_one_experiment


def lr_grid(lr_scales: Sequence[float]) -> list[float]:
    """The η_f multiples, ×1 first (the configured runs come before the grid's)."""
    if not lr_scales or any(not s > 0 for s in lr_scales):
        raise ValueError(f"the η_f grid must be non-empty and positive, got {list(lr_scales)}")
    return sorted(lr_scales, key=lambda s: s != 1.0)


def scaled(eta: float, scale: float) -> float:
    """η·scale rounded to 12 significant digits, so ids and tables never show 3.0000000004e-05."""
    return float(f"{eta * scale:.12g}")


def open_store(out_dir: Path | None, config: Mapping[str, Any]) -> RecordStore | None:
    """The folder's record store (None: keep nothing). Refuses, before anything runs, a
    folder whose records come from another experiment (data, model, training)."""
    if out_dir is None:
        return None
    store = RecordStore(out_dir / "records")
    earlier = [r for r in store if r["kind"] == "reference"]
    check_one_experiment([*earlier[:1], {"config": dict(config), "seed": 0}])
    return store


def stored_or_made(
    store: RecordStore | None, id: str, make: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """The record ``id`` from ``store`` when it is there, else ``make()``'s, stored at once."""
    record = store.get(id) if store is not None else None
    if record is None:
        record = make()
        if store is not None:
            store.put(record)
    return record


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
) -> dict[str, Any]:
    """The record of one finished run: its metrics, with the engine's step counts as
    ``steps/forget`` … (Joint makes fewer steps), its curves and time, under the spec's label."""
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
    )

"""What a task (classification, TOFU, diffusion, yours) tells the one sweep in ``bench``: its
config class, the reference models a config needs, the runs of one method at one η_f, how a
run produces its outcome, and how its tables are laid out. The sweep does everything else
(the η_f grid, the record store, skipping finished runs, failed runs, progress, reports), so
a new task is a config class and an object with this shape, registered in
``tasks/registry.py`` or from the user's own module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from dualoptim.config import to_dict

#: The group of a task's reference that is its untouched original model: a row in every
#: table, since a method that does not beat it has not unlearned anything (SPEC §3.4).
NO_UNLEARNING = "no unlearning"


def record_config(config: Any, run: Any | None, seed: int) -> dict[str, Any]:
    """The whole resolved config as it applies to one record: its one run (all of them for a
    reference's record) and its one seed."""
    runs = (run,) if run is not None else config.runs
    return to_dict(replace(config, runs=runs, seeds=(seed,)))


def is_failed(record: Mapping[str, Any]) -> bool:
    """Whether ``record`` is of a failed run (records without a status are finished)."""
    return record.get("status", "finished") == "failed"


@dataclass(frozen=True)
class Outcome:
    """What one run (or one reference model's evaluation) measured."""

    metrics: Mapping[str, float]
    seconds: float
    steps: Mapping[str, int] = field(default_factory=dict)  # optimizer steps per phase
    curves: Mapping[str, Any] = field(default_factory=dict)  # {name: [[step, value], ...]}
    extra: Mapping[str, Any] = field(default_factory=dict)  # texts, file names: not numbers


@dataclass(frozen=True)
class Reference:
    """A model every run of a seed (or of a forgotten class) is compared with: RT, the target,
    the retain model, the original. Measured once, recorded, read back afterwards."""

    id: str
    group: str  # its row in the tables
    seed: int
    config: Mapping[str, Any]  # the record's config
    make: Callable[[], Outcome]


@dataclass(frozen=True)
class Job:
    """One run: a method under a setting at one η_f (``forget_lr``, ``lr_scale`` × the run's
    configured one) for one seed. ``references``: the ids of the references it is compared
    with, made before it; ``extra``: what its record carries whether it finishes or fails."""

    id: str
    group: str
    method: str
    setting: str
    lr_scale: float
    forget_lr: float
    seed: int
    config: Mapping[str, Any]
    run: Callable[[], Outcome]
    references: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def description(self) -> str:
        return f"seed {self.seed}: {self.group} η_f={self.forget_lr:.3g}"


class RunSpec(Protocol):
    """A configured run: ``forget_lr`` as written (None: the method's default), the η_f in
    effect, and its row label."""

    forget_lr: float | None

    @property
    def effective_forget_lr(self) -> float: ...

    @property
    def label(self) -> str: ...


class Plan(Protocol):
    """One config, prepared: data loaded and checked, everything a run shares at hand."""

    #: Content hash of the data the runs are made on (``io.fingerprint``).
    fingerprint: str | None

    def store_config(self) -> Mapping[str, Any]:
        """The config an output folder's earlier records must share (same experiment)."""
        ...

    def references(self) -> list[Reference]: ...

    def jobs(self, spec: RunSpec, lr_scale: float) -> list[Job]:
        """``spec`` (its η_f already set) over the seeds (and forgotten classes)."""
        ...


Better = Literal["higher", "lower"]


@dataclass(frozen=True)
class Column:
    metric: str
    label: str
    better: Better | None = None  # None: neither (Gap-to-reference columns, counts)


@dataclass(frozen=True)
class Layout:
    """A task's tables as data.

    ``gap_to``: the tables compare each run with this reference of the same seed (Gap,
    SPEC §3.1) and the sweep can tune η_f by it; otherwise plain mean ± std per metric.
    ``split_by``/``split_name``: extra fields naming a sub-experiment each run belongs to
    (diffusion: the forgotten class), giving ``columns`` once per value, then ``averages``
    over the values. ``curves``: metrics plotted during unlearning, a figure per η_f
    multiple, with the last of ``references`` dashed. ``headline``: see below."""

    columns: tuple[Column, ...]
    references: tuple[str, ...]
    gap_to: str | None = None
    split_by: str | None = None
    split_name: str | None = None
    averages: tuple[Column, ...] = ()
    averages_title: str = "Averages"
    curves: tuple[str, ...] = ()
    curves_title: str = "Metrics during unlearning"
    digits: int = 3
    #: Tables without a Gap: the metrics whose paired differences (DO, DO+ − Alternate)
    #: decide the claims table (SPEC §3.4).
    headline: tuple[Column, ...] = ()
    #: The metric of retained utility whose fall over a sequence of forget requests is its
    #: drift (continual unlearning: TA for classification, MU for TOFU); None = no drift.
    utility: str | None = None

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(c.metric for c in self.columns)

    @property
    def labels(self) -> dict[str, str]:
        return {c.metric: c.label for c in self.columns}


Cells = tuple[list[str], list[list[str]]]  # (header, rows of cells)


class Task(Protocol):
    """A task: subclass it (for the report texts' defaults) or match its shape."""

    name: str
    config_class: type
    layout: Layout

    def plan(self, config: Any, out_dir: Path | None, progress: bool) -> Plan:
        """Load and check everything ``config`` needs before anything trains; ``out_dir``
        (None: keep nothing) is where runs may leave files beside their records (images)."""
        ...

    def reference_models(self, config: Any, command: str) -> Cells:
        """``train``/``retrain``/``evaluate``: build (or load) the reference models and
        tabulate them."""
        ...

    def intro(self, records: Sequence[Mapping[str, Any]]) -> str:  # noqa: ARG002
        """The report's words before its tables: what was measured, on what."""
        return ""

    def appendix(self, records: Sequence[Mapping[str, Any]], out_dir: Path) -> str:  # noqa: ARG002
        """The report's part after its tables and figures (samples, generations)."""
        return ""

    def run_options(self, run: Mapping[str, Any]) -> Mapping[str, Any]:
        """The options of a run's config (as recorded) that the report's recipe lists."""
        return run

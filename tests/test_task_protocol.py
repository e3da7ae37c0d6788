"""A task and its method defined in this file alone run through bench and the CLI end to end:
the sweep, the record store, read-back, tuning and the report need no edit anywhere else.

The toy task: least-squares regression whose first rows are to be forgotten. RT is the least-
squares fit on the retain rows; a run starts from the fit on all rows and, under any optimizer
setting, ascends the forget rows' error while descending the retain rows'."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from dualoptim.bench import task_report
from dualoptim.bench.records import RecordStore
from dualoptim.bench.sweeps import scaled, sweep
from dualoptim.cli import main
from dualoptim.config import ConfigError, to_dict
from dualoptim.io import fingerprint, record_id
from dualoptim.optim.settings import Setting, build_optimizer
from dualoptim.tasks import registry
from dualoptim.unlearn import EngineConfig, RunState, Schedule, unlearn
from dualoptim.unlearn.task import Column, Job, Layout, Outcome, Reference, Task, record_config

FEATURES = 4


@dataclass(frozen=True)
class ToyRun:
    method: str = "ga+gd"
    setting: str = "dual"
    forget_lr: float | None = None
    steps: int = 15

    @property
    def effective_forget_lr(self) -> float:
        return self.forget_lr if self.forget_lr is not None else 0.02

    @property
    def label(self) -> str:
        return f"{self.method} ({self.setting})"


@dataclass(frozen=True)
class ToyConfig:
    task: str = "toy"
    rows: int = 48
    forget_rows: int = 8
    runs: tuple[ToyRun, ...] = (ToyRun(setting="alternate"), ToyRun())
    seeds: tuple[int, ...] = (0, 1)


class GAGD:
    """The toy method: ascend the forget rows' squared error, descend the retain rows'."""

    name = "ga+gd"

    def setup(self, model: nn.Module, optimizer: Any, run: RunState) -> None:
        """Nothing to prepare: no mask, no teacher."""

    def forget_loss(self, model: nn.Module, batch: tuple[Tensor, Tensor], _: RunState):
        x, y = batch
        return -nn.functional.mse_loss(model(x), y)

    def retain_loss(self, model: nn.Module, batch: tuple[Tensor, Tensor], _: RunState):
        x, y = batch
        return nn.functional.mse_loss(model(x), y)


METHODS = {"ga+gd": GAGD}


@dataclass(frozen=True)
class Rows:
    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor]:
        return self.x[index], self.y[index]


def _fit(rows: Rows) -> Tensor:
    return torch.linalg.lstsq(rows.x, rows.y).solution.T  # (1, FEATURES)


def _errors(weight: Tensor, forget: Rows, retain: Rows) -> dict[str, float]:
    def mse(rows: Rows) -> float:
        return float(((rows.x @ weight.T - rows.y) ** 2).mean())

    return {"forget_mse": mse(forget), "retain_mse": mse(retain)}


@dataclass
class ToyPlan:
    config: ToyConfig
    made: list[tuple[str, float, int]]  # (group, η_f, seed) of every run made

    @property
    def fingerprint(self) -> str:
        return fingerprint(*(self.data(seed) for seed in self.config.seeds))

    def data(self, seed: int) -> tuple[Rows, Rows]:
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(self.config.rows, FEATURES, generator=generator)
        y = x @ torch.arange(1.0, FEATURES + 1)[:, None]
        y = y + 0.5 * torch.randn(self.config.rows, 1, generator=generator)
        k = self.config.forget_rows
        return Rows(x[:k], y[:k]), Rows(x[k:], y[k:])

    def store_config(self) -> dict[str, Any]:
        return to_dict(self.config)

    def references(self) -> list[Reference]:
        return [
            Reference(record_id("toy-rt", s), "RT", s, to_dict(self.config), partial(self._rt, s))
            for s in self.config.seeds
        ]

    def _rt(self, seed: int) -> Outcome:
        forget, retain = self.data(seed)
        return Outcome(_errors(_fit(retain), forget, retain), 0.01)

    def jobs(self, spec: ToyRun, lr_scale: float) -> list[Job]:
        return [
            Job(
                id=record_id("toy-run", spec, seed),
                group=spec.label,
                method=spec.method,
                setting=spec.setting,
                lr_scale=lr_scale,
                forget_lr=spec.effective_forget_lr,
                seed=seed,
                config=record_config(self.config, spec, seed),
                run=partial(self._unlearn, spec, seed),
                references=(record_id("toy-rt", seed),),
            )
            for seed in self.config.seeds
        ]

    def _unlearn(self, spec: ToyRun, seed: int) -> Outcome:
        self.made.append((spec.label, spec.effective_forget_lr, seed))
        forget, retain = self.data(seed)
        model = nn.Linear(FEATURES, 1, bias=False)
        with torch.no_grad():
            model.weight.copy_(
                _fit(Rows(torch.cat([forget.x, retain.x]), torch.cat([forget.y, retain.y])))
            )
        optimizer = build_optimizer(
            spec.setting,
            model.parameters(),
            forget={"name": "adamw", "weight_decay": 0.0},
            retain={"name": "sgd", "momentum": 0.9},
            forget_lr=spec.effective_forget_lr,
            retain_lr=0.02,
        )
        schedule = Schedule(spec.steps, forget_steps=1, retain_steps=1)
        config = EngineConfig(
            schedule, forget_batch=4, retain_batch=8, joint=Setting(spec.setting).joint,
            seed=seed, progress=False,
        )  # fmt: skip
        result = unlearn(model, METHODS[spec.method](), forget, retain, optimizer, config)
        metrics = _errors(model.weight.detach(), forget, retain)
        return Outcome(metrics, result.seconds, steps=result.steps, extra={"rows": len(forget)})


class ToyTask(Task):
    name = "toy"
    config_class = ToyConfig
    layout = Layout(
        columns=(
            Column("forget_mse", "forget MSE", "higher"),
            Column("retain_mse", "retain MSE", "lower"),
        ),
        references=("RT",),
        gap_to="RT",
    )

    def __init__(self) -> None:
        self.made: list[tuple[str, float, int]] = []

    def plan(self, config: ToyConfig, out_dir: Path | None, progress: bool) -> ToyPlan:  # noqa: ARG002
        return ToyPlan(config, self.made)

    def reference_models(self, config: ToyConfig, command: str) -> tuple[list, list]:
        """train: nothing to train (the fits are exact); retrain/evaluate: RT per seed."""
        if command == "train":
            return ["model"], [["least squares: no training"]]
        plan = ToyPlan(config, self.made)
        rows = [[f"RT seed {s}", f"{plan._rt(s).metrics['retain_mse']:.3f}"] for s in config.seeds]
        return ["model", "retain MSE"], rows

    def intro(self, records: Any) -> str:
        return f"Toy regression, {len(records)} records.\n\n"


@pytest.fixture
def toy() -> Iterator[ToyTask]:
    task = registry.register(ToyTask())
    yield task
    registry.unregister(task.name)


def test_a_task_from_a_test_file_runs_through_bench_and_reads_back(
    toy: ToyTask, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    records = sweep(ToyConfig(), out, [1.0, 3.0])
    references, runs = records[:2], records[2:]
    assert [(r["kind"], r["group"], r["seed"]) for r in references] == [
        ("reference", "RT", 0), ("reference", "RT", 1),
    ]  # fmt: skip
    assert len(runs) == 2 * 2 * 2  # runs × grid × seeds
    assert {r["task"] for r in records} == {"toy"}
    assert len({r["data"] for r in records}) == 1
    assert sorted({(r["group"], r["forget_lr"], r["lr_scale"]) for r in runs}) == [
        ("ga+gd (alternate)", 0.02, 1.0), ("ga+gd (alternate)", 0.06, 3.0),
        ("ga+gd (dual)", 0.02, 1.0), ("ga+gd (dual)", 0.06, 3.0),
    ]  # fmt: skip
    for run in runs:
        rt = next(r for r in references if r["seed"] == run["seed"])
        assert run["metrics"]["forget_mse"] > rt["metrics"]["forget_mse"]  # it forgot
        assert run["metrics"]["steps/forget"] == 15.0
        assert run["extra"] == {"rows": 8}
        assert run["config"]["runs"][0]["forget_lr"] == run["forget_lr"]
    assert len(toy.made) == 8

    toy.made.clear()
    again = sweep(ToyConfig(), out, [1.0, 3.0])
    assert toy.made == []  # every run read back from the records
    assert [r["id"] for r in again] == [r["id"] for r in records]
    assert len(RecordStore(out / "records")) == 10

    shown = task_report.rebuild(out)
    report = (out / "report.md").read_text()
    assert report.startswith("# out\n\nToy regression, 10 records.\n\n")
    assert "| RT " in report
    assert "Sensitivity to η_f" in report
    assert {group for group, _ in shown.tuned} == {"ga+gd (alternate)", "ga+gd (dual)"}
    written = report
    task_report.rebuild(out)
    assert (out / "report.md").read_text() == written  # the records alone decide the report


def test_a_task_from_a_test_file_runs_through_the_command_line(
    toy: ToyTask, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "toy.yaml"
    config.write_text("task: toy\nseeds: [3]\nruns: [{method: ga+gd, setting: dual, steps: 5}]\n")
    assert main(["bench", "--config", str(config), "--grid", "1", "2", "--out", str(tmp_path)]) == 0
    assert toy.made == [("ga+gd (dual)", 0.02, 3), ("ga+gd (dual)", 0.04, 3)]
    printed = capsys.readouterr().out
    assert "toy: 1 seeds" in printed
    assert (tmp_path / "toy" / "report.md").exists()
    assert main(["tune", "--config", str(config), "--out", str(tmp_path), "--grid", "0.01"]) == 0
    assert "best η_f (lowest mean Gap): ga+gd (dual)" in capsys.readouterr().out
    assert main(["evaluate", "--config", str(config)]) == 0
    assert "RT seed 3" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "toy")]) == 0


@pytest.mark.usefixtures("toy")
def test_task_names_are_checked() -> None:
    with pytest.raises(ValueError, match="a task named 'toy' is already registered"):
        registry.register(ToyTask())
    with pytest.raises(ValueError, match="a task named 'vision' is already registered"):
        registry.register(replace_name(ToyTask(), "vision"))
    with pytest.raises(ConfigError, match=r"task: got 'nlp'; allowed values: .*'toy'"):
        registry.get("nlp")


def replace_name(task: ToyTask, name: str) -> ToyTask:
    task.name = name
    return task


def test_the_grid_extends_by_x3_steps_until_the_best_eta_has_neighbours_or_the_cap(
    toy: ToyTask, tmp_path: Path
) -> None:
    """From ×1 alone, each round adds one ×3 step past every best η_f at its grid's edge (both
    ways when one η_f was tried). The toy's Alternate finds its best at ×1/27, between ×1/81
    and ×1/9; DO's Gap keeps falling with η_f, so 4 rounds leave it at the edge, flagged."""
    from dualoptim.bench.tables import summarize

    out = tmp_path / "out"
    records = sweep(ToyConfig(), out, [1.0], extend=4)
    summary = summarize(records, ToyTask.layout.metrics)
    scales = {g: sorted(r.lr_scale for r in summary.complete() if r.group == g) for g in
              ("ga+gd (alternate)", "ga+gd (dual)")}  # fmt: skip
    assert scales["ga+gd (alternate)"] == pytest.approx([3.0**-k for k in (4, 3, 2, 1, 0, -1)])
    assert scales["ga+gd (dual)"] == scales["ga+gd (alternate)"]
    tuned = {row.group: row for row in summary.tuned()}
    alternate, dual = tuned["ga+gd (alternate)"], tuned["ga+gd (dual)"]
    assert alternate.lr_scale == pytest.approx(1 / 27)
    assert summary.edges(alternate) == ()
    assert dual.lr_scale == pytest.approx(1 / 81)
    assert summary.edges(dual) == ("lowest",)
    task_report.rebuild(out)
    report = (out / "report.md").read_text()
    assert "0.000247 (lowest tried)" in report  # DO's η_f: 0.02 / 81
    assert "sits at the edge of the η_f this sweep ran" in report
    toy.made.clear()
    sweep(ToyConfig(), out, [1.0], extend=4)
    assert toy.made == []  # the extension is read back like any run

    single = sweep(ToyConfig(), tmp_path / "single", [1.0])
    assert {r["lr_scale"] for r in single if r["kind"] == "run"} == {1.0}  # extend=0: the grid
    task_report.rebuild(tmp_path / "single")
    assert "(only one tried)" in (tmp_path / "single" / "report.md").read_text()


def test_tuned_seeds_run_the_tuned_eta_again_on_new_seeds_and_tuning_keeps_its_seeds(
    toy: ToyTask, tmp_path: Path
) -> None:
    """--tuned-seeds 4 on seeds (0, 1): each tuned η_f runs on seeds 2 and 3 too, with their
    references; tuning, its Gaps and the sensitivity stay on seeds 0 and 1 (the same η_f as
    without the new seeds), the main table's tuned rows are over all four."""
    from dualoptim.bench.claims import claims
    from dualoptim.bench.stats import gap_and_std
    from dualoptim.bench.tables import summarize

    metrics = ToyTask.layout.metrics
    grid = [1 / 3, 1.0, 3.0]
    plain = summarize(sweep(ToyConfig(), tmp_path / "plain", grid), metrics)
    toy.made.clear()
    records = sweep(ToyConfig(), tmp_path / "more", grid, tuned_seeds=4)
    summary = summarize(records, metrics)
    rt = summary.samples[("RT", None)]
    expected = {row.group: row.lr_scale for row in plain.tuned()}
    tuned = {row.group: row for row in summary.tuned()}
    assert {g: row.lr_scale for g, row in tuned.items()} == expected
    assert sorted(toy.made) == sorted(  # the grid on seeds 0, 1, then only the tuned η_f
        [(g, scaled(0.02, s), seed) for g in expected for s in grid for seed in (0, 1)]
        + [(g, scaled(0.02, s), seed) for g, s in expected.items() for seed in (2, 3)]
    )
    assert {r["seed"] for r in records if r["kind"] == "reference"} == {0, 1, 2, 3}
    for group, row in tuned.items():
        assert row.seeds == (0, 1, 2, 3)
        assert summary.tuning_seeds(group) == {0, 1}
        runs = summary.samples[(group, row.lr_scale)]
        two, four = (
            gap_and_std([runs[s] for s in seeds], [rt[s] for s in seeds], metrics)[0]
            for seeds in (range(2), range(4))
        )
        assert summary.tuning_gap(row) == two != row.gap == four
        assert summary.tuning_gap(row) == pytest.approx(
            next(r.gap for r in plain.tuned() if r.group == group), rel=1e-4
        )
    assert summary.sensitivity().keys() == plain.sensitivity().keys()
    for group, gaps in summary.sensitivity().items():
        # the two sweeps train the toy apart: at ×3 it diverges (Gap ~343), where float
        # noise moves the Gap by ~2e-4 relative; new seeds in it would move it by far more
        assert gaps == pytest.approx(plain.sensitivity()[group], rel=1e-3)
    assert summary.confirmed() == list(tuned.values())
    task_report.rebuild(tmp_path / "more")
    report = (tmp_path / "more" / "report.md").read_text()
    assert "η_f was tuned on seeds 0, 1; the tuned rows ran again" in report
    assert "## Claims out of sample (seeds 2, 3)" in report
    assert summary.new_seeds() == (2, 3)
    (inside,) = claims(summary, metrics, (2, 3))
    assert set(inside.intervals) == {"Gap", "Std"}
    assert all(interval.seeds == 2 for interval in inside.intervals.values())
    (everything,) = claims(summary, metrics)
    assert everything.intervals["Gap"].seeds == 4
    assert everything.intervals["η_f sensitivity"].seeds == 2  # the grid ran seeds 0, 1
    rows = list(csv.DictReader((tmp_path / "more" / "claims_out_of_sample.csv").open()))
    assert [(r["claim"], r["seeds"]) for r in rows] == [("Gap", "2"), ("Std", "2")]
    toy.made.clear()
    sweep(ToyConfig(), tmp_path / "more", grid, tuned_seeds=4)
    assert toy.made == []  # read back


def test_a_scale_still_running_is_not_complete_and_tuning_seeds_prefer_the_larger_set() -> None:
    """Tuning seeds: the seed set most scales ran (a tie goes to the larger set)."""
    from dualoptim.bench.tables import summarize

    def record(kind: str, seed: int, scale: float | None, value: float) -> dict[str, Any]:
        return {
            "kind": kind, "group": "g" if kind == "run" else "RT", "seed": seed,
            "lr_scale": scale, "metrics": {"m": value}, "seconds": 1.0, "config": {},
        }  # fmt: skip

    rt = [record("reference", s, None, 0.0) for s in range(3)]
    runs = [record("run", s, 1.0, 1.0) for s in range(3)] + [record("run", 0, 3.0, 0.1)]
    summary = summarize(rt + runs, ["m"])
    assert summary.tuning_seeds("g") == {0, 1, 2}
    assert [row.lr_scale for row in summary.complete()] == [1.0]
    runs += [record("run", s, 1 / 3, 2.0) for s in (0, 1)] + [record("run", 1, 3.0, 0.1)]
    summary = summarize(rt + runs, ["m"])
    assert summary.tuning_seeds("g") == {0, 1}  # two scales ran 0 and 1
    assert sorted(row.lr_scale for row in summary.complete()) == [1 / 3, 1.0, 3.0]
    assert [row.lr_scale for row in summary.tuned()] == [3.0]
    assert summary.tuning_gap(summary.tuned()[0]) == pytest.approx(0.1)

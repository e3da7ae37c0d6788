"""A failed run is a record: a diverging grid point (or one out of memory) is recorded with its
error and step, the sweep goes on with the next job, the tables say "diverged", and a rerun
does not repeat it unless asked. Runs are reused across output folders through the store
under cache_dir, and a grid multiple within rounding of a recorded one finds its runs."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from dualoptim.bench.metric_table import metric_csv, metric_rows, metric_table
from dualoptim.bench.records import RecordStore, make_record
from dualoptim.bench.report import write_report
from dualoptim.bench.split_table import split_tables
from dualoptim.bench.sweeps import attempt, sweep
from dualoptim.bench.tables import main_table, rows_csv, sensitivity_table, summarize
from dualoptim.cli import main
from dualoptim.tasks.diffusion.task import LAYOUT as DIFFUSION
from dualoptim.tasks.images.train import TrainRecipe
from dualoptim.tasks.vision import task as sweep_module
from dualoptim.tasks.vision.config import METRICS, DataSpec, UnlearnSpec, VisionExperiment
from dualoptim.unlearn.errors import RunDivergedError
from dualoptim.unlearn.task import Outcome


def tiny(tmp_path: Path, seeds: tuple[int, ...] = (0, 1)) -> VisionExperiment:
    return VisionExperiment(
        data=DataSpec(per_class_train=20, per_class_test=5),
        train=TrainRecipe(epochs=2),
        runs=(UnlearnSpec("ga", "alternate", epochs=3, batch_size=8),),  # η_f 0.03 (default)
        seeds=seeds,
        cache_dir=str(tmp_path / "cache"),
    )


def fake_runs(monkeypatch: pytest.MonkeyPatch, diverge: set[float]) -> list[tuple[float, int]]:
    """No training: RT and every run are stand-ins, and a run at an η_f in ``diverge`` fails
    as the engine fails a non-finite loss. Returns the (η_f, seed) of each run made."""
    calls: list[tuple[float, int]] = []
    rt = SimpleNamespace(
        rt_metrics=dict.fromkeys(METRICS, 50.0), rt_seconds=10.0, original=None, data=None,
        split=None,
    )  # fmt: skip
    monkeypatch.setattr(sweep_module, "prepare", lambda *_: rt)
    # the untouched original's row ("no unlearning"), measured without a model
    monkeypatch.setattr(sweep_module, "evaluate_model", lambda *_: dict.fromkeys(METRICS, 60.0))

    def run(spec: UnlearnSpec, _world: Any, seed: int) -> dict[str, Any]:
        calls.append((spec.forget_lr, seed))
        if spec.forget_lr in diverge:
            message = "non-finite forget loss (nan) at optimizer step 7 of method 'ga'"
            raise RunDivergedError(message, 7)
        return {**dict.fromkeys(METRICS, 40.0 + seed), "seconds": 1.0, "curves": {}}

    monkeypatch.setattr(sweep_module, "run_unlearning", run)
    return calls


def test_a_diverging_job_is_recorded_the_others_finish_and_a_rerun_skips_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = fake_runs(monkeypatch, diverge={0.3})
    exp, out = tiny(tmp_path), tmp_path / "out"
    records = sweep(exp, out, [1.0, 10.0])
    assert sorted(calls) == [(0.03, 0), (0.03, 1), (0.3, 0), (0.3, 1)]  # all four ran
    assert "2 runs failed (see report)" in capsys.readouterr().out
    failed = [r for r in records if r.get("status") == "failed"]
    assert [(r["lr_scale"], r["seed"]) for r in failed] == [(10.0, 0), (10.0, 1)]
    for record in failed:
        assert record["error"] == {
            "type": "RunDivergedError",
            "message": "non-finite forget loss (nan) at optimizer step 7 of method 'ga'",
            "step": 7,
        }
        assert record["metrics"] == {}
        assert record["seconds"] >= 0
        assert RecordStore(out / "records").get(record["id"]) == record  # written as it failed
    assert {r["status"] for r in records if r not in failed} == {"finished"}

    summary = write_report(list(RecordStore(out / "records")), out, METRICS, "out")
    report = (out / "report.md").read_text()
    assert "diverged at step 7 (2 of 2 seeds)" in report  # the sensitivity table's ×10 cell
    assert [(row.group, row.lr_scale) for row in summary.tuned()] == [("ga (alternate)", 1.0)]
    assert summary.sensitivity()["ga (alternate)"][10.0] == "diverged at step 7 (2 of 2 seeds)"

    calls.clear()
    again = sweep(exp, out, [1.0, 10.0])
    assert calls == []  # a failure is a result: not repeated
    assert [r["id"] for r in again] == [r["id"] for r in records]
    sweep(exp, out, [1.0, 10.0], retry_failed=True)
    assert sorted(calls) == [(0.3, 0), (0.3, 1)]  # only the failed runs, when asked


def test_any_other_error_ends_the_sweep_and_keeps_the_records_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fake_runs(monkeypatch, diverge=set())
    finished = sweep_module.run_unlearning

    def broken(spec: UnlearnSpec, world: Any, seed: int) -> dict[str, Any]:
        if seed == 1:
            raise KeyError("a bug")
        return finished(spec, world, seed)

    monkeypatch.setattr(sweep_module, "run_unlearning", broken)
    with pytest.raises(KeyError, match="a bug"):
        sweep(tiny(tmp_path), tmp_path / "out", [1.0])
    kept = list(RecordStore(tmp_path / "out" / "records"))
    assert calls == [(0.03, 0)]
    assert sorted((r["kind"], r["seed"]) for r in kept) == [  # RT and the original per seed
        ("reference", 0), ("reference", 0), ("reference", 1), ("reference", 1), ("run", 0),
    ]  # fmt: skip


def test_runs_are_reused_across_output_folders_and_grid_multiples_match_within_rounding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = fake_runs(monkeypatch, diverge={0.3})
    exp = tiny(tmp_path)
    first = sweep(exp, tmp_path / "a", [1.0, 0.333333333333, 10.0])
    assert len(calls) == 6
    shared = tmp_path / "cache" / "records"
    assert sorted(p.stem for p in shared.glob("*.json")) == sorted(r["id"] for r in first)

    calls.clear()
    capsys.readouterr()
    second = sweep(exp, tmp_path / "b", [1.0, 0.333, 10.0])  # the README's rounded grid
    assert calls == []  # every run, failed ones too, copied from the cache's store
    assert "×0.333 as ×0.333333333333" in capsys.readouterr().out
    assert [r["id"] for r in second] == [r["id"] for r in first]
    for name in ("a", "b"):  # the new folder holds the same records, byte for byte
        assert {p.name: p.read_bytes() for p in (tmp_path / name / "records").iterdir()} == {
            p.name: p.read_bytes() for p in shared.iterdir()
        }
    sweep(exp, tmp_path / "c", [3.0])
    assert sorted(calls) == [(0.09, 0), (0.09, 1)]  # a multiple far from any: run


def test_a_run_out_of_memory_is_a_failure_and_other_errors_are_not() -> None:
    def out_of_memory() -> dict:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    outcome, failure = attempt(out_of_memory)
    assert failure == {
        "type": "OutOfMemoryError",
        "message": "CUDA out of memory. Tried to allocate 2.00 GiB",
        "step": None,
    }
    assert outcome.metrics == {}
    assert outcome.seconds >= 0
    finished = Outcome({"FA": 1.0}, 2.0)
    assert attempt(lambda: finished) == (finished, None)
    with pytest.raises(ZeroDivisionError):
        attempt(lambda: 1 / 0)


def _run(group: str, seed: int, scale: float, fa: float, step: int | None = None) -> dict:
    method, _, setting = group.partition(" (")
    failure = None
    if step is not None:
        failure = {"type": "RunDivergedError", "message": f"non-finite at {step}", "step": step}
    return make_record(
        id=f"{group}-{seed}-{scale}", kind="run", group=group, seed=seed,
        metrics={} if failure else {"FA": fa, "RA": 100.0}, seconds=2.0, config={},
        method=method, setting=setting.rstrip(")"), lr_scale=scale, forget_lr=1e-4 * scale,
        failure=failure,
    )  # fmt: skip


def test_vision_tables_show_failures_and_compute_nothing_from_the_survivors() -> None:
    rt = [
        make_record(id=f"rt{s}", kind="reference", group="RT", seed=s,
                    metrics={"FA": 90.0, "RA": 100.0}, seconds=10.0, config={})
        for s in (0, 1)
    ]  # fmt: skip
    records = [
        *rt,
        _run("a (dual)", 0, 1.0, 0, step=3),  # a fails at every scale
        _run("a (dual)", 1, 1.0, 0, step=5),
        _run("a (dual)", 0, 3.0, 0, step=2),
        _run("a (dual)", 1, 3.0, 90.0),
        _run("b (dual)", 0, 1.0, 80.0),  # b: Gap 10 at ×1; at ×3 one seed diverged
        _run("b (dual)", 1, 1.0, 80.0),
        _run("b (dual)", 0, 3.0, 90.0),  # the survivor is perfect: it must not win tuning
        _run("b (dual)", 1, 3.0, 0, step=4),
    ]
    summary = summarize(records, ["FA", "RA"])
    assert [(r.group, r.lr_scale) for r in summary.tuned()] == [("b (dual)", 1.0)]
    rows = summary.main_rows()
    assert [(r.group, r.lr_scale) for r in rows] == [("a (dual)", 1.0), ("b (dual)", 1.0)]
    _, cells = main_table(rows, ["FA", "RA"])
    assert cells[0] == ["a (dual)", "0.0001", "diverged at steps 3, 5 (2 of 2 seeds)",
                        "–", "–", "–", "–", "2"]  # fmt: skip
    assert summary.sensitivity() == {
        "a (dual)": {1.0: "diverged at steps 3, 5 (2 of 2 seeds)",
                     3.0: "diverged at step 2 (1 of 2 seeds)"},
        "b (dual)": {1.0: pytest.approx(5.0), 3.0: "diverged at step 4 (1 of 2 seeds)"},
    }  # fmt: skip
    _, s_cells = sensitivity_table(summary.sensitivity(), summary.tuned_scales())
    assert s_cells[1] == ["b (dual)", "5.00", "diverged at step 4 (1 of 2 seeds)", "–", "–"]
    table = list(csv.DictReader(io.StringIO(rows_csv([summary.rt, *rows], ["FA", "RA"]))))
    assert table[1]["failed"] == "diverged at steps 3, 5 (2 of 2 seeds)"
    assert table[1]["gap"] == table[1]["FA_mean"] == ""
    assert table[2]["failed"] == ""
    assert float(table[2]["gap"]) == 5.0


def test_metric_tables_show_a_failed_run_and_its_step() -> None:
    def record(kind: str, metrics: dict, scale: float | None, **kw: Any) -> dict:
        group = "target" if kind == "reference" else "GA (dual)"
        eta = None if scale is None else 1e-5 * scale
        return make_record(id=f"{group}{scale}", kind=kind, group=group, seed=0, metrics=metrics,
                           seconds=3.0, config={}, lr_scale=scale, forget_lr=eta, **kw)  # fmt: skip

    target = record("reference", {"UFE": 0.1, "MU": 0.5}, None)
    done = record("run", {"UFE": 0.9, "MU": 0.4}, 1.0)
    error = {"type": "RunDivergedError", "message": "nan", "step": 12}
    diverged = record("run", {}, 10.0, failure=error)
    rows = metric_rows([target, done, diverged], ["UFE", "MU"], ("target",))
    _, cells = metric_table(rows, ["UFE", "MU"])
    assert cells[1] == ["GA (dual)", "1e-05", "0.900", "0.400", "3", "1"]
    assert cells[2] == ["GA (dual)", "0.0001", "diverged at step 12", "–", "–", "1"]
    table = list(csv.DictReader(io.StringIO(metric_csv(rows, ["UFE", "MU"]))))
    assert [t["failed"] for t in table] == ["", "", "diverged at step 12"]
    assert table[2]["UFE_mean"] == "nan"


def test_diffusion_tables_show_the_class_whose_run_failed() -> None:
    def record(kind: str, forgotten: int, failure: dict | None = None) -> dict:
        run = kind == "run"
        extra = {"forget_class": forgotten, "class_name": f"c{forgotten}", "grid": "g.png",
                 "classifier_accuracy": 90.0}  # fmt: skip
        return make_record(
            id=f"{kind}{forgotten}", kind=kind, group="SalUn (dual)" if run else "original",
            seed=0, metrics={} if failure else {"FA": 10.0 + forgotten, "FID": 30.0},
            seconds=4.0, config={}, lr_scale=1.0 if run else None,
            forget_lr=1e-3 if run else None, task="diffusion", extra=extra, failure=failure,
        )  # fmt: skip

    out_of_memory = {"type": "OutOfMemoryError", "message": "CUDA out of memory", "step": None}
    records = [record("reference", 0), record("reference", 1), record("run", 0),
               record("run", 1, out_of_memory)]  # fmt: skip
    (header, cells), (_, averages), table_csv = split_tables(records, DIFFUSION)
    assert header[2:6] == ["c0 FA ↓", "c0 FID ↓", "c1 FA ↓", "c1 FID ↓"]
    assert cells[1][2:] == ["10.00", "30.00", "out of memory", "–", "4", "1"]
    assert averages[1][2] == "out of memory"  # no average over the class that finished
    assert "out of memory (c1/FA, c1/FID)" in table_csv


@pytest.mark.slow
def test_a_real_divergence_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """GA at η_f × 1e9 makes the loss NaN within a few steps: ``bench`` ends 0 with the
    report written, and ``--retry-failed`` runs only that job again."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(
        "data: {name: digits, per_class_train: 20, per_class_test: 5}\n"
        "train: {epochs: 2}\n"
        "runs: [{method: ga, setting: alternate, epochs: 3, batch_size: 8}]\n"
        f"seeds: [0]\ncache_dir: {tmp_path / 'cache'}\n"
    )
    argv = ["bench", "--config", "tiny.yaml", "--grid", "1", "1e9", "--out", "out"]
    assert main(argv) == 0
    assert "1 run failed (see report)" in capsys.readouterr().out
    folder = tmp_path / "out" / "tiny"
    records = {p.name: json.loads(p.read_text()) for p in (folder / "records").iterdir()}
    (failed,) = [r for r in records.values() if r.get("status") == "failed"]
    assert failed["lr_scale"] == 1e9
    assert failed["error"]["type"] == "RunDivergedError"
    assert f"at optimizer step {failed['error']['step']}" in failed["error"]["message"]
    assert "diverged at step" in (folder / "report.md").read_text()

    real, calls = sweep_module.run_unlearning, []

    def counted(spec: UnlearnSpec, world: Any, seed: int) -> dict[str, Any]:
        calls.append(spec.forget_lr)
        return real(spec, world, seed)

    monkeypatch.setattr(sweep_module, "run_unlearning", counted)
    assert main(argv) == 0
    assert calls == []
    assert main([*argv, "--retry-failed"]) == 0
    assert calls == [failed["forget_lr"]]

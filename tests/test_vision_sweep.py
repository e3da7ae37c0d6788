"""Classification sweeps end to end: cached original and RT models shared by every run of a
seed, one record per run, resume after a kill without redoing finished runs, and a report
rebuilt from the records equal to the one written at the end of the sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dualoptim.bench.records import RecordStore
from dualoptim.bench.report import write_report
from dualoptim.bench.sweeps import plan_jobs, sweep
from dualoptim.bench.task_report import rebuild
from dualoptim.tasks.images.train import TrainRecipe
from dualoptim.tasks.vision import task as sweep_module
from dualoptim.tasks.vision.config import METRICS, DataSpec, UnlearnSpec, VisionExperiment
from dualoptim.tasks.vision.task import TASK

REPORT_FILES = ("report.md", "table.csv", "sensitivity.csv", "summary.json")


def tiny(cache: Path) -> VisionExperiment:
    return VisionExperiment(
        data=DataSpec(per_class_train=30, per_class_test=10),
        train=TrainRecipe(epochs=4),
        runs=(
            UnlearnSpec("sfron", "alternate", forget_lr=0.01, iterations=20, eval_every=2),
            UnlearnSpec("sfron", "dual", iterations=20, eval_every=2),
        ),
        seeds=(0, 1),
        cache_dir=str(cache),
    )


def test_jobs_put_the_configured_step_size_first_and_resolve_eta_f() -> None:
    exp = tiny(Path("unused"))
    plan = TASK.plan(exp, None, progress=False)
    todo = plan_jobs(plan, exp.runs, [3.0, 1.0])
    assert [(j.method, j.setting, j.lr_scale, j.seed) for j in todo[:4]] == [
        ("sfron", "alternate", 1.0, 0),
        ("sfron", "dual", 1.0, 0),
        ("sfron", "alternate", 1.0, 1),
        ("sfron", "dual", 1.0, 1),
    ]
    dual = [j for j in todo if j.setting == "dual"]
    assert {j.forget_lr for j in dual} == {1e-4, 3e-4}  # × the tuned default 1e-4
    assert all(j.config["runs"][0]["forget_lr"] == j.forget_lr for j in todo)  # the record's
    absolute = plan_jobs(plan, exp.runs, [1e-3], absolute=True)
    assert {(j.setting, j.lr_scale) for j in absolute} == {("alternate", 0.1), ("dual", 10)}
    assert all(j.forget_lr == 1e-3 for j in absolute)
    with pytest.raises(ValueError, match="grid must be non-empty and positive"):
        plan_jobs(plan, exp.runs, [])
    with pytest.raises(ValueError, match="grid must be non-empty and positive"):
        plan_jobs(plan, exp.runs, [1.0, -3.0])


class KilledError(Exception):
    pass


@pytest.mark.slow
def test_sweep_resumes_after_a_kill_and_its_report_rebuilds_from_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = tiny(tmp_path / "cache")
    out = tmp_path / "out"
    real = sweep_module.run_unlearning
    calls: list[tuple[str, float, int]] = []

    def counted(spec: UnlearnSpec, world, seed: int, limit: int | None = None):
        if limit is not None and len(calls) == limit:
            raise KilledError
        calls.append((spec.label, spec.forget_lr, seed))
        return real(spec, world, seed)

    monkeypatch.setattr(sweep_module, "run_unlearning", lambda *a: counted(*a, limit=3))
    with pytest.raises(KilledError):
        sweep(exp, out, [1.0, 3.0])
    assert len(calls) == 3
    store = RecordStore(out / "records")
    # three runs, and the RT and original (no unlearning) records of each seed seen so far
    assert len(store) == 3 + 2 * 2

    monkeypatch.setattr(sweep_module, "run_unlearning", counted)
    records = sweep(exp, out, [1.0, 3.0])
    assert len(calls) == 8  # the five unfinished runs only
    assert len(set(calls)) == 8
    assert len(records) == 8 + 2 * 2
    assert len(store) == 12
    cached = sorted(p.name.split("-")[0] for p in (tmp_path / "cache").glob("*.safetensors"))
    assert cached == ["mask", "mask", "original", "rt", "rt"]  # shared by all runs of a seed

    run = next(r for r in records if r["kind"] == "run" and r["setting"] == "dual")
    assert len(run["config"]["runs"]) == 1  # the resolved config of this one run
    assert run["config"]["runs"][0]["forget_lr"] == run["forget_lr"]
    assert run["config"]["seeds"] == [run["seed"]]
    assert run["environment"]["packages"]["torch"]
    assert set(run["metrics"]) >= set(METRICS)
    assert [p[0] for p in run["curves"]["eval/FA"]][:3] == [0, 2, 4]

    summary = write_report(records, out, METRICS, "out", run_options=TASK.run_options)
    written = {name: (out / name).read_bytes() for name in REPORT_FILES}
    for name in ("curves.png", "grad_norms.png", "sensitivity.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG")
    for name in REPORT_FILES:
        (out / name).unlink()
    again = rebuild(out)
    assert {name: (out / name).read_bytes() for name in REPORT_FILES} == written
    assert again.tuned == [(row.group, row.forget_lr) for row in summary.tuned()]
    assert {row.group for row in summary.tuned()} == {"sfron (alternate, one η)", "sfron (dual)"}
    assert set(summary.sensitivity()["sfron (dual)"]) == {1.0, 3.0}
    table = json.loads((out / "summary.json").read_text())
    assert table["rt"]["gap"] == 0.0
    (original,) = table["baselines"]  # the untouched original, its Gap to RT per seed too
    assert original["group"] == "no unlearning"
    assert len(original["seed_gaps"]) == 2
    assert original["gap"] > 0
    assert "η_f ×3" in (out / "report.md").read_text()

    calls.clear()
    sweep(exp, out, [1.0, 3.0])
    assert calls == []  # everything is recorded: nothing runs again

    # a record read back under an older label is stored under its run's label now
    cache = RecordStore(tmp_path / "cache" / "records")
    old = {**run, "group": "sfron (dual, old label)"}
    for records in (store, cache):
        records.put(old)
    relabelled = sweep(exp, out, [1.0, 3.0])
    assert calls == []
    assert next(r for r in relabelled if r["id"] == run["id"])["group"] == "sfron (dual)"
    assert {records.get(run["id"])["group"] for records in (store, cache)} == {"sfron (dual)"}

"""Classification end to end: cached original and RT models, one forget set and RT per seed,
the report's Gap and Std computed against RT measured on the same forget sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dualoptim.tasks.vision.experiment import (
    DataSpec,
    UnlearnSpec,
    VisionExperiment,
    run_experiment,
    tune_forget_lr,
)
from dualoptim.tasks.vision.train import TrainRecipe


def tiny(cache: Path) -> VisionExperiment:
    return VisionExperiment(
        data=DataSpec(per_class_train=30, per_class_test=10),
        train=TrainRecipe(epochs=4),
        runs=(
            UnlearnSpec("sfron", "alternate", forget_lr=0.01, iterations=20),
            UnlearnSpec("sfron", "dual", iterations=20),
        ),
        seeds=(0, 1),
        cache_dir=str(cache),
    )


@pytest.mark.slow
def test_experiment_caches_models_and_reports_gap_against_rt(tmp_path: Path) -> None:
    exp = tiny(tmp_path / "cache")
    report = run_experiment(exp, out_dir=tmp_path / "out")
    cached = sorted(p.name.split("-")[0] for p in (tmp_path / "cache").glob("*.safetensors"))
    # one original, one RT and one SFR-on mask per forget set (seed); both settings share it
    assert cached == ["mask", "mask", "original", "rt", "rt"]
    assert report.rt[0]["FA"] != report.rt[1]["FA"] or report.rt[0]["MIA"] != report.rt[1]["MIA"]
    rows = {row["method"]: row for row in report.rows()}
    assert set(rows) == {"RT", "sfron (alternate)", "sfron (dual)"}
    assert rows["RT"]["gap"] == 0.0
    assert all(len(runs) == 2 for runs in report.runs.values())
    written = json.loads((tmp_path / "out" / "report.json").read_text())
    assert written["rows"][0]["method"] == "RT"

    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").iterdir()}
    again = run_experiment(exp)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").iterdir()} == mtimes
    assert again.rt == report.rt  # RT is loaded, not retrained: same metrics, same seconds
    records = sorted((tmp_path / "cache").glob("rt-*.metrics.json"))
    assert len(records) == 2  # RT's metrics are reference records, one per forget set
    assert json.loads(records[0].read_text())["metrics"]["RA"] > 0


@pytest.mark.slow
def test_tuning_picks_the_step_size_with_the_lowest_mean_gap(tmp_path: Path) -> None:
    exp = tiny(tmp_path / "cache")
    tuning = tune_forget_lr(exp, [1e-4, 3e-2], out_dir=tmp_path / "out")
    for label, gaps in tuning.gaps.items():
        assert set(gaps) == {1e-4, 3e-2}
        assert tuning.best[label] == min(gaps, key=gaps.get)
    assert tuning.gaps["sfron (dual)"][1e-4] != tuning.gaps["sfron (dual)"][3e-2]
    written = json.loads((tmp_path / "out" / "tune.json").read_text())
    assert written["best"] == tuning.best
    with pytest.raises(ValueError, match="grid must be non-empty"):
        tune_forget_lr(exp, [])

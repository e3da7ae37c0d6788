"""Classification runs: tuned η_f defaults, metric curves, and the joint setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from dualoptim.tasks.images.train import TrainRecipe
from dualoptim.tasks.vision import methods
from dualoptim.tasks.vision.config import DataSpec, UnlearnSpec, VisionExperiment
from dualoptim.tasks.vision.experiment import evaluate_model, prepare, run_unlearning


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


def test_unset_forget_lr_takes_the_tuned_default_of_the_method_and_setting() -> None:
    assert (
        UnlearnSpec("rl", "dual").effective_forget_lr == methods.get("rl").forget_lr["dual"] == 1e-4
    )
    assert UnlearnSpec("rl", "dual_8bit").effective_forget_lr == 1e-4
    assert (
        UnlearnSpec("scrub", "joint").effective_forget_lr
        == methods.get("scrub").forget_lr["joint"]
        == 0.03
    )
    assert UnlearnSpec("sfron", "alternate").effective_forget_lr == 0.1
    assert UnlearnSpec("salun", "dual_plus_8bit").effective_forget_lr == 3e-4
    assert UnlearnSpec("salun", "dual", forget_lr=0.123).effective_forget_lr == 0.123
    assert {"ft", "ga", "l1sparse", "rl", "salun", "scrub", "sfron"} <= set(methods.names())
    with pytest.raises(ValueError, match=r"unknown vision method 'sfr': registered are ft, ga"):
        UnlearnSpec("sfr", "dual")
    with pytest.raises(ValueError, match="forget_lr must be > 0"):
        UnlearnSpec("rl", "dual", forget_lr=0.0)
    with pytest.raises(ValueError, match=r"ga under 'dual' has no tuned default.*\['alternate'\]"):
        UnlearnSpec("ga", "dual")
    assert UnlearnSpec("ga", "dual", forget_lr=1e-4).effective_forget_lr == 1e-4
    with pytest.raises(ValueError, match="eval_every must be >= 0"):
        UnlearnSpec("rl", "dual", eval_every=-1)


def test_joint_run_records_metric_curves_that_end_at_the_final_metrics(tmp_path: Path) -> None:
    exp = tiny(tmp_path / "cache")
    world = prepare(exp, seed=0)
    spec = UnlearnSpec("rl", "joint", forget_lr=0.01, epochs=2, batch_size=32, eval_every=3)
    result = run_unlearning(spec, world, seed=0)
    curves = result["curves"]
    fa = curves["eval/FA"]
    steps = [step for step, _ in fa]
    total = curves["loss/forget"][-1][0]
    # evaluated before the first step, every 3 steps, and once more at the end
    assert steps == sorted({0, *range(3, total + 1, 3), total})
    assert set(curves) >= {"eval/RA", "eval/TA", "eval/MIA", "loss/retain", "grad_norm/joint"}
    assert "eval/MIA_efficacy" not in curves  # the slow SVC attack only at the end
    # joint: every step has both losses; no forget-only or retain-only steps
    assert len(curves["loss/forget"]) == len(curves["loss/retain"]) == total
    assert fa[0][1] == pytest.approx(evaluate_model(world.original, world.data, world.split)["FA"])
    # the tiny D_r and D_test fit in the curve sample, so the last point is the final metric
    for name in ("FA", "RA", "TA"):
        assert curves[f"eval/{name}"][-1][1] == pytest.approx(result[name])
    assert result["seconds"] > 0

"""Classification runs: tuned η_f defaults, Alternate's per-phase step sizes, metric curves,
and the joint setting."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dualoptim.config import ConfigError, load_config
from dualoptim.io import record_id
from dualoptim.optim.dual import SharedOptimizer
from dualoptim.tasks.images.train import TrainRecipe
from dualoptim.tasks.vision import methods
from dualoptim.tasks.vision.config import DataSpec, UnlearnSpec, VisionExperiment
from dualoptim.tasks.vision.experiment import (
    evaluate_model,
    make_optimizer,
    prepare,
    run_unlearning,
)
from dualoptim.tasks.vision.task import TASK

#: record_id("run", "key", 0, spec, 0) of two Alternate specs, computed before per_phase_lr
#: existed: an unset per_phase_lr must leave every record id as it was.
BEFORE_PER_PHASE_LR = {
    UnlearnSpec("rl", "alternate"): "4ad210c9ecf9039b4831",
    UnlearnSpec("sfron", "alternate", forget_lr=0.01): "74f1cbd4d560ea0ff1be",
}


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
    with pytest.raises(ValueError, match="ga never takes a retain step, so it has no Joint form"):
        UnlearnSpec("ga", "joint", forget_lr=0.01)


def step_sizes(spec: UnlearnSpec) -> tuple[float, float]:
    """(forget, retain) step sizes of the optimizer built for ``spec``: one shared SGD state."""
    optimizer = make_optimizer(spec, torch.nn.Linear(3, 2).parameters())
    assert isinstance(optimizer, SharedOptimizer)
    assert optimizer.inner["forget"] is optimizer.inner["retain"]
    return optimizer.lr_of("forget"), optimizer.lr_of("retain")


def test_per_phase_lr_gives_alternate_dos_step_sizes_and_unset_keeps_the_methods() -> None:
    # unset: the method decides (SFR-on's official Alternate one step size, RL's η_r for
    # retain phases); set, for any method: true η_f / η_r, false η_f for both
    sfron = UnlearnSpec("sfron", "alternate", forget_lr=0.05)
    rl = UnlearnSpec("rl", "alternate", forget_lr=0.05)
    assert step_sizes(sfron) == step_sizes(replace(sfron, per_phase_lr=False)) == (0.05, 0.05)
    assert step_sizes(replace(sfron, per_phase_lr=True)) == (0.05, 0.01)  # η_r: retain_lr
    assert step_sizes(replace(sfron, per_phase_lr=True, retain_lr=0.02)) == (0.05, 0.02)
    assert step_sizes(rl) == step_sizes(replace(rl, per_phase_lr=True)) == (0.05, 0.01)
    assert step_sizes(replace(rl, per_phase_lr=False)) == (0.05, 0.05)
    for spec, before in BEFORE_PER_PHASE_LR.items():
        assert record_id("run", "key", 0, spec, 0) == before


@pytest.mark.parametrize(
    ("run", "label"),
    [
        ("{method: rl, setting: alternate}", "rl (alternate, per-phase η)"),  # RL's default
        ("{method: rl, setting: alternate, per_phase_lr: false}", "rl (alternate, one η)"),
        ("{method: sfron, setting: alternate}", "sfron (alternate, one η)"),  # SFR-on's
        ("{method: ft, setting: alternate}", "ft (alternate)"),  # no forget phase: moot
        ("{method: ga, setting: alternate}", "ga (alternate)"),  # no retain phase
        ("{method: rl, setting: dual}", "rl (dual)"),
    ],
)
def test_every_alternate_row_says_which_step_sizes_it_ran(run: str, label: str) -> None:
    (spec,) = load_config(VisionExperiment, None, [f"runs=[{run}]"]).runs
    assert spec.label == label


def test_two_runs_that_one_table_row_would_mix_are_refused() -> None:
    default, explicit = (
        "{method: rl, setting: alternate}",
        "{method: rl, setting: alternate, per_phase_lr: true}",
    )
    with pytest.raises(
        ConfigError,
        match=r"runs\[0\] and runs\[2\] are both 'rl \(alternate, per-phase η\)' at η_f "
        r"0\.1: one table row would average their seeds together",
    ):
        load_config(
            VisionExperiment, None, [f"runs=[{default}, {{method: rl, setting: dual}}, {explicit}]"]
        )
    at_two_lrs = "runs=[{method: rl, forget_lr: 0.01}, {method: rl, forget_lr: 0.03}]"
    assert len(load_config(VisionExperiment, None, [at_two_lrs]).runs) == 2  # two rows


@pytest.mark.parametrize("setting", ["joint", "dual", "dual_plus"])
def test_per_phase_lr_outside_alternate_is_refused_naming_the_run(setting: str) -> None:
    refused = f"{{method: rl, setting: {setting}, per_phase_lr: false}}"
    run = f"runs=[{{method: sfron, setting: alternate}}, {refused}]"
    with pytest.raises(
        ConfigError,
        match=rf"runs\[1\]: per_phase_lr applies to the 'alternate' setting only, and rl runs "
        rf"under '{setting}': remove per_phase_lr, or set setting: alternate",
    ):
        load_config(VisionExperiment, None, [run])


def test_alternate_with_and_without_per_phase_lr_are_two_rows_of_one_table() -> None:
    one = UnlearnSpec("sfron", "alternate", forget_lr=0.01, iterations=20)
    runs = (one, replace(one, per_phase_lr=True), replace(one, per_phase_lr=False))
    exp = replace(tiny(Path("unused")), runs=runs[:2], seeds=(0,))  # 0 and 2: one row
    plan = TASK.plan(exp, None, progress=False)
    jobs = [job for spec in runs for job in plan.jobs(spec, 1.0)]
    assert [job.group for job in jobs] == [
        "sfron (alternate, one η)",  # SFR-on's default, named
        "sfron (alternate, per-phase η)",
        "sfron (alternate, one η)",
    ]
    assert len({job.id for job in jobs}) == 3  # the unset option keeps older records' ids
    recorded = [job.config["runs"][0] for job in jobs]
    assert "per_phase_lr" not in recorded[0]  # as records made before the option
    assert [r.get("per_phase_lr") for r in recorded] == [None, True, False]
    # the report's recipe: the option when set, and η_r once retain steps take it
    options = [TASK.run_options(r) for r in recorded]
    assert [("per_phase_lr" in o, "retain_lr" in o) for o in options] == [
        (False, False),
        (True, True),
        (True, False),
    ]


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

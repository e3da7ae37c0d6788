"""Each optimizer setting is one config value (SPEC §1.1-1.5)."""

from __future__ import annotations

import bitsandbytes as bnb
import pytest
import torch

from dualoptim import DualOptimizer, DualOptimPlus, SharedOptimizer
from dualoptim.optim.settings import SETTINGS, Setting, build_optimizer, is_joint

FORGET = {"name": "adamw", "lr": 5e-4, "weight_decay": 0.05}
RETAIN = {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}


def build(setting: str, **kwargs):
    model = torch.nn.Linear(80, 64)  # 5120 weights: quantised in the 8-bit settings
    if setting.startswith("dual_plus"):
        kwargs.setdefault("plus", {"retain_lr": 1e-4, "compile": False})
    return model, build_optimizer(
        setting, model.parameters(), forget=FORGET, retain=RETAIN, **kwargs
    )


@pytest.mark.parametrize("setting", SETTINGS)
def test_every_setting_builds_and_steps_both_objectives(setting: str) -> None:
    model, opt = build(setting)
    for objective in ("forget", "retain"):
        model(torch.randn(4, 80)).pow(2).mean().backward()
        opt.step(objective=objective)
        opt.zero_grad()
    assert opt.step_counts == {"forget": 1, "retain": 1}


def test_settings_map_to_the_specified_optimizers() -> None:
    _, joint = build("joint")
    _, alternate = build("alternate")
    _, per_phase = build("alternate", per_phase_lr=True)
    _, dual = build("dual")
    _, dual8 = build("dual_8bit")
    _, plus = build("dual_plus")
    _, plus8 = build("dual_plus_8bit")
    assert isinstance(joint, SharedOptimizer)
    assert isinstance(alternate, SharedOptimizer)
    assert alternate.lr_of("forget") == alternate.lr_of("retain") == 0.01
    assert per_phase.lr_of("forget") == 5e-4
    assert per_phase.lr_of("retain") == 0.01
    assert isinstance(dual.inner["forget"], torch.optim.AdamW)
    assert isinstance(dual.inner["retain"], torch.optim.SGD)
    assert isinstance(dual8.inner["forget"], bnb.optim.AdamW8bit)
    assert isinstance(dual8.inner["retain"], bnb.optim.SGD8bit)
    assert isinstance(plus, DualOptimPlus)
    assert plus.param_groups[0]["state_bits"] == 32
    assert plus8.param_groups[0]["state_bits"] == 8
    assert plus.lr_of("forget") == 5e-4
    assert plus.lr_of("retain") == 1e-4
    assert plus.param_groups[0]["weight_decay"] == 0.05
    assert is_joint("joint")
    assert not is_joint("alternate")
    assert isinstance(dual, DualOptimizer)


@pytest.mark.parametrize(
    ("setting", "kwargs", "match"),
    [
        ("dual_pluss", {}, "unknown optimizer setting 'dual_pluss'"),
        ("dual_plus", {"plus": {"compile": False}}, "needs plus.retain_lr"),
        ("dual_plus", {"plus": {"retain_lr": 1e-4, "beta": 0.9}}, r"unknown DualOptimPlus"),
        ("dual", {"plus": {"retain_lr": 1e-4}}, "apply to dual_plus settings"),
        ("dual", {"per_phase_lr": True}, "'alternate' setting only"),
    ],
)
def test_bad_settings_are_named(setting: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_optimizer(
            setting, torch.nn.Linear(2, 2).parameters(), forget=FORGET, retain=RETAIN, **kwargs
        )


@pytest.mark.parametrize(
    ("name", "joint", "shared", "plus", "eight_bit", "base"),
    [
        ("joint", True, True, False, False, "joint"),
        ("alternate", False, True, False, False, "alternate"),
        ("dual", False, False, False, False, "dual"),
        ("dual_8bit", False, False, False, True, "dual"),
        ("dual_plus", False, False, True, False, "dual_plus"),
        ("dual_plus_8bit", False, False, True, True, "dual_plus"),
    ],
)
def test_a_setting_resolves_to_what_it_means(
    name: str, joint: bool, shared: bool, plus: bool, eight_bit: bool, base: str
) -> None:
    s = Setting(name)
    assert (s.joint, s.shared, s.plus, s.eight_bit, s.base) == (
        joint,
        shared,
        plus,
        eight_bit,
        base,
    )


def test_an_unknown_setting_is_refused_when_resolved() -> None:
    with pytest.raises(ValueError, match=r"unknown optimizer setting 'dual\+'"):
        Setting("dual+")


ETA_F, ETA_R = 3e-4, 0.02
SIDES = {
    "forget": {"name": "adamw", "weight_decay": 0.05},
    "retain": {"name": "sgd", "momentum": 0.9},
}


def by_step_sizes(setting: str, **kwargs):
    return build_optimizer(
        setting,
        torch.nn.Linear(80, 64).parameters(),
        **SIDES,
        forget_lr=ETA_F,
        retain_lr=ETA_R,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("setting", "kwargs", "forget", "retain"),
    [
        ("joint", {}, ETA_F, ETA_F),  # one shared state steps at η_f
        ("alternate", {}, ETA_F, ETA_F),
        ("alternate", {"per_phase_lr": True}, ETA_F, ETA_R),
        ("dual", {}, ETA_F, ETA_R),
        ("dual_8bit", {}, ETA_F, ETA_R),
        ("dual_plus", {"plus": {"compile": False}}, ETA_F, ETA_R),  # η_r is DO+'s retain_lr
        ("dual_plus_8bit", {"plus": {"compile": False}}, ETA_F, ETA_R),
    ],
)
def test_build_optimizer_applies_the_step_size_rule_once(
    setting: str, kwargs: dict, forget: float, retain: float
) -> None:
    opt = by_step_sizes(setting, **kwargs)
    assert opt.lr_of("forget") == pytest.approx(forget)
    assert opt.lr_of("retain") == pytest.approx(retain)


def test_a_step_size_given_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="give the forget step size once"):
        build_optimizer(
            "dual",
            torch.nn.Linear(2, 2).parameters(),
            forget=FORGET,
            retain=SIDES["retain"],
            forget_lr=ETA_F,
            retain_lr=ETA_R,
        )

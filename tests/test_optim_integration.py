"""What the libraries around an optimizer do to it: torch's distributed checkpoint helpers
(what accelerate's FSDP2 ``save_state``/``load_state`` call), accelerate and DeepSpeed
replacing the parameters of the outer groups, low-precision parameters, groups added later.
Each test here failed on the optimizers before issue 15."""

from __future__ import annotations

import copy
import tempfile

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from dualoptim import SharedOptimizer
from dualoptim.optim.settings import SETTINGS, Setting, build_optimizer

FORGET = {"name": "adamw", "weight_decay": 0.05}
RETAIN = {"name": "sgd", "momentum": 0.9, "weight_decay": 5e-4}
PATTERN = ("forget", "retain", "retain", "forget", "retain")


def model_and_optimizer(
    setting: str,
    dtype: torch.dtype = torch.float32,
    retain_lr: float = 1e-2,
    forget_lr: float = 1e-3,
):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(80, 64), torch.nn.Tanh(), torch.nn.Linear(64, 3))
    model = model.to(dtype)
    plus = {"retain_lr": 1e-3, "compile": False} if Setting(setting).plus else None
    optimizer = build_optimizer(
        setting,
        model.parameters(),
        forget=FORGET,
        retain=RETAIN,
        plus=plus,
        forget_lr=forget_lr,
        retain_lr=retain_lr,
    )
    return model, optimizer


def train(model, optimizer, objectives, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    for objective in objectives:
        x = torch.randn(8, 80, generator=generator).to(next(model.parameters()).dtype)
        loss = model(x).float().pow(2).mean()
        (-loss if objective == "forget" else loss).backward()
        optimizer.step(objective=objective)
        optimizer.zero_grad()


def weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("setting", SETTINGS)
def test_every_setting_moves_bf16_parameters(setting: str) -> None:
    """torch 2.13's CPU fused SGD moves only the n mod 16 tail of a bf16 tensor: fused must
    be off there, or the retain steps of DO and the shared baselines do nothing."""
    model, optimizer = model_and_optimizer(setting, torch.bfloat16, retain_lr=1.0, forget_lr=1.0)
    before = weights(model)
    train(model, optimizer, ["retain"] * 3)
    for old, new in zip(before, weights(model), strict=True):
        moved = (old != new).float().mean().item()
        assert moved > 0.9, f"{setting}: only {moved:.0%} of a {tuple(old.shape)} moved"


def test_a_group_added_later_keeps_the_shared_optimizers_step_sizes() -> None:
    first, second = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    optimizer = SharedOptimizer(
        first.parameters(), {"name": "sgd", "lr": 0.01}, forget_lr=0.05, retain_lr=0.02
    )
    optimizer.add_param_group({"params": list(second.parameters())})
    assert optimizer.lr_of("forget", 1) == 0.05
    assert optimizer.lr_of("retain", 1) == 0.02


@pytest.mark.parametrize("setting", ["alternate", "dual", "dual_8bit", "dual_plus"])
def test_replaced_parameters_are_trained_and_a_late_replacement_is_refused(setting: str) -> None:
    """accelerate's FSDP2 plugin and DeepSpeed put new parameter objects into the outer
    groups only; the inner optimizers used to keep stepping the old ones (nothing trained)."""
    model, optimizer = model_and_optimizer(setting)
    replacement = [torch.nn.Parameter(p.detach().clone()) for p in model.parameters()]
    optimizer.param_groups[0]["params"] = replacement
    before = [p.detach().clone() for p in replacement]
    for objective in ("forget", "retain"):
        for p in replacement:
            p.grad = torch.ones_like(p)
        optimizer.step(objective=objective)
    assert all((a != b).any() for a, b in zip(before, replacement, strict=True))
    optimizer.param_groups[0]["params"] = list(model.parameters())  # after states exist
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    with pytest.raises(ValueError, match="replaced after optimizer states existed"):
        optimizer.step(objective="retain")


@pytest.mark.parametrize("setting", SETTINGS)
def test_init_state_creates_every_state_and_changes_nothing(setting: str) -> None:
    model, optimizer = model_and_optimizer(setting)
    fresh_model, fresh = copy.deepcopy(model), model_and_optimizer(setting)[1]
    before = weights(model)
    optimizer.init_state()
    assert [w.equal(b) for w, b in zip(weights(model), before, strict=True)] == [True] * 4
    assert optimizer.step_counts == {"forget": 0, "retain": 0}
    assert all(optimizer.state[p] for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    # the next steps are exactly a fresh optimizer's
    fresh_params = list(fresh_model.parameters())
    fresh.param_groups[0]["params"] = fresh_params
    train(model, optimizer, PATTERN)
    train(fresh_model, fresh, PATTERN)
    assert all(a.equal(b) for a, b in zip(weights(model), weights(fresh_model), strict=True))


@pytest.mark.parametrize("setting", SETTINGS)
def test_torch_distributed_checkpoint_round_trip_resumes_bit_identically(setting: str) -> None:
    """get_optimizer_state_dict + dcp.save, then a fresh model and optimizer, init_state,
    dcp.load + set_optimizer_state_dict: the resumed run equals the uninterrupted one. It
    used to save no inner state, step the retain momentum while saving, and fail to load
    the counters (written back under string keys)."""
    model, optimizer = model_and_optimizer(setting)
    train(model, optimizer, PATTERN)
    reference_model, reference = model_and_optimizer(setting)  # the run, uninterrupted
    reference_model.load_state_dict(model.state_dict())
    reference.load_state_dict(optimizer.state_dict())
    state_before = copy.deepcopy(optimizer.state_dict())
    saved = get_optimizer_state_dict(model, optimizer)
    assert copy.deepcopy(optimizer.state_dict())["step_counts"] == state_before["step_counts"]
    assert len(saved["state"]) == 4  # every parameter's states, the inner ones included
    with tempfile.TemporaryDirectory() as folder:
        dcp.save({"optimizer": saved, "model": model.state_dict()}, checkpoint_id=folder)
        resumed_model, resumed = model_and_optimizer(setting)
        resumed.init_state()
        target = {
            "optimizer": get_optimizer_state_dict(resumed_model, resumed),
            "model": resumed_model.state_dict(),
        }
        dcp.load(target, checkpoint_id=folder)
    resumed_model.load_state_dict(target["model"])
    set_optimizer_state_dict(resumed_model, resumed, target["optimizer"])
    assert resumed.step_counts == reference.step_counts
    train(reference_model, reference, PATTERN, seed=2)
    train(resumed_model, resumed, PATTERN, seed=2)
    assert all(
        a.equal(b) for a, b in zip(weights(reference_model), weights(resumed_model), strict=True)
    )

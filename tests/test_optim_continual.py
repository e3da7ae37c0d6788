"""State policies between forget requests (optim/continual.py): carry continues one optimizer
bit for bit, reset is a fresh optimizer, carry_base keeps DO+'s base and zeroes residuals."""

from __future__ import annotations

import math

import pytest
import torch
from tests.helpers import roundtrip

from dualoptim.optim import DualOptimPlus
from dualoptim.optim.continual import carry_states, check_policy
from dualoptim.optim.settings import SETTINGS, build_optimizer

SIX = SETTINGS  # joint, alternate, dual, dual_8bit, dual_plus, dual_plus_8bit
PATTERN = ("forget", "retain", "retain", "forget", "retain")


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    # 64 × 128 = 8192 elements: above the 4096 of 8-bit states, so they are quantised
    return torch.nn.Sequential(torch.nn.Linear(128, 64), torch.nn.Linear(64, 1))


def _optimizer(setting: str, model: torch.nn.Module):
    return build_optimizer(
        setting,
        model.parameters(),
        forget={"name": "adamw", "weight_decay": 0.05},
        retain={"name": "sgd", "momentum": 0.9, "weight_decay": 5e-4},
        forget_lr=1e-3,
        retain_lr=1e-2 if "plus" not in setting else 1e-3,
        plus={"compile": False} if "plus" in setting else None,  # compiling costs minutes
    )


def _steps(model, optimizer, start: int, count: int) -> None:
    """``count`` steps with gradients drawn from the step index: the same gradients whatever
    optimizer object takes them."""
    for i in range(start, start + count):
        generator = torch.Generator().manual_seed(i)
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=generator)
        optimizer.step(objective=PATTERN[i % len(PATTERN)])


def _params(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("setting", SIX)
def test_carry_continues_one_optimizer_bit_identically(setting: str) -> None:
    whole = _model()
    one = _optimizer(setting, whole)
    _steps(whole, one, 0, 12)

    split = _model()
    first = _optimizer(setting, split)
    _steps(split, first, 0, 7)
    saved = roundtrip(first.state_dict())  # through a file, as between requests
    second = _optimizer(setting, split)
    carry_states(second, saved, "carry")
    assert second.step_counts == first.step_counts
    _steps(split, second, 7, 5)
    for a, b in zip(_params(whole), _params(split), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("setting", SIX)
def test_reset_is_a_fresh_optimizer(setting: str) -> None:
    model = _model()
    first = _optimizer(setting, model)
    _steps(model, first, 0, 7)
    start = _params(model)

    reset = _optimizer(setting, model)
    carry_states(reset, first.state_dict(), "reset")
    assert not any(reset.state.values())
    assert reset.step_counts == {"forget": 0, "retain": 0}
    _steps(model, reset, 7, 5)
    after_reset = _params(model)

    with torch.no_grad():
        for p, value in zip(model.parameters(), start, strict=True):
            p.copy_(value)
    _steps(model, _optimizer(setting, model), 7, 5)
    for a, b in zip(after_reset, _params(model), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("setting", ["dual_plus", "dual_plus_8bit"])
def test_carry_base_keeps_base_and_t_and_zeroes_residuals(setting: str) -> None:
    model = _model()
    first = _optimizer(setting, model)
    _steps(model, first, 0, 7)
    second = _optimizer(setting, model)
    carry_states(second, first.state_dict(), "carry_base")
    for p in model.parameters():
        old, new = first.state[p], second.state[p]
        assert new["step"] == old["step"] == 7
        assert new["forget_step"] == new["retain_step"] == 0
        for key in old:
            if key.startswith("base_"):
                assert torch.equal(new[key], old[key])
            elif key.startswith(("forget_", "retain_")) and isinstance(old[key], torch.Tensor):
                assert not new[key].any()
                assert old[key].any()
    assert second.step_counts == first.step_counts  # the optimizer's own tally is carried


def test_carry_base_first_step_by_hand() -> None:
    """One scalar: after carry_base the next forget step uses the carried base (lagged, t = 8)
    and a residual that starts from 0 with s_f = 1 (SPEC §1.4 steps 2-5)."""
    p = torch.nn.Parameter(torch.tensor([0.5]))
    options = {"forget_lr": 0.1, "retain_lr": 0.1, "bound_update": False, "compile": False}
    first = DualOptimPlus([p], **options)
    for i in range(7):
        p.grad = torch.tensor([0.3 if i % 2 else -0.2])
        first.step(objective="forget" if i % 3 == 0 else "retain")
    base_m, base_v = first.state[p]["base_m"].item(), first.state[p]["base_v"].item()
    second = DualOptimPlus([p], **options)
    carry_states(second, first.state_dict(), "carry_base")
    theta, g = p.item(), 0.4
    p.grad = torch.tensor([g])
    second.step(objective="forget")

    b1, b2 = 0.9, 0.95
    t = 8  # the carried t (7) plus this step
    m_hat = base_m / (1 - b1 ** (t - 1))
    v_hat = base_v / (1 - b2 ** (t - 1))
    dm = (1 - b1) * (g - m_hat) / (1 - b1)  # residual from 0, bias-corrected with s_f = 1
    dv = (1 - b2) * (g * g - v_hat) / (1 - b2)
    u = (dm + m_hat) / (math.sqrt(abs(dv + v_hat)) + 1e-8)
    assert p.item() == pytest.approx(theta - 0.1 * u, rel=1e-5)


def test_masks_are_the_new_requests() -> None:
    model = _model()
    weight = model[0].weight
    first = _optimizer("dual", model)
    first.set_mask("forget", {weight: torch.zeros_like(weight, dtype=torch.bool)})
    _steps(model, first, 0, 3)
    second = _optimizer("dual", model)
    new_mask = torch.ones_like(weight, dtype=torch.bool)
    new_mask[0] = False
    second.set_mask("forget", {weight: new_mask})
    carry_states(second, first.state_dict(), "carry")
    assert torch.equal(second.masks("forget")[weight], new_mask)
    assert "forget.exp_avg" in second.state[weight]  # the states came along
    third = _optimizer("dual", model)
    carry_states(third, first.state_dict(), "carry")
    assert third.masks("forget") == {}


def test_policies_are_checked() -> None:
    assert check_policy("carry", "dual") == "carry"
    assert check_policy("carry_base", "dual_plus_8bit") == "carry_base"
    with pytest.raises(ValueError, match="one of reset, carry, carry_base"):
        check_policy("keep", "dual")
    with pytest.raises(ValueError, match="'dual' setting has no base state"):
        check_policy("carry_base", "dual")
    model = _model()
    with pytest.raises(ValueError, match="needs a DualOptimPlus"):
        carry_states(
            _optimizer("dual", model), _optimizer("dual", model).state_dict(), "carry_base"
        )


def test_carry_refuses_another_kind_of_state() -> None:
    model = _model()
    first = _optimizer("dual", model)
    _steps(model, first, 0, 2)
    with pytest.raises(ValueError, match="not from a"):
        carry_states(_optimizer("dual_plus", model), first.state_dict(), "carry")

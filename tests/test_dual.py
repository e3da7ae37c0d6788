"""DualOptimizer and SharedOptimizer against hand-written references, and their invariants."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from dualoptim import DualOptimizer, OptimizerSpec, SharedOptimizer
from helpers import MIXED, grads_for, roundtrip
from reference import AdamWRef, SGDRef

N = 12


def run(opt: torch.optim.Optimizer, p: torch.nn.Parameter, grads, sequence) -> list[torch.Tensor]:
    """Apply prescribed gradients along ``sequence``; return θ after each step."""
    out = []
    for g, objective in zip(grads, sequence, strict=True):
        p.grad = g.clone()
        opt.step(objective=objective)
        opt.zero_grad()
        out.append(p.detach().clone())
    return out


def reference_run(refs: dict, theta0: torch.Tensor, grads, sequence) -> list[list[float]]:
    theta, out = theta0.tolist(), []
    for g, objective in zip(grads, sequence, strict=True):
        theta = refs[objective].step(theta, g.tolist())
        out.append(theta)
    return out


def fresh_param(seed: int = 1) -> torch.nn.Parameter:
    gen = torch.Generator().manual_seed(seed)
    return torch.nn.Parameter(torch.randn(N, generator=gen, dtype=torch.float64))


CASES = {
    "adamw+sgd": (
        OptimizerSpec("adamw", {"lr": 3e-3, "weight_decay": 0.05}),
        OptimizerSpec("sgd", {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}),
        lambda: {
            "forget": AdamWRef(lr=3e-3, weight_decay=0.05),
            "retain": SGDRef(lr=0.01, momentum=0.9, weight_decay=5e-4),
        },
    ),
    "adamw+adamw": (
        OptimizerSpec("adamw", {"lr": 3e-3, "betas": (0.9, 0.95), "weight_decay": 0.01}),
        OptimizerSpec("adamw", {"lr": 1e-3, "betas": (0.9, 0.95), "weight_decay": 0.01}),
        lambda: {
            "forget": AdamWRef(lr=3e-3, betas=(0.9, 0.95), weight_decay=0.01),
            "retain": AdamWRef(lr=1e-3, betas=(0.9, 0.95), weight_decay=0.01),
        },
    ),
    "adam+adam": (
        OptimizerSpec("adam", {"lr": 1e-3}),
        OptimizerSpec("adam", {"lr": 2e-3}),
        lambda: {"forget": AdamWRef(lr=1e-3), "retain": AdamWRef(lr=2e-3)},
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_dual_matches_hand_reference_on_mixed_sequence(case: str) -> None:
    forget, retain, make_refs = CASES[case]
    p = fresh_param()
    grads = grads_for(N, len(MIXED))
    got = run(DualOptimizer([p], forget, retain), p, grads, MIXED)
    want = reference_run(make_refs(), fresh_param().detach(), grads, MIXED)
    for step, (g, w) in enumerate(zip(got, want, strict=True)):
        torch.testing.assert_close(
            g, torch.tensor(w, dtype=torch.float64), rtol=1e-12, atol=1e-12, msg=f"step {step}"
        )


def test_shared_optimizer_shares_one_state_with_per_phase_step_sizes() -> None:
    """Alternate baseline: SGD momentum carried across phases, η_f on forget, η_r on retain."""
    p = fresh_param()
    grads = grads_for(N, len(MIXED))
    opt = SharedOptimizer([p], OptimizerSpec("sgd", {"lr": 0.01, "momentum": 0.9}), forget_lr=0.1)
    got = run(opt, p, grads, MIXED)
    theta, buf = fresh_param().detach().tolist(), [0.0] * N
    for step, (g, objective) in enumerate(zip(grads, MIXED, strict=True)):
        lr = 0.1 if objective == "forget" else 0.01
        buf = [gi if step == 0 else 0.9 * b + gi for b, gi in zip(buf, g.tolist(), strict=True)]
        theta = [t - lr * b for t, b in zip(theta, buf, strict=True)]
        torch.testing.assert_close(
            got[step], torch.tensor(theta, dtype=torch.float64), rtol=1e-12, atol=1e-12
        )
    assert opt.inner["forget"] is opt.inner["retain"]


def test_forget_step_never_touches_retain_state_and_vice_versa() -> None:
    p = fresh_param()
    opt = DualOptimizer([p])
    grads = grads_for(N, 6)
    run(opt, p, grads[:2], ("forget", "retain"))
    for g, objective in zip(grads[2:], ("forget", "forget", "retain", "retain"), strict=True):
        other = "retain" if objective == "forget" else "forget"
        before = copy.deepcopy(opt.inner[other].state_dict())
        p.grad = g.clone()
        opt.step(objective=objective)
        after = opt.inner[other].state_dict()
        for key, value in before["state"][0].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(after["state"][0][key])), key


def test_inner_optimizers_are_fused_by_default_on_cpu() -> None:
    opt = DualOptimizer([fresh_param()])
    assert opt.inner["forget"].param_groups[0]["fused"] is True
    assert opt.inner["retain"].param_groups[0]["fused"] is True


def test_is_a_torch_optimizer_listing_each_parameter_once() -> None:
    model = torch.nn.Linear(4, 3)
    opt = DualOptimizer(model.parameters())
    assert isinstance(opt, torch.optim.Optimizer)
    listed = [p for g in opt.param_groups for p in g["params"]]
    assert len(listed) == len({id(p) for p in listed}) == 2
    model(torch.randn(2, 4)).sum().backward()
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(
    "make",
    [
        functools.partial(DualOptimizer),
        functools.partial(SharedOptimizer, forget_lr=0.05),
        functools.partial(
            DualOptimizer,
            forget=OptimizerSpec("adamw8bit", {"lr": 1e-3}),
            retain=OptimizerSpec("adamw8bit", {"lr": 1e-3}),
        ),
    ],
    ids=["dual", "shared", "dual-8bit"],
)
def test_state_dict_round_trip_mid_run_continues_bit_identically(make) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(80, 64), torch.nn.Tanh(), torch.nn.Linear(64, 3))
    opt = make(model.parameters())
    data = [(torch.randn(8, 80), torch.randint(0, 3, (8,))) for _ in range(len(MIXED))]

    def train(m, o, steps) -> None:
        for (x, y), objective in steps:
            loss = torch.nn.functional.cross_entropy(m(x), y)
            (-loss if objective == "forget" else loss).backward()
            o.step(objective=objective)
            o.zero_grad()

    steps = list(zip(data, MIXED, strict=True))
    train(model, opt, steps[:5])
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), roundtrip(opt.state_dict())
    train(model, opt, steps[5:])

    model2 = copy.deepcopy(model)
    model2.load_state_dict(saved_model)
    opt2 = make(model2.parameters())
    opt2.load_state_dict(saved_opt)
    train(model2, opt2, steps[5:])
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b)
    assert opt2.step_counts == opt.step_counts


def test_one_scheduler_scales_both_objectives_each_keeping_its_step_size() -> None:
    p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = DualOptimizer(
        [p], forget=OptimizerSpec("sgd", {"lr": 0.5}), retain=OptimizerSpec("sgd", {"lr": 0.1})
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 / (k + 1))
    for k in range(4):
        factor = 1.0 / (k + 1)
        assert opt.lr_of("forget") == pytest.approx(0.5 * factor)
        assert opt.lr_of("retain") == pytest.approx(0.1 * factor)
        for objective, base in (("forget", 0.5), ("retain", 0.1)):
            before = p.detach().clone()
            p.grad = torch.ones(3, dtype=torch.float64)
            opt.step(objective=objective)
            torch.testing.assert_close(
                before - p.detach(), torch.full((3,), base * factor, dtype=torch.float64)
            )
        sched.step()


def test_current_objective_drives_plain_step() -> None:
    p = fresh_param()
    opt = DualOptimizer([p])
    p.grad = torch.ones(N, dtype=torch.float64)
    with pytest.raises(ValueError, match="no objective"):
        opt.step()
    opt.objective = "retain"
    opt.step()
    with opt.use_objective("forget"):
        opt.step()
    assert opt.objective == "retain"
    assert opt.step_counts == {"forget": 1, "retain": 1}


def test_param_group_options_reach_both_inner_optimizers() -> None:
    w, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = DualOptimizer(
        [{"params": [w]}, {"params": [b], "weight_decay": 0.0, "forget_options": {"eps": 1e-6}}]
    )
    f, r = opt.inner["forget"].param_groups, opt.inner["retain"].param_groups
    assert f[0]["weight_decay"] == 0.05
    assert r[0]["weight_decay"] == 5e-4
    assert f[1]["weight_decay"] == 0.0
    assert r[1]["weight_decay"] == 0.0
    assert f[1]["eps"] == 1e-6
    assert f[0]["eps"] == 1e-8


def test_add_param_group_extends_both_states() -> None:
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = DualOptimizer([a])
    opt.add_param_group({"params": [b], "retain_lr": 0.5})
    assert len(opt.inner["forget"].param_groups) == len(opt.inner["retain"].param_groups) == 2
    b.grad = torch.ones(2)
    opt.step(objective="retain")
    assert opt.lr_of("retain", group=1) == 0.5
    assert torch.allclose(b.detach(), torch.full((2,), 0.5 - 0.5 * 5e-4))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda o: o.step(objective="forgett"), ValueError, "'forget' or 'retain'"),
        (
            lambda o: o.load_state_dict(SharedOptimizer([fresh_param()]).state_dict()),
            ValueError,
            "not from a DualOptimizer",
        ),
    ],
)
def test_bad_input_fails_early_with_a_clear_message(call, error, match) -> None:
    opt = DualOptimizer([fresh_param()])
    with pytest.raises(error, match=match):
        call(opt)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"name": "adagradd", "lr": 1.0}, "unknown optimizer 'adagradd'"),
        ({"name": "adamw"}, "needs an 'lr'"),
        ({"lr": 1.0}, "needs a 'name'"),
        ("adamw", "OptimizerSpec"),
    ],
)
def test_bad_optimizer_spec_is_named(spec, match) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        DualOptimizer([fresh_param()], forget=spec)


def test_partial_of_a_torch_class_is_accepted() -> None:
    p = fresh_param()
    opt = DualOptimizer([p], forget=functools.partial(torch.optim.Adam, lr=1e-3))
    assert isinstance(opt.inner["forget"], torch.optim.Adam)
    assert opt.lr_of("forget") == 1e-3

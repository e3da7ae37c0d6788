"""Bad inputs to the optimizer API and to engine checkpoints (issue 13, parts 4 and 7).

Every case asserts the exception type, a message naming what is wrong (optimizer types,
parameter and shapes, or the checkpoint file), and that nothing was changed: the optimizer's
``state_dict()`` (its state and param_groups), or the checkpoint file and the model.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from dualoptim import DualOptimizer, DualOptimPlus, OptimizerSpec, SharedOptimizer
from dualoptim.optim.objective import ObjectiveOptimizer
from dualoptim.unlearn import EngineConfig, Schedule, unlearn
from helpers import roundtrip
from test_engine import Relabel, data, model, optimizer

ADAMW_SGD = {
    "forget": OptimizerSpec("adamw", {"lr": 1e-3}),
    "retain": OptimizerSpec("sgd", {"lr": 1e-2, "momentum": 0.9}),
}
MAKERS: dict[str, Callable[..., ObjectiveOptimizer]] = {
    "dual": functools.partial(DualOptimizer, **ADAMW_SGD),
    "dual_adam": functools.partial(
        DualOptimizer, forget=OptimizerSpec("adam", {"lr": 1e-3}), retain=ADAMW_SGD["retain"]
    ),
    "dual_adamw_adamw": functools.partial(
        DualOptimizer, forget=ADAMW_SGD["forget"], retain=OptimizerSpec("adamw", {"lr": 1e-3})
    ),
    "dual_8bit": functools.partial(
        DualOptimizer,
        forget=OptimizerSpec("adamw8bit", {"lr": 1e-3}),
        retain=OptimizerSpec("sgd8bit", {"lr": 1e-2, "momentum": 0.9}),
    ),
    "shared": functools.partial(SharedOptimizer, optimizer=ADAMW_SGD["retain"], forget_lr=0.05),
    "plus": functools.partial(DualOptimPlus, forget_lr=1e-3, retain_lr=1e-3, compile=False),
    # min_8bit_size 1000: the (64, 80) and (80, 64) weights get block-wise 8-bit states
    "plus_8bit": functools.partial(
        DualOptimPlus, state_bits=8, min_8bit_size=1000, retain_lr=1e-3, compile=False
    ),
}


def net() -> nn.Module:
    """Weights (64, 80) and (80, 64): the same element count, other shapes (the issue's case)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(80, 64), nn.Tanh(), nn.Linear(64, 80))


def trained(name: str, steps: int = 3) -> ObjectiveOptimizer:
    """An optimizer of ``name`` after a few steps of both objectives (so it has states)."""
    m = net()
    opt = MAKERS[name](m.parameters())
    for k in range(steps):
        m(torch.randn(8, 80)).pow(2).mean().backward()
        opt.step(objective="forget" if k % 2 else "retain")
        opt.zero_grad()
    return opt


def torch_adamw_state() -> dict[str, Any]:
    m = net()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    m(torch.randn(8, 80)).pow(2).mean().backward()
    opt.step()
    return opt.state_dict()


def assert_same(a: Any, b: Any) -> None:
    """Equal state dicts: the same structure, equal values, bit-identical tensors."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor)
        assert a.dtype == b.dtype
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict)
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert type(a) is type(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b


def assert_message(error: pytest.ExceptionInfo, patterns: tuple[str, ...]) -> None:
    for pattern in patterns:
        assert re.search(pattern, str(error.value)), (pattern, str(error.value))


def refused(opt: ObjectiveOptimizer, state_dict: Any, *patterns: str) -> None:
    """Load ``state_dict``: assert a ValueError whose message matches every pattern, and that
    the optimizer's state and param_groups are exactly as before."""
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=patterns[0]) as info:
        opt.load_state_dict(state_dict)
    assert_message(info, patterns)
    assert_same(opt.state_dict(), before)


def swap(state: dict[str, Any], a: int, b: int) -> None:
    state[a], state[b] = state[b], state[a]


# ---------------------------------------------------------------------------- another type
@pytest.mark.parametrize(
    ("saved", "into", "saved_kind", "into_kind"),
    [
        (
            "plus",
            "dual",
            "DualOptimPlus(state_bits=[32])",
            "DualOptimizer(forget=AdamW, retain=SGD)",
        ),
        (
            "dual",
            "plus",
            "DualOptimizer(forget=AdamW, retain=SGD)",
            "DualOptimPlus(state_bits=[32])",
        ),
        (
            "dual",
            "dual_adam",
            "DualOptimizer(forget=AdamW, retain=SGD)",
            "DualOptimizer(forget=Adam, retain=SGD)",
        ),
        (
            "dual",
            "dual_adamw_adamw",
            "DualOptimizer(forget=AdamW, retain=SGD)",
            "DualOptimizer(forget=AdamW, retain=AdamW)",
        ),
        (
            "shared",
            "dual",
            "SharedOptimizer(forget=SGD, retain=SGD)",
            "DualOptimizer(forget=AdamW, retain=SGD)",
        ),
        ("plus_8bit", "plus", "DualOptimPlus(state_bits=[8])", "DualOptimPlus(state_bits=[32])"),
        (
            "dual_8bit",
            "dual",
            "DualOptimizer(forget=AdamW8bit, retain=SGD8bit)",
            "DualOptimizer(forget=AdamW, retain=SGD)",
        ),
    ],
    ids=[
        "plus->dual",
        "dual->plus",
        "adamw->adam",
        "sgd->adamw",
        "shared->dual",
        "8bit->fp32",
        "dual8bit->dual",
    ],
)
def test_a_state_dict_of_another_optimizer_type_is_refused(
    saved: str, into: str, saved_kind: str, into_kind: str
) -> None:
    opt = trained(into)
    saved_state = roundtrip(trained(saved).state_dict())
    refused(opt, saved_state, re.escape(f"from {saved_kind}, not from a {into_kind};"))


def test_dual_plus_keeps_its_step_sizes_when_offered_a_dual_optimizer_state() -> None:
    """The issue's example: DO+ took DualOptimizer's retain_lr (100x its own)."""
    opt = trained("plus")
    refused(opt, trained("dual").state_dict(), "DualOptimizer")
    assert opt.param_groups[0]["retain_lr"] == 1e-3


@pytest.mark.parametrize("into", ["dual", "shared", "plus", "plus_8bit"])
def test_a_plain_torch_adamw_state_dict_is_refused_and_called_what_it_is(into: str) -> None:
    refused(trained(into), torch_adamw_state(), "plain torch optimizer's state dict", "amsgrad")


def test_a_state_dict_saved_before_types_were_recorded_is_refused() -> None:
    old = trained("dual").state_dict()
    del old["optimizer"], old["param_groups"][0]["dualoptim"]
    refused(trained("dual"), old, "older dualoptim", "start from a fresh optimizer")


@pytest.mark.parametrize("value", [[1, 2], "state.pt", {"weights": torch.zeros(3)}])
def test_something_that_is_no_state_dict_is_refused(value: Any) -> None:
    refused(trained("plus"), value, "not an optimizer state dict")


# ---------------------------------------------------------------------------- shapes
@pytest.mark.parametrize(
    ("name", "key", "pattern"),
    [
        # weights swapped: (80, 64) states for the (64, 80) weight, the glibc abort
        (
            "dual",
            0,
            r"DualOptimizer.load_state_dict: parameter 0 of group 0 \(shape \(64, 80\)\)"
            r".*'forget.exp_avg'.* shape \(80, 64\), expected \(64, 80\)",
        ),
        (
            "shared",
            0,
            r"SharedOptimizer.load_state_dict: parameter 0 of group 0 .*'shared.momentum_buffer'.*"
            r" shape \(80, 64\), expected \(64, 80\)",
        ),
        (
            "dual_8bit",
            0,
            r"parameter 0 .*'forget.state1'.* shape \(80, 64\), expected \(64, 80\)",
        ),
        # biases swapped: flat DO+ states of 80 values for a 64-value bias
        (
            "plus",
            1,
            r"parameter 1 of group 0 \(shape \(64,\)\).*'base_m'.* shape \(80,\), expected \(64,\)",
        ),
    ],
    ids=["dual-fused", "shared", "dual-8bit", "plus"],
)
def test_swapped_states_of_other_shapes_are_refused_before_any_kernel_runs(
    name: str, key: int, pattern: str
) -> None:
    opt = trained(name)
    bad = copy.deepcopy(opt.state_dict())
    swap(bad["state"], key, key + 2)
    if name == "dual":
        assert opt.inner["forget"].defaults["fused"]  # the default that crashed
    refused(opt, bad, pattern)


def test_block_wise_8bit_states_are_checked_against_the_block_layout() -> None:
    """A (64, 80) weight has 64 rows of 80 values: one block per row (SPEC §1.5, blocks never
    cross a row), so (64, 256) codes and (64, 1) absmax values; a state one row short, or
    flat as before row alignment, or from another min_8bit_size, is refused."""
    opt = trained("plus_8bit")
    bad = copy.deepcopy(opt.state_dict())
    bad["state"][0]["retain_v_absmax"] = bad["state"][0]["retain_v_absmax"][:-1]
    refused(
        opt,
        bad,
        r"parameter 0 of group 0 \(shape \(64, 80\)\)"
        r".*'retain_v_absmax'.* \(63, 1\), expected \(64, 1\)",
    )
    flat = copy.deepcopy(opt.state_dict())
    flat["state"][0]["base_m"] = torch.zeros(20 * 256, dtype=torch.uint8)  # 20 flat blocks
    refused(opt, flat, r"'base_m'.* shape \(5120,\), expected \(64, 256\)")
    other = DualOptimPlus(net().parameters(), state_bits=8, min_8bit_size=10_000, compile=False)
    refused(other, opt.state_dict(), r"parameter 0 of group 0 .*unknown key.*'base_m_absmax'")


@pytest.mark.parametrize(
    ("name", "key", "pattern"),
    [
        ("plus", "base_v", r"parameter 0 of group 0 .* lacks key\(s\) \['base_v'\]"),
        ("plus_8bit", "forget_m_absmax", r"lacks key\(s\) \['forget_m_absmax'\]"),
        ("dual_8bit", "retain.step", r"DualOptimizer.* lacks key\(s\) \['retain.step'\]"),
        ("dual", "forget.exp_avg_sq", r"lacks key\(s\) \['forget.exp_avg_sq'\]"),
    ],
    ids=["plus", "plus-8bit", "dual-8bit", "dual"],
)
def test_missing_state_keys_are_named(name: str, key: str, pattern: str) -> None:
    opt = trained(name)
    bad = copy.deepcopy(opt.state_dict())
    bad["state"][0].pop(key)
    refused(opt, bad, pattern)


@pytest.mark.parametrize(
    ("corrupt", "pattern"),
    [
        (
            lambda sd: sd["state"][0].update(forget_mask=torch.ones(3, dtype=torch.bool)),
            r"\['forget_mask'\] has shape \(3,\), expected \(64, 80\)",
        ),
        (
            lambda sd: sd["state"][0].update(retain_mask=torch.ones(64, 80)),
            r"\['retain_mask'\] has dtype torch.float32, expected torch.bool",
        ),
        (
            lambda sd: sd["state"][1].update(base_m=sd["state"][1]["base_m"].double()),
            r"\['base_m'\] has dtype torch.float64, expected torch.float32",
        ),
        (
            lambda sd: sd["state"][1].update(momentum=torch.zeros(64)),
            r"unknown key\(s\) \['momentum'\]",
        ),
        (lambda sd: sd["state"].update({7: {}}), r"parameter id 7, which no group lists"),
        (
            lambda sd: sd["param_groups"].append(sd["param_groups"][0]),
            r"2 parameter groups, optimizer has 1",
        ),
        (
            lambda sd: sd["param_groups"][0]["params"].pop(),
            r"group 0: state dict has 3 parameters, optimizer has 4",
        ),
        (
            lambda sd: sd.update(step_counts={"forget": 1}),
            r"step_counts must map 'forget' and 'retain'",
        ),
        (lambda sd: sd.update(objective="forgett"), r"unknown objective 'forgett'"),
    ],
    ids=[
        "mask-shape",
        "mask-dtype",
        "state-dtype",
        "unknown-key",
        "unknown-id",
        "groups",
        "params",
        "step-counts",
        "objective",
    ],
)
def test_malformed_states_are_named(corrupt: Callable[[dict], Any], pattern: str) -> None:
    opt = trained("plus")
    bad = copy.deepcopy(opt.state_dict())
    corrupt(bad)
    refused(opt, bad, pattern)


@pytest.mark.parametrize("name", list(MAKERS))
def test_a_state_dict_of_the_same_optimizer_still_loads_after_the_checks(name: str) -> None:
    saved = roundtrip(trained(name, steps=5).state_dict())
    fresh = MAKERS[name](net().parameters())
    fresh.load_state_dict(saved)
    assert_same(fresh.state_dict(), saved)


# ---------------------------------------------------------------------------- checkpoints
def write_checkpoint(directory: Path, setting: str = "dual") -> Path:
    """Run two steps with checkpointing; return the checkpoint file."""
    checkpointed_run(directory, setting, steps=2)
    return directory / "checkpoint.pt"


def checkpointed_run(directory: Path, setting: str, steps: int, **kwargs: Any):
    """Run ``steps`` retain steps of ``setting`` with checkpoints in ``directory``."""
    m = model()
    cfg = EngineConfig(
        Schedule(1, forget_steps=0, retain_steps=steps),
        retain_batch=8,
        progress=False,
        checkpoint_dir=directory,
        checkpoint_every=1,
        **kwargs,
    )
    return m, unlearn(m, Relabel(), data(10, 1), data(40, 2), optimizer(setting, m), cfg)


def edit(path: Path, change: Callable[[dict], Any]) -> bytes:
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)
    return path.read_bytes()


def refused_checkpoint(path: Path, content: bytes, *patterns: str) -> None:
    """Resuming a dual run from ``path`` raises a ValueError naming the file, and leaves the
    file, the model and the optimizer untouched."""
    m = model()
    opt = optimizer("dual", m)
    cfg = EngineConfig(
        Schedule(1, forget_steps=0, retain_steps=4),
        retain_batch=8,
        progress=False,
        checkpoint_dir=path.parent,
        checkpoint_every=1,
    )
    with pytest.raises(ValueError, match=re.escape(str(path))) as info:
        unlearn(m, Relabel(), data(10, 1), data(40, 2), opt, cfg)
    assert_message(info, patterns)
    assert path.read_bytes() == content
    assert_same(m.state_dict(), model().state_dict())  # the model as given, not the checkpoint's
    assert opt.step_counts == {"forget": 0, "retain": 0}
    assert not opt.inner["retain"].state


def test_a_checkpoint_of_another_world_size_is_refused_unless_allowed(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path)
    content = edit(path, lambda s: s.update(world_size=2))  # as if written by 2 processes
    refused_checkpoint(
        path, content, "written by 2 process", "this run has 1", "allow_world_size_change=True"
    )
    _, result = checkpointed_run(tmp_path, "dual", steps=4, allow_world_size_change=True)
    assert result.resumed_from_step == 2
    assert result.steps["retain"] == 4


@pytest.mark.parametrize(
    ("change", "patterns"),
    [
        (lambda s: s.update(format=1), ["older dualoptim", "format 1"]),
        (lambda s: s.pop("world_size"), ["incomplete", "world_size"]),
        (lambda s: s.update(format="x"), ["not a dualoptim engine checkpoint"]),
        (lambda s: s["model"].pop("0.bias"), ["of another model", "0.bias"]),
        (
            lambda s: s["model"].update({"3.weight": torch.zeros(4, 32)}),
            [r"of another model: '3.weight' is \(4, 32\)"],
        ),
        (
            lambda s: s["optimizer"]["state"][0].update({"retain.momentum_buffer": torch.zeros(3)}),
            [
                "another optimizer's state",
                r"parameter 0 of group 0",
                r"\(3,\), expected \(32, 10\)",
            ],
        ),
        (lambda s: s["streams"].pop("forget"), ["batch streams", "another forget/retain setup"]),
    ],
    ids=[
        "format-1",
        "no-world-size",
        "foreign",
        "model-keys",
        "model-shapes",
        "optimizer-shapes",
        "streams",
    ],
)
def test_a_foreign_or_damaged_checkpoint_is_named(
    tmp_path: Path, change, patterns: list[str]
) -> None:
    path = write_checkpoint(tmp_path)
    refused_checkpoint(path, edit(path, change), *patterns)


def test_a_checkpoint_of_another_optimizer_type_is_named(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path, setting="dual_plus")
    refused_checkpoint(
        path,
        path.read_bytes(),
        "another optimizer's state",
        r"from DualOptimPlus",
        r"not from a DualOptimizer",
    )


def test_a_corrupt_checkpoint_is_named(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"\x80\x02 truncated")
    refused_checkpoint(path, path.read_bytes(), "unreadable or corrupt", "delete it to start over")

"""benchmarks/optimizer_memory.py measures what the optimizers really hold: on a tiny model its
measuring function gives exactly the analytic state bytes, and leaves masks out."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

from dualoptim.optim.settings import SETTINGS

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "optimizer_memory.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("optimizer_memory", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def tiny() -> nn.Module:
    """Two weights of uneven shapes and two biases; the first weight frozen (as LoRA's base)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(13, 40), nn.Tanh(), nn.Linear(40, 7))
    model[0].weight.requires_grad_(False)
    return model


TRAINABLE = 40 + 7 * 40 + 7  # the frozen 40×13 weight carries no state


@pytest.mark.parametrize(
    ("setting", "moment_bytes", "counter_bytes"),
    [
        # AdamW's exp_avg and exp_avg_sq + SGD's momentum, fp32; AdamW's fp32 step counter
        # is one 0-dim tensor per parameter
        ("dual", 12 * TRAINABLE, 4 * 3),
        # B_m, B_v, Δm and Δv of both objectives, fp32 (its counters are not checked here)
        ("dual_plus", 24 * TRAINABLE, None),
    ],
)
def test_measured_bytes_are_the_analytic_count(
    bench: ModuleType,
    setting: str,
    moment_bytes: int,
    counter_bytes: int | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(bench.PLUS_OPTIONS, "compile", False)  # same states, no compile wait
    measured = bench.measure(setting, tiny(), step=False)
    assert measured.params == TRAINABLE
    assert measured.moment_bytes == moment_bytes
    if counter_bytes is not None:
        assert measured.counter_bytes == counter_bytes


@pytest.mark.parametrize("setting", SETTINGS)
def test_init_state_creates_every_state_a_step_would(
    bench: ModuleType, setting: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the 1-process numbers rely on: init_state's bytes are a real step's."""
    monkeypatch.setitem(bench.PLUS_OPTIONS, "compile", False)
    model = tiny()
    assert bench.measure(setting, model, step=True) == bench.measure(setting, model, step=False)


def test_the_7b_rows_scale_the_measured_bytes_per_parameter(bench: ModuleType) -> None:
    cells = [
        {"variant": "full", "dtype": "float32", "setting": "dual", "world": world}
        | {"status": "measured", "bytes_per_param": 12.5}
        for world in (1, 2)
    ]
    cells.append(cells[1] | {"setting": "dual_plus", "status": bench.NOT_SUPPORTED})
    rows = bench.extrapolate(cells)
    assert [(r["setting"], r["ranks"]) for r in rows] == [
        ("dual", 1),
        ("dual", 8),
        ("dual_plus", 8),
    ]
    assert all(r["basis"] == bench.EXTRAPOLATED for r in rows)
    assert rows[0]["bytes_per_rank"] == 12.5 * 6_738_415_616
    assert rows[1]["bytes_per_rank"] == 12.5 * 6_738_415_616 / 8
    assert rows[2]["status"] == bench.NOT_SUPPORTED
    assert "bytes_per_rank" not in rows[2]


def test_masks_and_shared_storages_are_not_counted(bench: ModuleType) -> None:
    model = tiny()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = bench.make_optimizer("dual", params)
    optimizer.init_state()
    before = bench.state_bytes(optimizer)
    optimizer.set_mask("forget", {params[1]: torch.ones(7, 40, dtype=torch.bool)})
    shared = optimizer.state[params[0]]["retain.momentum_buffer"]
    optimizer.state[params[1]]["alias"] = shared  # one storage held twice counts once
    assert bench.state_bytes(optimizer) == before

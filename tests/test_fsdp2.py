"""The optimizers on a model sharded by torch's FSDP2 (``fully_shard``): 2 CPU processes, gloo.

The model has a weight whose dim-0 shards are uneven (7 rows over 2 ranks) and whose shard
boundary is not on a multiple of 256 elements. Each setting (with and without masks) must
train the shards as one process trains the whole model on the mean of the ranks' gradients,
keep every state sharded like its parameter, and resume bit-identically from a mid-run
torch distributed checkpoint into a fresh model and optimizer.

This file is also the script each rank runs (``python tests/test_fsdp2.py OUT_DIR``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn.functional as F
from torch import Tensor, nn

from dualoptim.optim import ObjectiveOptimizer
from dualoptim.optim.settings import build_optimizer

WORLD_SIZE = 2
SETTINGS = ("dual", "alternate", "joint", "dual_plus", "dual_plus_8bit")
SEQUENCE = "FRRFRRFRFRRF"
GLOBAL_BATCH = 16
#: (300, 13): rows of 13, fp32 states; (7, 300): 8-bit rows of 2 blocks, sharded 4 + 3 rows
#: with the boundary at 1200 values, not on a multiple of 256.
IN_FEATURES, HIDDEN, CLASSES = 13, 300, 7
#: max |FSDP2 − one process on the mean of the shards' gradients| over 12 steps. A mean of
#: two is exact in floats whatever the order, so every setting could end bit-equal; DO+ (eager)
#: must, the others get the issue's 1e-6.
TOLERANCE = {"dual": 1e-6, "alternate": 1e-6, "joint": 1e-6, "dual_plus": 0.0}
TOLERANCE["dual_plus_8bit"] = 0.0
#: Moves far beyond any tolerance: a parameter that moved less did not train.
MOVED = 1e-4


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(IN_FEATURES, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, CLASSES))


def make_optimizer(setting: str, model: nn.Module, masked: bool) -> ObjectiveOptimizer:
    plus = {"retain_lr": 1e-2, "compile": False, "min_8bit_size": 256}
    optimizer = build_optimizer(
        setting,
        model.parameters(),
        forget={"name": "adamw", "weight_decay": 0.05},
        retain={"name": "sgd", "momentum": 0.9, "weight_decay": 5e-4},
        plus=plus if setting.startswith("dual_plus") else None,
        forget_lr=1e-2,
        retain_lr=0.05,
    )
    if masked:  # SFR-on style: the forget objective moves 70% of the first weight only
        generator = torch.Generator().manual_seed(3)
        first = model[0].weight
        mask = torch.rand(first.shape, generator=generator) < 0.7
        optimizer.set_mask("forget", {first: mask})
    return optimizer


def steps() -> list[tuple[str, Tensor, Tensor]]:
    generator = torch.Generator().manual_seed(1)
    out = []
    for code in SEQUENCE:
        x = torch.randn(GLOBAL_BATCH, IN_FEATURES, generator=generator)
        y = torch.randint(0, CLASSES, (GLOBAL_BATCH,), generator=generator)
        out.append(("forget" if code == "F" else "retain", x, y))
    return out


def half(rank: int) -> slice:
    size = GLOBAL_BATCH // WORLD_SIZE
    return slice(rank * size, (rank + 1) * size)


def step(optimizer: ObjectiveOptimizer, objective: str, loss: Tensor) -> None:
    (-loss if objective == "forget" else loss).backward()
    optimizer.step(objective=objective)
    optimizer.zero_grad()


def one_process(setting: str, masked: bool) -> dict[str, Tensor]:
    """The whole model, on the mean of the two halves' losses (the mean of their gradients),
    on one thread as the ranks run, so every matmul rounds as theirs do."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _one_process(setting, masked)
    finally:
        torch.set_num_threads(threads)


def _one_process(setting: str, masked: bool) -> dict[str, Tensor]:
    model = make_model()
    optimizer = make_optimizer(setting, model, masked)
    for objective, x, y in steps():
        halves = [F.cross_entropy(model(x[half(r)]), y[half(r)]) for r in range(WORLD_SIZE)]
        step(optimizer, objective, torch.stack(halves).mean())
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------- the ranks
def sharded(setting: str, masked: bool):
    from torch.distributed.fsdp import fully_shard

    model = make_model()
    for layer in (model[0], model[2]):
        fully_shard(layer)
    fully_shard(model)
    return model, make_optimizer(setting, model, masked)


def full_parameters(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.full_tensor().detach().clone() for k, v in model.state_dict().items()}


def rank_run(setting: str, masked: bool, rank: int, folder: Path) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )
    from torch.distributed.tensor import DTensor

    model, optimizer = sharded(setting, masked)
    plan = steps()
    middle = len(plan) // 2
    for i, (objective, x, y) in enumerate(plan):
        if i == middle:  # a checkpoint mid-run, as accelerate's FSDP2 save_state writes it
            saved = {
                "model": get_model_state_dict(model),
                "optimizer": get_optimizer_state_dict(model, optimizer),
            }
            dcp.save(saved, checkpoint_id=folder)
        step(optimizer, objective, F.cross_entropy(model(x[half(rank)]), y[half(rank)]))
    states = [  # every state but the scalar step counters
        v for s in optimizer.state.values() for v in s.values() if isinstance(v, Tensor) and v.dim()
    ]
    uninterrupted = full_parameters(model)

    resumed, resumed_optimizer = sharded(setting, masked)
    resumed_optimizer.init_state()
    target = {
        "model": get_model_state_dict(resumed),
        "optimizer": get_optimizer_state_dict(resumed, resumed_optimizer),
    }
    dcp.load(target, checkpoint_id=folder)
    set_model_state_dict(resumed, target["model"])
    set_optimizer_state_dict(resumed, resumed_optimizer, target["optimizer"])
    for objective, x, y in plan[middle:]:
        loss = F.cross_entropy(resumed(x[half(rank)]), y[half(rank)])
        step(resumed_optimizer, objective, loss)
    return {
        "params": uninterrupted,
        "resumed": full_parameters(resumed),
        "states": len(states),
        "sharded_states": sum(isinstance(v, DTensor) for v in states),
        "local_rows": int(model[2].weight.to_local().shape[0]),
        "eight_bit": any(v.dtype == torch.uint8 for v in states),
        "step_counts": dict(optimizer.step_counts),
    }


def worker(out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    try:
        results = {}
        for setting in SETTINGS:
            for masked in (False, True):
                folder = out / f"checkpoint-{setting}-{masked}"
                results[setting, masked] = rank_run(setting, masked, rank, folder)
        torch.save({f"{s}/{m}": r for (s, m), r in results.items()}, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    from helpers import run_ranks

    return run_ranks(Path(__file__), tmp_path_factory.mktemp("fsdp2"), world=WORLD_SIZE)


@pytest.mark.slow
@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("setting", SETTINGS)
def test_fsdp2_trains_the_shards_as_one_process_trains_the_model(
    setting: str, masked: bool, ranks: list[dict[str, Any]]
) -> None:
    key = f"{setting}/{masked}"
    results = [r[key] for r in ranks]
    assert [r["local_rows"] for r in results] == [4, 3]  # the uneven shard
    assert all(r["eight_bit"] == setting.endswith("8bit") for r in results)
    for r in results:
        assert r["states"] > 0
        assert r["sharded_states"] == r["states"]  # every state is sharded like its parameter
    expected = one_process(setting, masked)
    initial = make_model().state_dict()
    for name, value in expected.items():
        got = results[0]["params"][name]
        assert torch.equal(got, results[1]["params"][name])  # the ranks agree
        assert float((got - value).abs().max()) <= TOLERANCE[setting], name
        # not vacuous: it moved as far as one process moves it (catches a silent no-train)
        moved = float((value - initial[name]).abs().max())
        assert moved > MOVED, (name, moved)
    assert [r["step_counts"] for r in results] == [{"forget": 5, "retain": 7}] * WORLD_SIZE


@pytest.mark.slow
@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("setting", SETTINGS)
def test_a_mid_run_distributed_checkpoint_resumes_bit_identically(
    setting: str, masked: bool, ranks: list[dict[str, Any]]
) -> None:
    for r in ranks:
        result = r[f"{setting}/{masked}"]
        for name, value in result["params"].items():
            assert torch.equal(result["resumed"][name], value), name


def test_dual_8bit_refuses_sharded_parameters_clearly() -> None:
    """bitsandbytes has no DTensor kernels: a clear error at the first step, not a crash."""
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.tensor import DTensor, Shard

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        mesh = DeviceMesh("cpu", [0])
        weight = nn.Parameter(DTensor.from_local(torch.ones(64, 80), mesh, [Shard(0)]))
        optimizer = build_optimizer(
            "dual_8bit",
            [weight],
            forget={"name": "adamw"},
            retain={"name": "sgd", "momentum": 0.9},
            forget_lr=1e-3,
            retain_lr=1e-2,
        )
        weight.grad = DTensor.from_local(torch.ones(64, 80), mesh, [Shard(0)])
        with pytest.raises(ValueError, match="dual_8bit cannot run under FSDP2"):
            optimizer.step(objective="forget")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    worker(Path(sys.argv[1]))

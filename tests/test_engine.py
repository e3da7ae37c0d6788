"""The unlearning engine: phases, accumulation, clipping, schedules, checkpoints and resume."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from dualoptim.optim.settings import build_optimizer
from dualoptim.unlearn import (
    BatchStream,
    EngineConfig,
    PhaseOptions,
    RunState,
    Schedule,
    cosine_decay,
    lr_factor,
    unlearn,
)

FORGET = {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05}
RETAIN = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}


@dataclass
class Tensors:
    """A Source over in-memory (x, y)."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor]:
        return self.x[index], self.y[index]


@dataclass
class Relabel:
    """A small RL-like method that logs every loss call as (kind, optimizer step)."""

    name: str = "toy"
    calls: list[tuple[str, int]] = field(default_factory=list)
    poison_at: int | None = None

    def setup(self, _model, _optimizer, run) -> None:
        run.extras["setup_calls"] = run.extras.get("setup_calls", 0) + 1

    def forget_loss(self, model, batch, run: RunState) -> Tensor:
        self.calls.append(("forget", run.step))
        x, y = batch
        loss = -nn.functional.cross_entropy(model(x), y)
        return loss * float("nan") if run.step == self.poison_at else loss

    def retain_loss(self, model, batch, run: RunState) -> Tensor:
        self.calls.append(("retain", run.step))
        x, y = batch
        return nn.functional.cross_entropy(model(x), y)


def data(n: int, seed: int) -> Tensors:
    gen = torch.Generator().manual_seed(seed)
    return Tensors(torch.randn(n, 10, generator=gen), torch.randint(0, 3, (n,), generator=gen))


def model() -> nn.Module:
    torch.manual_seed(0)  # dropout makes the run depend on the RNG, which resume must restore
    return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 3))


def optimizer(setting: str, net: nn.Module):
    """The engine tests' optimizer of ``setting`` (DO+ eager, so no compilation)."""
    plus = {"retain_lr": 1e-3, "compile": False} if setting.startswith("dual_plus") else None
    return build_optimizer(setting, net.parameters(), forget=FORGET, retain=RETAIN, plus=plus)


def run(setting: str = "dual", method=None, **config):
    net = model()
    opt = optimizer(setting, net)
    cfg = EngineConfig(
        **{"schedule": Schedule(2), "forget_batch": 4, "retain_batch": 8, "progress": False}
        | config
    )
    method = method or Relabel()
    result = unlearn(net, method, data(10, 1), data(40, 2), opt, cfg)
    return net, result, method


def test_epoch_schedule_makes_one_pass_over_each_set_per_cycle() -> None:
    _, result, method = run()
    # forget: ceil(10/4) = 3 steps, retain: ceil(40/8) = 5 steps, twice
    assert result.steps == {"forget": 6, "retain": 10, "joint": 0}
    kinds = [kind for kind, _ in method.calls]
    assert kinds == (["forget"] * 3 + ["retain"] * 5) * 2


def test_iteration_schedule_one_to_five() -> None:
    _, result, method = run(schedule=Schedule(3, forget_steps=1, retain_steps=5))
    assert result.steps == {"forget": 3, "retain": 15, "joint": 0}
    assert [k for k, _ in method.calls][:6] == ["forget"] + ["retain"] * 5


def test_accumulated_micro_batches_of_a_step_are_all_of_one_kind() -> None:
    _, result, method = run(accumulation=2, schedule=Schedule(1))
    per_step: dict[int, set[str]] = {}
    for kind, step in method.calls:
        per_step.setdefault(step, set()).add(kind)
    assert all(len(kinds) == 1 for kinds in per_step.values())
    # forget: ceil(3 batches / 2) = 2 steps of 2 micro-batches; retain: ceil(5/2) = 3 steps
    assert result.steps == {"forget": 2, "retain": 3, "joint": 0}
    assert len(method.calls) == 2 * (2 + 3)


def test_joint_steps_once_per_batch_pair_on_the_weighted_sum() -> None:
    _, result, method = run(
        "joint", joint=True, forget=PhaseOptions(weight=0.1), schedule=Schedule(2)
    )
    assert result.steps == {"forget": 0, "retain": 0, "joint": 6}
    assert [k for k, _ in method.calls[:2]] == ["forget", "retain"]
    assert all(name.startswith("loss/") for name in result.curves)


def test_clipping_bounds_the_recorded_gradient_norm_and_the_step() -> None:
    _, result, _ = run(
        "alternate",
        forget=PhaseOptions(clip_norm=1e-3),
        retain=PhaseOptions(clip_norm=1e-3),
    )
    assert "grad_norm/forget" in result.curves
    assert "grad_norm/retain" in result.curves
    unclipped = [v for _, v in result.curves["grad_norm/forget"]]
    assert max(unclipped) > 1e-3  # the recorded norm is the one before clipping


def test_loss_curves_and_evaluation_callbacks_are_recorded() -> None:
    net = model()
    opt = build_optimizer("dual", net.parameters(), forget=FORGET, retain=RETAIN)
    cfg = EngineConfig(Schedule(2), forget_batch=4, retain_batch=8, eval_every=4, progress=False)
    seen = []

    def evaluate(m: nn.Module, state: RunState) -> dict[str, float]:
        seen.append(state.step)
        assert not m.training
        return {"acc": float(state.step)}

    result = unlearn(net, Relabel(), data(10, 1), data(40, 2), opt, cfg, evaluate=evaluate)
    assert seen == [0, 4, 8, 12, 16]
    assert result.curves["eval/acc"] == [(s, float(s)) for s in seen]
    assert len(result.curves["loss/forget"]) == 6


@pytest.mark.parametrize("setting", ["alternate", "dual", "dual_plus"])
def test_resume_after_a_kill_ends_bit_identical_to_an_uninterrupted_run(
    setting: str, tmp_path: Path
) -> None:
    reference, ref_result, _ = run(setting)

    class KilledError(Exception):
        pass

    def kill_at_seven(_: nn.Module, state: RunState) -> dict[str, float]:
        if state.step == 7:
            raise KilledError
        return {}

    config = {"checkpoint_dir": tmp_path, "checkpoint_every": 3, "eval_every": 1}
    net = model()
    opt = optimizer(setting, net)
    cfg = EngineConfig(Schedule(2), forget_batch=4, retain_batch=8, progress=False, **config)
    with pytest.raises(KilledError):
        unlearn(net, Relabel(), data(10, 1), data(40, 2), opt, cfg, evaluate=kill_at_seven)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert saved["step"] == 6

    net = model()  # a new process: the original model and a fresh optimizer
    opt = optimizer(setting, net)
    result = unlearn(net, Relabel(), data(10, 1), data(40, 2), opt, cfg)
    assert result.resumed_from_step == 6
    assert result.steps == ref_result.steps
    for a, b in zip(reference.parameters(), net.parameters(), strict=True):
        assert torch.equal(a, b)
    assert result.curves["loss/retain"] == ref_result.curves["loss/retain"]


def test_nan_loss_stops_early_and_keeps_the_last_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FloatingPointError, match=r"non-finite forget loss .* step 8"):
        run(method=Relabel(poison_at=8), checkpoint_dir=tmp_path, checkpoint_every=2)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert saved["step"] == 8  # the checkpoint written before the failing step is intact


def test_corrupt_checkpoint_and_checkpoint_of_another_model_are_named(tmp_path: Path) -> None:
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="unreadable or corrupt"):
        run(checkpoint_dir=tmp_path, checkpoint_every=2)
    other = tmp_path / "other"
    net = nn.Linear(10, 3)
    opt = build_optimizer("dual", net.parameters(), forget=FORGET, retain=RETAIN)
    cfg = EngineConfig(
        Schedule(1),
        forget_batch=4,
        retain_batch=8,
        progress=False,
        checkpoint_dir=other,
        checkpoint_every=1,
    )
    unlearn(net, Relabel(), data(10, 1), data(40, 2), opt, cfg)
    with pytest.raises(ValueError, match="of another model"):
        run(checkpoint_dir=other, checkpoint_every=1, schedule=Schedule(1))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"schedule": Schedule(1, forget_steps=2)}, "no forget set"),
        ({"joint": True}, "needs both a forget and a retain set"),
    ],
)
def test_bad_runs_are_rejected_before_any_step(kwargs: dict, match: str) -> None:
    net = model()
    opt = build_optimizer("dual", net.parameters(), forget=FORGET, retain=RETAIN)
    cfg = replace(EngineConfig(Schedule(1), progress=False), **kwargs)
    with pytest.raises(ValueError, match=match):
        unlearn(net, Relabel(), None, data(40, 2), opt, cfg)


def test_empty_forget_set_is_rejected() -> None:
    net = model()
    opt = build_optimizer("dual", net.parameters(), forget=FORGET, retain=RETAIN)
    empty = Tensors(torch.zeros(0, 10), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="forget set is empty"):
        unlearn(net, Relabel(), empty, data(40, 2), opt, EngineConfig(Schedule(1)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"accumulation": 0}, "accumulation"),
        ({"checkpoint_every": 5}, "needs a checkpoint_dir"),
        ({"lr_schedule": "cosinus"}, "unknown lr schedule 'cosinus'"),
    ],
)
def test_bad_config_is_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EngineConfig(Schedule(1), **kwargs)


def test_schedules_by_hand() -> None:
    cosine = lr_factor("cosine", 10)
    assert cosine(0) == 1.0
    assert cosine(5) == pytest.approx(0.5)
    assert cosine(10) == 0.0
    linear = lr_factor("linear", 10, warmup_steps=3)
    assert [round(linear(s), 4) for s in (0, 2, 3, 10)] == [0.25, 0.75, 1.0, 0.0]
    assert cosine_decay(25.0, 0.0) == 25.0
    assert cosine_decay(25.0, 1.0) == 0.0
    assert cosine_decay(25.0, 0.5) == pytest.approx(12.5)
    with pytest.raises(ValueError, match="at least one cycle"):
        Schedule(0)


def test_batch_stream_is_resumable_and_shards_evenly() -> None:
    a = BatchStream(10, 4, seed=3, world_size=2)
    first = [a.next() for _ in range(5)]
    assert [len(b) for b in first[:3]] == [4, 4, 2]  # the pass's tail, already even
    assert sorted(torch.cat(first[:3]).tolist()) == list(range(10))  # one pass covers all
    b = BatchStream(10, 4, seed=3, world_size=2)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    assert torch.equal(a.next(), b.next())
    odd = BatchStream(9, 4, seed=0, world_size=2)
    tail = [odd.next() for _ in range(3)][-1]
    assert len(tail) == 2
    assert len(odd.shard(tail, 0)) == len(odd.shard(tail, 1)) == 1
    with pytest.raises(ValueError, match="not divisible by 2"):
        BatchStream(10, 3, seed=0, world_size=2)

"""DualOptimTrainer: the Hugging Face Trainer adapter (phases, states, losses, groups, resume)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

pytest.importorskip("transformers")

from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    TrainerCallback,
    TrainingArguments,
)

from dualoptim.integrations.hf_trainer import (
    DualOptimTrainer,
    ForgetRetainPair,
    PairedDataset,
    recipe_optimizer,
)
from dualoptim.integrations.hf_trainer.logs import PhaseLosses
from dualoptim.integrations.hf_trainer.optimizer import plus_options
from dualoptim.integrations.hf_trainer.phases import PhaseCycle, losses_of
from dualoptim.optim import DualOptimizer, OptimizerSpec, SharedOptimizer
from dualoptim.optim.settings import Setting, build_optimizer
from dualoptim.unlearn.method import RunState
from dualoptim.unlearn.schedule import Schedule, objective_at

VOCAB = 64
SEQ = 8


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matmuls: intra-op threads only spin, and on a shared 2-core machine they make a
    step ~1000x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=SEQ,
        attention_bias=True,  # biases too, for the weight-decay groups
    )
    return LlamaForCausalLM(config)


def examples(n: int, low: int, high: int, seed: int) -> list[dict[str, Tensor]]:
    """Token sequences with labels; forget tokens < 32 and retain tokens >= 32 tell them apart."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(low, high, (n, SEQ), generator=gen)
    return [{"input_ids": x, "labels": x.clone()} for x in ids]


FORGET = examples(6, 0, VOCAB // 2, seed=1)
RETAIN = examples(12, VOCAB // 2, VOCAB, seed=2)


@dataclass
class GAGD:
    """Gradient ascent on the forget set, descent on the retain set; logs every loss call."""

    name: str = "ga+gd"
    calls: list[tuple[str, int]] = field(default_factory=list)
    runs: list[tuple[str | None, float]] = field(default_factory=list)
    setups: list[tuple[Any, Any, RunState]] = field(default_factory=list)
    masks: dict[str, float] | None = None  # {parameter name: kept fraction} for forget masks
    reference: dict[str, Tensor] = field(default_factory=dict)

    def setup(self, model, optimizer, run: RunState) -> None:
        self.setups.append((model, optimizer, run))
        # what a reference/teacher copy would see: must be the model as given, even on resume
        self.reference = {n: p.detach().clone() for n, p in model.named_parameters()}
        if self.masks:
            params = dict(model.named_parameters())
            gen = torch.Generator().manual_seed(0)
            optimizer.set_mask(
                "forget",
                {
                    params[n]: torch.rand(params[n].shape, generator=gen) < keep
                    for n, keep in self.masks.items()
                },
            )

    def _record(self, kind: str, batch: dict[str, Tensor], run: RunState) -> None:
        forget_tokens = bool((batch["input_ids"] < VOCAB // 2).all())
        assert forget_tokens == (kind == "forget"), f"{kind} loss got the other side's batch"
        self.calls.append((kind, run.step))
        self.runs.append((run.phase, run.progress))

    def forget_loss(self, model, batch, run: RunState) -> Tensor:
        self._record("forget", batch, run)
        return -model(**batch).loss

    def retain_loss(self, model, batch, run: RunState) -> Tensor:
        self._record("retain", batch, run)
        return model(**batch).loss


class StepRecorder(TrainerCallback):
    """Per optimizer step: the objective, the inner states before/after, gradients at step."""

    def __init__(self, trainer_ref: list[DualOptimTrainer] | None = None) -> None:
        self.objectives: list[str] = []
        self.before: list[dict[str, dict[str, Tensor]]] = []
        self.after: list[dict[str, dict[str, Tensor]]] = []
        self.grad_norms: list[float] = []
        self.masked_grad_max: list[float] = []
        self.trainer_ref = trainer_ref

    @staticmethod
    def _inner_states(optimizer) -> dict[str, dict[str, Tensor]]:
        inner = optimizer.optimizer.inner
        return {
            o: {
                f"{i}.{k}": v.clone()
                for i, state in enumerate(inner[o].state.values())
                for k, v in state.items()
                if torch.is_tensor(v)
            }
            for o in ("forget", "retain")
        }

    def on_pre_optimizer_step(self, _args, _state, _control, optimizer=None, model=None, **_kw):
        raw = optimizer.optimizer
        self.objectives.append(raw.objective)
        if hasattr(raw, "inner"):
            self.before.append(self._inner_states(optimizer))
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        self.grad_norms.append(float(torch.nn.utils.get_total_norm(grads)))
        masks = raw.masks("forget")
        if masks:
            self.masked_grad_max.append(
                max(float(p.grad[~m].abs().max()) for p, m in masks.items())
            )

    def on_optimizer_step(self, _args, _state, _control, optimizer=None, **_kw):
        if hasattr(optimizer.optimizer, "inner"):
            self.after.append(self._inner_states(optimizer))


def make_trainer(
    out: Path,
    method: GAGD | None = None,
    *,
    gas: int = 1,
    max_steps: int = 12,
    callbacks: list | None = None,
    args: dict[str, Any] | None = None,
    **kwargs: Any,
) -> DualOptimTrainer:
    options = {
        "output_dir": str(out),
        "max_steps": max_steps,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": gas,
        "learning_rate": 1e-3,
        "report_to": [],
        "use_cpu": True,
        "dataloader_num_workers": 0,
        "save_strategy": "no",
        "logging_steps": 1,
        "disable_tqdm": True,
        "seed": 0,
    }
    training_args = TrainingArguments(**{**options, **(args or {})})
    kwargs.setdefault("forget_dataset", FORGET)
    kwargs.setdefault("retain_dataset", RETAIN)
    return DualOptimTrainer(
        tiny_model(),
        training_args,
        method=method or GAGD(),
        callbacks=callbacks,
        **kwargs,
    )


# ---------------------------------------------------------------------------------- schedule
def test_objective_at_repeats_the_cycle():
    phases = Schedule(1, 1, 5).cycle(0, 0)
    expected = ["forget", *["retain"] * 5] * 3
    assert [objective_at(phases, s) for s in range(18)] == expected
    assert [objective_at(Schedule(1, 2, 1).cycle(0, 0), s) for s in range(6)] == [
        "forget",
        "forget",
        "retain",
    ] * 2
    assert objective_at(Schedule(1, 1, 0).cycle(0, 0), 7) == "forget"
    assert objective_at(Schedule(1, 3, 5).cycle(0, 0, joint=True), 4) is None
    with pytest.raises(ValueError, match="no optimizer steps"):
        objective_at([("forget", 0)], 0)
    with pytest.raises(ValueError, match=">= 0"):
        objective_at(phases, -1)


def test_paired_dataset_cycles_the_shorter_side():
    data = PairedDataset(["f0", "f1"], ["r0", "r1", "r2", "r3", "r4"])
    assert len(data) == 5
    assert [tuple(data[i]) for i in range(5)] == [
        ("f0", "r0"),
        ("f1", "r1"),
        ("f0", "r2"),
        ("f1", "r3"),
        ("f0", "r4"),
    ]
    assert data[1] == ForgetRetainPair("f1", "r1")
    assert len(PairedDataset(["f0"], None)) == 1
    with pytest.raises(IndexError):
        data[5]


def test_phase_cycle_is_a_function_of_the_step():
    cycle = PhaseCycle(1, 5, joint=False)
    assert [cycle.objective_at(s) for s in range(7)] == ["forget", *["retain"] * 5, "forget"]
    assert [cycle.cycle_at(s) for s in (0, 5, 6, 13)] == [0, 0, 1, 2]
    assert cycle.needed == {"forget", "retain"}
    assert PhaseCycle(2, 0, joint=False).needed == {"forget"}
    joint = PhaseCycle(3, 5, joint=True)
    assert joint.needed == {"forget", "retain"}  # a joint step sums both losses
    assert (joint.objective_at(4), joint.cycle_at(4)) == (None, 1)
    assert losses_of(None) == ("forget", "retain")
    assert losses_of("retain") == ("retain",)
    with pytest.raises(ValueError, match="joint steps per cycle"):
        PhaseCycle(0, 5, joint=True)


def test_phase_losses_are_means_over_micro_batches_and_steps():
    losses = PhaseLosses()
    for value in (2.0, 4.0):  # a forget step of two accumulated micro-batches: mean 3
        losses.record("forget", torch.tensor(value, requires_grad=True))
        losses.end_micro_batch(2)
    losses.end_step(["forget"])
    losses.record("forget", torch.tensor(6.0))  # a joint step: both kinds count
    losses.record("retain", torch.tensor(1.0))
    losses.end_micro_batch(1)
    losses.end_step(losses_of(None))
    assert losses.pop_means(None) == {"loss/forget": 4.5, "loss/retain": 1.0}
    assert losses.pop_means(None) == {}  # started over
    losses.record("retain", torch.tensor(3.0))
    losses.end_micro_batch(1)
    losses.end_step(["retain"])
    assert losses.pop_means(lambda total: total / 2) == {"loss/retain": 1.5}  # the reduction


# ---------------------------------------------------------------------------------- phases
@pytest.mark.parametrize("gas", [1, 2])
def test_every_optimizer_step_follows_the_schedule(tmp_path, gas):
    method, recorder = GAGD(), StepRecorder()
    trainer = make_trainer(tmp_path, method, gas=gas, callbacks=[recorder])
    trainer.train()

    expected = [objective_at(trainer.phases, s) for s in range(12)]
    assert expected == ["forget", *["retain"] * 5] * 2
    assert recorder.objectives == expected
    # every micro-batch of a step is of that step's kind, and each step has `gas` of them
    # (12 pairs / batch 2 = 6 micro-batches per epoch: whole steps for gas 1 and 2)
    per_step: dict[int, list[str]] = {}
    for kind, step in method.calls:
        per_step.setdefault(step, []).append(kind)
    assert sorted(per_step) == list(range(12))
    for step, kinds in per_step.items():
        assert kinds == [expected[step]] * gas
    # the RunState seen by the losses is current
    assert [phase for phase, _ in method.runs] == [k for k, _ in method.calls]
    assert [p for _, p in method.runs] == [s / 12 for _, s in method.calls]
    assert trainer.objective_optimizer.step_counts == {"forget": 2, "retain": 10}


def test_a_step_changes_only_its_own_optimizer_state(tmp_path):
    recorder = StepRecorder()
    trainer = make_trainer(tmp_path, max_steps=8, callbacks=[recorder])
    trainer.train()
    assert isinstance(trainer.objective_optimizer, DualOptimizer)
    assert len(recorder.before) == len(recorder.after) == 8
    for objective, before, after in zip(
        recorder.objectives, recorder.before, recorder.after, strict=True
    ):
        other = "retain" if objective == "forget" else "forget"
        assert before[other].keys() == after[other].keys()
        for key, value in before[other].items():
            assert torch.equal(value, after[other][key]), (objective, key)
        own_before = before[objective]
        changed = [
            k
            for k, v in after[objective].items()
            if k not in own_before or not torch.equal(v, own_before[k])
        ]
        assert changed, f"a {objective} step left the {objective} state unchanged"
    assert recorder.objectives.count("forget") == 2


def test_joint_uses_both_weighted_losses_every_step(tmp_path):
    method, recorder = GAGD(), StepRecorder()
    trainer = make_trainer(
        tmp_path,
        method,
        max_steps=4,
        callbacks=[recorder],
        setting="joint",
        forget_weight=0.1,
        retain_weight=2.0,
    )
    trainer.train()
    assert isinstance(trainer.objective_optimizer, SharedOptimizer)
    assert recorder.objectives == ["retain"] * 4  # the shared optimizer's one state
    for step in range(4):
        assert sorted(k for k, s in method.calls if s == step) == ["forget", "retain"]

    # the loss of a paired batch is c_f·L_f + c_r·L_r
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    model = trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch)
        l_f = -model(**batch["forget"]).loss
        l_r = model(**batch["retain"]).loss
    torch.testing.assert_close(loss, 0.1 * l_f + 2.0 * l_r, rtol=1e-6, atol=1e-6)
    logs = [h for h in trainer.state.log_history if "loss/forget" in h]
    assert len(logs) == 4
    assert all("loss/retain" in h for h in logs)


def test_forget_mask_applies_before_clipping_and_setup_runs_once(tmp_path):
    method = GAGD(masks={"model.layers.0.self_attn.o_proj.weight": 0.5})
    recorder = StepRecorder()
    trainer = make_trainer(
        tmp_path,
        method,
        max_steps=4,
        callbacks=[recorder],
        forget_steps=1,
        retain_steps=1,
        args={"max_grad_norm": 1e9},  # no actual clipping: the logged norm is the clipped one's
    )
    weight = trainer.model.model.layers[0].self_attn.o_proj.weight
    trainer.train()

    assert len(method.setups) == 1
    model, optimizer, run = method.setups[0]
    assert model is trainer.model
    assert optimizer is trainer.objective_optimizer
    assert run is trainer.run
    assert run.total_steps == 4
    (mask,) = optimizer.masks("forget").values()
    assert 0 < int(mask.sum()) < mask.numel()
    assert weight in optimizer.masks("forget")
    # on forget steps the masked gradient entries are zero when the optimizer steps, and the
    # norm the Trainer clipped (and logged) is the masked gradient's
    logged = [h["grad_norm"] for h in trainer.state.log_history if "grad_norm" in h]
    for objective, masked_max, seen, norm in zip(
        recorder.objectives, recorder.masked_grad_max, recorder.grad_norms, logged, strict=True
    ):
        if objective == "forget":
            assert masked_max == 0.0
        else:
            assert masked_max > 0.0  # a retain step is not masked
        assert norm == pytest.approx(seen, rel=1e-5)


def test_forget_only_run_leaves_masked_entries_untouched(tmp_path):
    method = GAGD(masks={"model.layers.1.mlp.up_proj.weight": 0.3})
    trainer = make_trainer(
        tmp_path, method, max_steps=3, forget_steps=1, retain_steps=0, retain_dataset=None
    )
    weight = trainer.model.model.layers[1].mlp.up_proj.weight
    start = weight.detach().clone()
    trainer.train()
    (mask,) = trainer.objective_optimizer.masks("forget").values()
    assert torch.equal(weight.detach()[~mask], start[~mask])
    assert not torch.equal(weight.detach()[mask], start[mask])
    assert {k for k, _ in method.calls} == {"forget"}


# ---------------------------------------------------------------------------------- optimizer
def test_param_groups_have_no_weight_decay_on_bias_and_norm(tmp_path):
    trainer = make_trainer(tmp_path, args={"learning_rate": 5e-5})
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    decay, no_decay = optimizer.param_groups
    assert "weight_decay" not in decay  # the specs' own weight decay (recipe: 0.01)
    assert no_decay["weight_decay"] == 0.0
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    assert all(n.endswith("bias") or "norm" in n for n in no_decay_names)
    assert any(n.endswith("bias") for n in no_decay_names)
    assert "model.norm.weight" in no_decay_names
    assert "model.layers.0.input_layernorm.weight" in no_decay_names
    assert not any(n.endswith("bias") or "norm" in n for n in decay_names)
    for objective, inner in optimizer.inner.items():
        assert [g["weight_decay"] for g in inner.param_groups] == [0.01, 0.0], objective
        assert [g["betas"] for g in inner.param_groups] == [(0.9, 0.95)] * 2
        # learning_rate left at TrainingArguments' default (5e-5): the recipe's 1e-5
        assert optimizer.lr_of(objective) == pytest.approx(1e-5)


def test_learning_rate_mapping(tmp_path):
    set_lr = make_trainer(tmp_path, args={"learning_rate": 3e-5, "weight_decay": 0.1})
    opt = set_lr.create_optimizer()
    assert opt.lr_of("forget") == opt.lr_of("retain") == pytest.approx(3e-5)
    assert [g["weight_decay"] for g in opt.inner["forget"].param_groups] == [0.1, 0.0]

    explicit = make_trainer(
        tmp_path,
        forget_optimizer={"name": "adamw", "lr": 2e-5, "weight_decay": 0.0},
        retain_optimizer=OptimizerSpec("sgd", {"lr": 0.01, "momentum": 0.9}),
    )
    opt = explicit.create_optimizer()
    assert opt.lr_of("forget") == pytest.approx(2e-5)
    assert opt.lr_of("retain") == pytest.approx(0.01)
    assert isinstance(opt.inner["retain"], torch.optim.SGD)
    assert recipe_optimizer().kwargs == {
        "lr": 1e-5,
        "betas": (0.9, 0.95),
        "eps": 1e-8,
        "weight_decay": 0.01,
    }


def test_scheduler_drives_the_factor_and_logs_per_phase(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=6, args={"learning_rate": 2e-5})
    trainer.train()
    logs = [h for h in trainer.state.log_history if "learning_rate" in h]
    assert len(logs) == 6
    for step, h in enumerate(logs):
        assert h["learning_rate"] == pytest.approx(1 - step / 6)  # linear decay of the factor
        assert h["learning_rate/forget"] == pytest.approx(h["learning_rate"] * 2e-5)
        assert h["learning_rate/retain"] == pytest.approx(h["learning_rate"] * 2e-5)
        kind = "forget" if step == 0 else "retain"
        other = "retain" if kind == "forget" else "forget"
        assert h[f"loss/{kind}"] == pytest.approx(h["loss"], rel=1e-5)
        assert f"loss/{other}" not in h
    assert logs[0]["loss/forget"] < 0 < logs[1]["loss/retain"]


def test_evaluation_batches_use_the_trainers_own_loss(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=1)
    metrics = trainer.evaluate(eval_dataset=RETAIN[:4])
    with torch.no_grad():
        batch = {k: torch.stack([e[k] for e in RETAIN[:4]]) for k in ("input_ids", "labels")}
        expected = trainer.model(**batch).loss
    assert metrics["eval_loss"] == pytest.approx(float(expected), rel=1e-5)


def test_plus_options_default_to_an_adam_type_retain_optimizer():
    adam = OptimizerSpec("adamw", {"lr": 3e-4, "betas": (0.8, 0.9), "eps": 1e-6})
    assert plus_options(Setting("dual_plus"), None, adam) == {
        "retain_lr": 3e-4,
        "betas": (0.8, 0.9),
        "eps": 1e-6,
    }
    assert plus_options(Setting("dual_plus_8bit"), {"retain_lr": 1e-4}, adam)["retain_lr"] == 1e-4
    sgd = OptimizerSpec("sgd", {"lr": 0.1, "momentum": 0.9})
    assert plus_options(Setting("dual_plus"), {"alpha": 0.5}, sgd) == {"alpha": 0.5}
    assert plus_options(Setting("dual"), None, adam) is None  # not DO+: passed through


# ---------------------------------------------------------------------------------- errors
def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="train_dataset"):
        make_trainer(tmp_path, train_dataset=RETAIN)
    with pytest.raises(ValueError, match="forget dataset is empty"):
        make_trainer(tmp_path, forget_dataset=[])
    with pytest.raises(ValueError, match="unknown optimizer setting 'dual_pluss'"):
        make_trainer(tmp_path, setting="dual_pluss")
    with pytest.raises(ValueError, match="makes retain steps"):
        make_trainer(tmp_path, retain_dataset=None)
    sgd = torch.optim.SGD(tiny_model().parameters(), lr=0.1)
    with pytest.raises(TypeError, match="ObjectiveOptimizer"):
        make_trainer(tmp_path, optimizers=(sgd, None))
    with pytest.raises(TypeError, match="forget_steps must be an int"):
        make_trainer(tmp_path, forget_steps=None)
    with pytest.raises(ValueError, match="group_by_length"):
        make_trainer(tmp_path, args={"train_sampling_strategy": "group_by_length"})


def test_a_prebuilt_objective_optimizer_is_used(tmp_path):
    model = tiny_model()
    optimizer = build_optimizer(
        "dual",
        model.parameters(),
        forget={"name": "adam", "lr": 1e-3},
        retain={"name": "sgd", "lr": 0.1, "momentum": 0.9},
    )
    method = GAGD()
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=6,
        per_device_train_batch_size=2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = DualOptimTrainer(
        model,
        args,
        method=method,
        forget_dataset=FORGET,
        retain_dataset=RETAIN,
        optimizers=(optimizer, None),
    )
    trainer.train()
    assert trainer.objective_optimizer is optimizer
    assert method.setups[0][1] is optimizer
    assert optimizer.step_counts == {"forget": 1, "retain": 5}
    assert optimizer.inner["forget"].state
    assert optimizer.inner["retain"].state


# ---------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("setting", ["dual", "dual_plus"])
def test_resume_from_a_mid_run_checkpoint_matches_an_uninterrupted_run(tmp_path, setting):
    save = {"save_strategy": "steps", "save_steps": 4}
    # 12 pairs, batch 2, accumulation 2: 3 steps per epoch; step 4 is mid-epoch and mid-cycle
    full = make_trainer(tmp_path / "full", setting=setting, gas=2, max_steps=10, args=save)
    full.train()
    checkpoint = tmp_path / "full" / "checkpoint-4"
    assert (checkpoint / "optimizer.pt").exists()

    method = GAGD()
    resumed = make_trainer(
        tmp_path / "resumed", method, setting=setting, gas=2, max_steps=10, args=save
    )
    resumed.train(resume_from_checkpoint=str(checkpoint))
    # setup ran on the original model, before the checkpoint's weights were loaded
    for name, p in tiny_model().named_parameters():
        assert torch.equal(method.reference[name], p), name
    assert sorted({s for _, s in method.calls}) == list(range(4, 10))  # steps 0-3 not redone

    for (name, a), b in zip(full.model.named_parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b), name
    opt_full, opt_resumed = full.objective_optimizer, resumed.objective_optimizer
    assert opt_resumed.step_counts == opt_full.step_counts == {"forget": 2, "retain": 8}
    state_full = dict(tensors_of(opt_full.state_dict()))
    state_resumed = dict(tensors_of(opt_resumed.state_dict()))
    assert state_full.keys() == state_resumed.keys()
    assert len(state_full) > 20  # both objectives' moments of every parameter
    for key, value in state_full.items():
        assert torch.equal(value, state_resumed[key]), key


def tensors_of(value: Any, path: str = "") -> list[tuple[str, Tensor]]:
    """Every tensor in a nested state dict, by path."""
    if torch.is_tensor(value):
        return [(path, value)]
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in tensors_of(v, f"{path}/{k}")]
    if isinstance(value, list | tuple):
        return [t for i, v in enumerate(value) for t in tensors_of(v, f"{path}/{i}")]
    return []

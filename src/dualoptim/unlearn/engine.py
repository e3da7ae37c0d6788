"""The one forget/retain training loop of the project (Algorithm 1 of the paper).

It takes a model, a method, the forget and retain sources, an optimizer built for a setting
(joint, alternate, dual, dual+, 8-bit) and an :class:`EngineConfig`, and runs on accelerate:
one CPU, one GPU, DDP, FSDP2 (unlearn/sharding.py), mixed precision. Gradient accumulation
is done here, not by accelerate, so that every micro-batch of an optimizer step is of one
kind and every process is in the same phase at every step: phases are whole optimizer steps
by construction.

Checkpoints hold the model, the optimizer (both objectives' states), the LR scheduler, the
batch streams' positions, the RNG states, the curves so far and the world size, in one file
written atomically and loaded with ``weights_only=True``. Everything in it is checked before
anything is restored. A resumed run ends bit-identical to an uninterrupted one
(tests/test_engine.py). Under FSDP2 the model and optimizer states go to a folder of shards
(torch's distributed checkpoint) that the file names, and the file is written last.

Over 400 lines: the loop and its checkpoint are one state machine. The checkpoint saves and
checks exactly the loop's position, streams, curves and RNG, so apart they would split one
invariant across two files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, send_to_device
from torch import Tensor, nn
from tqdm.auto import tqdm

from dualoptim.distributed import has_gpu, world_size
from dualoptim.io import atomic_write
from dualoptim.optim import Objective, ObjectiveOptimizer
from dualoptim.unlearn.errors import RunDivergedError
from dualoptim.unlearn.method import Method, RunState, Source
from dualoptim.unlearn.schedule import Schedule, lr_factor
from dualoptim.unlearn.sharding import (
    fsdp_plugin,
    fsdp_requested,
    gathered,
    groups_only,
    is_sharded,
    load_shards,
    no_gradient_sync,
    save_shards,
    shard,
    shard_shapes,
)
from dualoptim.unlearn.stream import BatchStream

CHECKPOINT_FILE = "checkpoint.pt"
#: 2: records the world size, and the optimizer state names its optimizer type.
_CHECKPOINT_FORMAT = 2
#: The folders of shards a sharded run's checkpoint file names (``shards-<step>``).
SHARDS_PREFIX = "shards-"
_CHECKPOINT_KEYS = frozenset(
    (
        *("world_size", "model", "optimizer", "scheduler", "streams", "position", "step"),
        *("steps", "curves", "extras_seconds", "rng"),
    )
)

log = logging.getLogger(__name__)

Evaluate = Callable[[nn.Module, RunState], Mapping[str, float]]


@dataclass(frozen=True)
class PhaseOptions:
    """Per-phase loss weight (c_f, c_r) and gradient clipping (max norm, None = off)."""

    weight: float = 1.0
    clip_norm: float | None = None


@dataclass(frozen=True)
class EngineConfig:
    schedule: Schedule
    forget_batch: int = 256
    retain_batch: int = 256
    joint: bool = False
    accumulation: int = 1
    forget: PhaseOptions = PhaseOptions()
    retain: PhaseOptions = PhaseOptions()
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    seed: int = 0
    checkpoint_dir: Path | None = None
    checkpoint_every: int = 0
    eval_every: int = 0
    record_grad_norms: bool = False
    progress: bool = True
    #: Resume a checkpoint written by another number of processes. Off by default: the batch
    #: streams are sharded per process (and sharded optimizer states will be), so the resumed
    #: run would differ from the one that was interrupted.
    allow_world_size_change: bool = False

    def __post_init__(self) -> None:
        if self.accumulation < 1:
            raise ValueError(f"accumulation must be >= 1, got {self.accumulation}")
        if self.checkpoint_every < 0 or self.eval_every < 0:
            raise ValueError("checkpoint_every and eval_every must be >= 0 (0 = never)")
        if self.checkpoint_every and self.checkpoint_dir is None:
            raise ValueError("checkpoint_every needs a checkpoint_dir")
        lr_factor(self.lr_schedule, 1)  # validates the name


@dataclass
class RunResult:
    """Steps made, curves recorded ({name: [(step, value), ...]}) and wall time."""

    steps: dict[str, int]
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    seconds: float = 0.0
    resumed_from_step: int | None = None


class _Sources:
    """The forget and retain sources with their batch streams."""

    def __init__(
        self, forget: Source | None, retain: Source | None, cfg: EngineConfig, world: int
    ) -> None:
        self.sources = {"forget": forget, "retain": retain}
        self.streams: dict[str, BatchStream] = {}
        for offset, (name, source, batch) in enumerate(
            (("forget", forget, cfg.forget_batch), ("retain", retain, cfg.retain_batch))
        ):
            if source is not None:
                if len(source) == 0:
                    raise ValueError(f"the {name} set is empty")
                self.streams[name] = BatchStream(len(source), batch, cfg.seed * 2 + offset, world)

    def pass_length(self, name: str, accumulation: int) -> int:
        """Optimizer steps for one pass over a set (0 when it is absent)."""
        stream = self.streams.get(name)
        return -(-stream.batches_per_pass // accumulation) if stream else 0


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value


def _model_mismatch(saved: Any, current: Mapping[str, Tensor]) -> str | None:
    """How a saved model state dict differs from the model's (None when it fits)."""
    if not isinstance(saved, dict):
        return f"the model entry is a {type(saved).__name__}"
    missing, unexpected = current.keys() - saved.keys(), saved.keys() - current.keys()
    if missing or unexpected:
        return f"missing keys {sorted(missing)}, unexpected keys {sorted(unexpected)}"
    for key, value in current.items():
        other = saved[key]
        if not isinstance(other, Tensor) or other.shape != value.shape:
            shape = tuple(other.shape) if isinstance(other, Tensor) else type(other).__name__
            return f"{key!r} is {shape} in the checkpoint, {tuple(value.shape)} in the model"
    return None


def _default_accelerator() -> Accelerator:
    """accelerate's, except that several processes on a machine without a GPU share one
    DDP run (``cpu=True``): otherwise each would train alone, silently, on the whole data."""
    return Accelerator(cpu=world_size() > 1 and not has_gpu())


def _check_accelerator(accelerator: Accelerator) -> None:
    """Refuse what would run but be wrong: fp16 on CPU or under FSDP, and DeepSpeed.

    accelerate 1.15 accepts fp16 on CPU but silently runs fp32: it neither autocasts nor
    scales (``native_amp`` stays False); under FSDP2 fp16 would need a sharded gradient
    scaler. accelerate's DeepSpeed steps the optimizer inside ``backward`` with its own
    accumulation and checkpoints, and on CPU it silently becomes DDP (docs/engine.md).
    """
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true")
    if deepspeed or accelerator.distributed_type == DistributedType.DEEPSPEED:
        raise ValueError(
            "the engine does not run under accelerate's DeepSpeed: DeepSpeed steps the "
            "optimizer inside backward with its own accumulation and checkpoints, and on CPU "
            "accelerate runs DDP instead. Use FSDP2 (configs/accelerate/fsdp2.yaml) or DDP; "
            "the optimizers themselves run under deepspeed.initialize (docs/engine.md)"
        )
    if accelerator.mixed_precision == "fp16" and fsdp_requested(accelerator):
        raise ValueError(
            "mixed_precision='fp16' under FSDP2 needs a sharded gradient scaler the engine "
            "does not have: use mixed_precision='bf16'"
        )
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise ValueError(
            "mixed_precision='fp16' has no effect on CPU: accelerate would run in fp32, with "
            "neither autocast nor gradient scaling. Use mixed_precision='bf16' (CPU autocast) "
            "or 'no' on CPU, and fp16 on a GPU."
        )


class Engine:
    """One unlearning run; :func:`unlearn` is the usual entry point."""

    def __init__(
        self,
        model: nn.Module,
        method: Method,
        forget: Source | None,
        retain: Source | None,
        optimizer: ObjectiveOptimizer,
        config: EngineConfig,
        *,
        evaluate: Evaluate | None = None,
        accelerator: Accelerator | None = None,
    ) -> None:
        self.cfg = config
        self.accelerator = accelerator or _default_accelerator()
        _check_accelerator(self.accelerator)
        #: FSDP2: a model sharded by its user, or accelerate asked for FSDP across processes
        self.sharded = is_sharded(model) or (
            fsdp_requested(self.accelerator) and self.accelerator.num_processes > 1
        )
        self.method = method
        self.evaluate = evaluate
        self.optimizer = optimizer
        self.data = _Sources(forget, retain, config, self.accelerator.num_processes)
        if config.joint and not (forget is not None and retain is not None):
            raise ValueError("the joint setting needs both a forget and a retain set")
        forget_pass = self.data.pass_length("forget", config.accumulation)
        retain_pass = self.data.pass_length("retain", config.accumulation)
        self.phases = config.schedule.cycle(forget_pass, retain_pass, config.joint)
        for objective, steps in self.phases:
            for name in ("forget", "retain") if objective is None else (objective,):
                if steps and self.data.sources[name] is None:
                    raise ValueError(f"the schedule makes {name} steps but there is no {name} set")
        total = config.schedule.cycles * sum(n for _, n in self.phases)
        self.run = RunState(total_steps=total)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_factor(config.lr_schedule, total, config.warmup_steps)
        )
        if self.sharded:  # accelerate.prepare would wrap the shards in DDP (or drop FSDP)
            if not is_sharded(model):
                shard(model, optimizer, fsdp_plugin(self.accelerator))
            self.model, self.prepared = model, optimizer
        else:
            self.model, prepared = self.accelerator.prepare(model, optimizer)
            # accelerate's wrapper matters for a gradient scaler (fp16) and XLA; otherwise its
            # step() only adds ~0.25 ms of package lookups (docs/engine.md, "Cost of the loop")
            plain = (
                prepared.scaler is None and self.accelerator.distributed_type != DistributedType.XLA
            )
            self.prepared = optimizer if plain else prepared
        self.result = RunResult(steps={"forget": 0, "retain": 0, "joint": 0})
        self._position = (0, 0, 0)  # (cycle, phase index, steps done in that phase)

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path | None:
        d = self.cfg.checkpoint_dir
        return None if d is None else Path(d) / CHECKPOINT_FILE

    def save_checkpoint(self) -> None:
        path = self.checkpoint_path
        if path is None:
            return
        self.accelerator.wait_for_everyone()
        shards = self._save_shards(path.parent) if self.sharded else None
        if not self.accelerator.is_main_process:
            return
        model = self.accelerator.unwrap_model(self.model)
        optimizer = self.optimizer.state_dict()
        state = {
            "format": _CHECKPOINT_FORMAT,
            "shards": shards,
            "model": shard_shapes(model) if shards else model.state_dict(),
            "optimizer": groups_only(optimizer) if shards else optimizer,
            "scheduler": self.scheduler.state_dict(),
            "streams": {k: s.state_dict() for k, s in self.data.streams.items()},
            "position": list(self._position),
            "step": self.run.step,
            "steps": dict(self.result.steps),
            "curves": {k: [list(p) for p in v] for k, v in self.result.curves.items()},
            "extras_seconds": self.result.seconds,
            "rng": _rng_state(),
            "world_size": self.accelerator.num_processes,
        }
        atomic_write(path, lambda f: torch.save(state, f))
        if shards:
            for old in path.parent.glob(f"{SHARDS_PREFIX}*"):
                if old.name != shards:
                    shutil.rmtree(old)

    def _save_shards(self, folder: Path) -> str:
        """Every process writes its shards to a new folder, renamed into place when complete;
        the checkpoint file, written after, names it, so a crash at any point leaves the
        previous checkpoint whole."""
        name = f"{SHARDS_PREFIX}{self.run.step:08d}"
        partial = folder / f"{name}.partial"
        if self.accelerator.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        save_shards(self.model, self.optimizer, partial)
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            shutil.rmtree(folder / name, ignore_errors=True)
            partial.rename(folder / name)
        return name

    def load_checkpoint(self) -> bool:
        """Resume from the checkpoint if there is one; returns whether it did.

        Checks everything first (format, world size, model, optimizer, streams) and restores
        only a checkpoint that passes; every refusal names the file and says what to do.
        """
        path = self.checkpoint_path
        if path is None or not path.exists():
            return False
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(
                f"checkpoint {path} is unreadable or corrupt: {err}; delete it to start over"
            ) from err
        self._check_checkpoint(path, state)
        if self.sharded:
            try:
                load_shards(self.model, self.optimizer, path.parent / state["shards"])
            except Exception as err:
                raise ValueError(
                    f"the shards of checkpoint {path} ({state['shards']}) are unreadable or do "
                    f"not fit this run: {err}; delete {path.parent} to start the run over"
                ) from err
        else:
            self.accelerator.unwrap_model(self.model).load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for name, stream_state in state["streams"].items():
            self.data.streams[name].load_state_dict(stream_state)
        self._position = tuple(state["position"])
        self.run.step = state["step"]
        self.result.steps = dict(state["steps"])
        self.result.curves = {k: [tuple(p) for p in v] for k, v in state["curves"].items()}
        self.result.seconds = float(state["extras_seconds"])
        self.result.resumed_from_step = self.run.step
        _set_rng_state(state["rng"])
        return True

    def _check_checkpoint(self, path: Path, state: Any) -> None:
        """Raise a ValueError naming ``path`` unless the checkpoint can resume this run."""
        start_over = f"delete {path.parent} to start the run over"
        version = state.get("format") if isinstance(state, dict) else None
        if isinstance(version, int) and version < _CHECKPOINT_FORMAT:
            raise ValueError(
                f"checkpoint {path} was written by an older dualoptim (format {version}, which "
                f"recorded neither the world size nor the optimizer type); {start_over}"
            )
        if version != _CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a dualoptim engine checkpoint; {start_over}")
        missing = _CHECKPOINT_KEYS - state.keys()
        if missing:
            raise ValueError(f"checkpoint {path} is incomplete: no {sorted(missing)}; {start_over}")
        shards = state.get("shards")
        if bool(shards) != self.sharded:
            written, now = ("a sharded", "unsharded") if shards else ("an unsharded", "sharded")
            raise ValueError(
                f"checkpoint {path} was written by {written} run (FSDP2) and this run is {now}; "
                f"resume it as it was launched, or {start_over}"
            )
        if shards and not (path.parent / shards).is_dir():
            raise ValueError(
                f"checkpoint {path} names shards {shards}, which are missing; {start_over}"
            )
        saved_world, world = state["world_size"], self.accelerator.num_processes
        if saved_world != world:
            if not self.cfg.allow_world_size_change:
                raise ValueError(
                    f"checkpoint {path} was written by {saved_world} process(es), this run has "
                    f"{world}: the batch streams are sharded per process, so the resumed run "
                    f"would differ. Resume with {saved_world} process(es), set "
                    f"allow_world_size_change=True to resume anyway, or {start_over}"
                )
            log.warning("resuming %s, written by %s process(es), on %s", path, saved_world, world)
        problem = _model_mismatch(
            state["model"], self.accelerator.unwrap_model(self.model).state_dict()
        )
        if problem:
            raise ValueError(f"checkpoint {path} is of another model: {problem}; {start_over}")
        try:
            self.optimizer.check_state_dict(state["optimizer"])
        except ValueError as err:
            raise ValueError(
                f"checkpoint {path} holds another optimizer's state: {err}; {start_over}"
            ) from err
        streams = state["streams"]
        if not isinstance(streams, dict) or streams.keys() != self.data.streams.keys():
            saved = sorted(streams) if isinstance(streams, dict) else streams
            raise ValueError(
                f"checkpoint {path} has batch streams {saved}, this run "
                f"{sorted(self.data.streams)} (another forget/retain setup); {start_over}"
            )

    # ------------------------------------------------------------------ steps
    def _micro_batch(self, name: str) -> Any:
        stream = self.data.streams[name]
        index = stream.shard(stream.next(), self.accelerator.process_index)
        return send_to_device(self.data.sources[name].batch(index), self.accelerator.device)

    def _loss(self, name: Objective, batch: Any) -> Tensor:
        fn = self.method.forget_loss if name == "forget" else self.method.retain_loss
        loss = fn(self.model, batch, self.run)
        if loss is None:
            raise ValueError(f"method {self.method.name!r} has no {name} loss for a {name} step")
        if not bool(torch.isfinite(loss.detach()).all()):
            raise RunDivergedError(
                f"non-finite {name} loss ({float(loss.detach())}) at optimizer step "
                f"{self.run.step} of method {self.method.name!r}",
                self.run.step,
            )
        return loss * getattr(self.cfg, name).weight

    def _optimizer_step(self, objective: Objective | None) -> dict[str, float]:
        """One optimizer step: accumulate micro-batches of one kind, clip, step."""
        cfg, acc = self.cfg, self.accelerator
        kinds: tuple[Objective, ...] = ("forget", "retain") if objective is None else (objective,)
        losses = dict.fromkeys(kinds, 0.0)
        for k in range(cfg.accumulation):
            sync = k == cfg.accumulation - 1
            with self._gradient_sync(sync):
                total = None
                for kind in kinds:
                    with acc.autocast():
                        loss = self._loss(kind, self._micro_batch(kind))
                    losses[kind] += float(loss.detach()) / cfg.accumulation
                    total = loss if total is None else total + loss
                acc.backward(total / cfg.accumulation)
        step_as: Objective = objective or "retain"
        record: dict[str, float] = {f"loss/{k}": v for k, v in losses.items()}
        if step_as == "forget":
            self.optimizer.mask_gradients("forget")  # clip the masked gradient (SFR-on)
        clip = getattr(cfg, step_as).clip_norm
        if clip is not None or cfg.record_grad_norms:
            record[f"grad_norm/{objective or 'joint'}"] = self._grad_norm(clip)
        self.optimizer.objective = step_as
        self.prepared.step()
        self.prepared.zero_grad(set_to_none=True)
        self.scheduler.step()
        return record

    def _gradient_sync(self, sync: bool) -> contextlib.AbstractContextManager[None]:
        """Gradients are averaged across processes on the last micro-batch of a step only."""
        if sync:
            return contextlib.nullcontext()
        if self.sharded:
            return no_gradient_sync(self.model)
        return self.accelerator.no_sync(self.model)

    def _grad_norm(self, clip: float | None) -> float:
        """The gradients' global norm, clipping them to ``clip`` (None: no clipping)."""
        params = list(self.model.parameters())
        if clip is not None and not self.sharded:
            return float(self.accelerator.clip_grad_norm_(params, clip))
        norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        norm = gathered(norm)  # each process holds the norm of its shards
        if clip is not None:
            torch.nn.utils.clip_grads_with_norm_(params, clip, norm)
        return float(norm)

    def _record(self, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            self.result.curves.setdefault(name, []).append((self.run.step, float(value)))

    def _maybe_evaluate(self, force: bool = False) -> None:
        every = self.cfg.eval_every
        if self.evaluate is None or not (force or (every and self.run.step % every == 0)):
            return
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        try:
            values = self.evaluate(model, self.run)
        finally:
            model.train(was_training)
        self._record({f"eval/{k}": v for k, v in values.items()})

    # ------------------------------------------------------------------ the loop
    def run_all(self, resume: bool = True) -> RunResult:
        start = time.perf_counter()
        # setup first, on the model as given (the original): a frozen teacher or reference
        # copied after loading a checkpoint would be the half-unlearned model
        self.method.setup(self.accelerator.unwrap_model(self.model), self.optimizer, self.run)
        resumed = resume and self.load_checkpoint()
        if not resumed:
            self._maybe_evaluate(force=True)
        self.model.train()
        start_cycle, start_phase, start_done = self._position
        bar = tqdm(
            total=self.run.total_steps,
            initial=self.run.step,
            desc=self.method.name,  # also trains originals: "finetune", "ddpm"
            # on a terminal only: a log or a pipe would get every frame of the bar
            disable=None if self.cfg.progress and self.accelerator.is_main_process else True,
            unit="step",
        )
        for cycle in range(start_cycle, self.cfg.schedule.cycles):
            self.run.cycle = cycle
            for index, (objective, steps) in enumerate(self.phases):
                if (cycle, index) < (start_cycle, start_phase):
                    continue
                done = start_done if (cycle, index) == (start_cycle, start_phase) else 0
                self.run.phase = objective
                for step_in_phase in range(done, steps):
                    record = self._optimizer_step(objective)
                    self.run.step += 1
                    self.result.steps[objective or "joint"] += 1
                    self._position = (cycle, index, step_in_phase + 1)
                    self._record(record)
                    self._maybe_evaluate()
                    bar.update(1)
                    every = self.cfg.checkpoint_every
                    if every and self.run.step % every == 0:
                        self.result.seconds += time.perf_counter() - start
                        start = time.perf_counter()
                        self.save_checkpoint()
        bar.close()
        if not (self.cfg.eval_every and self.run.step % self.cfg.eval_every == 0):
            self._maybe_evaluate(force=True)
        self.result.seconds += time.perf_counter() - start
        if self.cfg.checkpoint_every:
            self.save_checkpoint()
        return self.result


def unlearn(
    model: nn.Module,
    method: Method,
    forget: Source | None,
    retain: Source | None,
    optimizer: ObjectiveOptimizer,
    config: EngineConfig,
    *,
    evaluate: Evaluate | None = None,
    accelerator: Accelerator | None = None,
    resume: bool = True,
) -> RunResult:
    """Run ``method`` on ``model`` under ``config``; resumes from a checkpoint if present."""
    engine = Engine(
        model, method, forget, retain, optimizer, config, evaluate=evaluate, accelerator=accelerator
    )
    return engine.run_all(resume=resume)

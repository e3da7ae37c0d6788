"""Engine cost: the unlearning engine against a hand-written torch loop on the same batches.

Why: every task runs its optimizer steps through ``dualoptim.unlearn`` (accelerate, batch
streams, phase bookkeeping, finiteness checks, loss records, an LR scheduler). That loop
should cost next to nothing beyond the forward, backward and optimizer step a user would
write by hand; the target is engine / hand ≤ 1.05 in wall time per optimizer step.

Method (also written into the JSON):

* three workloads: ``cnn``, the model the fashion-mnist config builds (SmallCNN, 1×28×28
  images, 10 classes) on that config's set sizes (600 forget, 5,400 retain) and batch size
  (64); ``llama``, tofu-tiny's tiny Llama on its set sizes (40 forget, 120 retain rows) and
  batch size (8), with global-norm clipping at its ``clip_norm`` in both phases; ``fixed``, a
  Linear(16, 2) that costs nearly nothing, so engine − hand there is the engine's own cost
  per step (no target: its ratio only says how small the model is). The data are seeded
  random images and labels / token ids (64 tokens a row): a step's cost does not depend on
  the values;
* the optimizer of setting ``dual`` from ``build_optimizer`` with the task's specs (CNN:
  AdamW wd 0.05 | SGD momentum 0.9 wd 5e-4; Llama: AdamW betas (0.9, 0.95) on both sides, wd
  0.01 on matrices only); schedule 1 forget : 5 retain steps; forget loss −CE (gradient
  ascent), retain loss CE; no evaluation, no checkpoints, no progress bar;
* both loops draw their batches from ``BatchStream`` with the engine's seeds, so they see the
  same batches in the same order; the hand loop is forward, loss, backward, (clip),
  ``optimizer.step(objective=...)``, ``zero_grad()``. The engine is ``unlearn(...)`` with a
  constant LR schedule; its time includes building the engine (accelerate, the scheduler);
* every repeat starts both loops from one deep copy of the initial model with a fresh
  optimizer (untimed) and runs them back to back, in alternating order (hand first, then
  engine first, …); one untimed warm-up pair comes first. Wall time (``time.perf_counter``)
  and this process's CPU time (``time.process_time``) per run, divided by the steps; medians
  and minima over repeats; after each repeat the two models' parameters and buffers are
  compared (they must end equal: the same work was done);
* ``torch.set_num_threads(1)`` unless ``--threads`` says otherwise. On a shared machine the
  CPU time is the steadier measure: preemption stretches wall time, not CPU time.

Run: .venv/bin/python benchmarks/engine_overhead.py [--repeats 7] [--threads 1] [--quick]
[--profile] [--out results/bench/engine_overhead.json]
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import gc
import io
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

from dualoptim.bench.records import benchmark_header
from dualoptim.config import load_config
from dualoptim.io import write_json
from dualoptim.optim import ObjectiveOptimizer
from dualoptim.optim.settings import build_optimizer
from dualoptim.tasks.images.models import build_model
from dualoptim.tasks.images.train import ImageSource, cross_entropy
from dualoptim.tasks.llm.config import LLMExperiment
from dualoptim.tasks.llm.models import tiny_llama
from dualoptim.tasks.llm.world import adamw_groups
from dualoptim.tasks.vision.config import VisionExperiment
from dualoptim.unlearn import BatchStream, EngineConfig, PhaseOptions, RunState, Schedule, unlearn

TARGET = 1.05  # engine / hand, wall time per optimizer step
SETTING = "dual"
FORGET_STEPS, RETAIN_STEPS = 1, 5
SEED = 0
IMAGE = (1, 28, 28)  # Fashion-MNIST
CLASSES = 10
TOKENS = 64  # tokens per LLM row
#: cycles of 1 forget + 5 retain steps per run: default and --quick
CYCLES = {"cnn": (6, 1), "llama": (40, 2), "fixed": (200, 5)}
FIXED_ROWS, FIXED_FEATURES = 600, 16
PROFILE_TOP = 30


# ---------------------------------------------------------------- workloads
@dataclass(frozen=True)
class TokenSource:
    """A Source of fixed-length token rows: batches are causal-LM inputs with their labels."""

    ids: Tensor

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, index: Tensor) -> dict[str, Tensor]:
        ids = self.ids[index]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def causal_lm_loss(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    return model(**batch).loss


@dataclass(frozen=True)
class Workload:
    """One model with its data, optimizer and loss; ``loss`` is the task's CE on a batch."""

    name: str
    label: str
    model: nn.Module  # the initial model; every run trains a deep copy
    forget: Any
    retain: Any
    batch_size: int
    loss: Callable[[nn.Module, Any], Tensor]
    make_optimizer: Callable[[nn.Module], ObjectiveOptimizer]
    clip_norm: float | None
    recipe: str
    target: float | None = TARGET  # engine / hand; None: the ratio is not the point


def shipped_config(task: str, name: str) -> Path:
    return Path(str(resources.files("dualoptim") / "configs" / task / f"{name}.yaml"))


def vision_optimizer(retain_lr: float) -> Callable[[nn.Module], ObjectiveOptimizer]:
    """The classification task's DualOptimizer: AdamW(1e-4, wd 0.05) | SGD(momentum 0.9)."""

    def make(model: nn.Module) -> ObjectiveOptimizer:
        return build_optimizer(
            SETTING,
            model.parameters(),
            forget={"name": "adamw", "weight_decay": 0.05},
            retain={"name": "sgd", "momentum": 0.9, "weight_decay": 5e-4},
            forget_lr=1e-4,
            retain_lr=retain_lr,
        )

    return make


def cnn_workload() -> Workload:
    """The fashion-mnist config's model, set sizes, batch size and optimizer."""
    exp = load_config(VisionExperiment, shipped_config("vision", "fashion-mnist"))
    spec = exp.runs[0]
    per_class, fraction = exp.data.per_class_train, exp.data.forget_fraction
    n_train = per_class * CLASSES
    n_forget = round(n_train * fraction)
    generator = torch.Generator().manual_seed(SEED)
    x = torch.rand(n_train, *IMAGE, generator=generator)
    y = torch.randint(CLASSES, (n_train,), generator=generator)
    torch.manual_seed(SEED)
    model = build_model(exp.model, in_channels=IMAGE[0], classes=CLASSES, image_size=IMAGE[1])

    return Workload(
        name="cnn",
        label=f"{exp.model} (fashion-mnist)",
        model=model,
        forget=ImageSource(x[:n_forget], y[:n_forget]),
        retain=ImageSource(x[n_forget:], y[n_forget:]),
        batch_size=spec.batch_size,
        loss=cross_entropy,
        make_optimizer=vision_optimizer(spec.retain_lr),
        clip_norm=None,
        recipe=(
            f"build_model({exp.model!r}, 1, 10, 28); {n_forget} forget / {n_train - n_forget} "
            f"retain random images; batch {spec.batch_size}; AdamW(1e-4, wd 0.05) | "
            f"SGD({spec.retain_lr}, momentum 0.9, wd 5e-4); no clipping"
        ),
    )


def llama_workload() -> Workload:
    """tofu-tiny's tiny Llama, set sizes, batch size, optimizer and clipping."""
    exp = load_config(LLMExperiment, shipped_config("llm", "tofu-tiny"))
    spec = next(run for run in exp.runs if run.setting == SETTING)
    n_forget = 40  # forget10 of the built-in 40 authors × 10 questions
    n_retain = exp.data.retain_rows
    vocab = exp.model.tiny.vocab_size
    generator = torch.Generator().manual_seed(SEED)
    ids = torch.randint(3, vocab, (n_forget + n_retain, TOKENS), generator=generator)
    model = tiny_llama(vocab, exp.model.tiny, seed=SEED)

    def make_optimizer(model: nn.Module) -> ObjectiveOptimizer:
        side = {"name": "adamw", "betas": spec.betas}
        return build_optimizer(
            SETTING,
            adamw_groups(model, spec.weight_decay),
            forget=side,
            retain=side,
            forget_lr=spec.forget_lr,
            retain_lr=spec.retain_lr,
        )

    return Workload(
        name="llama",
        label="tiny Llama (tofu-tiny)",
        model=model,
        forget=TokenSource(ids[:n_forget]),
        retain=TokenSource(ids[n_forget:]),
        batch_size=spec.batch_size,
        loss=causal_lm_loss,
        make_optimizer=make_optimizer,
        clip_norm=spec.clip_norm,
        recipe=(
            f"tiny_llama({exp.model.tiny}); {n_forget} forget / {n_retain} retain rows of "
            f"{TOKENS} random token ids; batch {spec.batch_size}; AdamW({spec.forget_lr}) | "
            f"AdamW({spec.retain_lr}), betas {spec.betas}, wd {spec.weight_decay} on matrices; "
            f"clip_norm {spec.clip_norm} in both phases"
        ),
    )


def fixed_workload() -> Workload:
    """A model that costs nearly nothing (Linear(16, 2), batch 8): each loop's time per step
    is its own fixed cost, so engine − hand is what the engine adds to any step."""
    generator = torch.Generator().manual_seed(SEED)
    x = torch.randn(FIXED_ROWS, FIXED_FEATURES, generator=generator)
    y = torch.randint(2, (FIXED_ROWS,), generator=generator)
    torch.manual_seed(SEED)
    n_forget = FIXED_ROWS // 10
    return Workload(
        name="fixed",
        label="fixed cost: Linear(16, 2)",
        model=nn.Linear(FIXED_FEATURES, 2),
        forget=ImageSource(x[:n_forget], y[:n_forget]),
        retain=ImageSource(x[n_forget:], y[n_forget:]),
        batch_size=8,
        loss=cross_entropy,
        make_optimizer=vision_optimizer(0.01),
        clip_norm=None,
        recipe=(
            f"nn.Linear({FIXED_FEATURES}, 2); {n_forget} forget / {FIXED_ROWS - n_forget} "
            "retain random rows; batch 8; the CNN's optimizer; no clipping"
        ),
        target=None,
    )


# ---------------------------------------------------------------- the two loops
@dataclass(frozen=True)
class GradientAscent:
    """The engine's Method: −loss on forget batches, loss on retain batches."""

    loss: Callable[[nn.Module, Any], Tensor]
    name: str = "ga+ce"

    def setup(self, model: nn.Module, optimizer: ObjectiveOptimizer, run: RunState) -> None:
        pass

    def forget_loss(self, model: nn.Module, batch: Any, _run: RunState) -> Tensor:
        return -self.loss(model, batch)

    def retain_loss(self, model: nn.Module, batch: Any, _run: RunState) -> Tensor:
        return self.loss(model, batch)


def streams(work: Workload) -> dict[str, BatchStream]:
    """The engine's batch streams (seeds 2·seed for forget, 2·seed + 1 for retain)."""
    return {
        name: BatchStream(len(source), work.batch_size, SEED * 2 + offset)
        for offset, (name, source) in enumerate((("forget", work.forget), ("retain", work.retain)))
    }


def objectives(cycles: int) -> Iterator[str]:
    for _ in range(cycles):
        yield from ("forget",) * FORGET_STEPS
        yield from ("retain",) * RETAIN_STEPS


def hand_loop(work: Workload, model: nn.Module, optimizer: ObjectiveOptimizer, cycles: int) -> None:
    """What a user writes: forward, loss, backward, (clip), step, zero_grad."""
    model.train()
    stream_of = streams(work)
    sources = {"forget": work.forget, "retain": work.retain}
    for objective in objectives(cycles):
        loss = work.loss(model, sources[objective].batch(stream_of[objective].next()))
        (-loss if objective == "forget" else loss).backward()
        if work.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), work.clip_norm)
        optimizer.step(objective=objective)
        optimizer.zero_grad()


def engine_loop(
    work: Workload, model: nn.Module, optimizer: ObjectiveOptimizer, cycles: int
) -> float:
    """The same run through ``unlearn``; returns the seconds of its loop alone."""
    clip = PhaseOptions(clip_norm=work.clip_norm)
    config = EngineConfig(
        Schedule(cycles, FORGET_STEPS, RETAIN_STEPS),
        forget_batch=work.batch_size,
        retain_batch=work.batch_size,
        forget=clip,
        retain=clip,
        seed=SEED,
        checkpoint_every=0,
        eval_every=0,
        progress=False,
    )
    result = unlearn(model, GradientAscent(work.loss), work.forget, work.retain, optimizer, config)
    return result.seconds


LOOPS = ("hand", "engine")


def max_difference(a: nn.Module, b: nn.Module) -> float:
    """The largest absolute difference between two models' parameters and float buffers."""
    differences = [
        float((x - y).abs().max())
        for (_, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True)
        if x.is_floating_point() and x.numel()
    ]
    return max(differences, default=0.0)


def run_once(work: Workload, loop: str, cycles: int) -> tuple[nn.Module, dict[str, float]]:
    """One timed run of ``loop`` from a fresh copy of the initial model and a new optimizer."""
    model = copy.deepcopy(work.model)
    optimizer = work.make_optimizer(model)
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    if loop == "hand":
        hand_loop(work, model, optimizer, cycles)
        timing = {}
    else:
        timing = {"loop_s": engine_loop(work, model, optimizer, cycles)}
    timing |= {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    return model, timing


# ---------------------------------------------------------------- measurement
def measure(work: Workload, cycles: int, repeats: int, console: Console) -> dict[str, Any]:
    """Interleaved repeats of both loops; per-step medians, minima, ratios, end difference."""
    steps = cycles * (FORGET_STEPS + RETAIN_STEPS)
    # untimed warm-up: first-call costs (kernels; accelerate imports deepspeed once, if there)
    warmup = {loop: run_once(work, loop, 1)[1]["wall_s"] for loop in LOOPS}
    runs: dict[str, list[dict[str, float]]] = {loop: [] for loop in LOOPS}
    differences = []
    for r in range(repeats):
        models = {}
        for loop in LOOPS if r % 2 == 0 else LOOPS[::-1]:
            models[loop], timing = run_once(work, loop, cycles)
            runs[loop].append({key: seconds / steps for key, seconds in timing.items()})
        differences.append(max_difference(models["hand"], models["engine"]))
        console.print(
            f"  {work.name} {r + 1}/{repeats}: "
            + ", ".join(f"{loop} {runs[loop][-1]['wall_s'] * 1e3:.3f} ms/step" for loop in LOOPS)
        )
    summary = {
        loop: {
            "warmup_run_s": warmup[loop],
            "per_step_s": {key: [run[key] for run in runs[loop]] for key in runs[loop][0]},
            "median_s": {
                key: statistics.median(run[key] for run in runs[loop]) for key in runs[loop][0]
            },
            "min_s": {key: min(run[key] for run in runs[loop]) for key in runs[loop][0]},
        }
        for loop in LOOPS
    }
    hand, engine = summary["hand"]["median_s"], summary["engine"]["median_s"]
    ratio = engine["wall_s"] / hand["wall_s"]
    return {
        "workload": work.name,
        "label": work.label,
        "recipe": work.recipe,
        "cycles": cycles,
        "steps": steps,
        "repeats": repeats,
        **summary,
        "ratio_median_wall": ratio,
        "ratio_min_wall": summary["engine"]["min_s"]["wall_s"] / summary["hand"]["min_s"]["wall_s"],
        "ratio_median_cpu": engine["cpu_s"] / hand["cpu_s"],
        "ratio_median_engine_loop": engine["loop_s"] / hand["wall_s"],
        "added_median_s": engine["wall_s"] - hand["wall_s"],
        "max_abs_param_difference": max(differences),
        "target": work.target,
        "met": None if work.target is None else ratio <= work.target,
    }


def profile_engine(work: Workload, cycles: int) -> str:
    """cProfile of one engine run: the top functions by cumulative time, as text (paths
    shortened to the package)."""
    model = copy.deepcopy(work.model)
    optimizer = work.make_optimizer(model)
    profiler = cProfile.Profile()
    profiler.runcall(engine_loop, work, model, optimizer, cycles)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(PROFILE_TOP)
    site_packages = f"{Path(torch.__file__).parents[1]}/"
    return text.getvalue().replace(site_packages, "")


# ---------------------------------------------------------------- report
def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def print_report(console: Console, data: dict[str, Any]) -> None:
    """The table of both loops' time per step, with the ratios and the end check."""
    table = Table(
        title=f"Engine cost: time per optimizer step, unlearn() vs a hand-written loop, "
        f"{data['settings']['threads']} torch thread(s)",
        caption=(
            f"median (min) over {data['settings']['repeats']} interleaved repeats; CPU = "
            "process CPU time; loop = the engine without building it; + µs = engine − hand "
            "per step; Δ params = largest |difference| of the final parameters and buffers; "
            f"target engine/hand ≤ {TARGET}"
        ),
    )
    for name in ("workload", "steps", "hand ms", "engine ms", "engine/hand", "min/min", "CPU"):
        table.add_column(name, justify="left" if name == "workload" else "right")
    for name in ("loop/hand", "+ µs", "Δ params", "met"):
        table.add_column(name, justify="right")
    for row in data["results"]:
        hand, engine = row["hand"], row["engine"]
        met = {None: "", True: "[green]yes[/]", False: "[red]NO[/]"}[row["met"]]
        table.add_row(
            row["label"],
            str(row["steps"]),
            f"{_ms(hand['median_s']['wall_s'])} ({_ms(hand['min_s']['wall_s'])})",
            f"{_ms(engine['median_s']['wall_s'])} ({_ms(engine['min_s']['wall_s'])})",
            f"{row['ratio_median_wall']:.3f}",
            f"{row['ratio_min_wall']:.3f}",
            f"{row['ratio_median_cpu']:.3f}",
            f"{row['ratio_median_engine_loop']:.3f}",
            f"{row['added_median_s'] * 1e6:,.0f}",
            f"{row['max_abs_param_difference']:.1e}",
            met,
        )
    console.print(table)
    for row in data["results"]:
        console.print(
            f"{row['label']}: warm-up run (1 cycle) hand {row['hand']['warmup_run_s']:.2f} s, "
            f"engine {row['engine']['warmup_run_s']:.2f} s"
        )
    for name, text in data.get("profiles", {}).items():
        console.print(f"cProfile of one engine run, {name}:\n{text}")


# ---------------------------------------------------------------- main
WORKLOADS = {"cnn": cnn_workload, "llama": llama_workload, "fixed": fixed_workload}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repeats per loop")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run of seconds: few cycles and 2 repeats"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also cProfile one engine run per workload"
    )
    parser.add_argument("--out", type=Path, default=Path("results/bench/engine_overhead.json"))
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be at least 1")
    if args.quick:
        args.repeats = min(args.repeats, 2)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 170)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    results, profiles = [], {}
    for name in args.workloads:
        work = WORKLOADS[name]()
        cycles = CYCLES[name][1 if args.quick else 0]
        console.print(f"{work.label}: {cycles} cycles of {FORGET_STEPS}:{RETAIN_STEPS}…")
        results.append(measure(work, cycles, args.repeats, console))
        if args.profile:
            profiles[name] = profile_engine(work, cycles)
    data = {
        **benchmark_header("engine_overhead", started),
        "settings": {
            "repeats": args.repeats,
            "threads": args.threads,
            "quick": args.quick,
            "setting": SETTING,
            "schedule": f"{FORGET_STEPS} forget : {RETAIN_STEPS} retain steps per cycle",
            "losses": "forget −CE (gradient ascent), retain CE",
            "method": __doc__.split("\n\n")[3],
        },
        "results": results,
    }
    if profiles:
        data["profiles"] = profiles
    print_report(console, data)
    write_json(args.out, data)
    console.print(f"wrote {args.out}")
    return data


if __name__ == "__main__":
    main()

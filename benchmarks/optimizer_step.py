"""Optimizer step time and state memory: torch AdamW/SGD, DualOptimizer, DualOptimPlus, bnb.

Why: DualOptimizer should cost nothing beyond its inner optimizers (a forget step is one fused
AdamW step, a retain step one fused SGD step), and DualOptimPlus should cost little more than
the extra state it streams (6 state tensors, 4 touched per step, against AdamW's 2). Optimizer
steps are memory-bound, so every row is also put in bytes moved per step and compared with this
machine's copy bandwidth.

Method (also written into the JSON):

* one fp32 ``nn.Parameter`` of n values per size, a matrix with rows of 1000 values (8-bit
  states are kept for matrices only, in row-aligned blocks: 4 per row, the last partly
  padded, as in most LLM rows), with a fixed ``torch.randn`` gradient;
  every optimizer steps that same tensor, each with its own state (one copy of the parameter
  instead of one per optimizer keeps 1e8 within memory);
* all optimizers of a size are stepped in interleaved rounds, in a new random order each round,
  so drift and other processes' load hit them alike; DualOptimizer and DualOptimPlus do a
  forget step then a retain step in each round (1:1 alternation) and each step is timed alone;
* DualOptimPlus kernels are compiled (timed, on an empty inductor cache) before any size; two
  untimed rounds per size then allocate the states and size each case's rounds to a time
  budget (slow cases get fewer, never under 3);
* every timed step starts with cold caches (an untimed read of a 128 MB buffer), as in training
  where forward and backward run between optimizer steps;
* median over rounds of ``time.perf_counter`` around ``step()``, torch's default thread count;
  a 4096-value parameter measures each step's size-independent cost; other processes' share of
  the CPU while timing is recorded, since on 2 cores any load stalls both OpenMP threads.

Run: .venv/bin/python benchmarks/optimizer_step.py [--sizes 1e6 1e7 1e8] [--repeats N]
[--out results/bench/optimizer_step.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib.metadata
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import bitsandbytes as bnb
import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn
from torch.optim import Optimizer

from dualoptim.io import write_json
from dualoptim.optim import DualOptimizer, DualOptimPlus
from dualoptim.optim.dual import DEFAULT_FORGET, DEFAULT_RETAIN
from dualoptim.optim.quantization import BLOCK

STEP = "step"  # the objective label of single-objective optimizers
MIN_ROUNDS = 3  # fewest timed rounds of any case that runs
COPY_NUMEL = 100_000_000  # the copy-bandwidth probe is always 100M floats
ROW = 1000  # values per row of every benchmarked parameter
COMPILE_PROBE_NUMEL = 1_000_000
FIXED_COST_NUMEL = 5000  # just above the smallest parameter the 8-bit optimizers quantise
FIXED_COST_STEPS = 300
WARMUP_ROUNDS = 2  # the first allocates and faults in the states, the second sizes the budget
#: read before every timed step: 4× this machine's 32 MB L3, so each step starts cold
EVICT_BYTES = 128 * 2**20
DUAL_TOLERANCE = 0.05  # DualOptimizer vs its inner optimizer
PLUS_MAX_RATIO = 1.8  # DualOptimPlus fp32 compiled vs fused AdamW
EIGHT_BIT_MAX_FRACTION = 0.30  # 8-bit DualOptimPlus state vs fp32

# ---------------------------------------------------------------- bytes moved per step
F32 = 4  # bytes of one fp32 value
Q8 = 1 + F32 / BLOCK  # bytes per value of a block-wise 8-bit state: code + share of the absmax


@dataclass(frozen=True)
class Traffic:
    """The least memory traffic of one step, per parameter value (block padding ignored)."""

    formula: str
    bytes_per_param: float


ADAMW = Traffic("read p,g,m,v; write p,m,v = 7×4", 7 * F32)
SGD = Traffic("read p,g,buf; write p,buf = 5×4", 5 * F32)
PLUS_FP32 = Traffic("read p,g,B_m,B_v,Δm,Δv; write p,B_m,B_v,Δm,Δv = 11×4", 11 * F32)
PLUS_8BIT = Traffic(
    f"read p,g + 4 8-bit states; write p + 4 8-bit states = 3×4 + 8×(1+4/{BLOCK})",
    3 * F32 + 8 * Q8,
)
ADAMW_8BIT = Traffic(
    f"read p,g + m,v 8-bit; write p + m,v 8-bit = 3×4 + 4×(1+4/{BLOCK})", 3 * F32 + 4 * Q8
)


# ---------------------------------------------------------------- the cases
@dataclass(frozen=True)
class Case:
    """One optimizer configuration; ``traffic`` has one entry per objective it steps."""

    key: str
    label: str
    build: Callable[[list[nn.Parameter]], Optimizer]
    traffic: dict[str, Traffic]
    #: objective -> key of the case it must match (DualOptimizer's inner optimizers)
    reference: dict[str, str] = field(default_factory=dict)


CASES = (
    Case(
        "adamw_foreach",
        "torch AdamW foreach",
        partial(torch.optim.AdamW, **DEFAULT_FORGET.kwargs, foreach=True, fused=False),
        {STEP: ADAMW},
    ),
    Case(
        "adamw_fused",
        "torch AdamW fused",
        partial(torch.optim.AdamW, **DEFAULT_FORGET.kwargs, fused=True),
        {STEP: ADAMW},
    ),
    Case(
        "sgd_fused",
        "torch SGD(0.9) fused",
        partial(torch.optim.SGD, **DEFAULT_RETAIN.kwargs, fused=True),
        {STEP: SGD},
    ),
    Case(
        "dual",
        "DualOptimizer AdamW|SGD",
        DualOptimizer,
        {"forget": ADAMW, "retain": SGD},
        reference={"forget": "adamw_fused", "retain": "sgd_fused"},
    ),
    Case(
        "plus_compiled",
        "DO+ fp32 compiled",
        partial(DualOptimPlus, compile=True),
        {"forget": PLUS_FP32, "retain": PLUS_FP32},
    ),
    Case(
        "plus_eager",
        "DO+ fp32 eager",
        partial(DualOptimPlus, compile=False),
        {"forget": PLUS_FP32, "retain": PLUS_FP32},
    ),
    Case(
        "plus_8bit",
        "DO+ 8-bit compiled",
        partial(DualOptimPlus, compile=True, state_bits=8),
        {"forget": PLUS_8BIT, "retain": PLUS_8BIT},
    ),
    Case(
        "bnb_adamw8bit",
        "bnb AdamW8bit",
        partial(bnb.optim.AdamW8bit, **DEFAULT_FORGET.kwargs),
        {STEP: ADAMW_8BIT},
    ),
)
CASE_BY_KEY = {case.key: case for case in CASES}


# ---------------------------------------------------------------- measurement helpers
def timed_step(opt: Optimizer, objective: str, evict: Tensor | None = None) -> float:
    """Seconds of one ``step()``; CPU kernels are synchronous, so wall time is the cost.

    ``evict`` is read first (untimed) so the step starts with cold caches, as it does in
    training where forward and backward run between steps. Without it a 1M-value step that
    follows one touching the same p and g (DualOptimizer's retain after its forget) finds them
    in L3 and looks faster than its reference.
    """
    if evict is not None:
        evict.sum()
    start = time.perf_counter()
    if objective == STEP:
        opt.step()
    else:
        opt.step(objective=objective)
    return time.perf_counter() - start


def state_bytes(opt: Optimizer) -> tuple[int, int | None]:
    """(bytes of all state tensors, bytes of quantised ones where the optimizer reports them)."""
    if isinstance(opt, DualOptimPlus):
        reported = opt.state_bytes()
        return reported["all"], reported["quantized"]
    # DualOptimizer.state holds its inner optimizers' states (keys "forget.…", "retain.…")
    total = sum(
        value.numel() * value.element_size()
        for per_param in opt.state.values()
        for value in per_param.values()
        if isinstance(value, Tensor)
    )
    return total, None


def cpu_counters() -> tuple[int, int, float]:
    """(busy jiffies, all jiffies) of the machine from /proc/stat, and this process's CPU s."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    own = os.times()
    return sum(fields) - fields[3] - fields[4], sum(fields), own.user + own.system


def other_cpu_share(start: tuple[int, int, float], end: tuple[int, int, float]) -> float:
    """Share of all CPU time that other processes (or the hypervisor) took: a noise gauge."""
    busy, total = end[0] - start[0], end[1] - start[1]
    own = (end[2] - start[2]) * os.sysconf("SC_CLK_TCK")
    return max(0.0, (busy - own) / total) if total else 0.0


def copy_bandwidth(repeats: int) -> dict[str, Any]:
    """Median ``dst.copy_(src)`` rate on 100M floats, counting read + write (2× bytes)."""
    src = torch.randn(COPY_NUMEL)
    dst = torch.empty_like(src)
    dst.copy_(src)  # fault the destination's pages in before timing
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    moved = 2 * src.numel() * src.element_size()
    median = statistics.median(times)
    return {
        "numel": COPY_NUMEL,
        "bytes_per_copy": moved,
        "times_s": times,
        "median_s": median,
        "gb_per_s": moved / median / 1e9,
    }


def compile_times(keys: list[str]) -> dict[str, dict[str, float]]:
    """Cold torch.compile cost of each DualOptimPlus kernel (paid once per process)."""
    results = {}
    for key in keys:
        param = nn.Parameter(torch.zeros(COMPILE_PROBE_NUMEL // ROW, ROW))
        param.grad = torch.randn_like(param)
        opt = CASE_BY_KEY[key].build([param])
        first = timed_step(opt, "forget")
        steady = statistics.median(timed_step(opt, o) for o in ("retain", "forget") * 3)
        results[key] = {
            "numel": COMPILE_PROBE_NUMEL,
            "first_step_s": first,
            "steady_step_s": steady,
            "compile_s": first - steady,
        }
    return results


def fixed_costs() -> dict[str, dict[str, float]]:
    """Median seconds of ``step()`` on a 4096-value parameter: the per-step cost that does not
    scale with size (Python, dispatch, compiled-graph guards), which dominates small tensors."""
    results = {}
    for case in CASES:
        param = nn.Parameter(torch.randn(FIXED_COST_NUMEL // ROW, ROW))
        param.grad = torch.randn_like(param)
        opt = case.build([param])
        results[case.key] = {}
        for objective in case.traffic:
            for _ in range(10):
                timed_step(opt, objective)
            results[case.key][objective] = statistics.median(
                timed_step(opt, objective) for _ in range(FIXED_COST_STEPS)
            )
    return results


def planned_rounds(round_seconds: float, repeats: int, max_case_seconds: float) -> int:
    """Rounds that fit the per-case time budget, but never fewer than MIN_ROUNDS."""
    affordable = int(max_case_seconds // round_seconds) if round_seconds > 0 else repeats
    return min(repeats, max(MIN_ROUNDS, affordable))


# ---------------------------------------------------------------- one size
def run_size(
    numel: int,
    repeats: int,
    max_case_seconds: float,
    rng: random.Random,
    console: Console,
) -> tuple[dict[str, dict[str, Any]], float]:
    """Time every case at ``numel``; return per-case raw results and other processes' CPU share."""
    generator = torch.Generator().manual_seed(numel)
    param = nn.Parameter(torch.randn(numel // ROW, ROW, generator=generator))
    param.grad = torch.randn(numel // ROW, ROW, generator=generator)
    grad_sum = float(param.grad.sum(dtype=torch.float64))
    optimizers = {case.key: case.build([param]) for case in CASES}
    evict = torch.ones(EVICT_BYTES // 4)

    warmup: dict[str, list[float]] = {c.key: [] for c in CASES}
    for _ in range(WARMUP_ROUNDS):
        for case in CASES:
            warmup[case.key] += [timed_step(optimizers[case.key], o, evict) for o in case.traffic]
    last_round = {c.key: sum(warmup[c.key][-len(c.traffic) :]) for c in CASES}
    rounds = {c.key: planned_rounds(last_round[c.key], repeats, max_case_seconds) for c in CASES}
    console.print(
        f"  {_size(numel)}: warm-up done; timing "
        + ", ".join(f"{c.key}×{rounds[c.key]}" for c in CASES)
    )

    times: dict[str, dict[str, list[float]]] = {c.key: {o: [] for o in c.traffic} for c in CASES}
    gc.collect()
    gc.disable()  # a collection inside a timed step would be charged to that optimizer
    start = cpu_counters()
    try:
        for r in range(max(rounds.values())):
            order = [c for c in CASES if r < rounds[c.key]]
            rng.shuffle(order)
            for case in order:
                for objective in case.traffic:
                    times[case.key][objective].append(
                        timed_step(optimizers[case.key], objective, evict)
                    )
    finally:
        gc.enable()
    share = other_cpu_share(start, cpu_counters())
    if float(param.grad.sum(dtype=torch.float64)) != grad_sum:
        raise RuntimeError("an optimizer changed the shared gradient; results are not comparable")

    raw = {
        c.key: {
            "warmup_s": warmup[c.key],
            "times_s": times[c.key],
            "state_bytes": state_bytes(optimizers[c.key]),
        }
        for c in CASES
    }
    del optimizers, param, evict
    gc.collect()
    return raw, share


def rows_for_size(
    numel: int, raw: dict[str, dict[str, Any]], copy_gbps: float
) -> list[dict[str, Any]]:
    """Per (case, objective) rows with medians, ratios, state bytes and achieved bandwidth."""
    medians = {
        (key, objective): statistics.median(ts)
        for key, entry in raw.items()
        for objective, ts in entry["times_s"].items()
    }
    fused_adamw = medians.get(("adamw_fused", STEP))
    fp32_state = raw["plus_compiled"]["state_bytes"][0] if "plus_compiled" in raw else None
    rows = []
    for case in CASES:
        if case.key not in raw:
            continue
        all_bytes, quantized = raw[case.key]["state_bytes"]
        for objective, traffic in case.traffic.items():
            median = medians[(case.key, objective)]
            moved = traffic.bytes_per_param * numel
            ref_key = case.reference.get(objective)
            ref_median = medians.get((ref_key, STEP)) if ref_key else None
            rows.append(
                {
                    "numel": numel,
                    "case": case.key,
                    "label": case.label,
                    "objective": objective,
                    "rounds": len(raw[case.key]["times_s"][objective]),
                    "times_s": raw[case.key]["times_s"][objective],
                    "warmup_s": raw[case.key]["warmup_s"],
                    "median_s": median,
                    "min_s": min(raw[case.key]["times_s"][objective]),
                    "ratio_to_fused_adamw": median / fused_adamw if fused_adamw else None,
                    "reference": ref_key,
                    "ratio_to_reference": median / ref_median if ref_median else None,
                    "difference_to_reference_s": median - ref_median if ref_median else None,
                    "state_bytes": all_bytes,
                    "state_bytes_quantized": quantized,
                    "state_fraction_of_plus_fp32": (
                        all_bytes / fp32_state if case.key == "plus_8bit" and fp32_state else None
                    ),
                    "traffic_formula": traffic.formula,
                    "bytes_per_param": traffic.bytes_per_param,
                    "bytes_per_step": moved,
                    "achieved_gb_per_s": moved / median / 1e9,
                    "fraction_of_copy_bandwidth": moved / median / 1e9 / copy_gbps,
                }
            )
    return rows


# ---------------------------------------------------------------- targets and report
def evaluate_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The three targets of the brief, one entry per size (and objective where it applies)."""
    targets = []
    for row in rows:
        if row["case"] == "dual":
            value, limit = row["ratio_to_reference"], f"|ratio−1| ≤ {DUAL_TOLERANCE:.0%}"
            met = abs(value - 1) <= DUAL_TOLERANCE
            name = f"DualOptimizer {row['objective']} vs {row['reference']}"
        elif row["case"] == "plus_compiled":
            value, limit = row["ratio_to_fused_adamw"], f"≤ {PLUS_MAX_RATIO}× fused AdamW"
            met = value <= PLUS_MAX_RATIO
            name = f"DO+ fp32 compiled {row['objective']} vs fused AdamW"
        elif row["case"] == "plus_8bit" and row["objective"] == "forget":
            value = row["state_fraction_of_plus_fp32"]
            limit = f"≤ {EIGHT_BIT_MAX_FRACTION:.0%} of fp32 state"
            met = value is not None and value <= EIGHT_BIT_MAX_FRACTION
            name = "DO+ 8-bit state / DO+ fp32 state"
        else:
            continue
        targets.append(
            {
                "target": name,
                "numel": row["numel"],
                "value": value,
                "limit": limit,
                "met": met,
                "difference_s": row.get("difference_to_reference_s"),
            }
        )
    return targets


def _size(numel: int) -> str:
    return f"{numel / 1e6:g}M"


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3g}" if ms < 1000 else f"{ms:,.0f}"


def _opt(value: float | None, fmt: str, scale: float = 1.0) -> str:
    return "" if value is None else format(value * scale, fmt)


def print_report(console: Console, data: dict[str, Any]) -> None:
    """The results table, the run's conditions, and the targets with pass/fail."""
    copy_gbps, copy_numel = data["copy_bandwidth"]["gb_per_s"], data["copy_bandwidth"]["numel"]
    table = Table(
        title="Optimizer step: median time, state and bandwidth",
        caption=(
            f"copy bandwidth {copy_gbps:.1f} GB/s (dst.copy_(src), {_size(copy_numel)} floats, "
            "read+write); "
            "× AdamW = vs torch fused AdamW at the same size; × inner = vs DualOptimizer's "
            "own inner optimizer (fused AdamW / fused SGD), same run"
        ),
    )
    for name in ("size", "optimizer", "objective", "rounds", "median ms", "min ms", "× AdamW"):
        table.add_column(name, justify="left" if name in ("optimizer", "objective") else "right")
    for name in ("× inner", "state MB", "8bit/fp32", "B/param", "GB/s", "of copy"):
        table.add_column(name, justify="right")
    previous = None
    for row in data["results"]:
        if previous is not None and row["numel"] != previous:
            table.add_section()
        previous = row["numel"]
        table.add_row(
            _size(row["numel"]),
            row["label"],
            row["objective"],
            str(row["rounds"]),
            _ms(row["median_s"]),
            _ms(row["min_s"]),
            _opt(row["ratio_to_fused_adamw"], ".2f"),
            _opt(row["ratio_to_reference"], ".3f"),
            f"{row['state_bytes'] / 1e6:,.1f}",
            _opt(row["state_fraction_of_plus_fp32"], ".1%"),
            f"{row['bytes_per_param']:.2f}",
            f"{row['achieved_gb_per_s']:.1f}",
            f"{row['fraction_of_copy_bandwidth']:.2f}",
        )
    console.print(table)
    for key, entry in data["compile"].items():
        console.print(
            f"compile ({CASE_BY_KEY[key].label}, cold inductor cache): {entry['compile_s']:.1f} s "
            f"(first step {entry['first_step_s']:.1f} s − steady {entry['steady_step_s']:.3f} s)"
        )
    for numel, share in data["other_cpu_share"].items():
        console.print(f"other processes' CPU share while timing {_size(int(numel))}: {share:.0%}")

    fixed = Table(
        title=f"Fixed cost of one step() ({FIXED_COST_NUMEL}-value parameter, warm caches)",
        caption="+ µs vs inner: what DualOptimizer adds to its inner optimizer's step",
    )
    for name in ("optimizer", "objective", "µs", "+ µs vs inner"):
        fixed.add_column(name, justify="left" if name in ("optimizer", "objective") else "right")
    for case in CASES:
        for objective, seconds in data["fixed_cost_s"][case.key].items():
            ref = case.reference.get(objective)
            extra = seconds - data["fixed_cost_s"][ref][STEP] if ref else None
            fixed.add_row(case.label, objective, f"{seconds * 1e6:,.0f}", _opt(extra, ",.0f", 1e6))
    console.print(fixed)

    targets = Table(title="Targets")
    for name in ("target", "size", "value", "limit", "Δ ms vs ref", "met"):
        targets.add_column(name)
    for t in data["targets"]:
        targets.add_row(
            t["target"],
            _size(t["numel"]),
            f"{t['value']:.3f}",
            t["limit"],
            _opt(t["difference_s"], "+.3f", 1e3),
            "[green]yes[/]" if t["met"] else "[red]NO[/]",
        )
    console.print(targets)


def machine_info() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "")
    return {
        "cpu_model": model or platform.processor(),
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "bitsandbytes": bnb.__version__,
        "dualoptim": importlib.metadata.version("dualoptim"),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# ---------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e7, 1e8])
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds per case")
    parser.add_argument(
        "--max-case-seconds",
        type=float,
        default=30.0,
        help=f"timing budget per case and size; slow cases get fewer rounds (≥ {MIN_ROUNDS})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the round order")
    parser.add_argument("--out", type=Path, default=Path("results/bench/optimizer_step.json"))
    args = parser.parse_args(argv)
    if args.repeats < MIN_ROUNDS:
        parser.error(f"--repeats must be at least {MIN_ROUNDS}")
    if any(size < ROW or size % ROW for size in args.sizes):
        parser.error(f"--sizes must be positive multiples of {ROW} (the parameter's row length)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 170)
    sizes = [int(size) for size in args.sizes]
    rng = random.Random(args.seed)
    started = time.perf_counter()

    console.print(f"copy bandwidth probe ({COPY_NUMEL:,} floats)…")
    copy = copy_bandwidth(args.repeats)
    with tempfile.TemporaryDirectory(prefix="inductor-cold-") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # read lazily by inductor
        compiled = ["plus_compiled", "plus_8bit"]
        console.print(f"compiling {', '.join(compiled)} on a cold inductor cache…")
        compile_info = compile_times(compiled)
        console.print(f"fixed cost per step ({FIXED_COST_NUMEL}-value parameter)…")
        fixed = fixed_costs()

        results: list[dict[str, Any]] = []
        shares: dict[str, float] = {}
        for numel in sizes:
            console.print(f"size {_size(numel)} ({numel:,} fp32 values)…")
            raw, shares[str(numel)] = run_size(
                numel, args.repeats, args.max_case_seconds, rng, console
            )
            results += rows_for_size(numel, raw, copy["gb_per_s"])

    data = {
        "benchmark": "optimizer_step",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "wall_seconds": time.perf_counter() - started,
        "machine": machine_info(),
        "settings": {
            "sizes": sizes,
            "repeats": args.repeats,
            "max_case_seconds": args.max_case_seconds,
            "min_rounds": MIN_ROUNDS,
            "seed": args.seed,
            "parameter": (
                f"one fp32 nn.Parameter of `numel` values per size, shape (numel / {ROW}, "
                f"{ROW}), gradient torch.randn set once; every optimizer at a size steps this "
                "same tensor with its own state"
            ),
            "timing": (
                f"{WARMUP_ROUNDS} untimed warm-up rounds, then interleaved rounds in a "
                "shuffled order; DualOptimizer/DualOptimPlus step forget then retain each "
                "round (1:1), every step timed alone with time.perf_counter after an untimed "
                f"read of a {EVICT_BYTES >> 20} MB buffer (cold caches); rounds per case = "
                "min(repeats, max(min_rounds, max_case_seconds // last warm-up round time)); "
                "median over rounds. fixed_cost_s: median of "
                f"{FIXED_COST_STEPS} steps on a {FIXED_COST_NUMEL}-value parameter, warm caches"
            ),
            "hyperparameters": (
                f"AdamW rows {DEFAULT_FORGET.kwargs}, SGD rows {DEFAULT_RETAIN.kwargs}: "
                "DualOptimizer's default inner optimizers; DualOptimPlus defaults"
            ),
            "bytes_model": (
                "least traffic of the update: every state value the step touches is read and "
                "written once, p read and written, g read (block padding ignored). foreach "
                "AdamW and eager DO+ make several passes, so their real traffic is higher; "
                "copy_ is counted as 2× bytes though write-allocate makes it move 3×"
            ),
            "state_bytes": (
                "sum of tensor bytes in optimizer.state (DualOptimizer: both inner optimizers; "
                "DualOptimPlus: state_bytes()); DualOptimizer/DO+ rows show the whole state"
            ),
        },
        "copy_bandwidth": copy,
        "compile": compile_info,
        "fixed_cost_s": fixed,
        "other_cpu_share": shares,
        "results": results,
    }
    data["targets"] = evaluate_targets(results)
    print_report(console, data)
    out = args.out.resolve()
    write_json(out, data)
    console.print(f"wrote {out} ({data['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()

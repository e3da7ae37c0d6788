"""Optimizer-state memory per rank of each setting, measured, and extrapolated to a 7B model.

Why: the settings differ most in what they store per trainable parameter (a shared SGD
momentum, DualOptim's AdamW + SGD, DO+'s six moments, in fp32 or 8-bit), and under FSDP2 each
rank holds only its shard of those states. This is the table to pick a setting with, for the
model sizes the paper's LLM runs use.

Method (also written into the JSON):

* a SmolLM2-135M-shaped model (transformers' LlamaConfig: hidden 576, 30 layers, 9 heads,
  3 kv heads, intermediate 1536, vocab 49152, tied embeddings), random init, no download, with
  fp32 and with bf16 parameters (torch optimizers keep their states in the parameters' dtype,
  DO+ keeps fp32 or 8-bit states whatever it is);
* two variants: full fine-tuning, and LoRA-like: the base frozen and only rank-8 A (r × in)
  and B (out × r) tensors on every q_proj and v_proj trainable (plain parameters registered on
  those modules; never used in a forward pass, since no forward is run);
* 1 process without sharding, and 2 ranks under torch FSDP2 (``fully_shard`` on every decoder
  layer, then the root; 2 CPU processes on gloo launched with torchrun);
* each setting built by ``build_optimizer`` with the library's default Optim_f (AdamW) and
  Optim_r (SGD, momentum 0.9); the shared settings (joint, alternate) use Optim_r;
* states from ``optimizer.init_state()`` (what a first step creates; DualOptimizer makes them
  by an inner step at step size 0); counted: the bytes of every tensor in ``optimizer.state``
  on the rank, DTensors by their ``to_local()`` shard, each storage once, masks excluded;
* under FSDP2, one real forget and one real retain step on zero gradients follow, and must
  leave the bytes unchanged; a setting that refuses the sharded step is reported as such
  (in 1 process tests/test_optimizer_memory.py checks the same on a tiny model);
* bytes per parameter = state bytes on the rank / trainable values on the rank (the largest
  over ranks); the 7B numbers multiply that by Llama-2-7B's 6.74e9 parameters, or the 4.19e6
  of LoRA r=8 on q_proj and v_proj, and divide by the ranks: extrapolated, not measured.

Run: .venv/bin/python benchmarks/optimizer_memory.py
[--out results/benchmarks/optimizer_memory.json] [--copy docs/results/optimizer_memory.json]
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn
from torch.distributed.tensor import DTensor

from dualoptim.bench.records import benchmark_header
from dualoptim.io import write_json
from dualoptim.optim import ObjectiveOptimizer
from dualoptim.optim.dual import DEFAULT_FORGET, DEFAULT_RETAIN
from dualoptim.optim.quantization import BLOCK
from dualoptim.optim.settings import SETTINGS, Setting, build_optimizer

#: SmolLM2-135M's shape (HuggingFaceTB/SmolLM2-135M config.json)
SMOLLM2_135M = {
    "hidden_size": 576,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "intermediate_size": 1536,
    "vocab_size": 49152,
    "tie_word_embeddings": True,
}
LORA_RANK = 8
LORA_TARGETS = ("q_proj", "v_proj")
VARIANTS = ("full", "lora")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
WORLD_SIZE = 2
#: DO+ step sizes do not change its state; its kernel is compiled (eager 8-bit takes minutes)
PLUS_OPTIONS = {"retain_lr": 1e-4}
NOT_SUPPORTED = "not supported under FSDP2"
EXTRAPOLATED = "extrapolated from measured bytes/parameter"
#: Llama-2-7B: 6,738,415,616 parameters; LoRA r=8 on q_proj and v_proj of its 32 layers
#: (4096 × 4096 each): 32 × 2 × (8 × 4096 + 4096 × 8) trainable values.
TARGETS_7B = {"full": 6_738_415_616, "lora": 32 * 2 * (LORA_RANK * 4096 + 4096 * LORA_RANK)}
RANKS_7B = (1, 8)
Q8 = 1 + 4 / BLOCK  # bytes per value of a block-wise 8-bit state: code + share of the absmax


# ---------------------------------------------------------------- the model
def smollm2_135m(variant: str, dtype: torch.dtype) -> nn.Module:
    """The model of ``variant`` with random weights; only its trainable tensors require grad."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M)).to(dtype)
    if variant == "lora":
        model.requires_grad_(False)
        for name, module in model.named_modules():
            if name.rsplit(".", 1)[-1] in LORA_TARGETS:
                add_lora(module, LORA_RANK)
    return model


def add_lora(linear: nn.Linear, rank: int) -> None:
    """LoRA's A (rank × in, random) and B (out × rank, zero) as trainable parameters of
    ``linear``, so FSDP2 shards them with it; the forward pass does not use them."""
    weight = linear.weight
    a = torch.empty(rank, linear.in_features, dtype=weight.dtype)
    nn.init.kaiming_uniform_(a, a=5**0.5)
    linear.register_parameter("lora_A", nn.Parameter(a))
    linear.register_parameter(
        "lora_B", nn.Parameter(torch.zeros(linear.out_features, rank, dtype=weight.dtype))
    )


def shard(model: nn.Module) -> None:
    """FSDP2 as one shards a causal LM: every decoder layer, then the root."""
    from torch.distributed.fsdp import fully_shard

    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)


# ---------------------------------------------------------------- measuring
@dataclass(frozen=True)
class Measured:
    """Optimizer state on one rank: bytes of moment tensors and of 0-dim counters, and the
    trainable values on that rank."""

    moment_bytes: int
    counter_bytes: int
    params: int

    @property
    def bytes(self) -> int:
        return self.moment_bytes + self.counter_bytes

    @property
    def bytes_per_param(self) -> float:
        return self.bytes / self.params


def local(tensor: Tensor) -> Tensor:
    """What this rank holds of ``tensor``: a DTensor's shard, else the tensor itself."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def state_bytes(optimizer: ObjectiveOptimizer) -> tuple[int, int]:
    """(moment bytes, counter bytes) of every tensor in ``optimizer.state`` on this rank.

    Each storage is counted once (bitsandbytes points every parameter's state at one shared
    quantisation map); masks are no optimizer state and are left out."""
    seen: set[tuple[int, int]] = set()
    moments = counters = 0
    for state in optimizer.state.values():
        for key, value in state.items():
            if not isinstance(value, Tensor) or key.endswith("_mask"):
                continue
            value = local(value)
            nbytes = value.numel() * value.element_size()
            storage = (value.untyped_storage().data_ptr(), nbytes)
            if storage in seen:
                continue
            seen.add(storage)
            if value.dim():
                moments += nbytes
            else:
                counters += nbytes
    return moments, counters


def make_optimizer(setting: str, params: Iterable[nn.Parameter]) -> ObjectiveOptimizer:
    """``setting`` with the library's default Optim_f (AdamW) and Optim_r (SGD momentum)."""
    return build_optimizer(
        setting,
        params,
        forget=DEFAULT_FORGET,
        retain=DEFAULT_RETAIN,
        plus=PLUS_OPTIONS if Setting(setting).plus else None,
    )


def measure(setting: str, model: nn.Module, step: bool) -> Measured:
    """State bytes of ``setting`` over ``model``'s trainable parameters on this rank.

    States come from ``init_state()``. With ``step``, one real forget and one retain step on
    zero gradients follow and must leave the bytes unchanged: every state was created, and
    the setting runs on these parameters (DO+ refuses DTensors only when it steps)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(setting, params)
    optimizer.init_state()
    created = state_bytes(optimizer)
    if step:
        check_step(optimizer, params, created)
    return Measured(*created, params=sum(local(p).numel() for p in params))


def check_step(
    optimizer: ObjectiveOptimizer, params: list[nn.Parameter], created: tuple[int, int]
) -> None:
    """One forget and one retain step on zero gradients; the state bytes must not change."""
    for p in params:
        p.grad = torch.zeros_like(p)
    try:
        for objective in ("forget", "retain"):
            optimizer.step(objective=objective)
    finally:
        for p in params:
            p.grad = None
    stepped = state_bytes(optimizer)
    if stepped != created:
        raise AssertionError(
            f"a step changed the state bytes from {created} to {stepped}: "
            f"{type(optimizer).__name__}.init_state() does not create every state"
        )


def cases() -> Iterator[tuple[str, str, nn.Module]]:
    """(variant, dtype name, model) for every model measured, one model alive at a time."""
    for variant in VARIANTS:
        for name, dtype in DTYPES.items():
            model = smollm2_135m(variant, dtype)
            yield variant, name, model
            del model
            gc.collect()


def refuses_shards(error: Exception) -> bool:
    """Whether ``error`` is a refusal of DTensor parameters: DO+'s own, or an operator without
    a DTensor rule (bitsandbytes' kernels)."""
    return any(word in str(error) for word in ("DTensor", "sharding strategy"))


def measure_all(sharded: bool, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Every (variant, dtype, setting) cell on this rank. Under sharding each setting also
    steps (1 process: ``init_state`` alone, a few minutes less on 2 cores), and a setting
    whose step refuses DTensor parameters (or has no DTensor kernel) is recorded as such."""
    cells = []
    for variant, dtype, model in cases():
        if sharded:
            shard(model)
        for setting in SETTINGS:
            cell: dict[str, Any] = {"variant": variant, "dtype": dtype, "setting": setting}
            try:
                cell["measured"] = asdict(measure(setting, model, step=sharded))
            except (ValueError, NotImplementedError, RuntimeError) as error:
                if not (sharded and refuses_shards(error)):
                    raise
                cell["error"] = f"{type(error).__name__}: {error}"
            cells.append(cell)
            log(f"  {variant} {dtype} {setting}: {cell.get('measured', cell.get('error'))}")
            gc.collect()
    return cells


# ---------------------------------------------------------------- 2 ranks
def worker(out: Path) -> None:
    """One rank of the FSDP2 run (launched by torchrun): its cells to ``out/rank{r}.json``."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    try:
        cells = measure_all(
            sharded=True, log=partial(print, flush=True) if rank == 0 else lambda _: None
        )
        (out / f"rank{rank}.json").write_text(json.dumps(cells))
    finally:
        dist.destroy_process_group()


def two_ranks() -> list[list[dict[str, Any]]]:
    """Run :func:`worker` as ``WORLD_SIZE`` gloo processes; each rank's cells."""
    with tempfile.TemporaryDirectory(prefix="optimizer-memory-") as folder:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += [f"--nproc_per_node={WORLD_SIZE}", __file__, "--worker", folder]
        subprocess.run(command, check=True)
        return [json.loads((Path(folder) / f"rank{r}.json").read_text()) for r in range(WORLD_SIZE)]


def merge(single: list[dict[str, Any]], ranks: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One cell per (variant, dtype, world, setting) with each rank's numbers; bytes/param is
    the largest over the ranks (the rank that runs out of memory first)."""
    cells = []
    for world, per_rank in ((1, [single]), (WORLD_SIZE, ranks)):
        for same in zip(*per_rank, strict=True):
            first = same[0]
            cell = {k: first[k] for k in ("variant", "dtype", "setting")} | {"world": world}
            if "error" in first:
                cell |= {"status": NOT_SUPPORTED, "error": first["error"]}
            else:
                measured = [Measured(**c["measured"]) for c in same]
                cell |= {
                    "status": "measured",
                    "ranks": [asdict(m) | {"bytes": m.bytes} for m in measured],
                    "bytes_per_rank": max(m.bytes for m in measured),
                    "bytes_per_param": max(m.bytes_per_param for m in measured),
                }
            cell["theory_bytes_per_param"] = theory(first["setting"], first["dtype"])
            cells.append(cell)
    return cells


# ---------------------------------------------------------------- theory and 7B
def theory(setting: str, dtype: str) -> float:
    """Bytes per value of the large tensors: states in the parameters' dtype for torch
    optimizers, block-wise 8-bit for the 8-bit ones, fp32 for DO+ (size thresholds, block
    padding and counters ignored: the measurement shows what they add)."""
    param = DTYPES[dtype].itemsize
    return {
        "joint": param,  # SGD momentum
        "alternate": param,
        "dual": 2 * param + param,  # AdamW's two moments + SGD momentum
        "dual_8bit": 3 * Q8,
        "dual_plus": 6 * 4,  # B_m, B_v, Δm and Δv per objective, fp32
        "dual_plus_8bit": 6 * Q8,
    }[setting]


def extrapolate(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-rank state of a 7B model: measured bytes/param (1 process for 1 rank, the 2-rank
    FSDP2 run for more) × the 7B trainable count / ranks."""
    rows = []
    for cell in cells:
        if cell["world"] == 1:
            ranks = [r for r in RANKS_7B if r == 1]
        else:
            ranks = [r for r in RANKS_7B if r > 1]
        for n in ranks:
            params = TARGETS_7B[cell["variant"]]
            row = {k: cell[k] for k in ("variant", "dtype", "setting")}
            row |= {"ranks": n, "params": params, "basis": EXTRAPOLATED}
            if cell["status"] == "measured":
                row["bytes_per_rank"] = cell["bytes_per_param"] * params / n
            else:
                row["status"] = cell["status"]
            rows.append(row)
    return rows


# ---------------------------------------------------------------- report
def _size(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def print_report(console: Console, data: dict[str, Any]) -> None:
    by_key = {(c["variant"], c["dtype"], c["world"], c["setting"]): c for c in data["cells"]}
    for variant in VARIANTS:
        for dtype in DTYPES:
            params = next(
                c["ranks"][0]["params"]
                for c in data["cells"]
                if (c["variant"], c["dtype"], c["world"]) == (variant, dtype, 1) and "ranks" in c
            )
            table = Table(
                title=f"Optimizer state per rank, SmolLM2-135M shape, {variant}, {dtype} "
                f"parameters ({params:,} trainable), measured"
            )
            for name in ("setting", "theory B/param", "1 process", "B/param", "2 ranks FSDP2"):
                table.add_column(name, justify="left" if name == "setting" else "right")
            table.add_column("B/param", justify="right")
            for setting in SETTINGS:
                row = [setting, f"{theory(setting, dtype):.2f}"]
                for world in (1, WORLD_SIZE):
                    cell = by_key[variant, dtype, world, setting]
                    if cell["status"] == "measured":
                        row += [_size(cell["bytes_per_rank"]), f"{cell['bytes_per_param']:.2f}"]
                    else:
                        row += [cell["status"], ""]
                table.add_row(*row)
            console.print(table)
    errors = {c["setting"]: c["error"] for c in data["cells"] if "error" in c}
    for setting, error in errors.items():
        console.print(f"{setting} under FSDP2: {error.splitlines()[0]}")

    seven = Table(title=f"Llama-2-7B optimizer state per rank ({EXTRAPOLATED})")
    seven.add_column("setting")
    columns = [(v, d, n) for v in VARIANTS for d in DTYPES for n in RANKS_7B]
    for variant, dtype, n in columns:
        seven.add_column(f"{variant} {dtype} {n} rank{'s' * (n > 1)}", justify="right")
    by_row = {(r["variant"], r["dtype"], r["ranks"], r["setting"]): r for r in data["7b"]}
    for setting in SETTINGS:
        row = [setting]
        for variant, dtype, n in columns:
            entry = by_row[variant, dtype, n, setting]
            row.append(_size(entry["bytes_per_rank"]) if "bytes_per_rank" in entry else "n/s")
        seven.add_row(*row)
    seven.caption = f"n/s: {NOT_SUPPORTED}; full = 6.74e9 params, lora = 4.19e6"
    console.print(seven)


# ---------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=Path("results/benchmarks/optimizer_memory.json")
    )
    parser.add_argument(
        "--copy", type=Path, default=Path("docs/results/optimizer_memory.json"),
        help="the committed copy of the JSON",
    )  # fmt: skip
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # one torchrun rank
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker is not None:
        worker(args.worker)
        return
    console = Console(width=None if sys.stdout.isatty() else 170)
    started = time.perf_counter()
    console.print("1 process…")
    single = measure_all(sharded=False, log=console.print)
    console.print(f"{WORLD_SIZE} ranks under FSDP2 (torchrun, gloo)…")
    cells = merge(single, two_ranks())
    extra = {name: importlib.metadata.version(name) for name in ("transformers", "bitsandbytes")}
    data = {
        **benchmark_header("optimizer_memory", started, packages=extra),
        "recipe": {
            "model": {"LlamaConfig": SMOLLM2_135M, "init": "random (torch.manual_seed(0))"},
            "variants": {
                "full": "every parameter trainable",
                "lora": (
                    f"base frozen; rank-{LORA_RANK} A (r × in) and B (out × r) plain parameters "
                    f"on every {' and '.join(LORA_TARGETS)} trainable"
                ),
            },
            "dtypes": list(DTYPES),
            "worlds": {
                "1": "one process, no sharding",
                str(WORLD_SIZE): (
                    "torch FSDP2 fully_shard on every decoder layer then the root; "
                    f"{WORLD_SIZE} CPU processes on gloo (torchrun --standalone)"
                ),
            },
            "optimizers": {
                "forget": str(DEFAULT_FORGET),
                "retain": str(DEFAULT_RETAIN),
                "plus": PLUS_OPTIONS,
                "shared settings": "joint and alternate step the retain optimizer",
            },
            "measurement": (
                "optimizer.init_state(); under FSDP2 then one forget and one retain step on "
                "zero gradients (bytes must not change; a refused step is reported); bytes "
                "of every tensor in optimizer.state on the rank, DTensors by to_local(), "
                "each storage once, masks excluded; counters = 0-dim tensors; "
                "bytes_per_param = rank bytes / trainable values on the rank, the largest "
                "over the ranks"
            ),
            "theory": (
                "bytes per value of large tensors: SGD momentum 1 state, AdamW 2, DO 3, in "
                f"the parameters' dtype; 8-bit states 1 + 4/{BLOCK} bytes per value; DO+ 6 "
                "fp32 (24 B) or 6 8-bit states"
            ),
            "7b": (
                f"{EXTRAPOLATED}: bytes_per_param (1 process for 1 rank, the {WORLD_SIZE}-rank "
                "FSDP2 run for more) × trainable parameters / ranks; full = Llama-2-7B's "
                f"{TARGETS_7B['full']:,}, lora = r={LORA_RANK} on q_proj and v_proj: "
                f"{TARGETS_7B['lora']:,}. The 8-bit layouts depend on tensor shapes (DO+ pads "
                f"every row to whole {BLOCK}-value blocks; tensors under 4096 values keep fp32 "
                "states), so their 7B values are rougher than the others'"
            ),
        },
        "cells": cells,
        "7b": extrapolate(cells),
    }
    print_report(console, data)
    for path in (args.out, args.copy):
        write_json(path, data)
        console.print(f"wrote {path}")
    console.print(f"wall time {data['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()

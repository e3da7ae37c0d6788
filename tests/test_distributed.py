"""The optimizers under DistributedDataParallel: 2 CPU processes over gloo.

Why: DualOptimizer and DualOptimPlus keep per-objective state, and each step serves one
objective. Under DDP every rank must apply that step to the same all-reduced gradient, so
(1) the ranks may never drift apart, and (2) the result must be what one process gets on the
whole global batch -- up to the float rounding of DDP's gradient averaging.

This file is also the script each rank runs::

    python tests/test_distributed.py RANK PORT OUT_DIR
"""

from __future__ import annotations

import functools
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from dualoptim.optim import DualOptimizer, DualOptimPlus, ObjectiveOptimizer

WORLD_SIZE = 2
#: Mixed forget (F) / retain (R) steps, so each objective's state sees gaps of both lengths.
SEQUENCE = "FRRFRRFRFRRF"
GLOBAL_BATCH = 16  # each rank computes its loss on half of it
IN_FEATURES, HIDDEN, CLASSES = 16, 32, 4
#: 8-bit DO+ runs on a wider hidden layer: its second weight (4 rows of 96) is the one tensor
#: it quantises; the first layer's rows of 16 are too short for 8-bit to save memory, and the
#: biases are vectors, so both state paths run.
HIDDEN_8BIT = 96
QUANTISED_NUMEL = CLASSES * HIDDEN_8BIT
OPTIMIZERS = ("dual", "plus", "plus_8bit")
#: Wall-clock limit on the 2-process job (a normal run takes ~10 s); the processes are killed
#: after it. Every gloo collective gives up sooner, so a lost peer ends in an error, not a hang.
PROCESS_TIMEOUT_S = 120.0
COLLECTIVE_TIMEOUT_S = 60.0

#: Bound on max |DDP - one process on the full batch| over all parameters: the float rounding
#: of one 16-row gradient vs. the mean of two 8-row ones, carried through 12 steps. Measured
#: (2-core AMD EPYC, torch 2.13.0+cpu) after the DO+ precision fix and row-aligned 8-bit
#: blocks of issue 15: dual 3.0e-8, plus 1.9e-3, plus_8bit 1.6e-4 (hidden 96; before: 5.3e-4
#: and 6.0e-6 on hidden 32, and the reorderings below).
#: fp32 DO+ amplifies rounding ~1e4x: with conflicting objectives its second moment
#: Δv/(1-β2^s) + B̂v is a difference of large numbers that can cancel to near 0 (single steps
#: move up to 20x lr here), so over 32 reorderings / thread counts of the same batches its
#: difference reached 5.7e-3; the 8-bit kernel caps each step at lr and stays at <= 6e-6.
#: Bounds: ~20x the measured value for dual, ~3x the worst reordering for plus, room for an
#: occasional flipped 8-bit code (~lr/10) for plus_8bit. Each stays at least 5x below how far
#: the parameters move (checked), and test_ddp_is_the_mean_of_shard_gradients is exact.
FULL_BATCH_TOLERANCE = {"dual": 1e-6, "plus": 2e-2, "plus_8bit": 1e-3}


def make_model(name: str) -> nn.Module:
    """The same tiny MLP in every process (fixed seed)."""
    torch.manual_seed(0)
    hidden = HIDDEN_8BIT if name == "plus_8bit" else HIDDEN
    return nn.Sequential(nn.Linear(IN_FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, CLASSES))


def make_steps() -> list[tuple[str, Tensor, Tensor]]:
    """(objective, global inputs, global labels) per step; a fresh batch each step."""
    gen = torch.Generator().manual_seed(1)
    steps = []
    for code in SEQUENCE:
        x = torch.randn(GLOBAL_BATCH, IN_FEATURES, generator=gen)
        y = torch.randint(0, CLASSES, (GLOBAL_BATCH,), generator=gen)
        steps.append(("forget" if code == "F" else "retain", x, y))
    return steps


def make_optimizer(name: str, params: Any) -> ObjectiveOptimizer:
    """Step sizes large enough that 12 steps move every parameter well beyond rounding."""
    if name == "dual":
        return DualOptimizer(
            params,
            forget=functools.partial(torch.optim.AdamW, lr=1e-2, weight_decay=0.05),
            retain=functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4),
        )
    plus = {"forget_lr": 1e-2, "retain_lr": 1e-2, "weight_decay": 0.01, "compile": False}
    if name == "plus":  # the exact SPEC §1.4 rule, whose rounding sensitivity is measured here
        return DualOptimPlus(params, bound_update=False, **plus)
    if name == "plus_8bit":
        return DualOptimPlus(params, state_bits=8, min_8bit_size=QUANTISED_NUMEL, **plus)
    raise ValueError(name)


def shard(rank: int) -> slice:
    """The rows of each global batch that ``rank`` computes its loss on."""
    size = GLOBAL_BATCH // WORLD_SIZE
    return slice(rank * size, (rank + 1) * size)


def train(name: str, mode: str, rank: int = 0) -> dict[str, Any]:
    """Run SEQUENCE; return the final parameters and what the tests check about the run.

    ``mode``: "ddp" -- this rank's shard of each batch, gradients averaged by DDP; "full" --
    one process, mean loss over the global batch in one forward pass; "shards" -- one process,
    mean of the shard losses with each shard forwarded on its own, i.e. DDP's arithmetic
    (halving and a sum of two floats are exact / order-free).
    """
    model = make_model(name)
    forward = DistributedDataParallel(model) if mode == "ddp" else model
    opt = make_optimizer(name, model.parameters())
    for objective, x, y in make_steps():
        if mode == "ddp":
            loss = F.cross_entropy(forward(x[shard(rank)]), y[shard(rank)])
        elif mode == "full":
            loss = F.cross_entropy(model(x), y)
        else:
            parts = [F.cross_entropy(model(x[shard(r)]), y[shard(r)]) for r in range(WORLD_SIZE)]
            loss = torch.stack(parts).mean()
        (-loss if objective == "forget" else loss).backward()  # forget = gradient ascent
        opt.step(objective=objective)
        opt.zero_grad()
    return {
        "params": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "step_counts": dict(opt.step_counts),
        "quantized_bytes": opt.state_bytes()["quantized"] if isinstance(opt, DualOptimPlus) else 0,
    }


def worker(rank: int, port: int, out_dir: Path) -> None:
    """One DDP rank: train with every optimizer, save the results for the test to load."""
    torch.set_num_threads(1)  # two ranks on two cores
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD_SIZE,
        timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S),
    )
    try:
        results = {name: train(name, "ddp", rank) for name in OPTIMIZERS}
        torch.save(results, out_dir / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    """A port the OS reports free on 127.0.0.1 (fixed ports collide on shared CI hosts)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_ranks(out_dir: Path) -> list[dict[str, Any]]:
    """Run the ranks as subprocesses; kill them and fail if they outlive PROCESS_TIMEOUT_S."""
    port = free_port()
    logs = [out_dir / f"rank{rank}.log" for rank in range(WORLD_SIZE)]
    procs = []
    for rank, log in enumerate(logs):
        with log.open("w") as f:
            cmd = [sys.executable, __file__, str(rank), str(port), str(out_dir)]
            procs.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    try:
        for proc in procs:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    codes = [proc.returncode for proc in procs]
    if codes != [0] * WORLD_SIZE:
        output = "\n".join(f"--- rank {r} ---\n{log.read_text()}" for r, log in enumerate(logs))
        pytest.fail(
            f"DDP ranks failed or were killed after {PROCESS_TIMEOUT_S} s "
            f"(exit codes {codes}):\n{output}"
        )
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]


@contextmanager
def one_thread() -> Iterator[None]:
    """Run as the ranks do (one intra-op thread each), so matmuls round the same way."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Every rank's results: one 2-process job for all optimizers (startup dominates)."""
    return run_ranks(tmp_path_factory.mktemp("ddp"))


@pytest.fixture(scope="module")
def single(ranks: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """One-process runs, by (optimizer, mode). Depends on ``ranks`` only to run after it."""
    del ranks
    with one_thread():
        return {(n, m): train(n, m) for n in OPTIMIZERS for m in ("full", "shards")}


def max_abs_diff(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_ranks_stay_bit_identical(name: str, ranks: list[dict[str, Any]]) -> None:
    """Every rank took every step, and the ranks' parameters never drifted apart."""
    results = [r[name] for r in ranks]
    counts = {"forget": SEQUENCE.count("F"), "retain": SEQUENCE.count("R")}
    assert [r["step_counts"] for r in results] == [counts] * WORLD_SIZE
    if name == "plus_8bit":  # the quantised kernel ran, not only the small-tensor fp32 path
        assert results[0]["quantized_bytes"] > 0
    for other in results[1:]:
        for key, value in results[0]["params"].items():
            assert torch.equal(value, other["params"][key]), f"{key} differs between ranks"


@pytest.mark.slow
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_ddp_matches_one_process_on_full_batch(
    name: str,
    ranks: list[dict[str, Any]],
    single: dict[tuple[str, str], dict[str, Any]],
) -> None:
    """DDP on half batches = one process on the global batch, up to gradient rounding."""
    full = single[name, "full"]["params"]
    diff = max_abs_diff(ranks[0][name]["params"], full)
    assert diff <= FULL_BATCH_TOLERANCE[name], f"{name}: max |DDP - one process| = {diff:.3g}"
    # Not vacuous: every tensor moved, and the largest move is far beyond the tolerance.
    initial = make_model(name).state_dict()
    moved = {k: float((v - initial[k]).abs().max()) for k, v in full.items()}
    assert min(moved.values()) > 1e-3, moved
    assert max(moved.values()) > 5 * FULL_BATCH_TOLERANCE[name], moved


@pytest.mark.slow
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_ddp_is_the_mean_of_shard_gradients(
    name: str,
    ranks: list[dict[str, Any]],
    single: dict[tuple[str, str], dict[str, Any]],
) -> None:
    """Bit for bit: one process averaging the shards' gradients ends where DDP does.

    The exact counterpart of the full-batch test, which DO+'s sensitivity to rounding keeps
    loose: any extra, missing or mis-routed step, or a sum instead of a mean, breaks it.
    """
    shards = single[name, "shards"]["params"]
    for key, value in ranks[0][name]["params"].items():
        diff = float((value - shards[key]).abs().max())
        assert torch.equal(value, shards[key]), f"{key}: max |DDP - shard mean| = {diff:.3g}"


if __name__ == "__main__":
    worker(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))

"""benchmarks/engine_overhead.py compares like with like: its hand-written loop and the engine
do the same steps on the same batches (their models end equal), and its JSON holds what the
docs quote."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "engine_overhead.py"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("engine_overhead", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    yield module
    torch.set_num_threads(threads)  # main() sets it for the whole process


def test_max_difference_is_the_largest_entry_of_parameters_and_buffers(bench: ModuleType) -> None:
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    b = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    b.load_state_dict(a.state_dict())
    assert bench.max_difference(a, b) == 0.0
    with torch.no_grad():
        b[0].weight[1, 2] += 0.5
        b[1].running_mean[0] -= 0.75  # a buffer counts too
    assert bench.max_difference(a, b) == 0.75


@pytest.mark.slow  # the first engine run in a process imports accelerate's extras (~7 s)
def test_the_hand_loop_makes_the_engines_steps(bench: ModuleType) -> None:
    """Equal after the same schedule, and the check sees one cycle more on one side."""
    work = bench.fixed_workload()
    hand, _ = bench.run_once(work, "hand", 3)
    engine, timing = bench.run_once(work, "engine", 3)
    assert bench.max_difference(hand, engine) == 0.0
    assert bench.max_difference(hand, work.model) > 0  # it trained
    longer, _ = bench.run_once(work, "engine", 4)
    assert bench.max_difference(hand, longer) > 0
    assert 0 < timing["loop_s"] <= timing["wall_s"]


@pytest.mark.slow
def test_quick_run_writes_the_table_of_both_loops(bench: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "engine_overhead.json"
    bench.main(["--quick", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["benchmark"] == "engine_overhead"
    assert data["environment"]["machine"]["torch_threads"] == 1
    assert data["settings"] | {"repeats": 2, "threads": 1, "quick": True} == data["settings"]
    rows = {row["workload"]: row for row in data["results"]}
    assert list(rows) == ["cnn", "llama", "fixed"]
    for name, row in rows.items():
        assert row["steps"] == bench.CYCLES[name][1] * 6  # 1 forget + 5 retain per cycle
        assert row["max_abs_param_difference"] == 0.0
        for loop, keys in (
            ("hand", {"wall_s", "cpu_s"}),
            ("engine", {"wall_s", "cpu_s", "loop_s"}),
        ):
            assert row[loop]["per_step_s"].keys() == keys
            assert all(len(v) == 2 for v in row[loop]["per_step_s"].values())
            assert row[loop]["median_s"]["wall_s"] > 0
        hand, engine = row["hand"]["median_s"]["wall_s"], row["engine"]["median_s"]["wall_s"]
        assert row["ratio_median_wall"] == pytest.approx(engine / hand)
        assert row["added_median_s"] == pytest.approx(engine - hand)
        assert row["met"] == (None if name == "fixed" else row["ratio_median_wall"] <= 1.05)

"""The benchmark scripts' command lines, parsed by the real CLI: a script whose arguments the
CLI refuses fails only hours into a session, so each one runs here against a stand-in
``.venv/bin/dualoptim`` that parses and loads its config instead of running it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

STAND_IN = f"""#!{sys.executable}
import json, sys
from dualoptim.cli import _load, _parse, build_parser
args = _parse(build_parser(), sys.argv[1:])
exp = _load(args)[1]
source = getattr(getattr(exp, "data", None), "source", None)
print(json.dumps({{"command": args.command, "config": args.config, "out": str(args.out),
                  "grid": args.grid, "seeds": list(exp.seeds), "source": source,
                  "runs": len(exp.runs)}}))
"""


def run_script(tmp_path: Path, name: str, *args: str) -> dict:
    (tmp_path / "benchmarks").mkdir()
    shutil.copy(ROOT / "benchmarks" / name, tmp_path / "benchmarks" / name)
    stand_in = tmp_path / ".venv" / "bin" / "dualoptim"
    stand_in.parent.mkdir(parents=True)
    stand_in.write_text(STAND_IN)
    stand_in.chmod(0o755)
    done = subprocess.run(
        ["bash", str(tmp_path / "benchmarks" / name), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_mini_tofu_script_runs_the_issue_16_grid_with_extra_overrides(tmp_path: Path) -> None:
    one_run = "runs=[{method: me+gd, setting: dual, epochs: 1}]"
    parsed = run_script(tmp_path, "mini_tofu.sh", "/data/tofu", one_run)
    assert parsed["command"] == "bench"
    assert parsed["config"] == "mini-tofu"
    assert parsed["out"] == "results/benchmarks"
    assert parsed["grid"] == [1.0, 3.0, 10.0]
    assert parsed["seeds"] == [0, 1, 2]
    assert parsed["source"] == "/data/tofu"
    assert parsed["runs"] == 1


def test_mini_tofu_script_defaults_to_the_shared_tofu_copy(tmp_path: Path) -> None:
    parsed = run_script(tmp_path, "mini_tofu.sh")
    assert parsed["source"] == "../shared/data/tofu"
    assert parsed["runs"] == 12


@pytest.mark.parametrize("extra", [[], ["seeds=[0]"]])
def test_fashion_mnist_ddpm_script_parses(tmp_path: Path, extra: list[str]) -> None:
    parsed = run_script(tmp_path, "fashion_mnist_ddpm.sh", *extra)
    assert parsed["config"] == "fashion-mnist-ddpm"
    assert parsed["out"] == "results/benchmarks"
    if extra:
        assert parsed["seeds"] == [0]


@pytest.mark.parametrize("extra", [[], ["seeds=[0]"]])
def test_realworld_mini_script_runs_every_run_of_its_config(
    tmp_path: Path, extra: list[str]
) -> None:
    parsed = run_script(tmp_path, "realworld_mini.sh", *extra)
    assert parsed["command"] == "bench"
    assert parsed["config"] == "realworld-mini"
    assert parsed["out"] == "results/benchmarks"
    assert parsed["source"] is None  # the built-in set
    assert parsed["runs"] == 12  # ME+GD and IDK+GD × six settings
    assert parsed["seeds"] == ([0] if extra else [0, 1, 2])


def test_fashion_mnist_continual_script_runs_its_config(tmp_path: Path) -> None:
    parsed = run_script(tmp_path, "fashion_mnist_continual.sh", "seeds=[0]")
    assert parsed["config"] == "fashion-mnist-continual"
    assert parsed["out"] == "results/benchmarks"
    assert parsed["runs"] == 12  # SalUn and SFR-on × Alternate/DO/DO+ × reset/carry
    assert parsed["seeds"] == [0]


def test_mini_tofu_continual_script_defaults_to_the_shared_tofu_copy(tmp_path: Path) -> None:
    parsed = run_script(tmp_path, "mini_tofu_continual.sh")
    assert parsed["config"] == "mini-tofu-continual"
    assert parsed["source"] == "../shared/data/tofu"
    assert parsed["runs"] == 8  # ME+GD × Joint/Alternate/DO/DO+ × reset/carry
    assert parsed["seeds"] == [0, 1]

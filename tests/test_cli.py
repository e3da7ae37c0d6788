"""The command line: named configs validate, the paper-size recipe survives one step on a tiny
input, and bad input ends with one clear line before any training."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from unittest.mock import Mock

import pytest
import torch

from dualoptim.cli import _load, _named_config, _parse, build_parser, main
from dualoptim.config import ConfigError, load_config
from dualoptim.tasks.images.models import build_model
from dualoptim.tasks.images.sets import ImageData, ImageSet
from dualoptim.tasks.vision.config import VisionExperiment
from dualoptim.tasks.vision.experiment import World, build_run, make_optimizer
from dualoptim.tasks.vision.splits import ForgetSplit
from dualoptim.unlearn import EngineConfig, unlearn


@pytest.mark.parametrize(
    "name", ["digits", "digits-all", "fashion-mnist", "fashion-mnist-continual", "cifar10-resnet18"]
)
def test_named_configs_validate(name: str) -> None:
    exp = load_config(VisionExperiment, _named_config(name))
    assert exp.runs
    assert exp.seeds


@pytest.mark.slow
def test_paper_size_recipe_survives_one_step_of_each_run_on_a_tiny_input() -> None:
    """CIFAR-10/ResNet-18 is meant for GPUs; here each of its runs makes one optimizer step
    of each phase on 8 random 32x32 images with the recipe's model, method and setting."""
    exp = load_config(VisionExperiment, _named_config("cifar10-resnet18"))
    gen = torch.Generator().manual_seed(0)
    train = ImageSet(torch.rand(16, 3, 32, 32, generator=gen), torch.arange(16) % 10, 10)
    data = ImageData("tiny", train, train)
    split = ForgetSplit(torch.arange(8), torch.arange(8, 16), "tiny")
    torch.manual_seed(0)
    original = build_model(exp.model, in_channels=3, classes=10, image_size=32)
    world = World(data, split, original, {}, 0.0)
    for spec in exp.runs:
        model = copy.deepcopy(original)
        method, schedule, options = build_run(spec, world, seed=0)
        opt = make_optimizer(spec, model.parameters())
        one_step = type(schedule)(1, 1 if schedule.forget_steps != 0 else 0, 1)
        config = EngineConfig(one_step, forget_batch=8, retain_batch=8, progress=False, **options)
        forget, retain = world.sources
        result = unlearn(model, method, forget, retain, opt, config)
        assert sum(result.steps.values()) == 2, spec.label


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["unlearn", "runs=[{method: sfronn}]"],
            "runs[0]: unknown vision method 'sfronn': registered are ft, ga, l1sparse, rl,",
        ),
        (["train", "train.epochz=3"], "train.epochz: unknown key"),
        (["retrain", "model=resnet19"], "model 'resnet19' is not one of"),
        (["evaluate", "data.forget_fraction=1.5"], "fraction"),
        (["unlearn", "--config", "nosuchconfig"], "no config file or named config"),
        (["unlearn", "seeds"], "seeds"),
    ],
)
def test_bad_input_gives_one_clear_line_and_no_training(
    argv: list[str], message: str, capsys, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(
            [*argv, f"cache_dir={tmp_path / 'cache'}"]
            if argv[0] != "unlearn" or "--config" not in argv
            else argv
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "cache").exists()  # nothing was trained


def test_config_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="salun_keep must lie"):
        load_config(VisionExperiment, None, ["runs=[{method: salun, salun_keep: 0}]"])


TINY = """\
data: {name: digits, per_class_train: 30, per_class_test: 10, forget_fraction: 0.1}
train: {epochs: 3}
runs:
  - {method: rl, setting: dual, epochs: 1, eval_every: 3}
seeds: [0, 1]
"""


@pytest.mark.slow
def test_bench_then_report_from_the_command_line(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TINY)
    assert main(["bench", "--config", "tiny.yaml", "--grid", "1", "3", "--out", "out"]) == 0
    folder = tmp_path / "out" / "tiny"
    # RT and the untouched original (no unlearning) per seed, and the runs
    assert len(list((folder / "records").glob("*.json"))) == 2 * 2 + 2 * 2
    printed = capsys.readouterr().out
    assert "rl (dual)" in printed
    assert "η_f ×3" in printed
    report = (folder / "report.md").read_text()
    (folder / "report.md").unlink()
    assert main(["report", str(folder)]) == 0
    assert (folder / "report.md").read_text() == report
    # a second experiment in the same folder is refused, and the report is left as it was
    with pytest.raises(SystemExit) as exit_info:
        main(["unlearn", "--config", "tiny.yaml", "--out", "out", "train.epochs=2"])
    assert exit_info.value.code == 2
    assert "records of different experiments" in capsys.readouterr().err
    assert (folder / "report.md").read_text() == report
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(tmp_path / "nothing")])
    assert "no records to report" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["unlearn", "--out", "X", "seeds=[0]", "--config", "digits", "train.epochs=2"],
        ["unlearn", "seeds=[0]", "--config", "digits", "--out", "X", "train.epochs=2"],
        ["unlearn", "--config", "digits", "--out", "X", "seeds=[0]", "train.epochs=2"],
        ["unlearn", "seeds=[0]", "train.epochs=2", "--out", "X", "--config", "digits"],
        [
            "unlearn",
            "seeds=[0]",
            "--out",
            "X",
            "train.epochs=7",
            "--config",
            "digits",
            "train.epochs=2",
        ],
    ],
)
def test_overrides_may_stand_anywhere_and_later_ones_win(argv: list[str]) -> None:
    args = _parse(build_parser(), argv)
    assert args.out == Path("X")
    exp = _load(args)[1]
    assert exp.seeds == (0,)
    assert exp.train.epochs == 2


def test_overrides_after_the_grid_are_overrides_not_grid_values() -> None:
    """``--grid`` takes any number of values: the overrides after them (as
    benchmarks/mini_tofu.sh writes them) still reach the config, in order."""
    argv = ["bench", "--config", "digits", "seeds=[3]", "--grid", "1/3", "1", "seeds=[0,1]"]
    args = _parse(build_parser(), [*argv, "train.epochs=2", "--extend", "2"])
    assert args.grid == [1 / 3, 1.0]
    assert args.extend == 2
    exp = _load(args)[1]
    assert exp.seeds == (0, 1)
    assert exp.train.epochs == 2


def test_an_unknown_option_is_still_refused(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["unlearn", "seeds=[0]", "--outt", "X"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --outt X" in capsys.readouterr().err


def test_grid_values_may_be_fractions_decimals_or_exponents() -> None:
    args = build_parser().parse_args(["bench", "--grid", "1/3", "1", "3", "10", "0.5", "1e-4"])
    assert args.grid == [1 / 3, 1.0, 3.0, 10.0, 0.5, 1e-4]
    tune = build_parser().parse_args(["tune", "--grid", "1E-5", "3/10000"])
    assert tune.grid == [1e-5, 3e-4]


def test_a_config_task_picks_its_experiment_and_an_unknown_task_is_named(tmp_path: Path) -> None:
    from dualoptim.tasks.llm.config import LLMExperiment

    assert isinstance(
        _load(_parse(build_parser(), ["train", "--config", "tofu-tiny"]))[1], LLMExperiment
    )
    config = tmp_path / "c.yaml"
    config.write_text("seeds: [0]\n")
    args = _parse(build_parser(), ["train", "--config", str(config), "task=llm"])
    assert isinstance(_load(args)[1], LLMExperiment)  # an override may set the task
    config.write_text("task: nlp\n")
    args = _parse(build_parser(), ["train", "--config", str(config)])
    with pytest.raises(ConfigError, match="task: got 'nlp'; allowed values: 'vision', 'llm'"):
        _load(args)[1]


def test_a_bug_keeps_its_traceback(monkeypatch) -> None:
    """Only expected failures become one line: a TypeError is a bug to be seen in full."""
    monkeypatch.setattr("dualoptim.bench.sweeps.sweep", Mock(side_effect=TypeError("a bug")))
    with pytest.raises(TypeError, match="a bug"):
        main(["unlearn", "seeds=[0]"])


HEAVY = ("bitsandbytes", "diffusers", "transformers")


@pytest.mark.slow
def test_a_vision_command_imports_no_diffusion_or_llm_library() -> None:
    code = (
        "import sys\n"
        "from dualoptim.cli import _load, _parse, build_parser\n"
        "_load(_parse(build_parser(), ['unlearn', '--config', 'digits', 'seeds=[0]']))[1]\n"
        "import dualoptim.tasks.vision.task, dualoptim.bench.sweeps, dualoptim.bench.task_report\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_the_diffusion_task_starts_without_bitsandbytes_noise() -> None:
    """diffusers imports bitsandbytes whenever it is installed; its kernels-community line is
    filtered by name (on machines where it would print)."""
    code = (
        "from dualoptim.cli import _load, _parse, build_parser\n"
        "_load(_parse(build_parser(), ['train', '--config', 'digits-ddpm']))[1]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "kernels-community" not in result.stderr
    assert "Failed to load" not in result.stderr


@pytest.mark.slow
def test_a_vision_run_starts_without_third_party_noise(tmp_path: Path) -> None:
    """`dualoptim unlearn --config digits` trimmed to one seed, one epoch, one short run."""
    command = Path(sys.executable).with_name("dualoptim")
    argv = [
        str(command),
        "unlearn",
        "--config",
        "digits",
        "seeds=[0]",
        "train.epochs=1",
        "data.per_class_train=20",
        "data.per_class_test=5",
        "runs=[{method: rl, setting: dual, forget_lr: 1.0e-4, epochs: 1}]",
        "--out",
        str(tmp_path / "out"),
        f"cache_dir={tmp_path / 'cache'}",
    ]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "kernels-community" not in result.stderr
    assert "Failed to load" not in result.stderr
    assert "Setting accelerator to CPU" not in result.stderr  # DeepSpeed, via accelerate
    assert "rl (dual)" in result.stdout


def test_terminal_tables_print_cells_as_text(capsys) -> None:
    """A continual run's label ends in "[carry]": rich would read it as a style tag and print
    "sfron (dual)" for both policies."""
    from dualoptim.cli import _print_table

    _print_table("runs [k]", ["run", "Gap"], [["sfron (dual) [carry]", "1.0"]])
    out = capsys.readouterr().out
    assert "sfron (dual) [carry]" in out
    assert "runs [k]" in out

"""Every shipped config and every README command works as shipped.

- Every named config validates through the CLI's own path (``dualoptim.cli``).
- Each quick README command runs as documented, for a few steps: the same command line
  through ``dualoptim.cli.main`` (the example as a subprocess), with ``--out`` and
  ``cache_dir`` in a temporary folder and overrides that only shorten it (``SHORT``).
- README.md names only commands run here; a command that needs a GPU or data that does not
  ship stands in the README's "GPU / real data" note, and its config is validated.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
import yaml

from dualoptim.bench.records import RecordStore
from dualoptim.bench.report import _recipe, timing_note, write_report
from dualoptim.cli import _load, _shipped_configs, main
from dualoptim.config import ConfigError
from dualoptim.tasks.llm.world import load_splits
from dualoptim.tasks.vision.config import METRICS, UnlearnSpec
from dualoptim.tasks.vision.task import TASK as VISION
from helpers import TOFU_DIR

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: The README marks commands that are not run here (a GPU, data that does not ship) with this.
NOTE = "GPU / real data"
PREFIXES = ("dualoptim ", "python examples/", "bash scripts/")

# What the quick commands shorten, and why each cut leaves the thing exercised intact:
# - seeds=[0]: the seed loop is the same code for every seed.
# - vision: data.per_class_train/test (fewer rows of the same data), train.epochs=1 (the
#   original model and RT are trained by the same loop), each run's epochs=1 / iterations=5
#   (one pass over D_f and D_r; one SFR-on cycle of 1 forget + 5 retain steps).
# - llm: finetune.epochs=1, eval.limit / eval.max_new_tokens (fewer rows and tokens
#   evaluated), each run's epochs=1. data.retain_rows stays as shipped: it decides the layout.
# - realworld: each run's epochs=1; teach and eval stay as shipped: the probe keeps only
#   what the taught model answers in full.
# - diffusion: train.iterations, classifier.train.epochs=1, fewer images generated and
#   compared (eval.*), fewer DDIM steps, each run's iterations=1 and fewer mask/replay/Fisher
#   samples.
SHORT = {
    "vision": {
        "top": ["seeds=[0]", "data.per_class_train=20", "data.per_class_test=10", "train.epochs=1"],
        "run": {"epochs": 1, "iterations": 5},
    },
    "llm": {
        "top": ["seeds=[0]", "finetune.epochs=1", "eval.limit=4", "eval.max_new_tokens=4"],
        "run": {"epochs": 1},
    },
    "realworld": {"top": ["seeds=[0]"], "run": {"epochs": 1}},
    "diffusion": {
        "top": [
            "seeds=[0]",
            "train.iterations=4",
            "classifier.train.epochs=1",
            "eval.forget_images=4",
            "eval.images_per_class=2",
            "eval.real_per_class=2",
            "eval.grid_per_class=2",
            "eval.sampling.steps=2",
        ],
        "run": {"iterations": 1, "mask_batches": 1, "replay_per_class": 2, "fisher_per_class": 2},
    },
}


def shipped(name: str) -> dict:
    return yaml.safe_load(_shipped_configs()[name].read_text(encoding="utf-8"))


def short(name: str, runs: Sequence[int] | None = None) -> list[str]:
    """Overrides that shorten config ``name``: its own runs (or those at indices ``runs``),
    each with its length cut, the task's top-level cuts (``SHORT``) and the test's cache."""
    config = shipped(name)
    cuts = SHORT[config.get("task", "vision")]
    chosen = config["runs"] if runs is None else [config["runs"][i] for i in runs]
    shortened = [{**run, **cuts["run"]} for run in chosen]
    text = yaml.safe_dump(shortened, default_flow_style=True, width=10_000).strip()
    return [*cuts["top"], f"runs={text}", "cache_dir={cache}"]


def fashion_mnist_present() -> bool:
    """Fashion-MNIST comes with the system (Debian's package) or a download, not with us."""
    places = (Path("/usr/share/datasets"), Path.home() / ".cache" / "dualoptim")
    return any(len(list((p / "fashion-mnist").glob("*-ubyte*"))) >= 4 for p in places)


OUT = ["--out", "{out}"]
#: Every README command run here: the command as the README writes it, and the overrides
#: that shorten it (placed after ``--config NAME``). ``{out}``, ``{cache}``: the module's
#: folders, shared by the digits commands as in one checkout; ``{committed}``: copies of
#: docs/results.
QUICK: dict[str, tuple[str, list[str]]] = {
    "main job": ("dualoptim unlearn", [*short("digits"), *OUT]),  # = bash scripts/main.sh
    "train": ("dualoptim train", short("digits")),
    "retrain": ("dualoptim retrain", short("digits")),
    "evaluate": ("dualoptim evaluate", short("digits")),
    "tune": ("dualoptim tune --grid 1e-5 1e-4 1e-3", [*short("digits"), *OUT]),
    "digits-all": ("dualoptim unlearn --config digits-all", [*short("digits-all"), *OUT]),
    "fashion-mnist grid": (
        "dualoptim bench --config fashion-mnist --grid 1/3 1 3 10",
        [*short("fashion-mnist", [5, 12]), *OUT],  # SalUn and SFR-on, the README's grid rows
    ),
    "report (classification)": ("dualoptim report {committed}/fashion-mnist", []),
    "report (LLM)": ("dualoptim report {committed}/mini-tofu", []),
    "report (real world)": ("dualoptim report {committed}/realworld-mini", []),
    "report (diffusion)": ("dualoptim report {committed}/fashion-mnist-ddpm", []),
    "demo": ("dualoptim demo", ["--seeds", "2", "--steps", "5", "--out", "{out}/variance"]),
    "tofu-tiny": ("dualoptim unlearn --config tofu-tiny", [*short("tofu-tiny"), *OUT]),
    "realworld-tiny": (
        "dualoptim unlearn --config realworld-tiny",
        [*short("realworld-tiny", [1]), *OUT],  # DualOptim's run
    ),
    "digits-ddpm": ("dualoptim unlearn --config digits-ddpm", [*short("digits-ddpm"), *OUT]),
    "fashion-mnist-ddpm": (
        "dualoptim bench --config fashion-mnist-ddpm",  # one class, fewer rows, SFR-on+DO
        [
            "data.per_class_train=20",
            "data.per_class_test=4",
            "data.forget_classes=[1]",
            *short("fashion-mnist-ddpm", [4]),
            *OUT,
        ],
    ),
    "hf trainer": ("python examples/hf_trainer_unlearn.py", ["--steps", "6"]),
}
NEEDS_FASHION_MNIST = ("fashion-mnist grid", "fashion-mnist-ddpm")


def command_key(argv: Sequence[str]) -> tuple[str, ...]:
    """What a command line runs: a script, an example, or a dualoptim subcommand and its
    config (``digits`` when none is named, as the CLI does). ``bash scripts/main.sh ARGS``
    is ``dualoptim unlearn ARGS`` (its last line)."""
    argv = list(argv[1:] if argv[0] == "bash" else argv)
    if argv[0] == "scripts/main.sh":
        argv = ["dualoptim", "unlearn", *argv[1:]]
    if argv[0] != "dualoptim":
        return tuple(argv[:2] if argv[0] == "python" else argv[:1])
    if argv[1] in ("report", "demo"):
        return ("dualoptim", argv[1])
    config = argv[argv.index("--config") + 1] if "--config" in argv else "digits"
    return ("dualoptim", argv[1], config)


#: Commands covered here: QUICK's, and the scripts, checked in test_scripts_forward_....
COVERED = {command_key(shlex.split(command)) for command, _ in QUICK.values()} | {
    ("scripts/test.sh",)
}


# ---------------------------------------------------------------- every config validates
@pytest.mark.parametrize("name", sorted(_shipped_configs()))
def test_every_named_config_validates_through_the_cli(name: str) -> None:
    exp = _load(argparse.Namespace(config=name, overrides=[]))[1]
    assert exp.runs
    assert exp.seeds
    assert getattr(exp, "task", "vision") == _shipped_configs()[name].parent.name


@pytest.mark.parametrize(
    "name", ["digits", "tofu-tiny", "realworld-tiny", "safety-tiny", "digits-ddpm"]
)
def test_every_task_refuses_a_repeated_seed(name: str) -> None:
    """seeds=[0, 1, 0] would count seed 0's run twice in every mean ± std (a Std too small)."""
    with pytest.raises(ConfigError, match=r"seeds repeats 0: a seed is one run"):
        _load(argparse.Namespace(config=name, overrides=["seeds=[0, 1, 0]"]))


# ---------------------------------------------------------------- quick commands run
@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread for tiny models: on a loaded 2-core machine two threads spin-wait for
    each other (this file took 4.7 min with two threads, 54 s with one, at load 3.8)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The module's folders (``QUICK``'s placeholders), with copies of the committed reports
    for ``dualoptim report``."""
    root = tmp_path_factory.mktemp("shipped")
    folders = {name: root / name for name in ("out", "cache", "committed")}
    for folder in (ROOT / "docs" / "results").iterdir():
        if (folder / "records").is_dir():
            shutil.copytree(folder, folders["committed"] / folder.name)
    return folders


@pytest.mark.slow
@pytest.mark.parametrize("name", list(QUICK))
def test_each_quick_readme_command_runs_as_shipped(name: str, workspace: dict[str, Path]) -> None:
    if name in NEEDS_FASHION_MNIST and not fashion_mnist_present():
        pytest.skip("Fashion-MNIST is not on this machine (it downloads on first use)")
    command, shorten = QUICK[name]
    words = shlex.split(command)
    at = words.index("--config") + 2 if "--config" in words else 2
    argv = [*words[:at], *shorten, *words[at:]]
    for placeholder, folder in workspace.items():  # not str.format: runs=[{...}] has braces
        argv = [a.replace(f"{{{placeholder}}}", str(folder)) for a in argv]
    if argv[0] == "python":
        result = subprocess.run(
            [sys.executable, *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert "forget loss" in result.stdout
        return
    assert main(argv[1:]) == 0
    if "--out" in argv and argv[1] != "demo":
        config = argv[argv.index("--config") + 1] if "--config" in argv else "digits"
        folder = Path(argv[argv.index("--out") + 1]) / config
        assert (folder / "report.md").stat().st_size > 0
        assert list(folder.glob("records/*.json"))


def test_scripts_forward_to_the_commands_run_here() -> None:
    """``bash scripts/main.sh ARGS`` is ``dualoptim unlearn ARGS`` after set-up (run above as
    "main job"); ``bash scripts/test.sh`` runs lint and this suite."""
    main_job = (ROOT / "scripts" / "main.sh").read_text().strip().splitlines()
    assert main_job[-1] == 'exec .venv/bin/dualoptim unlearn "$@"'
    tests = (ROOT / "scripts" / "test.sh").read_text()
    assert 'exec .venv/bin/python -m pytest "$@"' in tests
    assert ".venv/bin/ruff check" in tests


# ---------------------------------------------------------------- the README's commands
def readme_commands(text: str) -> list[tuple[str, bool]]:
    """(command, in the GPU / real data note) for every command the README writes in code:
    lines of fenced blocks and inline spans. A fragment ``--config NAME ...`` continues the
    item's previous command; an item is a bullet or a paragraph."""
    found = []
    for item in re.split(r"\n(?=- |\n|#)", text):
        fenced = re.findall(r"^```.*?\n(.*?)^```", item, flags=re.S | re.M)
        spans = [line.split("#")[0] for block in fenced for line in block.splitlines()]
        prose = re.sub(r"^```.*?^```", "", item, flags=re.S | re.M)
        spans += re.findall(r"`([^`]+)`", prose)
        previous: list[str] = []
        for span in (" ".join(span.split()) for span in spans):
            if span.startswith("--config ") and previous:
                words = [*previous, *shlex.split(span)]
            elif span.startswith(PREFIXES):
                words = shlex.split(span)
            else:
                continue
            previous = words[:2]
            found.append((" ".join(words), NOTE in item))
    return found


def test_readme_names_only_commands_run_here() -> None:
    commands = readme_commands(README.read_text(encoding="utf-8"))
    assert len(commands) > 10  # the parser found the README's commands
    configs, problems = _shipped_configs(), []
    for command, noted in commands:
        key = command_key(shlex.split(command))
        if key[0] == "dualoptim" and len(key) == 3 and key[2] not in configs:
            problems.append(f"{command!r} names a config that is not shipped")
        if not noted and key not in COVERED:
            problems.append(f"{command!r} is not run here and not in the {NOTE!r} note")
    assert not problems, "README: " + "; ".join(problems)
    assert any(noted for _, noted in commands), f"README has no {NOTE!r} note"


def test_readme_parser_sees_fragments_blocks_and_the_note() -> None:
    text = (
        "Intro `dualoptim unlearn --config digits`, and `--config tofu-tiny`: more.\n\n"
        "```bash\nbash scripts/main.sh seeds=[0]   # comment\n```\n"
        f"- {NOTE}: `dualoptim bench --config cifar10-resnet18` and\n"
        "  `--config mini-tofu data.source=<dir>`\n"
        "- `python examples/hf_trainer_unlearn.py` and `dualoptim.optim` (a module)\n"
    )
    assert readme_commands(text) == [
        ("dualoptim unlearn --config digits", False),
        ("dualoptim unlearn --config tofu-tiny", False),
        ("bash scripts/main.sh seeds=[0]", False),
        ("dualoptim bench --config cifar10-resnet18", True),
        ("dualoptim bench --config mini-tofu data.source=<dir>", True),
        ("python examples/hf_trainer_unlearn.py", False),
    ]
    assert command_key(["bash", "scripts/main.sh", "seeds=[0]"]) == (
        "dualoptim",
        "unlearn",
        "digits",
    )


# ---------------------------------------------------------------- reports and docs
def committed_records(name: str) -> list[dict]:
    return list(RecordStore(ROOT / "docs" / "results" / name / "records"))


def test_report_recipe_lists_only_the_options_each_run_reads() -> None:
    text = _recipe(committed_records("fashion-mnist"), VISION.run_options)
    runs = [yaml.safe_load(line[4:]) for line in text.splitlines() if line.startswith("  - ")]
    common = {"method", "setting", "batch_size", "eval_every"}
    read = {(r["method"], r["setting"], r.get("per_phase_lr")): set(r) - common for r in runs}
    assert len(runs) == len(read) == 22  # 4 methods × 5 runs, FT, GA
    assert read["sfron", "alternate", None] == {"iterations", "sfron_alpha"}  # one SGD at η_f
    assert read["sfron", "alternate", True] == {
        "iterations",
        "sfron_alpha",
        "per_phase_lr",
        "retain_lr",
    }
    assert read["sfron", "dual", None] == {"iterations", "sfron_alpha", "retain_lr"}
    assert read["sfron", "dual_plus", None] == {"iterations", "sfron_alpha", "plus_retain_lr"}
    assert read["sfron", "joint", None] == {"iterations", "sfron_alpha"}
    assert read["salun", "alternate", None] == {"epochs", "salun_keep", "retain_lr"}  # per phase
    assert read["salun", "alternate", False] == {"epochs", "salun_keep", "per_phase_lr"}
    assert read["rl", "dual_plus", None] == {"epochs", "plus_retain_lr"}
    assert read["ga", "alternate", None] == read["ft", "alternate", None] == {"epochs"}
    assert "retain_lr" not in UnlearnSpec("ga", "dual", forget_lr=1e-3).used_options()
    assert "forget_lr" not in UnlearnSpec("ft", "dual", forget_lr=1e-3).used_options()


@pytest.mark.slow
def test_noisy_rt_timings_are_flagged_beside_time_over_rt(tmp_path: Path) -> None:
    records = committed_records("fashion-mnist")
    note = "timings noisy: RT took 69–277 s across seeds; time / RT not comparable"
    assert timing_note(records) == note  # the rerun's RTs shared the cores with other runs
    steady = [
        {**r, "seconds": 60.0 + r["seed"]} if r["kind"] == "reference" else r for r in records
    ]
    assert timing_note(steady) is None  # RT took 60–69 s: comparable
    loaded = [
        {**r, "seconds": 108.4 if r["seed"] == 0 else 511.0} if r["kind"] == "reference" else r
        for r in records
    ]
    note = "timings noisy: RT took 108–511 s across seeds; time / RT not comparable"
    assert timing_note(loaded) == note
    assert timing_note(loaded[:1]) is None
    write_report(loaded, tmp_path, METRICS, "loaded")
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert report.index("time / RT |") < report.index(note) < report.index("## Sensitivity")


def test_docs_state_the_shipped_configs_numbers() -> None:
    readme = " ".join(README.read_text(encoding="utf-8").split())
    classification = " ".join((ROOT / "docs" / "classification.md").read_text().split())
    fm = shipped("fashion-mnist")
    train, test = fm["data"]["per_class_train"], fm["data"]["per_class_test"]
    assert f"Fashion-MNIST, {train}/{test} per class" in classification
    assert f"{train} train and {test} test images per class" in readme
    assert f"trained for {fm['train']['epochs']} epochs with SGD {fm['train']['lr']:g}" in readme
    digits = shipped("digits")
    assert f"small CNN trained for {digits['train']['epochs']} epochs (SGD" in readme
    assert f"SFR-on runs {digits['runs'][0]['iterations']} iterations at 1:5" in readme
    tofu = shipped("mini-tofu")
    assert f"plus the first {tofu['data']['retain_rows']} retain rows" in readme
    assert f"{tofu['finetune']['epochs']} epochs, AdamW" in readme
    ddpm = shipped("fashion-mnist-ddpm")["train"]
    assert f"{ddpm['iterations']} iterations at batch {ddpm['batch_size']}" in readme


def _qa(rows) -> list[tuple[str, str]]:
    return [(r.question, r.answer) for r in rows]


def _splits(name: str, *overrides: str):
    return load_splits(_load(argparse.Namespace(config=name, overrides=list(overrides)))[1].data)


def test_llm_configs_retain_rows_fit_their_data() -> None:
    """tofu-tiny fine-tunes on 120 retain rows and evaluates the 40 of retain_perturbed among
    them; mini-tofu's 160 on real TOFU (when present) are retain_perturbed's first 160."""
    tiny = _splits("tofu-tiny")
    assert len(tiny.retain) == 120
    assert _qa(tiny.evaluation["retain"]) == _qa(tiny.retain[:40])
    too_many = "data.retain_rows 400 exceeds the 360 rows of retain90 in the built-in data; set"
    with pytest.raises(ValueError, match=too_many):
        _splits("tofu-tiny", "data.retain_rows=400")
    if not TOFU_DIR.is_dir():
        pytest.skip(f"real TOFU files not found at {TOFU_DIR} (set DUALOPTIM_TOFU_DIR)")
    real = _splits("mini-tofu", f"data.source={TOFU_DIR}")
    assert len(real.forget) == 40
    assert len(real.retain) == 160
    assert _qa(real.evaluation["retain"]) == _qa(real.retain)

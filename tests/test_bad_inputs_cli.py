"""Bad input at the command line: each case ends with exit status 2 (130 for Ctrl-C) and one
line that names the file or the config key, and leaves the results and caches already on disk
exactly as they were. Every case runs in a copy of a workspace where one tiny sweep finished."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest.mock import Mock

import pytest

from dualoptim.cli import _load, _parse, build_parser, main
from dualoptim.errors import WriteError
from dualoptim.io import write_json, write_tensors

TINY = """\
data: {name: digits, per_class_train: 20, per_class_test: 5, forget_fraction: 0.1}
train: {epochs: 1}
runs:
  - {method: rl, setting: dual, forget_lr: 1.0e-4, epochs: 1}
seeds: [0]
cache_dir: cache
"""


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny.yaml, its finished sweep in out/tiny and its cached models in cache/ (trained
    instantly: what they hold does not matter here)."""
    root = tmp_path_factory.mktemp("seeded")
    (root / "tiny.yaml").write_text(TINY)
    with contextlib.chdir(root), pytest.MonkeyPatch.context() as patch:
        patch.setattr("dualoptim.tasks.vision.experiment.train_classifier", Mock())
        assert main(["unlearn", "--config", "tiny.yaml", "--out", "out"]) == 0
    assert list((root / "out" / "tiny" / "records").glob("*.json"))
    assert list((root / "cache").glob("*.safetensors"))
    return root


@pytest.fixture
def workspace(seeded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(seeded, tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones too: a left-over temporary file counts)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def refused(argv: list[str], capsys: pytest.CaptureFixture[str], status: int = 2) -> str:
    """stderr of a command that must end with ``status`` and no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == status
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def one_line(err: str) -> str:
    """The error boundary's message: exactly one line, ``dualoptim: ...``."""
    assert err.count("\n") == 1, err
    assert err.startswith("dualoptim: ")
    return err


NOT_UTF8 = "data: {name: caf\u00e9}\n".encode("latin-1")

# (files to add to the workspace, argv, a regex the one line must match)
CASES = {
    "unknown config name": (
        {},
        ["unlearn", "--config", "nosuch"],
        r"no config file or named config 'nosuch'; the named configs are .*digits-all",
    ),
    "config path that does not exist": (
        {},
        ["unlearn", "--config", "missing.yaml"],
        r"no config file 'missing.yaml'; the named configs are .*digits",
    ),
    "a folder as config": (
        {},
        ["unlearn", "--config", "out"],
        r"out: cannot read config file: Is a directory",
    ),
    "binary garbage as config": (
        {"garbage.yaml": b"\x7fELF\x02\x01\x01\x00\x00\x00"},
        ["unlearn", "--config", "garbage.yaml"],
        r"garbage\.yaml: a binary file, not a YAML config",
    ),
    "invalid YAML": (
        {"bad.yaml": b"runs: [{method: rl\nseeds: [0]\n"},
        ["unlearn", "--config", "bad.yaml"],
        r"bad\.yaml: invalid YAML: .* at line \d+, column \d+",
    ),
    "non-UTF-8 config": (
        {"latin.yaml": NOT_UTF8},
        ["unlearn", "--config", "latin.yaml"],
        r"latin\.yaml: not UTF-8 text \(byte 0xe9 at offset 16\); save the config as UTF-8",
    ),
    "a list at the top level": (
        {"list.yaml": b"- seeds: [0]\n"},
        ["unlearn", "--config", "list.yaml"],
        r"list\.yaml: expected a mapping of keys at the top level, got a list",
    ),
    "unknown key": (
        {},
        ["unlearn", "--config", "tiny.yaml", "--out", "out", "train.epochz=3"],
        r"train\.epochz: unknown key; allowed keys: epochs,",
    ),
    "wrong type in the file": (
        {"ten.yaml": TINY.replace("{epochs: 1}", "{epochs: ten}").encode()},
        ["unlearn", "--config", "ten.yaml", "--out", "out"],
        r"train\.epochs: expected int, got 'ten' \(str\)",
    ),
    "forget_lr that is not a number": (
        {},
        ["unlearn", "--config", "tiny.yaml", "runs=[{method: rl, setting: dual, forget_lr: abc}]"],
        r"runs\[0\]\.forget_lr: expected float, got 'abc' \(str\)",
    ),
    "unknown task": (
        {"nlp.yaml": b"task: nlp\n"},
        ["train", "--config", "nlp.yaml"],
        r"task: got 'nlp'; allowed values: 'vision', 'llm', 'diffusion'",
    ),
    "an original model trained for 0 epochs": (
        {},
        ["train", "--config", "tiny.yaml", "train.epochs=0"],
        r"train: epochs must be >= 1, got 0",
    ),
    "momentum of 1 for the original model": (
        {},
        ["train", "--config", "tiny.yaml", "train.momentum=1"],
        r"train: momentum must lie in \[0, 1\), got 1\.0",
    ),
    "an override of a run the config does not have": (
        {},
        ["unlearn", "--config", "tiny.yaml", "--out", "out", "runs.1.forget_lr=1e-3"],
        r"runs\[1\]: no such item; runs has 1, numbered from 0",
    ),
    "override without '='": (
        {},
        ["unlearn", "--config", "tiny.yaml", "--out", "out", "seeds"],
        r"override 'seeds': expected key=value",
    ),
    "override with bad YAML": (
        {},
        ["unlearn", "--out", "out", "seeds=[0,1", "--config", "tiny.yaml"],
        r"override 'seeds=\[0,1': invalid YAML value: .* at line 1, column \d+",
    ),
    "seeds=[]": (
        {},
        ["unlearn", "--config", "tiny.yaml", "--out", "out", "seeds=[]"],
        r"seeds is empty",
    ),
    "runs=[]": (
        {},
        ["bench", "--config", "tiny.yaml", "--out", "out", "runs=[]"],
        r"runs is empty",
    ),
    "another experiment in a folder of records": (
        {},
        ["unlearn", "--config", "tiny.yaml", "--out", "out", "train.epochs=2"],
        r"out/tiny holds records of different experiments",
    ),
    "report of a folder without records": (
        {"empty/notes.txt": b"no records here\n"},
        ["report", "empty"],
        r"empty/records: no records to report",
    ),
    "--out where a file is": (
        {"blocked": b"a file, not a folder\n"},
        ["unlearn", "--config", "tiny.yaml", "--out", "blocked"],
        r"blocked\S*: cannot write",
    ),
    "--extend on a task without a Gap": (
        {},
        ["bench", "--config", "tofu-tiny", "--out", "out", "--extend", "2"],
        r"llm tables have no Gap to tune η_f on: --extend and --tuned-seeds need one",
    ),
    "--tuned-seeds on a task without a Gap": (
        {},
        ["bench", "--config", "tofu-tiny", "--out", "out", "--tuned-seeds", "4"],
        r"llm tables have no Gap to tune η_f on: --extend and --tuned-seeds need one",
    ),
    "--tuned-seeds below the config's seeds": (
        {},
        ["bench", "--config", "digits", "--out", "out", "--tuned-seeds", "2"],
        r"--tuned-seeds 2 is fewer than the config's 3 seeds",
    ),
    "cache_dir where a file is": (
        {"cachefile": b"a file, not a folder\n"},
        ["unlearn", "--config", "tiny.yaml", "--out", "out2", "cache_dir=cachefile"],
        r"cachefile\S*: cannot write",
    ),
}


@pytest.mark.parametrize(("files", "argv", "pattern"), CASES.values(), ids=CASES.keys())
def test_bad_input_is_one_line_and_changes_nothing(
    files: dict[str, bytes],
    argv: list[str],
    pattern: str,
    workspace: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, content in files.items():
        (workspace / name).parent.mkdir(parents=True, exist_ok=True)
        (workspace / name).write_bytes(content)
    before = snapshot(workspace)
    err = one_line(refused(argv, capsys))
    assert re.search(pattern, err), err
    assert snapshot(workspace) == before


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "'abc' is not a number or a fraction like 1/3"),
        ("1/0", "'1/0' is not a number or a fraction like 1/3"),
        ("-1", "'-1': grid values must be > 0"),
        ("0", "'0': grid values must be > 0"),
        ("nan", "'nan' is not a number"),
    ],
)
def test_a_bad_grid_value_is_named(
    value: str, message: str, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(workspace)
    err = refused(["bench", "--config", "tiny.yaml", "--out", "out", "--grid", "1", value], capsys)
    assert f"argument --grid: {message}" in err
    assert snapshot(workspace) == before


def test_forget_lr_in_any_float_form_is_a_float(workspace: Path) -> None:
    """The positive counterpart of 'forget_lr: abc': 1.0e6 is a float in a file and in an
    override (YAML 1.1 alone reads it as a string)."""
    (workspace / "big.yaml").write_text(TINY.replace("forget_lr: 1.0e-4", "forget_lr: 1.0e6"))
    exp = _load(_parse(build_parser(), ["unlearn", "--config", "big.yaml"]))[1]
    assert exp.runs[0].forget_lr == 1e6
    override = "runs=[{method: rl, setting: dual, forget_lr: 1.0e6}]"
    exp = _load(_parse(build_parser(), ["unlearn", override, "--config", "tiny.yaml"]))[1]
    assert exp.runs[0].forget_lr == 1e6


def test_ctrl_c_is_one_line_and_status_130(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dualoptim.bench.sweeps.sweep", Mock(side_effect=KeyboardInterrupt))
    before = snapshot(workspace)
    err = one_line(refused(["unlearn", "--config", "tiny.yaml", "--out", "out"], capsys, 130))
    assert err == (
        "dualoptim: interrupted; rerun the same command to resume (finished runs are kept)\n"
    )
    assert snapshot(workspace) == before


@contextlib.contextmanager
def failing_fsync(
    monkeypatch: pytest.MonkeyPatch, where: Callable[[str], bool], code: int
) -> Iterator[None]:
    """os.fsync raises OSError(``code``) for the files whose path passes ``where`` (the disk
    is never really filled)."""
    fsync = os.fsync

    def fake(fd: int) -> None:
        if where(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(code, os.strerror(code))
        fsync(fd)

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", fake)
        yield


linux_only = pytest.mark.skipif(
    not Path("/proc/self/fd").is_dir(), reason="finds a file's path from its descriptor"
)

NEEDED = r"needed about [\d.,e-]+ MB, [\d.,e-]+ MB free on that disk; free some space and rerun"


@linux_only
def test_disk_full_writing_a_record_says_how_much_space(
    workspace: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A new η_f multiple runs (the models are cached), then its record cannot be written."""
    # the sweep keeps the unwritten record in a temporary file: this test's, not /tmp
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path_factory.mktemp("elsewhere")))
    before = snapshot(workspace)
    argv = ["bench", "--config", "tiny.yaml", "--out", "out", "--grid", "1", "3"]
    with failing_fsync(monkeypatch, lambda path: "/records/" in path, errno.ENOSPC):
        err = one_line(refused(argv, capsys))
    assert re.search(rf"disk full writing \S*records/\w+\.json: {NEEDED}", err), err
    after = snapshot(workspace)
    assert {name: after[name] for name in before} == before  # what was there is intact
    assert not [name for name in after.keys() - before.keys() if "records" in name]


@linux_only
def test_disk_full_writing_a_cached_model_says_how_much_space(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another training recipe (in another folder) trains a new original model first (here
    instantly: the write is what matters)."""
    monkeypatch.setattr("dualoptim.tasks.vision.experiment.train_classifier", Mock())
    before = snapshot(workspace)
    argv = ["unlearn", "--config", "tiny.yaml", "--out", "out2", "train.epochs=2"]
    with failing_fsync(monkeypatch, lambda path: "/cache/" in path, errno.ENOSPC):
        err = one_line(refused(argv, capsys))
    match = re.search(rf"disk full writing (cache/\S+\.safetensors): {NEEDED}", err)
    assert match, err
    assert snapshot(workspace) == before


@linux_only
def test_a_read_only_disk_names_the_file(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dualoptim.tasks.vision.experiment.train_classifier", Mock())
    before = snapshot(workspace)
    argv = ["unlearn", "--config", "tiny.yaml", "--out", "out2", "train.epochs=2"]
    with failing_fsync(monkeypatch, lambda path: "/cache/" in path, errno.EROFS):
        err = one_line(refused(argv, capsys))
    assert re.search(r"cannot write cache/\S+\.safetensors: Read-only file system$", err), err
    assert snapshot(workspace) == before


def test_a_write_into_a_file_names_the_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "results").write_text("a file, not a folder\n")
    target = tmp_path / "results" / "tiny" / "records" / "run.json"
    with pytest.raises(WriteError, match=rf"^cannot write {target}: {tmp_path / 'results'} is a"):
        write_json(target, {"a": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["results"]


@linux_only
def test_a_full_disk_reports_the_exact_size_of_what_did_not_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The size comes from the write itself (run again into a tally), not from what reached
    the disk before it filled: 1,000,000 float32 are 4.0 MB, and the temporary file is gone."""
    import torch

    path = tmp_path / "cache" / "model.safetensors"
    with (
        failing_fsync(monkeypatch, lambda _: True, errno.ENOSPC),
        pytest.raises(WriteError, match=rf"^disk full writing {path}: needed about 4\.0 MB, "),
    ):
        write_tensors(path, {"w": torch.zeros(1000, 1000)})
    assert not list((tmp_path / "cache").iterdir())

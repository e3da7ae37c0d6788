"""Bad records and record folders: each is refused before anything trains, with an error that
names the file and says what to do, and every file is left as it was. A finished run's record
that cannot be written is kept elsewhere, and the error says where."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest

from dualoptim.bench import records as records_module
from dualoptim.bench.records import RecordError, RecordWriteError, make_record
from dualoptim.bench.store import open_store
from dualoptim.bench.sweeps import sweep
from dualoptim.cli import main
from dualoptim.io import write_json
from dualoptim.tasks.vision import task as sweep_module
from dualoptim.tasks.vision.config import DataSpec, UnlearnSpec, VisionExperiment


def tiny(tmp_path: Path) -> VisionExperiment:
    return VisionExperiment(
        data=DataSpec(per_class_train=20, per_class_test=5),
        runs=(UnlearnSpec("ga", "alternate", epochs=1),),
        seeds=(0,),
        cache_dir=str(tmp_path / "cache"),
    )


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every refusal comes before a model is trained or a run made."""
    monkeypatch.setattr(sweep_module, "prepare", lambda *_: pytest.fail("trained"))
    monkeypatch.setattr(sweep_module, "run_unlearning", lambda *_: pytest.fail("ran"))


def _record(**changes: Any) -> dict[str, Any]:
    record = make_record(
        id="abc", kind="run", group="ga (alternate)", seed=0, metrics={"FA": 1.0},
        seconds=1.0, config={}, method="ga", setting="alternate", lr_scale=1.0, forget_lr=0.03,
    )  # fmt: skip
    record.update(changes)
    return {k: v for k, v in record.items() if v is not _DROP}


_DROP = object()
_FAILED = {"status": "failed", "error": {"type": "RunDivergedError", "message": "nan", "step": 3}}
CASES = {
    "truncated JSON": ('{"schema": 1, "kind": "ru', "not a readable record"),
    "not UTF-8": (b"\xff\xfe{}", "not a readable record"),
    "another schema": (json.dumps(_record(schema=7)), "not a schema-1 record"),
    "not an object": ("[1, 2, 3]", "not a schema-1 record"),
    "missing keys": (json.dumps(_record(metrics=_DROP, seed=_DROP)), "without seed, metrics"),
    "named after another id": (json.dumps(_record(id="xyz")), "holds the record 'xyz'"),
    "unknown kind": (json.dumps(_record(kind="rt")), "of kind 'rt'"),
    "metrics not an object": (json.dumps(_record(metrics=[1.0])), "metrics is not an object"),
    "unknown status": (json.dumps(_record(status="crashed")), "of status 'crashed'"),
    "failed reference": (
        json.dumps(_record(**_FAILED, kind="reference")),
        "a reference record of status 'failed'",
    ),
    "failed without its error": (
        json.dumps(_record(status="failed")),
        "a failed run's record without its error (type, message, step)",
    ),
    "failed, error without step": (
        json.dumps(_record(**{**_FAILED, "error": {"type": "MemoryError", "message": "oom"}})),
        "without its error",
    ),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.usefixtures("no_training")
def test_a_bad_record_in_the_output_folder_is_named(tmp_path: Path, case: str) -> None:
    content, message = CASES[case]
    bad = tmp_path / "out" / "records" / "abc.json"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = files(tmp_path)
    with pytest.raises(RecordError, match="delete it to redo the run") as error:
        sweep(tiny(tmp_path), tmp_path / "out", [1.0])
    assert str(bad) in str(error.value)
    assert message in str(error.value)
    assert files(tmp_path) == before


@pytest.mark.usefixtures("no_training")
def test_a_bad_record_in_the_cache_store_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "cache" / "records" / "abc.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"schema": 1, "id": "ab')
    before = files(tmp_path)
    with pytest.raises(RecordError, match=f"{bad}: not a readable record"):
        sweep(tiny(tmp_path), tmp_path / "out", [1.0])
    assert files(tmp_path) == before


@pytest.mark.parametrize("where", ["out/records", "cache/records", "out"])
@pytest.mark.usefixtures("no_training")
def test_a_file_where_a_records_folder_belongs_is_named(tmp_path: Path, where: str) -> None:
    (tmp_path / where).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / where).write_text("not a folder")
    before = files(tmp_path)
    with pytest.raises(RecordError, match="records") as error:
        sweep(tiny(tmp_path), tmp_path / "out", [1.0])
    assert str(tmp_path / where) in str(error.value)
    assert files(tmp_path) == before


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
@pytest.mark.usefixtures("no_training")
def test_an_unwritable_records_folder_is_refused_before_anything_runs(tmp_path: Path) -> None:
    folder = tmp_path / "out" / "records"
    folder.mkdir(parents=True)
    folder.chmod(0o555)
    try:
        with pytest.raises(RecordError, match=f"{folder}: cannot write records there"):
            sweep(tiny(tmp_path), tmp_path / "out", [1.0])
    finally:
        folder.chmod(0o755)
    assert files(tmp_path) == {}


@pytest.mark.usefixtures("no_training")
def test_records_of_another_experiment_in_the_folder_are_refused(tmp_path: Path) -> None:
    other = _record(id="rt0", kind="reference", group="RT", config={"model": "resnet18"})
    write_json(tmp_path / "out" / "records" / "rt0.json", other)
    before = files(tmp_path)
    with pytest.raises(ValueError, match="records of different experiments") as error:
        sweep(tiny(tmp_path), tmp_path / "out", [1.0])
    assert f"{tmp_path / 'out'} holds" in str(error.value)
    assert files(tmp_path) == before


def test_a_record_that_cannot_be_written_is_kept_and_the_error_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(tmp_path / "out", {"cache_dir": str(tmp_path / "cache")})
    assert store is not None

    def full(path: Path, _data: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(records_module, "write_json", full)
    record = _record()
    with pytest.raises(RecordWriteError, match="No space left on device") as error:
        store.put(record)
    message = str(error.value)
    assert str(tmp_path / "out" / "records" / "abc.json") in message
    assert str(tmp_path / "cache" / "records" / "abc.json") in message
    kept = Path(message.split("The record is kept in ")[1].split(":")[0])
    try:
        assert json.loads(kept.read_text()) == json.loads(json.dumps(record))  # nothing lost
    finally:
        kept.unlink()
    assert files(tmp_path) == {}  # no partial record anywhere

    def folder_full(path: Path, data: Any) -> None:  # only the output folder's disk is full
        if "out" in path.parts:
            full(path, data)
        write_json(path, data)

    monkeypatch.setattr(records_module, "write_json", folder_full)
    shared = tmp_path / "cache" / "records" / "abc.json"
    with pytest.raises(RecordWriteError, match=f"kept in {shared}, where a rerun finds it"):
        store.put(record)
    assert list(files(tmp_path)) == [str(shared.relative_to(tmp_path))]


def test_report_on_a_folder_with_a_corrupt_record_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "out" / "records" / "abc.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"schema": 1,')
    before = files(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{bad}: not a readable record" in err
    assert "Traceback" not in err
    assert files(tmp_path) == before  # no report written from a partial folder

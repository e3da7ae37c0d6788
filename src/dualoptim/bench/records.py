"""One JSON record per run: what ran, on what, and what it measured, or how it failed.

Tables and plots are built from records alone, so a report can be rebuilt without running
anything, and a sweep that stops midway skips the runs whose records exist when restarted.
A run that diverged or ran out of memory is a record too (``status: "failed"``, with its
``error``): a NaN at ×10 η_f is a result, and a rerun does not repeat it unless asked.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from dualoptim.distributed import launch
from dualoptim.io import finite_or_none, write_json

SCHEMA = 1
#: What every record holds (records of before ``status`` existed have none: finished runs).
KEYS = (
    "id", "task", "kind", "group", "method", "setting", "lr_scale", "forget_lr", "seed",
    "metrics", "curves", "seconds", "config", "environment",
)  # fmt: skip
ERROR_KEYS = ("type", "message", "step")
#: The exception types of a run that ran out of memory (CPU, then CUDA/MPS).
OUT_OF_MEMORY = ("MemoryError", "OutOfMemoryError")
PACKAGES = ("dualoptim", "torch", "numpy", "accelerate", "scikit-learn", "safetensors")


def environment() -> dict[str, Any]:
    """Package versions, the git commit and the machine, so a number can be traced; the
    thread count and the launch as they are now (a process may change them between runs)."""
    import torch

    static = _static_environment()
    machine = {**static["machine"], "torch_threads": torch.get_num_threads()}
    return {**static, "machine": machine, "launch": launch()}


def benchmark_header(
    name: str, started: float, packages: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The first keys of a benchmark script's JSON: what ran, when, how long since
    ``started`` (``time.perf_counter()``), and :func:`environment` with the versions of any
    other ``packages`` the benchmark measures."""
    env = environment()
    env["packages"] = {**env["packages"], **(packages or {})}
    return {
        "benchmark": name,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "wall_seconds": time.perf_counter() - started,
        "environment": env,
    }


@cache
def _static_environment() -> dict[str, Any]:
    """What cannot change while the process runs (looked up once: git takes a subprocess)."""
    import torch

    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "python": platform.python_version(),
        "packages": packages,
        "git": _git_state(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
    }


def _git_state() -> dict[str, Any] | None:
    """The commit of the checkout this package runs from, and whether it had local changes."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=here, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return None  # an installed wheel, or no git


def make_record(
    *,
    id: str,
    kind: str,
    group: str,
    seed: int,
    metrics: Mapping[str, float],
    seconds: float,
    config: Mapping[str, Any],
    method: str | None = None,
    setting: str | None = None,
    lr_scale: float | None = None,
    forget_lr: float | None = None,
    curves: Mapping[str, Any] | None = None,
    task: str = "vision",
    extra: Mapping[str, Any] | None = None,
    data_fingerprint: str | None = None,
    failure: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A record; ``extra`` holds what a task reports beyond numbers (e.g. sample texts),
    ``data_fingerprint`` the content hash of the data it was made on (``io.fingerprint``);
    ``failure`` ({type, message, step}) makes it the record of a failed run."""
    if kind not in ("run", "reference"):
        raise ValueError(f"record kind must be 'run' or 'reference', got {kind!r}")
    return {
        "schema": SCHEMA,
        "id": id,
        "task": task,
        "kind": kind,
        "status": "failed" if failure else "finished",
        **({"error": {k: failure[k] for k in ERROR_KEYS}} if failure else {}),
        "group": group,
        "method": method,
        "setting": setting,
        "lr_scale": lr_scale,
        "forget_lr": forget_lr,
        "seed": seed,
        "metrics": dict(metrics),
        "curves": dict(curves or {}),
        "seconds": seconds,
        "config": dict(config),
        "data": data_fingerprint,
        "environment": environment(),
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **({"extra": dict(extra)} if extra else {}),
    }


def failure_text(errors: Sequence[Mapping[str, Any]], total: int) -> str:
    """What stopped the runs of ``errors`` (records' ``error``), of ``total`` seeds: "diverged
    at step 12", "diverged at steps 3, 7 (2 of 5 seeds)", "out of memory (1 of 3 seeds)"."""
    types = {e["type"] for e in errors}
    if types == {"RunDivergedError"}:
        word = "diverged"
    elif types <= set(OUT_OF_MEMORY):
        word = "out of memory"
    else:
        word = "failed"
    steps = sorted({e["step"] for e in errors if e["step"] is not None})
    at = f" at step{'s' if len(steps) > 1 else ''} {', '.join(map(str, steps))}" if steps else ""
    return word + at + (f" ({len(errors)} of {total} seeds)" if total > 1 else "")


class RecordError(ValueError):
    """A record or a records folder that cannot be used: the message names the file."""


class RecordWriteError(RecordError):
    """A computed record that could not be written where it belongs; the message says where
    it was kept instead, so no result is lost to a full disk."""


def keep_elsewhere(record: Mapping[str, Any]) -> str:
    """Put ``record`` where it can be recovered from when its folder cannot take it: a
    temporary file, else the whole JSON on stderr. Returns where it went."""
    text = json.dumps(finite_or_none(record), indent=1, allow_nan=False) + "\n"
    try:
        fd, name = tempfile.mkstemp(prefix=f"dualoptim-record-{record['id']}-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return name
    except OSError:
        print(text, file=sys.stderr)
        return "stderr (printed in full above)"


class RecordStore:
    """A folder of records, one ``<id>.json`` each, written atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def check_writable(self) -> None:
        """Refuse, before anything runs, a folder that cannot take records (a file in the
        way, no permission): a run's result must have somewhere to go."""
        if self.directory.exists() and not self.directory.is_dir():
            raise RecordError(f"{self.directory} is a file, not a folder of records; move it")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.directory):
                pass
        except OSError as err:
            raise RecordError(
                f"{self.directory}: cannot write records there ({err.strerror or err}); "
                "choose another folder or fix its permissions"
            ) from err

    def path(self, id: str) -> Path:
        return self.directory / f"{id}.json"

    def get(self, id: str) -> dict[str, Any] | None:
        path = self.path(id)
        return _read(path) if path.exists() else None

    def put(self, record: Mapping[str, Any]) -> None:
        write_json(self.path(record["id"]), record)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for path in sorted(self.directory.glob("*.json")):
            yield _read(path)

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("*.json"))


def _read(path: Path) -> dict[str, Any]:
    """The record in ``path``, checked to hold what tables read, so a damaged or foreign file
    is named here rather than failing later as a KeyError in a table."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecordError(f"{path}: not a readable record ({err}); {_REDO}") from err
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise RecordError(f"{path}: not a schema-{SCHEMA} record; {_REDO}")
    if problem := _problem(record, path.stem):
        raise RecordError(f"{path}: {problem}; {_REDO}")
    return record


_REDO = "delete it to redo the run"


def _problem(record: Mapping[str, Any], stem: str) -> str | None:
    """What makes ``record`` (of file ``stem``.json) unusable, None when nothing does."""
    missing = [k for k in KEYS if k not in record]
    if missing:
        return f"a record without {', '.join(missing)}"
    if record["id"] != stem:
        return f"holds the record {record['id']!r}, but a record's file is named by its id"
    if record["kind"] not in ("run", "reference"):
        return f"a record of kind {record['kind']!r} (not 'run' or 'reference')"
    for key in ("metrics", "curves", "config"):
        if not isinstance(record[key], dict):
            return f"a record whose {key} is not an object"
    status = record.get("status", "finished")
    if status not in ("finished", "failed") or (status == "failed" and record["kind"] != "run"):
        return f"a {record['kind']} record of status {status!r}"
    error = record.get("error")
    if status == "failed" and not (isinstance(error, dict) and set(ERROR_KEYS) <= set(error)):
        return f"a failed run's record without its error ({', '.join(ERROR_KEYS)})"
    return None

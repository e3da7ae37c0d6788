"""One JSON record per finished run: what ran, on what, and what it measured.

Tables and plots are built from records alone, so a report can be rebuilt without running
anything, and a sweep that stops midway skips the runs whose records exist when restarted.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from dualoptim.io import write_json

SCHEMA = 1
PACKAGES = ("dualoptim", "torch", "numpy", "accelerate", "scikit-learn", "safetensors")


def record_id(*parts: Any) -> str:
    """A stable name for a run from everything that determines its result."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@cache
def environment() -> dict[str, Any]:
    """Package versions, the git commit and the machine, so a number can be traced."""
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
            "torch_threads": torch.get_num_threads(),
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
) -> dict[str, Any]:
    """A record; ``extra`` holds what a task reports beyond numbers (e.g. sample texts)."""
    if kind not in ("run", "reference"):
        raise ValueError(f"record kind must be 'run' or 'reference', got {kind!r}")
    return {
        "schema": SCHEMA,
        "id": id,
        "task": task,
        "kind": kind,
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
        "environment": environment(),
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **({"extra": dict(extra)} if extra else {}),
    }


class RecordStore:
    """A folder of records, one ``<id>.json`` each, written atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

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
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{path}: not a readable record ({err}); delete it to redo the run"
        ) from err
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a schema-{SCHEMA} record; delete it to redo the run")
    return record

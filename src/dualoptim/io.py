"""Result and cache files written atomically (a reader, or a crash, never sees half a file),
read back with errors that name the file, and the content fingerprints that key caches."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from dualoptim.distributed import barrier, is_main
from dualoptim.errors import write_error


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write`` on a temporary file next to ``path``, then rename it over ``path``.

    An OSError (unwritable folder, read-only or full disk) comes out as a WriteError that names
    ``path``, and for a full disk says how much space the file needed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes files private; results are meant to be shared
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    except OSError as err:
        raise write_error(path, err, write) from err


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (strict JSON has no inf/NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as strict JSON (non-finite floats become null), atomically."""
    text = json.dumps(finite_or_none(data), indent=1, allow_nan=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def write_tensors(
    path: Path, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None
) -> None:
    """Save tensors as safetensors, atomically (weights and masks in the cache), with
    ``metadata`` in the file's header, so what describes the tensors is written with them."""
    from safetensors.torch import save

    data = save(_untied({k: v.detach().contiguous() for k, v in tensors.items()}), metadata)
    atomic_write(path, lambda f: f.write(data))


def _untied(tensors: dict[str, Any]) -> dict[str, Any]:
    """safetensors refuses shared storage: tied weights are saved once each (cloned)."""
    seen: set[int] = set()
    out = {}
    for name, tensor in tensors.items():
        ptr = tensor.data_ptr()
        out[name] = tensor.clone() if ptr in seen else tensor
        seen.add(ptr)
    return out


def read_tensors(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(tensors, header metadata) of a cached safetensors file; a truncated or foreign file
    is a ValueError naming it, never a bare deserialisation error."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, "pt") as f:
            names = f.keys()  # safe_open is not iterable
            return {k: f.get_tensor(k) for k in names}, dict(f.metadata() or {})
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: {_UNREADABLE} safetensors file ({err}); {_DELETE}") from err


def cached_state(
    path: Path, build: Callable[[], Mapping[str, Any]]
) -> tuple[dict[str, Any], float]:
    """(state dict, seconds ``build`` took): read from ``path``, else built and written there.

    The seconds live in the file's own metadata: one atomic write holds the model and its
    time, so there is never a model without its time, nor a trained model lost because a
    second file could not be written. A corrupt file is an error naming it (delete it to
    rebuild), never rebuilt silently: the cache may be shared, and rebuilding can take hours.
    """
    barrier()  # every process sees the file as the others do: all build, or all read
    if path.exists():
        state, metadata = read_tensors(path)
        try:
            return state, float(metadata["seconds"])
        except (KeyError, ValueError):
            raise ValueError(
                f"{path}: a cached state without its build time in the header (not written by "
                f"dualoptim's cache); {_DELETE}"
            ) from None
    start = time.perf_counter()
    state = dict(build())  # collective when it trains under several processes
    seconds = time.perf_counter() - start
    if is_main():
        write_tensors(path, state, {"seconds": repr(seconds)})
    barrier()
    return state, seconds


def read_json(path: Path, keys: Sequence[str] = ()) -> dict[str, Any]:
    """A cached JSON object holding at least ``keys``; anything else (truncated, foreign) is a
    ValueError naming the file and what to do."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: {_UNREADABLE} JSON file ({err}); {_DELETE}") from err
    missing = [k for k in keys if k not in data] if isinstance(data, dict) else list(keys)
    if not isinstance(data, dict) or missing:
        raise ValueError(f"{path}: {_UNREADABLE} cache file (lacks {missing}); {_DELETE}")
    return data


def read_jsonl(path: Path, what: str) -> Iterator[tuple[int, object]]:
    """(line number, object) of each non-blank line of a JSON Lines file; errors name the file,
    the line and ``what`` the file should be ("a TOFU split file")."""
    expected = f"{what} holds one JSON object per line (JSON Lines)"
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"{path}, line {lineno}: not UTF-8 text; {expected}") from None
            if line.strip():
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(
                        f"{path}, line {lineno}: invalid JSON ({err.msg}); {expected}"
                    ) from None


_UNREADABLE = "truncated or not a dualoptim"
_DELETE = "delete it to rebuild it"


def fingerprint(*parts: Any) -> str:
    """A short stable sha256 of ``parts``: tensors and arrays by dtype, shape and bytes,
    dataclasses by their fields, text and numbers as they are.

    It names cached files and identifies the data a record was made on: anything that
    changes what is cached (the data's content, not its path) changes the name.
    """
    text = json.dumps(_plain(parts), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def record_id(*parts: Any) -> str:
    """A stable name for a run from everything that determines its result (dataclasses by
    their repr: a record id never changes while a config's fields keep their values)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _plain(value: Any) -> Any:
    """``value`` as JSON-able data, each array replaced by the sha256 of its bytes."""
    if value is None or isinstance(value, str | int | float):  # first: rows hold many
        return value
    import torch

    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().contiguous()
        raw = value.reshape(-1).view(torch.uint8).numpy()
        return {"tensor": str(value.dtype), "shape": list(value.shape), "sha256": _sha(raw)}
    if isinstance(value, np.ndarray):
        raw = np.ascontiguousarray(value)
        return {"array": raw.dtype.str, "shape": list(raw.shape), "sha256": _sha(raw)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _sha(raw: np.ndarray) -> str:
    return hashlib.sha256(memoryview(raw).cast("B")).hexdigest()

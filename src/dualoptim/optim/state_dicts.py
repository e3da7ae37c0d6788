"""The shape of a dualoptim optimizer's state dict: what it records beyond torch's (its kind,
objective and step counts), the check that a state dict fits the optimizer before anything is
loaded, and what a round trip through torch's distributed checkpoint changes and how it is
undone. Kept apart from the optimizer class, which only calls these."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

#: The state dict entry that names the optimizer which saved it (``ObjectiveOptimizer.kind``).
KIND_KEY = "optimizer"
#: The state dict's own entries beyond torch's ``state`` and ``param_groups``.
META_KEYS = (KIND_KEY, "objective", "step_counts")
#: Where the first parameter group carries a copy of them: torch's distributed checkpoint
#: helpers (``get_optimizer_state_dict``, what accelerate's FSDP2 ``save_state`` calls) keep
#: only ``state`` and ``param_groups``.
GROUP_META_KEY = "dualoptim"


def describe_kind(kind: Mapping[str, Any]) -> str:
    """``{"type": "DualOptimizer", "forget": "AdamW"}`` as ``DualOptimizer(forget=AdamW)``."""
    details = ", ".join(f"{k}={v}" for k, v in kind.items() if k != "type")
    return f"{kind.get('type')}({details})"


def describe_unkinded(state_dict: Any) -> str:
    """What a state dict without a :data:`KIND_KEY` entry is, for an error message."""
    groups = state_dict.get("param_groups") if isinstance(state_dict, Mapping) else None
    if not isinstance(groups, list) or not all(isinstance(g, Mapping) for g in groups):
        keys = sorted(map(str, state_dict)) if isinstance(state_dict, Mapping) else []
        return f"is not an optimizer state dict (a {type(state_dict).__name__}, keys {keys})"
    if groups and all({"forget_lr", "retain_lr"} <= g.keys() for g in groups):
        return (
            "was saved by an older dualoptim that did not record which optimizer saved it, so "
            "it cannot be checked; start from a fresh optimizer instead"
        )
    options = sorted({str(k) for g in groups for k in g} - {"params"})
    return (
        "is a plain torch optimizer's state dict (no dualoptim 'optimizer' entry; its "
        f"parameter groups hold {', '.join(options)})"
    )


def _mismatch(saved: Any, expected: Any, exact_dtype: bool, name: str) -> str | None:
    """Why the state value ``saved`` does not fit ``expected`` (None when it does)."""
    if isinstance(expected, Tensor):
        if not isinstance(saved, Tensor):
            return f"{name} is a {type(saved).__name__}, expected a tensor"
        if saved.shape != expected.shape:
            return f"{name} has shape {tuple(saved.shape)}, expected {tuple(expected.shape)}"
        floats = saved.is_floating_point() and expected.is_floating_point()
        if saved.dtype != expected.dtype and (exact_dtype or not floats):
            return f"{name} has dtype {saved.dtype}, expected {expected.dtype}"
        return None
    if isinstance(expected, Mapping):
        if not isinstance(saved, Mapping):
            return f"{name} is a {type(saved).__name__}, expected a dict"
        missing, unknown = expected.keys() - saved.keys(), saved.keys() - expected.keys()
        if missing:
            return f"{name} lacks key(s) {sorted(missing)}"
        if unknown:
            return f"{name} has unknown key(s) {sorted(unknown)}"
        for key, value in expected.items():
            problem = _mismatch(saved[key], value, exact_dtype, f"{name}[{key!r}]")
            if problem:
                return problem
        return None
    if type(saved) is not type(expected):
        return f"{name} is {saved!r}, expected a {type(expected).__name__}"
    return None


def check_state_layout(
    state_dict: Any,
    param_groups: Sequence[Mapping[str, Any]],
    expected_state: Callable[[Tensor, int, Mapping[str, Any]], Mapping[str, Any]],
    owner: str,
    *,
    optional_state: Callable[[Tensor], Mapping[str, Any]] = lambda _p: {},
    exact_dtype: bool = True,
) -> None:
    """Raise a ValueError unless ``state_dict`` (torch's format) fits ``param_groups``.

    It fits when it has as many groups and parameters, and every parameter's state is either
    empty (never stepped) or exactly what the optimizer creates for that parameter,
    ``expected_state(param, group index, saved state)``: the same keys, tensor shapes and
    dtypes (with ``exact_dtype=False`` any float fits a float, for loaders that cast to the
    parameter's dtype); entries of ``optional_state(param)`` may be present too. torch's
    loaders check none of this, and a fused kernel stepping on a state of another shape
    writes out of bounds (glibc aborts: ``free(): invalid next size``). Messages start with
    ``owner``.
    """
    groups = state_dict.get("param_groups") if isinstance(state_dict, Mapping) else None
    states = state_dict.get("state") if isinstance(state_dict, Mapping) else None
    if not (isinstance(groups, list) and isinstance(states, Mapping)):
        raise ValueError(f"{owner}: {describe_unkinded(state_dict)}")
    if len(groups) != len(param_groups):
        raise ValueError(
            f"{owner}: state dict has {len(groups)} parameter groups, optimizer has "
            f"{len(param_groups)}"
        )
    where: dict[Any, tuple[int, int, Tensor]] = {}
    for i, (saved, group) in enumerate(zip(groups, param_groups, strict=True)):
        saved_params = saved.get("params") if isinstance(saved, Mapping) else None
        if not isinstance(saved_params, list) or len(saved_params) != len(group["params"]):
            count = len(saved_params) if isinstance(saved_params, list) else "no"
            raise ValueError(
                f"{owner}: parameter group {i}: state dict has {count} parameters, optimizer "
                f"has {len(group['params'])}"
            )
        for j, (pid, p) in enumerate(zip(saved_params, group["params"], strict=True)):
            where[pid] = (i, j, p)
    for pid, saved_state in states.items():
        if pid not in where:
            raise ValueError(f"{owner}: state of parameter id {pid!r}, which no group lists")
        i, j, p = where[pid]
        optional = optional_state(p)
        problem = None
        if not isinstance(saved_state, Mapping):
            problem = f"the state is a {type(saved_state).__name__}, expected a dict"
        else:
            kept = {k: v for k, v in saved_state.items() if k not in optional}
            if kept:
                problem = _mismatch(kept, expected_state(p, i, kept), exact_dtype, "the state")
            for key in optional.keys() & saved_state.keys():
                problem = problem or _mismatch(
                    saved_state[key], optional[key], True, f"the state[{key!r}]"
                )
        if problem:
            raise ValueError(
                f"{owner}: parameter {j} of group {i} (shape {tuple(p.shape)}): {problem}; the "
                "state dict is of another model or optimizer configuration"
            )


def copy_to_device(value: Any, device: torch.device) -> Any:
    """Deep-copy a state value onto ``device`` keeping every tensor's dtype."""
    if isinstance(value, Tensor):
        return value.detach().to(device=device, copy=True)
    if isinstance(value, dict):
        return {k: copy_to_device(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(copy_to_device(v, device) for v in value)
    return value


def placed_like(mask: Tensor, param: Tensor) -> Tensor:
    """A copy of ``mask`` (the whole parameter's) laid out as ``param``: on its device, and for
    a sharded parameter (FSDP2's DTensor) cut into the same shards, each rank keeping its own
    without communication (every rank holds the whole mask)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(param, DTensor) and not isinstance(mask, DTensor):
        return distribute_tensor(
            mask.to(param.device), param.device_mesh, param.placements, src_data_rank=None
        )
    return mask.to(param.device, copy=True)


def counters_as_tensors(state: Mapping[str, Any]) -> dict[str, Any]:
    """A parameter's state with its integer counters as 0-dim int64 tensors: torch's distributed
    checkpoint loads tensors in place, but writes plain numbers back under string keys."""
    return {
        k: torch.tensor(v, dtype=torch.int64) if type(v) is int else v for k, v in state.items()
    }


def counters_as_ints(state: Mapping[str, Any]) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        is_counter = isinstance(v, Tensor) and v.dim() == 0 and v.dtype == torch.int64
        return int(v) if is_counter else v

    return {k: plain(v) for k, v in state.items()}


def normalised(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """``state_dict`` with what a round trip through torch's distributed checkpoint changes
    undone: per-parameter entries it wrote under string ids ("0") merged into the integer
    ids, the metadata taken from the first group when the top level lost it, counters back
    to ints."""
    out = dict(state_dict)
    groups = out.get("param_groups")
    if isinstance(groups, list) and groups and isinstance(groups[0], Mapping):
        meta = groups[0].get(GROUP_META_KEY)
        if isinstance(meta, Mapping):
            out = {**{k: meta[k] for k in META_KEYS if k in meta}, **out}
    states = out.get("state")
    if isinstance(states, Mapping):
        merged: dict[Any, Any] = {}
        for pid, value in states.items():
            key = int(pid) if isinstance(pid, str) and pid.isdigit() else pid
            if isinstance(value, Mapping):
                merged[key] = counters_as_ints({**merged.get(key, {}), **value})
            else:
                merged[key] = value
        out["state"] = merged
    return out

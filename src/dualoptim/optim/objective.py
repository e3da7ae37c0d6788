"""The base of every dualoptim optimizer: one explicit objective per step.

Unlearning alternates between a *forget* objective and a *retain* objective. Each step says
which one it serves, either as ``step(objective=...)`` or through the settable
``optimizer.objective`` (for loops such as accelerate's or the Hugging Face Trainer's that
call a bare ``step()``). Nothing is inferred from hidden counters.

Step sizes: every parameter group carries one schedulable ``lr`` -- a factor, 1.0 by default
-- and one step size per objective (``forget_lr``, ``retain_lr``). The step size used for
objective ``o`` is ``lr * o_lr``, so one LR scheduler attached to the optimizer scales both
objectives while each keeps its own magnitude.

Masks (SPEC §1.6) belong to an objective: a masked entry gets no update from that objective's
steps -- not from the gradient, weight decay, or momentum carried from earlier steps. The other
objective may still move it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal, cast

import torch
from torch import Tensor
from torch.optim import Optimizer

Objective = Literal["forget", "retain"]
OBJECTIVES: tuple[Objective, Objective] = ("forget", "retain")

#: Keys of an outer parameter group that the objective plumbing owns.
RESERVED_GROUP_KEYS = frozenset(
    {"params", "lr", "forget_lr", "retain_lr", "forget_options", "retain_options"}
)


def check_objective(objective: object) -> Objective:
    """Return ``objective`` if it names an objective, else raise a ValueError naming both."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be 'forget' or 'retain', got {objective!r}")
    return cast(Objective, objective)


#: The state dict entry that names the optimizer which saved it (``ObjectiveOptimizer.kind``).
KIND_KEY = "optimizer"


def _describe_kind(kind: Mapping[str, Any]) -> str:
    """``{"type": "DualOptimizer", "forget": "AdamW"}`` as ``DualOptimizer(forget=AdamW)``."""
    details = ", ".join(f"{k}={v}" for k, v in kind.items() if k != "type")
    return f"{kind.get('type')}({details})"


def _describe_unkinded(state_dict: Any) -> str:
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
    expected_state: Callable[[Tensor, int], Mapping[str, Any]],
    owner: str,
    *,
    optional_state: Callable[[Tensor], Mapping[str, Any]] = lambda _p: {},
    exact_dtype: bool = True,
) -> None:
    """Raise a ValueError unless ``state_dict`` (torch's format) fits ``param_groups``.

    It fits when it has as many groups and parameters, and every parameter's state is either
    empty (never stepped) or exactly what the optimizer creates for that parameter,
    ``expected_state(param, group index)``: the same keys, tensor shapes and dtypes (with
    ``exact_dtype=False`` any float fits a float, for loaders that cast to the parameter's
    dtype); entries of ``optional_state(param)`` may be present too. torch's loaders check
    none of this, and a fused kernel stepping on a state of another shape writes out of
    bounds (glibc aborts: ``free(): invalid next size``). Messages start with ``owner``.
    """
    groups = state_dict.get("param_groups") if isinstance(state_dict, Mapping) else None
    states = state_dict.get("state") if isinstance(state_dict, Mapping) else None
    if not (isinstance(groups, list) and isinstance(states, Mapping)):
        raise ValueError(f"{owner}: {_describe_unkinded(state_dict)}")
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
                problem = _mismatch(kept, expected_state(p, i), exact_dtype, "the state")
            for key in optional.keys() & saved_state.keys():
                problem = problem or _mismatch(
                    saved_state[key], optional[key], True, f"the state[{key!r}]"
                )
        if problem:
            raise ValueError(
                f"{owner}: parameter {j} of group {i} (shape {tuple(p.shape)}): {problem}; the "
                "state dict is of another model or optimizer configuration"
            )


def _copy_to_device(value: Any, device: torch.device) -> Any:
    """Deep-copy a state value onto ``device`` keeping every tensor's dtype."""
    if isinstance(value, Tensor):
        return value.detach().to(device=device, copy=True)
    if isinstance(value, dict):
        return {k: _copy_to_device(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_copy_to_device(v, device) for v in value)
    return value


class ObjectiveOptimizer(Optimizer):
    """A ``torch.optim.Optimizer`` whose steps each serve one objective.

    Subclasses implement :meth:`_step_objective`. This class owns objective selection, the
    per-objective step sizes, masks, per-objective step counts and (de)serialisation.
    """

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self._masked: dict[Objective, list[Tensor]] = {"forget": [], "retain": []}
        super().__init__(params, defaults)
        self.objective: Objective | None = None
        self.step_counts: dict[Objective, int] = {"forget": 0, "retain": 0}

    # ------------------------------------------------------------------ objectives
    def _resolve_objective(self, objective: str | None) -> Objective:
        chosen = objective if objective is not None else self.objective
        if chosen is None:
            raise ValueError(
                "no objective for this step: call step(objective='forget'|'retain') or set "
                "optimizer.objective first"
            )
        return check_objective(chosen)

    @contextmanager
    def use_objective(self, objective: str) -> Iterator[None]:
        """Make ``objective`` the current one inside the block (restores the previous)."""
        previous = self.objective
        self.objective = check_objective(objective)
        try:
            yield
        finally:
            self.objective = previous

    def lr_of(self, objective: str, group: int = 0) -> float:
        """The step size objective ``objective`` uses in parameter group ``group`` now."""
        o = check_objective(objective)
        g = self.param_groups[group]
        return float(g["lr"]) * float(g[f"{o}_lr"])

    # ------------------------------------------------------------------ masks
    def _owned_params(self) -> set[int]:
        return {id(p) for g in self.param_groups for p in g["params"]}

    def set_mask(self, objective: str, masks: Mapping[Tensor, Tensor] | None) -> None:
        """Restrict ``objective``'s updates to the True entries of each mask.

        ``masks`` maps a parameter to a boolean tensor of its shape (True = may move).
        Parameters not in ``masks`` are unrestricted. ``None`` removes every mask of the
        objective.
        """
        o = check_objective(objective)
        key = f"{o}_mask"
        owned = self._owned_params()
        for p, m in (masks or {}).items():  # validate all before changing anything
            if id(p) not in owned:
                raise ValueError("set_mask: a masked tensor is not a parameter of this optimizer")
            if tuple(m.shape) != tuple(p.shape):
                raise ValueError(
                    f"set_mask: mask shape {tuple(m.shape)} does not match parameter shape "
                    f"{tuple(p.shape)}"
                )
            if m.dtype != torch.bool:
                raise TypeError(f"set_mask: masks must be boolean tensors, got {m.dtype}")
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p].pop(key, None)
        for p, m in (masks or {}).items():
            self.state[p][key] = m.detach().to(p.device, copy=True)
        self._index_masks()

    def masks(self, objective: str) -> dict[Tensor, Tensor]:
        """The masks of ``objective``, keyed by parameter."""
        key = f"{check_objective(objective)}_mask"
        return {p: self.state[p][key] for p in self._masked[objective]}

    def _index_masks(self) -> None:
        """Remember which parameters carry a mask, so unmasked steps cost nothing extra."""
        self._masked = {
            o: [
                p
                for g in self.param_groups
                for p in g["params"]
                if f"{o}_mask" in self.state.get(p, {})
            ]
            for o in OBJECTIVES
        }

    @torch.no_grad()
    def mask_gradients(self, objective: str) -> None:
        """Zero the masked entries of the gradients for ``objective``.

        Steps do this themselves; call it earlier when something between backward and step
        must see masked gradients (e.g. SFR-on clips the *masked* forget gradient).
        """
        for p, m in self.masks(objective).items():
            if p.grad is not None:
                p.grad.mul_(m)

    @contextmanager
    def _frozen_by_mask(self, objective: Objective) -> Iterator[None]:
        """Run a step so that masked entries end bit-identical to where they started."""
        if not self._masked[objective]:
            yield
            return
        masks = self.masks(objective)
        self.mask_gradients(objective)
        saved = {p: p.detach().clone() for p in masks}
        yield
        with torch.no_grad():
            for p, m in masks.items():
                p.copy_(torch.where(m, p, saved[p]))

    # ------------------------------------------------------------------ stepping
    def step(  # type: ignore[override]
        self, closure: Callable[[], Any] | None = None, objective: str | None = None
    ) -> Any:
        """Update the parameters for one objective (argument, else ``self.objective``).

        Not wrapped in no_grad: inner torch optimizers and the DO+ kernels set it themselves,
        and a second context costs ~7 µs per step.
        """
        o = self._resolve_objective(objective)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with self._frozen_by_mask(o):
            self._step_objective(o)
        self.step_counts[o] += 1
        return loss

    def _step_objective(self, objective: Objective) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ serialisation
    def kind(self) -> dict[str, Any]:
        """What decides the layout of this optimizer's state: its class, and in subclasses
        the inner optimizers' classes or the state precision. Saved in ``state_dict()``; a
        state dict of another kind is refused."""
        return {"type": type(self).__name__}

    def _expected_state(self, param: Tensor, group: int) -> dict[str, Any]:  # noqa: ARG002
        """The state this optimizer keeps for ``param`` of group ``group`` once stepped, beyond
        masks (in the format of ``state_dict()["state"]``): none here."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd[KIND_KEY] = self.kind()
        sd["objective"] = self.objective
        sd["step_counts"] = dict(self.step_counts)
        return sd

    def check_state_dict(self, state_dict: Any) -> None:
        """Raise a ValueError unless ``state_dict`` was saved by an optimizer of this kind over
        parameters of these shapes (see :func:`check_state_layout`); touches nothing.

        A state dict without the kind entry (a plain torch optimizer's, or one saved by
        dualoptim before it recorded the kind) is refused too: its type cannot be checked, and
        Adam and AdamW states, say, have the very same layout.
        """
        name = type(self).__name__
        if not isinstance(state_dict, Mapping) or KIND_KEY not in state_dict:
            raise ValueError(
                f"{name}.load_state_dict: the state dict {_describe_unkinded(state_dict)}"
            )
        if state_dict[KIND_KEY] != self.kind():
            saved = state_dict[KIND_KEY]
            saved_text = _describe_kind(saved) if isinstance(saved, Mapping) else repr(saved)
            raise ValueError(
                f"{name}.load_state_dict: the state dict is from {saved_text}, not from a "
                f"{_describe_kind(self.kind())}; load a state dict saved by the same optimizer "
                "type and settings"
            )
        check_state_layout(
            state_dict,
            self.param_groups,
            self._expected_state,
            f"{name}.load_state_dict",
            optional_state=lambda p: {
                f"{o}_mask": torch.empty(p.shape, dtype=torch.bool, device="meta")
                for o in OBJECTIVES
            },
        )
        objective, counts = state_dict.get("objective"), state_dict.get("step_counts")
        if objective is not None and objective not in OBJECTIVES:
            raise ValueError(f"{name}.load_state_dict: unknown objective {objective!r}")
        if not (
            isinstance(counts, Mapping)
            and counts.keys() == set(OBJECTIVES)
            and all(isinstance(n, int) for n in counts.values())
        ):
            raise ValueError(
                f"{name}.load_state_dict: step_counts must map 'forget' and 'retain' to "
                f"integers, got {counts!r}"
            )

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a state dict after :meth:`check_state_dict`, keeping each tensor's dtype.

        torch's own loader casts every state tensor to its parameter's dtype, which would turn
        boolean masks and 8-bit codes into floats; this one only moves tensors to the
        parameter's device.
        """
        self.check_state_dict(state_dict)
        saved_groups = state_dict["param_groups"]
        id_to_param: dict[int, Tensor] = {}
        for saved, group in zip(saved_groups, self.param_groups, strict=True):
            id_to_param.update(zip(saved["params"], group["params"], strict=True))
        state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        for pid, value in state_dict["state"].items():
            p = id_to_param[pid]
            state[p] = _copy_to_device(value, p.device)
        self.state = state
        self._index_masks()
        for saved, group in zip(saved_groups, self.param_groups, strict=True):
            group.update({k: v for k, v in saved.items() if k != "params"})
        self.objective = state_dict.get("objective")
        self.step_counts = dict(state_dict["step_counts"])

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
from collections.abc import Callable, Iterable, Iterator, Mapping
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
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["objective"] = self.objective
        sd["step_counts"] = dict(self.step_counts)
        return sd

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a state dict, keeping each state tensor's dtype.

        torch's own loader casts every state tensor to its parameter's dtype, which would turn
        boolean masks and 8-bit codes into floats; this one only moves tensors to the
        parameter's device.
        """
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"state dict has {len(saved_groups)} parameter groups, optimizer has "
                f"{len(self.param_groups)}"
            )
        id_to_param: dict[int, Tensor] = {}
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups, strict=True)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"parameter group {i}: state dict has {len(saved['params'])} parameters, "
                    f"optimizer has {len(group['params'])}"
                )
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
        self.step_counts = dict(state_dict.get("step_counts", {"forget": 0, "retain": 0}))

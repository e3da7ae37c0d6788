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

from dualoptim.optim.state_dicts import (
    GROUP_META_KEY,
    KIND_KEY,
    check_state_layout,
    copy_to_device,
    counters_as_tensors,
    describe_kind,
    describe_unkinded,
    normalised,
    placed_like,
)

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
                "optimizer.objective first (loading a checkpoint with torch's distributed "
                "helpers into a fresh optimizer: call optimizer.init_state() first)"
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
            self.state[p][key] = placed_like(m.detach(), p)
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
        self._check_params()
        with self._frozen_by_mask(o):
            self._step_objective(o)
        self.step_counts[o] += 1
        return loss

    def _step_objective(self, objective: Objective) -> None:
        raise NotImplementedError

    def _check_params(self) -> None:
        """Take the groups' parameters as they are now (accelerate and DeepSpeed replace them
        after construction), refusing a replacement after states exist: those states would be
        stranded on the old objects and the new ones would start afresh, silently."""
        current = tuple(id(p) for g in self.param_groups for p in g["params"])
        if current == self.__dict__.get("_param_ids"):
            return
        owned = set(current)
        if any(id(p) not in owned and self.state[p] for p in self.state):
            raise ValueError(
                f"{type(self).__name__}: the parameters of a group were replaced after "
                "optimizer states existed; wrap the model (accelerate.prepare, DeepSpeed, "
                "fully_shard) before the first step"
            )
        self._param_ids = current
        self._params_replaced()

    def _params_replaced(self) -> None:
        """Called when the groups hold other parameters than at the last step."""

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

    def _expected_for(
        self,
        param: Tensor,
        group: int,
        saved: Mapping[str, Any],  # noqa: ARG002
    ) -> dict[str, Any]:
        """The state ``saved`` (a stepped parameter's) must equal: ``_expected_state``;
        optimizers whose parts are stepped separately narrow it to the parts ``saved`` has."""
        return self._expected_state(param, group)

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["state"] = {pid: counters_as_tensors(s) for pid, s in sd["state"].items()}
        meta = {KIND_KEY: self.kind(), "objective": self.objective}
        meta["step_counts"] = dict(self.step_counts)
        sd.update(meta)
        if sd["param_groups"]:
            sd["param_groups"][0] = {**sd["param_groups"][0], GROUP_META_KEY: meta}
        return sd

    # ------------------------------------------------------------------ states up front
    def init_state(self) -> None:
        """Create every parameter's state now, as its first step would, without moving a
        parameter or a counter. A freshly built optimizer has no state; torch's distributed
        checkpoint loads into existing states only (and, finding none, runs a zero-gradient
        step of its own, which a two-objective optimizer cannot take). Call it before
        ``set_optimizer_state_dict`` / accelerate's ``load_state``."""
        for index, group in enumerate(self.param_groups):
            for p in group["params"]:
                if not self._has_state(p):
                    self._init_param_state(p, index)

    def _has_state(self, param: Tensor) -> bool:
        """Whether ``param`` has its optimizer state (masks are no optimizer state)."""
        return any(not k.endswith("_mask") for k in self.state.get(param, {}))

    def _init_param_state(self, param: Tensor, group: int) -> dict[str, Any]:  # noqa: ARG002
        """Create ``param``'s state and return it (subclasses with state override it)."""
        return self.state[param]

    def check_state_dict(self, state_dict: Any) -> None:
        """Raise a ValueError unless ``state_dict`` was saved by an optimizer of this kind over
        parameters of these shapes (see :func:`check_state_layout`); touches nothing.

        A state dict without the kind entry (a plain torch optimizer's, or one saved by
        dualoptim before it recorded the kind) is refused too: its type cannot be checked, and
        Adam and AdamW states, say, have the very same layout.
        """
        name = type(self).__name__
        if isinstance(state_dict, Mapping):
            state_dict = normalised(state_dict)
        if not isinstance(state_dict, Mapping) or KIND_KEY not in state_dict:
            raise ValueError(
                f"{name}.load_state_dict: the state dict {describe_unkinded(state_dict)}"
            )
        if state_dict[KIND_KEY] != self.kind():
            saved = state_dict[KIND_KEY]
            saved_text = describe_kind(saved) if isinstance(saved, Mapping) else repr(saved)
            raise ValueError(
                f"{name}.load_state_dict: the state dict is from {saved_text}, not from a "
                f"{describe_kind(self.kind())}; load a state dict saved by the same optimizer "
                "type and settings"
            )
        check_state_layout(
            state_dict,
            self.param_groups,
            self._expected_for,
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

    def _placed(self, key: str, value: Any, param: Tensor) -> Any:  # noqa: ARG002
        """A copy of the state entry ``key`` of ``param`` where the step will read it."""
        return copy_to_device(value, param.device)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a state dict after :meth:`check_state_dict`, keeping each tensor's dtype.

        torch's own loader casts every state tensor to its parameter's dtype, which would turn
        boolean masks and 8-bit codes into floats; this one only moves tensors to the
        parameter's device.
        """
        self.check_state_dict(state_dict)
        state_dict = normalised(state_dict)
        saved_groups = state_dict["param_groups"]
        id_to_param: dict[int, Tensor] = {}
        for saved, group in zip(saved_groups, self.param_groups, strict=True):
            id_to_param.update(zip(saved["params"], group["params"], strict=True))
        state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        for pid, value in state_dict["state"].items():
            p = id_to_param[pid]
            state[p] = {k: self._placed(k, v, p) for k, v in value.items()}
        self.state = state
        self._index_masks()
        for saved, group in zip(saved_groups, self.param_groups, strict=True):
            group.update({k: v for k, v in saved.items() if k not in ("params", GROUP_META_KEY)})
        self.objective = state_dict.get("objective")
        self.step_counts = dict(state_dict["step_counts"])

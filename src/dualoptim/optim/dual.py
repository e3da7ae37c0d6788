"""DualOptimizer (SPEC §1.2) and its shared-state baseline (Alternate / Joint, SPEC §1.1).

Both wrap ordinary torch optimizers ("inner" optimizers) over the same parameters:

* :class:`DualOptimizer` -- one inner optimizer per objective. A forget step reads and writes
  only the forget optimizer's state, a retain step only the retain optimizer's; each keeps its
  own step counter for bias correction. Only the parameters couple them.
* :class:`SharedOptimizer` -- one inner optimizer for both objectives ("shared momentum"), with
  optional per-objective step sizes. This is the Alternate and Joint baseline.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import Tensor
from torch.optim import Optimizer

from dualoptim.optim.inner import OptimizerSpec
from dualoptim.optim.objective import (
    OBJECTIVES,
    RESERVED_GROUP_KEYS,
    Objective,
    ObjectiveOptimizer,
    check_state_layout,
)

SpecLike = OptimizerSpec | functools.partial | dict

#: SPEC §1.3 classification recipe: AdamW(wd 0.05) forgets, SGD(0.9, wd 5e-4) retains.
DEFAULT_FORGET = OptimizerSpec("adamw", {"lr": 1e-4, "weight_decay": 0.05})
DEFAULT_RETAIN = OptimizerSpec("sgd", {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4})


class _InnerBacked(ObjectiveOptimizer):
    """Routes each objective's step to a torch optimizer built from an :class:`OptimizerSpec`."""

    def __init__(
        self, params: Iterable[Any], specs: Mapping[Objective, OptimizerSpec], lr: float
    ) -> None:
        self._specs = dict(specs)
        self._inner: dict[Objective, Optimizer] = {}
        super().__init__(params, {"lr": lr})
        built: dict[int, Optimizer] = {}
        for o in OBJECTIVES:
            spec = self._specs[o]
            if id(spec) not in built:  # a shared spec object means one shared inner optimizer
                built[id(spec)] = spec.build([self._inner_group(g, o) for g in self.param_groups])
            self._inner[o] = built[id(spec)]

    def _inner_group(self, group: dict[str, Any], objective: Objective) -> dict[str, Any]:
        """The inner optimizer's view of an outer group: shared options + the objective's own."""
        options = {k: v for k, v in group.items() if k not in RESERVED_GROUP_KEYS}
        options.update(group.get(f"{objective}_options", {}))
        return {"params": group["params"], **options, "lr": group["lr"] * group[f"{objective}_lr"]}

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for o in OBJECTIVES:
            group.setdefault(f"{o}_lr", self._specs[o].lr)
        if self._inner:  # after construction: extend each distinct inner optimizer too
            seen: set[int] = set()
            for o, inner in self._inner.items():
                if id(inner) not in seen:
                    seen.add(id(inner))
                    inner.add_param_group(self._inner_group(group, o))

    @property
    def inner(self) -> dict[Objective, Optimizer]:
        """The inner optimizer of each objective (the same object twice when shared)."""
        return dict(self._inner)

    def _step_objective(self, objective: Objective) -> None:
        inner = self._inner[objective]
        for outer, group in zip(self.param_groups, inner.param_groups, strict=True):
            group["lr"] = outer["lr"] * outer[f"{objective}_lr"]
        inner.step()

    def _distinct_inner(self) -> list[Optimizer]:
        unique: dict[int, Optimizer] = {id(opt): opt for opt in self._inner.values()}
        return list(unique.values())

    def kind(self) -> dict[str, Any]:
        return {**super().kind(), **{o: type(opt).__name__ for o, opt in self._inner.items()}}

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["inner"] = [opt.state_dict() for opt in self._distinct_inner()]
        return sd

    def check_state_dict(self, state_dict: Any) -> None:
        """Also check each inner optimizer's state against the state it creates itself."""
        super().check_state_dict(state_dict)
        inner_states = state_dict.get("inner")
        distinct = self._distinct_inner()
        if not isinstance(inner_states, list) or len(inner_states) != len(distinct):
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: the state dict needs "
                f"{len(distinct)} inner optimizer state(s) under 'inner'"
            )
        for opt, sd in zip(distinct, inner_states, strict=True):
            objectives = [o for o, inner in self._inner.items() if inner is opt]
            check_state_layout(
                sd,
                opt.param_groups,
                _probed_states(opt, self._specs[objectives[0]]),
                f"{type(self).__name__}.load_state_dict: inner {'/'.join(objectives)} "
                f"optimizer {type(opt).__name__}",
                exact_dtype=False,  # torch's loader casts float states to the parameter's dtype
            )

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        super().load_state_dict(state_dict)  # checks everything, the inner states included
        for opt, sd in zip(self._distinct_inner(), state_dict["inner"], strict=True):
            opt.load_state_dict(sd)


class DualOptimizer(_InnerBacked):
    """Two independent optimizers over the same parameters, one per objective (DualOptim).

    Args:
        params: parameters or parameter groups. A group may carry options shared by both
            inner optimizers (e.g. ``weight_decay=0.0`` for biases), per-objective options in
            ``forget_options`` / ``retain_options``, and its own ``forget_lr`` / ``retain_lr``.
        forget: the forget optimizer (default AdamW, lr 1e-4, weight decay 0.05).
        retain: the retain optimizer, normally the one the model was trained with (default
            SGD, lr 0.01, momentum 0.9, weight decay 5e-4).
        lr: the schedulable factor on both objectives' step sizes (see
            :mod:`dualoptim.optim.objective`).

    Example::

        opt = DualOptimizer(model.parameters(),
                            forget=partial(torch.optim.AdamW, lr=3e-4, weight_decay=0.05),
                            retain=partial(torch.optim.SGD, lr=0.01, momentum=0.9))
        loss_f.backward(); opt.step(objective="forget"); opt.zero_grad()
        loss_r.backward(); opt.step(objective="retain"); opt.zero_grad()
    """

    def __init__(
        self,
        params: Iterable[Any],
        forget: SpecLike = DEFAULT_FORGET,
        retain: SpecLike = DEFAULT_RETAIN,
        lr: float = 1.0,
    ) -> None:
        forget_spec, retain_spec = OptimizerSpec.parse(forget), OptimizerSpec.parse(retain)
        if forget_spec is retain_spec:  # keep the states independent even for one spec object
            retain_spec = OptimizerSpec(retain_spec.cls, dict(retain_spec.kwargs))
        super().__init__(params, {"forget": forget_spec, "retain": retain_spec}, lr)


class SharedOptimizer(_InnerBacked):
    """One optimizer for both objectives: the shared-momentum Alternate/Joint baseline.

    Args:
        optimizer: the optimizer (normally the pretraining one).
        forget_lr / retain_lr: per-phase step sizes (the official classification RL/SalUn/
            SCRUB baselines use one per phase); both default to ``optimizer``'s lr.
        lr: the schedulable factor on both step sizes.
    """

    def __init__(
        self,
        params: Iterable[Any],
        optimizer: SpecLike = DEFAULT_RETAIN,
        forget_lr: float | None = None,
        retain_lr: float | None = None,
        lr: float = 1.0,
    ) -> None:
        spec = OptimizerSpec.parse(optimizer)
        groups = _with_default_lrs(params, forget_lr, retain_lr)
        super().__init__(groups, {"forget": spec, "retain": spec}, lr)


def _probed_states(opt: Optimizer, spec: OptimizerSpec) -> Callable[[Tensor, int], dict]:
    """What ``opt`` (built from ``spec``) saves per parameter, probed once per group and
    parameter shape (:meth:`OptimizerSpec.saved_state`)."""
    probed: dict[tuple, dict[str, Any]] = {}

    def expected(param: Tensor, group: int) -> dict[str, Any]:
        key = (group, param.shape, param.dtype, param.device)
        if key not in probed:
            options = {k: v for k, v in opt.param_groups[group].items() if k != "params"}
            probed[key] = spec.saved_state(param, options)
        return probed[key]

    return expected


def _with_default_lrs(
    params: Iterable[Any], forget_lr: float | None, retain_lr: float | None
) -> list[dict[str, Any]]:
    """Parameter groups with ``forget_lr`` / ``retain_lr`` filled in where not set per group."""
    items = list(params)
    groups = items if items and isinstance(items[0], dict) else [{"params": items}]
    filled = []
    for g in groups:
        g = dict(g)
        if forget_lr is not None:
            g.setdefault("forget_lr", forget_lr)
        if retain_lr is not None:
            g.setdefault("retain_lr", retain_lr)
        filled.append(g)
    return filled

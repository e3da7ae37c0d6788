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
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from dualoptim.optim.inner import OptimizerSpec, is_dtensor
from dualoptim.optim.objective import (
    OBJECTIVES,
    RESERVED_GROUP_KEYS,
    Objective,
    ObjectiveOptimizer,
)

SpecLike = OptimizerSpec | functools.partial | dict

#: SPEC §1.3 classification recipe: AdamW(wd 0.05) forgets, SGD(0.9, wd 5e-4) retains.
DEFAULT_FORGET = OptimizerSpec("adamw", {"lr": 1e-4, "weight_decay": 0.05})
DEFAULT_RETAIN = OptimizerSpec("sgd", {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4})


class _PrefixedState(MutableMapping):
    """One parameter's state in one inner optimizer, kept inside the outer optimizer's state of
    that parameter under ``prefix``: torch's checkpoint helpers, accelerate and DeepSpeed see
    one optimizer whose ``state[p]`` holds everything."""

    def __init__(self, outer: dict[str, Any], prefix: str) -> None:
        self.outer, self.prefix = outer, prefix

    def __getitem__(self, key: str) -> Any:
        return self.outer[self.prefix + key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.outer[self.prefix + key] = value

    def __delitem__(self, key: str) -> None:
        del self.outer[self.prefix + key]

    def __iter__(self) -> Iterator[str]:
        n = len(self.prefix)
        return (k[n:] for k in list(self.outer) if k.startswith(self.prefix))

    def __len__(self) -> int:
        return sum(1 for k in self.outer if k.startswith(self.prefix))


class _InnerStates(MutableMapping):
    """An inner optimizer's ``state``: a view of the outer optimizer's, read at each access (a
    loaded state dict replaces the outer mapping)."""

    def __init__(self, owner: ObjectiveOptimizer, prefix: str) -> None:
        self.owner, self.prefix = owner, prefix

    def __getitem__(self, param: Tensor) -> _PrefixedState:
        return _PrefixedState(self.owner.state[param], self.prefix)

    def __setitem__(self, param: Tensor, value: Mapping[str, Any]) -> None:
        view = self[param]
        view.clear()
        view.update(value)

    def __delitem__(self, param: Tensor) -> None:
        self[param].clear()

    def __iter__(self) -> Iterator[Tensor]:
        return (p for p, s in list(self.owner.state.items()) if len(_PrefixedState(s, self.prefix)))

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _InnerBacked(ObjectiveOptimizer):
    """Routes each objective's step to a torch optimizer built from an :class:`OptimizerSpec`.

    The inner optimizers' states live in this optimizer's ``state[p]`` under a prefix per
    inner optimizer (``forget.exp_avg``, ``retain.momentum_buffer``; ``shared.`` for the
    shared baseline), and before each step their groups take this optimizer's current
    parameters: accelerate and DeepSpeed replace the parameters of the outer groups only."""

    def __init__(
        self,
        params: Iterable[Any],
        specs: Mapping[Objective, OptimizerSpec],
        lr: float,
        default_lrs: Mapping[Objective, float],
    ) -> None:
        self._specs = dict(specs)
        self._default_lrs = dict(default_lrs)
        self._inner: dict[Objective, Optimizer] = {}
        #: each inner optimizer's first state, by (inner, group, shape, dtype, device)
        self._probes: dict[tuple, dict[str, Any]] = {}
        super().__init__(params, {"lr": lr})
        shared = self._specs["forget"] is self._specs["retain"]
        built: dict[int, Optimizer] = {}
        for o in OBJECTIVES:
            spec = self._specs[o]
            if id(spec) not in built:  # a shared spec object means one shared inner optimizer
                inner = spec.build([self._inner_group(g, o) for g in self.param_groups])
                inner.state = _InnerStates(self, "shared." if shared else f"{o}.")
                built[id(spec)] = inner
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
            group.setdefault(f"{o}_lr", self._default_lrs[o])
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

    def _params_replaced(self) -> None:
        """Give every inner optimizer's groups the outer groups' current parameters (and
        refuse what cannot step them)."""
        sharded = any(is_dtensor(p) for g in self.param_groups for p in g["params"])
        eight_bit = [
            o for o in self._distinct_inner() if type(o).__module__.startswith("bitsandbytes")
        ]
        if sharded and eight_bit:
            raise ValueError(
                f"{type(eight_bit[0]).__name__} (bitsandbytes) has no kernels for sharded "
                "(FSDP2 DTensor) parameters: dual_8bit cannot run under FSDP2; use dual, or "
                "dual_plus_8bit, whose 8-bit states follow the shards"
            )
        for inner in self._distinct_inner():
            for outer, group in zip(self.param_groups, inner.param_groups, strict=True):
                group["params"] = list(outer["params"])
                if sharded and group.get("fused"):  # chosen for the parameters before FSDP2
                    group["fused"] = False  # torch's fused ops have no DTensor strategy

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

    def check_state_dict(self, state_dict: Any) -> None:
        if isinstance(state_dict, Mapping) and "inner" in state_dict:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: the state dict was saved by an older "
                "dualoptim (inner states in a separate 'inner' list), which this version does "
                "not read; start from a fresh optimizer instead"
            )
        super().check_state_dict(state_dict)

    @torch.no_grad()
    def init_state(self) -> None:
        """Each inner optimizer's states, made by one step at step size 0 and weight decay 0
        on zero gradients for the parameters without a state, then every step counter set
        back to 0: the next step is exactly a fresh optimizer's first (for SGD with
        ``dampening`` 0, torch's default)."""
        fresh = [p for g in self.param_groups for p in g["params"] if not self._has_state(p)]
        if not fresh:
            return
        grads = {p: p.grad for g in self.param_groups for p in g["params"]}
        new = {id(p) for p in fresh}
        try:
            for p in grads:
                p.grad = torch.zeros_like(p) if id(p) in new else None
            self._check_params()
            for inner in self._distinct_inner():
                saved = [(g["lr"], g.get("weight_decay")) for g in inner.param_groups]
                for g in inner.param_groups:
                    g["lr"] = 0.0
                    if "weight_decay" in g:
                        g["weight_decay"] = 0.0  # L2-style decay would seed the moments
                inner.step()
                for g, (lr, decay) in zip(inner.param_groups, saved, strict=True):
                    g["lr"] = lr
                    if decay is not None:
                        g["weight_decay"] = decay
        finally:
            for p, grad in grads.items():
                p.grad = grad
        for p in fresh:
            state = self.state[p]
            for key in [k for k in state if k.rsplit(".", 1)[-1] == "step"]:
                value = state[key]
                state[key] = value.zero_() if isinstance(value, Tensor) else 0

    def _placed(self, key: str, value: Any, param: Tensor) -> Any:
        """As torch's own loader does: an inner step counter stays on the CPU unless its
        optimizer is fused or capturable (then float32 on the parameter's device)."""
        prefix, _, name = key.rpartition(".")
        if name != "step" or not isinstance(value, Tensor):
            return super()._placed(key, value, param)
        inner = next(o for o in self._distinct_inner() if o.state.prefix == prefix + ".")
        index = next(
            i for i, g in enumerate(self.param_groups) if any(p is param for p in g["params"])
        )
        group = inner.param_groups[index]
        if group.get("fused") or group.get("capturable"):
            return value.detach().to(dtype=torch.float32, device=param.device, copy=True)
        return value.detach().clone()

    def _expected_state(self, param: Tensor, group: int) -> dict[str, Any]:
        """Every inner optimizer's entries for ``param``, under its prefix (probed once per
        group and parameter shape: :meth:`OptimizerSpec.first_state`)."""
        expected: dict[str, Any] = {}
        for inner in self._distinct_inner():
            prefix = inner.state.prefix
            objective = next(o for o, opt in self._inner.items() if opt is inner)
            probed = self._probe(inner, self._specs[objective], param, group)
            expected.update({prefix + k: v for k, v in probed.items()})
        return expected

    def _expected_for(self, param: Tensor, group: int, saved: Mapping[str, Any]) -> dict[str, Any]:
        """Only the inner optimizers that have stepped ``param`` have its state: a run that
        has made retain steps only has no forget entries yet (each present one is whole)."""
        prefixes = {key.partition(".")[0] + "." for key in saved}
        return {
            k: v
            for k, v in self._expected_state(param, group).items()
            if k.partition(".")[0] + "." in prefixes
        }

    def _probe(
        self, inner: Optimizer, spec: OptimizerSpec, param: Tensor, group: int
    ) -> dict[str, Any]:
        key = (id(inner), group, param.shape, param.dtype, param.device)
        if key not in self._probes:
            options = {k: v for k, v in inner.param_groups[group].items() if k != "params"}
            self._probes[key] = spec.first_state(param, options)
        return self._probes[key]


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
        specs = {"forget": forget_spec, "retain": retain_spec}
        super().__init__(params, specs, lr, {o: s.lr for o, s in specs.items()})


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
        lrs = {"forget": forget_lr, "retain": retain_lr}
        defaults = {o: spec.lr if v is None else v for o, v in lrs.items()}
        super().__init__(params, {"forget": spec, "retain": spec}, lr, defaults)

"""Inner optimizers: what a DualOptimizer runs for each objective.

An :class:`OptimizerSpec` names an optimizer class and its keyword arguments, so that configs
(plain data) and Python code describe inner optimizers the same way. Construction picks the
fastest implementation torch has (``fused=True`` where the class and device support it: on a
2-core CPU torch's fused AdamW step is 2.9x faster than its ``foreach`` one at 1M parameters
and 5.5x at 10M-100M; see benchmarks/optimizer_step.py).
"""

from __future__ import annotations

import functools
import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

#: Optimizer names accepted in configs. 8-bit ones come from bitsandbytes (an extra).
_TORCH_NAMES: dict[str, type[Optimizer]] = {
    "adamw": torch.optim.AdamW,
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
}
_BNB_NAMES = {"adamw8bit": "AdamW8bit", "adam8bit": "Adam8bit", "sgd8bit": "SGD8bit"}
#: The 8-bit counterpart of each full-precision optimizer (DO-8bit, SPEC §1.5).
_EIGHT_BIT_OF = {"adamw": "adamw8bit", "adam": "adam8bit", "sgd": "sgd8bit"}

OPTIMIZER_NAMES = tuple(_TORCH_NAMES) + tuple(_BNB_NAMES)


def _bitsandbytes_class(name: str) -> type[Optimizer]:
    try:
        bnb_optim = importlib.import_module("bitsandbytes.optim")
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            f"optimizer {name!r} needs bitsandbytes: pip install 'dualoptim[bnb]'"
        ) from err
    return getattr(bnb_optim, _BNB_NAMES[name])


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer class (or config name) plus its keyword arguments; ``lr`` is required."""

    cls: type[Optimizer] | str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.cls, str) and self.cls not in OPTIMIZER_NAMES:
            raise ValueError(
                f"unknown optimizer {self.cls!r}; choose one of {', '.join(OPTIMIZER_NAMES)}"
            )
        if "lr" not in self.kwargs:
            raise ValueError(f"optimizer spec for {self.name} needs an 'lr'")

    @classmethod
    def parse(cls, value: OptimizerSpec | str | type | functools.partial | dict) -> OptimizerSpec:
        """Accept a spec, a config dict ``{"name": ..., **kwargs}``, or a partial of a class."""
        if isinstance(value, OptimizerSpec):
            return value
        if isinstance(value, functools.partial):
            return cls(value.func, dict(value.keywords))
        if isinstance(value, dict):
            kwargs = dict(value)
            if "name" not in kwargs:
                raise ValueError(f"optimizer config {value!r} needs a 'name'")
            return cls(kwargs.pop("name"), kwargs)
        raise TypeError(
            "an optimizer must be an OptimizerSpec, a functools.partial of an optimizer class "
            f"with lr=..., or a config dict with 'name' and 'lr'; got {value!r}"
        )

    @property
    def name(self) -> str:
        return self.cls if isinstance(self.cls, str) else self.cls.__name__

    @property
    def lr(self) -> float:
        return float(self.kwargs["lr"])

    def resolve_class(self) -> type[Optimizer]:
        if not isinstance(self.cls, str):
            return self.cls
        if self.cls in _TORCH_NAMES:
            return _TORCH_NAMES[self.cls]
        return _bitsandbytes_class(self.cls)

    def eight_bit(self) -> OptimizerSpec:
        """The same optimizer with 8-bit block-wise states (bitsandbytes)."""
        name = self.cls if isinstance(self.cls, str) else self.cls.__name__.lower()
        if name in _BNB_NAMES:
            return self
        if name not in _EIGHT_BIT_OF:
            raise ValueError(f"no 8-bit version of optimizer {self.name!r}")
        kwargs = {k: v for k, v in self.kwargs.items() if k not in {"fused", "foreach"}}
        return OptimizerSpec(_EIGHT_BIT_OF[name], kwargs)

    def build(self, param_groups: list[dict[str, Any]]) -> Optimizer:
        """Construct the optimizer, fused where the class, every parameter and torch's fused
        kernel allow it (:func:`_fused_is_right`)."""
        klass = self.resolve_class()
        kwargs = dict(self.kwargs)
        accepts = inspect.signature(klass.__init__).parameters
        params = [p for g in param_groups for p in g["params"]]
        if (
            "fused" in accepts
            and not {"fused", "foreach"} & kwargs.keys()
            and _fused_is_right(klass, kwargs, params)
        ):
            try:
                return klass(param_groups, **kwargs, fused=True)
            except (RuntimeError, ValueError):
                pass  # device or dtype without a fused kernel: torch's default below
        return klass(param_groups, **kwargs)

    def first_state(self, param: Tensor, options: dict[str, Any]) -> dict[str, Any]:
        """The per-parameter state this optimizer, with group ``options``, keeps for a
        parameter like ``param`` once stepped: found by one step on a zero-gradient copy,
        since layouts vary by class (bitsandbytes keeps block-wise codes, absmax and code
        tables)."""
        copy = torch.nn.Parameter(torch.zeros_like(param))
        copy.grad = torch.zeros_like(param)
        probe = self.build([{**options, "params": [copy]}])
        probe.step()
        return dict(probe.state[copy])


def is_dtensor(param: Tensor) -> bool:
    """Whether ``param`` is sharded by FSDP2 (a DTensor)."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch built without distributed
        return False
    return isinstance(param, DTensor)


_FUSED_AGREES: dict[tuple, bool] = {}


def _fused_is_right(klass: type[Optimizer], kwargs: dict[str, Any], params: list[Tensor]) -> bool:
    """Whether ``klass``'s fused kernel may step ``params``. Never for DTensor parameters
    (FSDP2: torch's fused ops have no sharding strategy); otherwise for each (dtype, device)
    among them, only when two fused steps on a probe equal two unfused ones (torch 2.13's
    CPU fused SGD moves only the n mod 16 tail of a bf16 or fp16 tensor). Probed once."""
    if any(is_dtensor(p) for p in params):
        return False
    for dtype, device in {(p.dtype, p.device.type) for p in params}:
        key = (klass, repr(sorted(kwargs.items())), dtype, device)
        if key not in _FUSED_AGREES:
            _FUSED_AGREES[key] = _fused_agrees(klass, kwargs, dtype, device)
        if not _FUSED_AGREES[key]:
            return False
    return True


def _fused_agrees(klass: type[Optimizer], kwargs: dict[str, Any], dtype, device: str) -> bool:
    moved = []
    for fused in (True, False):
        p = torch.nn.Parameter(torch.linspace(-1, 1, 37, device=device).to(dtype))
        try:
            opt = klass([p], **kwargs, **({"fused": True} if fused else {}))
        except (RuntimeError, ValueError):
            return False  # no fused kernel for this device or dtype
        for _ in range(2):
            p.grad = torch.linspace(0.5, 1.5, 37, device=device).to(dtype)
            opt.step()
        moved.append(p.detach().float().cpu())
    tolerance = 1e-5 if dtype == torch.float32 or dtype == torch.float64 else 2e-2
    return torch.allclose(moved[0], moved[1], rtol=tolerance, atol=tolerance)

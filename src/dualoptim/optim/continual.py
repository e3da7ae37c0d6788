"""Optimizer states across a sequence of forget requests (continual unlearning, SPEC §2.6).

Request k starts from the model request k-1 left; its optimizer is built afresh (the
request's own step sizes, schedule and masks) and then, by policy:

=============  ==================================================================================
``reset``      nothing carried: new states, counters at 0 (the authors' code)
``carry``      every moment and step counter of both objectives carried over, so request k's
               first step is exactly the step one optimizer running both requests would make
``carry_base`` DualOptim+ only: the shared base moments and their counter t carried, each
               objective's residual moments and counter s_o reset (the base holds what both
               objectives' gradients have in common; the residuals, the request's conflict)
=============  ==================================================================================

Masks are never carried: they belong to a request (SalUn's saliency, SFR-on's forget mask are
computed on that request's forget set), so the new optimizer keeps its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast, get_args

from dualoptim.optim.objective import ObjectiveOptimizer
from dualoptim.optim.plus import DualOptimPlus
from dualoptim.optim.settings import Setting
from dualoptim.optim.state_dicts import normalised

StatePolicy = Literal["reset", "carry", "carry_base"]
STATE_POLICIES: tuple[str, ...] = get_args(StatePolicy)


def check_policy(policy: str, setting: str) -> StatePolicy:
    """``policy`` if it names a policy that ``setting`` has, else a ValueError naming both."""
    if policy not in STATE_POLICIES:
        raise ValueError(f"state_policy must be one of {', '.join(STATE_POLICIES)}, got {policy!r}")
    if policy == "carry_base" and not Setting(setting).plus:
        raise ValueError(
            f"state_policy 'carry_base' keeps DualOptim+'s shared base and resets its residuals; "
            f"the {setting!r} setting has no base state: use 'carry' or 'reset'"
        )
    return cast(StatePolicy, policy)


def policy_label(label: str, policy: str | None) -> str:
    """A run's row label with its state policy, when one is set: "sfron (dual) [carry]"."""
    return label if policy is None else f"{label} [{policy}]"


def without_policy(label: str, policy: str | None) -> str:
    """The row label ``policy_label`` was given: "sfron (dual) [carry]" → "sfron (dual)"."""
    return label if policy is None else label.removesuffix(f" [{policy}]")


def check_requests(requests: int | None, runs: Sequence[Any]) -> None:
    """Refuse a request count below 2, and state policies in a config of one request (there
    is nothing to carry them to): runs name their ``state_policy``."""
    if requests is None:
        named = [r for r in runs if getattr(r, "state_policy", None) is not None]
        if named:
            raise ValueError(
                f"{named[0].label}: state_policy applies to continual runs; set requests: K "
                "(the number of forget requests, >= 2) or remove state_policy"
            )
    elif requests < 2:
        raise ValueError(
            f"requests must be >= 2 (forget requests made one after another), got {requests}; "
            "leave it unset for one request"
        )


def carry_states(
    optimizer: ObjectiveOptimizer, saved: Mapping[str, Any], policy: StatePolicy
) -> None:
    """Give the freshly built ``optimizer`` the states of ``saved`` (the previous request's
    optimizer state dict) as ``policy`` says; its own parameter groups and masks stay.

    ``saved`` must come from an optimizer of the same kind over parameters of the same shapes
    (checked first; the error names what differs)."""
    if policy == "reset":
        return
    if policy == "carry_base" and not isinstance(optimizer, DualOptimPlus):
        raise ValueError(
            f"state_policy 'carry_base' needs a DualOptimPlus, got {type(optimizer).__name__}"
        )
    optimizer.check_state_dict(saved)  # same kind, same shapes: else an error naming the difference
    saved = normalised(saved)
    own = optimizer.state_dict()
    carried = {
        pid: {k: v for k, v in entries.items() if k.endswith("_mask")}
        for pid, entries in own["state"].items()
    }
    for pid, entries in saved["state"].items():
        carried.setdefault(pid, {}).update(
            {k: v for k, v in entries.items() if not k.endswith("_mask")}
        )
    state = {pid: entries for pid, entries in carried.items() if entries}
    optimizer.load_state_dict({**own, "state": state, "step_counts": dict(saved["step_counts"])})
    if policy == "carry_base":
        cast(DualOptimPlus, optimizer).reset_residuals()

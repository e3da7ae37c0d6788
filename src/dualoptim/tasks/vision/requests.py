"""Continual classification unlearning (SPEC §2.6): a seed's forget set cut into K requests.

Request k trains on R_k against D_r ∪ R_{k+1} ∪ … ∪ R_K (the rows not yet requested are still
retained) from the model request k-1 left, and is measured on R_1 ∪ … ∪ R_k as its forget set
and that same retain set, against RT_k: a model trained from scratch without R_1 … R_k
(cached per prefix). The parts together are the one-shot forget set of the seed, so RT_K is the
one-shot RT and the last request's table compares with the one-shot benchmark's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch

from dualoptim.io import record_id
from dualoptim.tasks.vision.config import UnlearnSpec, VisionExperiment
from dualoptim.tasks.vision.experiment import (
    World,
    evaluate_model,
    mask_prefix,
    rt_reference,
    unlearned,
)
from dualoptim.tasks.vision.splits import ForgetSplit
from dualoptim.unlearn.requests import (
    EndState,
    RequestChain,
    request_jobs,
    retained_by,
    split_by_group,
)
from dualoptim.unlearn.requests import split_random as split_random_rows
from dualoptim.unlearn.task import NO_UNLEARNING, Job, Outcome, Reference, record_config


@dataclass(frozen=True)
class Requests:
    """One seed's K requests over its forget set ``world.split.forget``."""

    exp: VisionExperiment
    world: World
    seed: int
    parts: tuple[torch.Tensor, ...]

    @classmethod
    def of(cls, exp: VisionExperiment, world: World, seed: int) -> Requests:
        """Random forgetting: equal random parts (drawn with ``seed``); class forgetting:
        whole classes, in the order the config lists them."""
        forget, count = world.split.forget, exp.requests or 1
        if exp.data.forget_classes is None:
            parts = split_random_rows(forget, count, seed)
        else:
            classes = list(exp.data.forget_classes)
            labels = world.data.train.y[forget]
            parts = [
                forget[torch.isin(labels, torch.tensor([classes[i] for i in chosen]))]
                for chosen in split_by_group(classes, count)
            ]
        return cls(exp, world, seed, tuple(parts))

    @property
    def count(self) -> int:
        return len(self.parts)

    def _retain(self, k: int) -> torch.Tensor:
        return torch.cat([self.world.split.retain, retained_by(k, self.parts)]).sort().values

    def trained(self, k: int) -> ForgetSplit:
        """What request ``k`` unlearns: R_k against D_r and the later requests' rows."""
        return ForgetSplit(self.parts[k - 1], self._retain(k), f"request {k} of {self.count}")

    def measured(self, k: int) -> ForgetSplit:
        """What is measured after request ``k``: everything forgotten so far, and the rows
        still retained."""
        forget = torch.cat(self.parts[:k]).sort().values
        return ForgetSplit(forget, self._retain(k), f"requests 1-{k} of {self.count}")

    def view(self, k: int, start: torch.nn.Module) -> World:
        """This seed's world as request ``k`` sees it, starting from ``start``: masks are
        cached for the original model only (request 1's)."""
        split = self.trained(k)
        prefix = mask_prefix(self.exp, self.world.data, split) if k == 1 else None
        return replace(self.world, split=split, original=start, mask_prefix=prefix)


def reference_ids(key: str, k: int) -> tuple[str, str]:
    """RT_k's and the original's (measured after request ``k``) record ids."""
    return record_id("reference", key, "request", k), record_id(NO_UNLEARNING, key, "request", k)


#: A seed's :class:`Requests`, built when first needed: building it trains the original
#: model and the one-shot RT, which the sweep's plan must not do before anything runs.
Lazy = Callable[[], Requests]


def references(get: Lazy, exp: VisionExperiment, seed: int, key: str) -> list[Reference]:
    """RT_k and the original model measured after each request k of ``seed``."""
    config = record_config(exp, None, seed)
    out = []
    for k in range(1, (exp.requests or 1) + 1):
        rt, original = reference_ids(key, k)
        out += [
            Reference(rt, "RT", seed, config, partial(_rt, get, k)),
            Reference(original, NO_UNLEARNING, seed, config, partial(_original, get, k)),
        ]
    return out


def _rt(get: Lazy, k: int) -> Outcome:
    requests = get()
    world = requests.world
    metrics, seconds = rt_reference(requests.exp, world.data, requests.measured(k), requests.seed)
    return Outcome(metrics, seconds, extra={"request": k})


def _original(get: Lazy, k: int) -> Outcome:
    """The original model measured on what is forgotten after request ``k``: no unlearning."""
    requests = get()
    world = requests.world
    metrics = evaluate_model(world.original, world.data, requests.measured(k))
    return Outcome(metrics, 0.0, extra={"request": k})


def jobs(get: Lazy, exp: VisionExperiment, key: str, spec: UnlearnSpec, run: Job) -> list[Job]:
    """Requests 1..K of ``spec`` on ``run``'s seed, in order (each starts from the one
    before); ``run``: its one-shot job, whose id names its chain and records."""
    chain = RequestChain(
        Path(exp.cache_dir) / "requests", run.id, exp.requests or 1, partial(_step, get, spec)
    )
    return request_jobs(
        run,
        chain,
        spec.effective_state_policy,
        ids=partial(record_id, run.id, "request"),
        references=partial(reference_ids, key),
    )


def _step(
    get: Lazy, spec: UnlearnSpec, k: int, previous: EndState | None, checkpoint: Path
) -> EndState:
    requests = get()
    start = copy.deepcopy(requests.world.original)
    if previous is not None:
        start.load_state_dict(previous.model)
    done = unlearned(
        spec,
        requests.view(k, start),
        requests.seed,
        states=None if previous is None else previous.optimizer,
        checkpoint_dir=checkpoint,
    )
    metrics = evaluate_model(done.model, requests.world.data, requests.measured(k))
    return EndState(
        done.model.state_dict(),
        done.optimizer.state_dict(),
        done.seconds,
        {"metrics": metrics, "curves": done.curves},
    )

"""Continual TOFU unlearning (SPEC §2.6): the forget split cut into K requests of whole
authors, made one after another from the model the previous request left.

Request k trains on its authors' rows against the retain rows plus the rows of the authors
not yet requested, and is measured after it on the forget-evaluation rows of every author
requested so far: the first ``eval.limit // K`` rows of each request made (all of them
without a limit), so the last request evaluates as many rows as a one-shot run. The target
is measured on the same rows per request (the table's "before" row). Forget Quality is
omitted: TOFU's retain model never saw any forget author, which matches the cumulative forget
set only after the last request (retain95 against forget05), so per request it would
compare with the wrong model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from dualoptim.io import record_id
from dualoptim.tasks.llm.config import LLMUnlearnSpec, Requests
from dualoptim.tasks.llm.refusals import refusal
from dualoptim.tasks.llm.run import Request, measured, unlearn_target
from dualoptim.tasks.llm.world import TofuSplits, World
from dualoptim.unlearn.requests import EndState, RequestChain, request_jobs, split_by_group
from dualoptim.unlearn.sharding import full_state_dict
from dualoptim.unlearn.task import Job, Outcome, Reference


@dataclass
class LLMRequests:
    """The K requests of one experiment (the same for every seed: authors in file order)."""

    world: World
    options: Requests
    parts: list[list[int]]  # forget-split row numbers of each request

    @classmethod
    def of(cls, world: World, options: Requests) -> LLMRequests:
        groups = world.request_groups(options.group_rows)
        try:
            parts = split_by_group(groups, options.count)
        except ValueError as err:
            raise ValueError(
                f"requests: {options.count} requests of whole authors or people from the "
                f"{len(groups)} forget rows: {err}"
            ) from err
        return cls(world, options, parts)

    @property
    def count(self) -> int:
        return len(self.parts)

    def evaluated(self, k: int) -> list[int]:
        """The forget-evaluation rows measured after request ``k``."""
        limit = self.world.exp.eval.limit
        per = None if limit is None else max(1, limit // self.count)
        available = len(self.world.splits.evaluation["forget"])
        return [row for part in self.parts[:k] for row in part[:per] if row < available]

    def view(self, k: int) -> World:
        """The world as request ``k`` sees it: its authors as the forget split, the later
        authors among the retain rows, the rows requested so far as the forget evaluation.
        A shallow copy: the base model, the fine-tuned target and the models are shared."""
        base = self.world
        # The experiment's, computed before the rows change: the key, and the rows the
        # fine-tuned models learn, which name their cache files (else a view would fine-tune
        # its own target on its own rows).
        _ = base.fingerprint, base.key, base._training_pairs
        view = copy.copy(base)
        for name in ("target_evaluation", "retain_evaluation"):  # the view's rows' own
            view.__dict__.pop(name, None)
        s, part = base.splits, self.parts[k - 1]
        later = [row for p in self.parts[k:] for row in p]
        evaluated = self.evaluated(k)
        evaluation = {**s.evaluation, "forget": [s.evaluation["forget"][r] for r in evaluated]}
        view.splits = TofuSplits(
            [s.forget[r] for r in part], s.retain + [s.forget[r] for r in later], evaluation
        )
        view.forget_pairs = [base.forget_pairs[r] for r in part]
        view.retain_pairs = base.retain_pairs + [base.forget_pairs[r] for r in later]
        view.forget_offset = part[0]
        view.forget_quality = False
        if base.entailment is not None:  # TFE: each evaluated row's own refusal
            seed = base.exp.data.refusal_seed
            view.forget_refusals = [refusal(r, seed) for r in evaluated]
        view.keep_forget_evaluation(evaluated)
        return view


def references(
    requests: LLMRequests,
    kind: str,
    config: Any,
    group: str,
    measure: Callable[[World], Outcome],
) -> list[Reference]:
    """The model before unlearning (``group``: TOFU's target, the real world's initial
    model) measured after each request, on the rows requested so far; ``measure(view)``:
    its row on a request's view (the plan's, with the record's texts)."""
    world = requests.world
    return [
        Reference(
            _reference_id(requests, kind, k),
            group,
            world.reference_seed,
            config,
            partial(_before, requests, k, measure),
        )
        for k in range(1, requests.count + 1)
    ]


def _reference_id(requests: LLMRequests, kind: str, k: int) -> str:
    return record_id(f"{kind}-reference", requests.world.key, "before", requests.options, k)


def _before(requests: LLMRequests, k: int, measure: Callable[[World], Outcome]) -> Outcome:
    outcome = measure(requests.view(k))
    return replace(outcome, extra={"request": k, **outcome.extra})


def jobs(
    requests: LLMRequests,
    kind: str,
    spec: LLMUnlearnSpec,
    run: Job,
    progress: bool,
    texts: Callable[[Mapping[str, Any]], Mapping[str, Any]],
) -> list[Job]:
    """Requests 1..K of ``spec`` on ``run``'s seed (``run``: its one-shot job), in order;
    ``texts(row)`` makes a record's texts from a measured row (the plan's texts)."""
    world, options, seed = requests.world, requests.options, run.seed
    chain = RequestChain(
        Path(world.cache) / "requests",
        record_id(f"{kind}-chain", world.key, spec, seed, options),
        requests.count,
        partial(_step, requests, spec, seed, progress),
    )
    return request_jobs(
        run,
        chain,
        spec.effective_state_policy,
        ids=partial(record_id, f"{kind}-run", world.key, spec, seed, options),
        references=lambda k: (_reference_id(requests, kind, k),),
        texts=texts,
    )


def _step(
    requests: LLMRequests,
    spec: LLMUnlearnSpec,
    seed: int,
    progress: bool,
    k: int,
    previous: EndState | None,
    checkpoint: Path,
) -> EndState:
    world, options = requests.world, requests.options
    view = requests.view(k)
    original = options.reference == "original" and previous is not None
    request = Request(
        model=world.target[0] if previous is None else previous.model,
        optimizer=None if previous is None else previous.optimizer,
        policy=spec.effective_state_policy,
        reference=world.new_model(world.target[0]) if original else None,
        checkpoint_dir=checkpoint,
    )
    model, result, optimizer = unlearn_target(spec, view, seed, progress, request=request)
    row = measured(spec, view, model, result)
    return EndState(full_state_dict(model), optimizer.state_dict(), row["seconds"], row)

"""A sequence of forget requests R_1 … R_K (continual unlearning, SPEC §2.6), for any task.

Request k starts from the model (and, by the state policy, the optimizer states) that request
k-1 left. :class:`RequestChain` keeps each request's end state in one file written
atomically and loaded with ``weights_only=True``, so a sequence killed anywhere resumes: a
finished request is read back, the one that was running resumes from its engine checkpoint
(its own folder, removed once the request's end state is written), and the result is bit for
bit the uninterrupted sequence's. Only the newest end state is kept, and none once the last
request is made (its caller records what it measured): an LLM's is gigabytes, so a sweep
holds one at a time.

The splits are here too: K disjoint random parts of a forget set, or whole groups (TOFU's
authors, the real-world set's people) cut into K requests in order.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from dualoptim.io import atomic_write
from dualoptim.unlearn.task import Job, Outcome


def split_random(indices: torch.Tensor, parts: int, seed: int) -> list[torch.Tensor]:
    """``indices`` shuffled with ``seed`` (a private generator) and cut into ``parts``
    disjoint pieces of sizes differing by at most one, each sorted: together all of them."""
    _check_parts(parts, len(indices), "indices")
    order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))
    return [piece.sort().values for piece in indices[order].tensor_split(parts)]


def split_by_group(groups: Sequence[Hashable], parts: int) -> list[list[int]]:
    """Row numbers of ``groups`` (one label per row: an author, a person) cut into ``parts``
    requests of whole groups, in order of first appearance, as even as whole groups allow
    (10 authors in 5 requests: 2 each). Fewer groups than parts is an error."""
    order = list(dict.fromkeys(groups))
    _check_parts(parts, len(order), "groups")
    rows: dict[Hashable, list[int]] = {g: [] for g in order}
    for row, group in enumerate(groups):
        rows[group].append(row)
    cuts = [round(i * len(order) / parts) for i in range(parts + 1)]
    return [[r for g in order[a:b] for r in rows[g]] for a, b in itertools.pairwise(cuts)]


def retained_by(done: int, parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """The forget rows request ``done`` (1-based) still retains: those of the requests not yet
    made (``parts[done:]``), sorted; empty after the last request."""
    if not 1 <= done <= len(parts):
        raise ValueError(f"request {done} is outside 1..{len(parts)}")
    later = list(parts[done:])
    if not later:
        return torch.empty(0, dtype=torch.long)
    return torch.cat(later).sort().values


def _check_parts(parts: int, available: int, what: str) -> None:
    if parts < 1:
        raise ValueError(f"the number of requests must be >= 1, got {parts}")
    if available < parts:
        raise ValueError(f"{parts} requests need at least {parts} {what}, got {available}")


@dataclass
class EndState:
    """What a request leaves: the model's and the optimizer's state dicts, its seconds, and
    whatever the task measured (metrics, curves: plain data)."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


#: ``step(k, end state of request k-1 or None, checkpoint folder of request k)``
Step = Callable[[int, EndState | None, Path], EndState]


class RequestChain:
    """Requests 1..``count`` of one run and seed, cached under ``folder`` as
    ``<key>-request<k>.pt``; ``key`` names everything that determines them."""

    def __init__(self, folder: Path, key: str, count: int, step: Step) -> None:
        if count < 1:
            raise ValueError(f"the number of requests must be >= 1, got {count}")
        self.folder, self.key, self.count, self.step = Path(folder), key, count, step

    def path(self, k: int) -> Path:
        return self.folder / f"{self.key}-request{k}.pt"

    def checkpoint_dir(self, k: int) -> Path:
        """Request ``k``'s engine checkpoints while it runs."""
        return self.folder / f"{self.key}-request{k}-checkpoint"

    def end_state(self, k: int) -> EndState:
        """Request ``k``'s end state: read back, or made after request k-1's (recursively)."""
        if not 1 <= k <= self.count:
            raise ValueError(f"request {k} is outside 1..{self.count}")
        if self.path(k).exists():
            return self._load(k)
        previous = self.end_state(k - 1) if k > 1 else None
        state = self.step(k, previous, self.checkpoint_dir(k))
        if k < self.count:  # the next request starts from it
            self._save(k, state)
        shutil.rmtree(self.checkpoint_dir(k), ignore_errors=True)
        if k > 1:
            self.path(k - 1).unlink(missing_ok=True)
        return state

    def _save(self, k: int, state: EndState) -> None:
        data = {
            "request": k,
            "model": state.model,
            "optimizer": state.optimizer,
            "seconds": state.seconds,
            "extra": state.extra,
        }
        atomic_write(self.path(k), lambda f: torch.save(data, f))

    def _load(self, k: int) -> EndState:
        path = self.path(k)
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            if data["request"] != k:
                raise ValueError(f"it holds request {data['request']}")
            return EndState(data["model"], data["optimizer"], float(data["seconds"]), data["extra"])
        except Exception as err:
            raise ValueError(
                f"the end state of request {k}, {path}, is unreadable or corrupt ({err}); "
                "delete it to make the request again"
            ) from err


def request_jobs(
    template: Job,
    chain: RequestChain,
    policy: str,
    ids: Callable[[int], str],
    references: Callable[[int], tuple[str, ...]],
    extra: Callable[[int], Mapping[str, Any]] = lambda _: {},
    texts: Callable[[Mapping[str, Any]], Mapping[str, Any]] = lambda _: {},
) -> list[Job]:
    """Requests 1..K of one run on one seed as jobs of the sweep, in order: ``template`` (the
    run's one-shot job: its row, η_f, seed, config) with each request's id, references and
    record extras, run through ``chain``. Each request's end state holds what the task
    measured (``metrics``, ``curves``, optionally ``steps``); ``texts(row)`` makes the
    record's texts from it."""
    shared = {"requests": chain.count, "state_policy": policy}
    return [
        replace(
            template,
            id=ids(k),
            run=partial(_outcome, chain, k, texts),
            references=references(k),
            extra={**extra(k), "request": k, **shared},
        )
        for k in range(1, chain.count + 1)
    ]


def _outcome(
    chain: RequestChain, k: int, texts: Callable[[Mapping[str, Any]], Mapping[str, Any]]
) -> Outcome:
    end = chain.end_state(k)
    row = end.extra
    return Outcome(
        row["metrics"],
        end.seconds,
        steps=row.get("steps", {}),
        curves=row["curves"],
        extra=texts(row),
    )

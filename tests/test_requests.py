"""Forget requests (unlearn/requests.py): splits, the retain rows of each request, and a
sequence killed in the middle of request 3 that resumes bit for bit."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from tests.test_engine import Relabel, Tensors, data, model, optimizer

from dualoptim.optim.continual import carry_states
from dualoptim.unlearn import EngineConfig, Schedule, unlearn
from dualoptim.unlearn.requests import (
    EndState,
    RequestChain,
    retained_by,
    split_by_group,
    split_random,
)


def test_split_random_is_disjoint_complete_and_deterministic() -> None:
    indices = torch.arange(100, 201)
    parts = split_random(indices, 5, seed=3)
    assert [len(p) for p in parts] == [21, 20, 20, 20, 20]
    joined = torch.cat(parts)
    assert len(joined.unique()) == 101
    assert set(joined.tolist()) == set(indices.tolist())
    assert all(torch.equal(p, p.sort().values) for p in parts)
    again = split_random(indices, 5, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(parts, again, strict=True))
    other = split_random(indices, 5, seed=4)
    assert not torch.equal(parts[0], other[0])


def test_split_random_refuses_too_few() -> None:
    with pytest.raises(ValueError, match="5 requests need at least 5 indices, got 3"):
        split_random(torch.arange(3), 5, seed=0)
    with pytest.raises(ValueError, match="must be >= 1"):
        split_random(torch.arange(3), 0, seed=0)


def test_split_by_group_keeps_groups_whole_in_order() -> None:
    authors = ["b", "b", "a", "c", "a", "d", "d", "e", "f", "f"]
    parts = split_by_group(authors, 3)
    # groups in order of first appearance: b a c d e f -> (b, a) (c, d) (e, f)
    assert parts == [[0, 1, 2, 4], [3, 5, 6], [7, 8, 9]]
    assert split_by_group(["x"] * 4 + ["y"] * 4, 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(ValueError, match="3 requests need at least 3 groups, got 2"):
        split_by_group(["x", "y"], 3)


def test_retained_by_holds_the_requests_not_yet_made() -> None:
    parts = [torch.tensor([4, 9]), torch.tensor([1, 7]), torch.tensor([2])]
    assert retained_by(1, parts).tolist() == [1, 2, 7]
    assert retained_by(2, parts).tolist() == [2]
    assert retained_by(3, parts).tolist() == []
    with pytest.raises(ValueError, match=r"request 4 is outside 1\.\.3"):
        retained_by(4, parts)


# ---------------------------------------------------------------------- a chain of engine runs

FORGET_SETS = [data(12, seed) for seed in (1, 2, 3, 4)]
RETAIN = data(24, 9)


class KilledError(RuntimeError):
    pass


def _chain(folder: Path, setting: str, policy: str, kill: tuple[int, int] | None = None):
    """Four requests of Relabel, each on its own forget set; request k retains D_r plus the
    later requests' forget sets. ``kill``: (request, step) at which the run dies."""

    def step(k: int, previous: EndState | None, checkpoint: Path) -> EndState:
        net = model()
        if previous is not None:
            net.load_state_dict(previous.model)
        opt = optimizer(setting, net)
        if previous is not None:
            carry_states(opt, previous.optimizer, policy)
        later = FORGET_SETS[k:]
        retain = Tensors(
            torch.cat([RETAIN.x, *(s.x for s in later)]),
            torch.cat([RETAIN.y, *(s.y for s in later)]),
        )

        def evaluate(_model, run):
            if kill == (k, run.step):
                raise KilledError
            return {}

        cfg = EngineConfig(
            Schedule(2),
            forget_batch=4,
            retain_batch=8,
            seed=k,
            checkpoint_dir=checkpoint,
            checkpoint_every=2,
            eval_every=1,
            progress=False,
        )
        result = unlearn(net, Relabel(), FORGET_SETS[k - 1], retain, opt, cfg, evaluate=evaluate)
        return EndState(
            copy.deepcopy(net.state_dict()),
            opt.state_dict(),
            result.seconds,
            {"steps": dict(result.steps), "resumed": result.resumed_from_step},
        )

    return RequestChain(folder, f"toy-{setting}-{policy}", 4, step)


@pytest.mark.parametrize(
    ("setting", "policy"),
    [("dual", "carry"), ("dual", "reset"), ("alternate", "carry"), ("dual_plus", "carry_base")],
)
def test_killed_in_request_3_resumes_bit_identically(
    tmp_path: Path, setting: str, policy: str
) -> None:
    whole = _chain(tmp_path / "whole", setting, policy).end_state(4)

    folder = tmp_path / "killed"
    with pytest.raises(KilledError):
        _chain(folder, setting, policy, kill=(3, 7)).end_state(4)
    assert _chain(folder, setting, policy).path(2).exists()  # request 2 done, 3 interrupted
    assert (folder / f"toy-{setting}-{policy}-request3-checkpoint").exists()
    resumed = _chain(folder, setting, policy).end_state(4)

    for name, value in whole.model.items():
        assert torch.equal(value, resumed.model[name]), name
    assert resumed.optimizer["step_counts"] == whole.optimizer["step_counts"]
    assert not list(folder.iterdir())  # nothing kept once the last request is made


def test_carry_and_reset_differ_after_the_first_request(tmp_path: Path) -> None:
    carry = _chain(tmp_path, "dual", "carry").end_state(2)
    reset = _chain(tmp_path, "dual", "reset").end_state(2)
    one = _chain(tmp_path / "one", "dual", "carry").end_state(1)
    assert one.optimizer["step_counts"]["forget"] > 0
    # reset counts request 2's steps only (its retain set is smaller: R_2 is forgotten now)
    assert reset.optimizer["step_counts"] == {"forget": 6, "retain": 12}
    assert one.optimizer["step_counts"] == {"forget": 6, "retain": 16}
    assert carry.optimizer["step_counts"] == {"forget": 12, "retain": 28}
    assert any(not torch.equal(carry.model[n], reset.model[n]) for n in carry.model)


def test_a_finished_request_is_read_back_not_rerun(tmp_path: Path) -> None:
    chain = _chain(tmp_path, "dual", "carry")
    first = chain.end_state(1)
    calls = []
    again = RequestChain(tmp_path, chain.key, 4, lambda *a: calls.append(a))
    assert torch.equal(again.end_state(1).model["0.weight"], first.model["0.weight"])
    assert calls == []


def test_a_corrupt_end_state_is_named(tmp_path: Path) -> None:
    chain = _chain(tmp_path, "dual", "carry")
    chain.path(1).parent.mkdir(parents=True, exist_ok=True)
    chain.path(1).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"end state of request 1, .*request1.pt, is unreadable"):
        chain.end_state(1)
    with pytest.raises(ValueError, match=r"request 5 is outside 1\.\.4"):
        chain.end_state(5)

"""Continual TOFU unlearning (tasks/llm/requests.py): requests of whole authors, each
request's view of the rows, the reference option, and a tiny sweep of requests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.test_llm_pipeline import TINY_EXPERIMENT

from dualoptim.bench.sweeps import sweep
from dualoptim.bench.task_report import rebuild
from dualoptim.config import from_dict
from dualoptim.tasks.llm.config import LLMExperiment
from dualoptim.tasks.llm.methods import REFERENCE, LLMMethod
from dualoptim.tasks.llm.requests import LLMRequests
from dualoptim.tasks.llm.task import SAMPLES
from dualoptim.tasks.llm.world import World
from dualoptim.unlearn import RunState

REQUESTS = {"count": 2, "group_rows": 20}


def _experiment(tmp_path: Path, **changes) -> LLMExperiment:
    runs = [
        {**TINY_EXPERIMENT["runs"][0], "state_policy": policy, "eval_every": 0}
        for policy in ("reset", "carry")
    ]
    config = {
        **TINY_EXPERIMENT,
        "runs": runs,
        "requests": REQUESTS,
        "cache_dir": str(tmp_path / "cache"),
        **changes,
    }
    return from_dict(LLMExperiment, config)


def test_requests_of_whole_authors_and_their_views(tmp_path: Path) -> None:
    world = World(_experiment(tmp_path), progress=False)
    requests = LLMRequests.of(world, world.exp.requests)
    forget, retain = world.splits.forget, world.splits.retain
    assert requests.parts == [list(range(20)), list(range(20, 40))]
    first, second = requests.view(1), requests.view(2)
    assert first.splits.forget == forget[:20]
    assert first.splits.retain == retain + forget[20:]  # author 2 is still retained
    assert second.splits.forget == forget[20:]
    assert second.splits.retain == retain
    assert first.forget_pairs == world.forget_pairs[:20]
    assert second.retain_pairs == world.retain_pairs
    assert (first.forget_offset, second.forget_offset) == (0, 20)
    evaluated = world.splits.evaluation["forget"]  # eval.limit 12: 6 rows of each request
    assert first.splits.evaluation["forget"] == evaluated[:6]
    assert second.splits.evaluation["forget"] == evaluated[:6] + evaluated[20:26]
    assert second.splits.evaluation["retain"] == world.splits.evaluation["retain"]
    assert not first.forget_quality
    assert world.forget_quality
    assert world.splits.forget == forget  # the experiment's world is untouched


def test_every_request_shares_the_one_target(tmp_path: Path, monkeypatch) -> None:
    """The target is fine-tuned once on the whole forget split and the retain rows; a
    request's view (its own forget and retain rows) starts from and measures that model."""
    learned: list[int] = []

    def finetune(_world: World, pairs: list, _recipe: object) -> dict[str, torch.Tensor]:
        learned.append(len(pairs))
        return {"w": torch.full((1,), float(len(learned)))}

    monkeypatch.setattr(World, "_finetune", finetune)
    world = World(_experiment(tmp_path), progress=False)
    requests = LLMRequests.of(world, world.exp.requests)
    targets = [requests.view(k).target[0]["w"] for k in (1, 2)] + [world.target[0]["w"]]
    assert learned == [len(world.forget_pairs) + len(world.retain_pairs)]
    assert [t.item() for t in targets] == [1.0, 1.0, 1.0]


def test_request_options_are_checked(tmp_path: Path) -> None:
    world = World(_experiment(tmp_path, requests={"count": 3, "group_rows": 20}), progress=False)
    with pytest.raises(ValueError, match=r"3 requests of whole authors .* 3 groups, got 2"):
        LLMRequests.of(world, world.exp.requests)
    lora = {"r": 4, "alpha": 8, "target_modules": ["q_proj"]}
    with pytest.raises(ValueError, match=r"requests with model\.lora"):
        _experiment(tmp_path, model={**TINY_EXPERIMENT["model"], "lora": lora})
    with pytest.raises(ValueError, match="state_policy applies to continual runs"):
        _experiment(tmp_path, requests=None)
    with pytest.raises(ValueError, match=r"requests\.reference"):
        _experiment(tmp_path, requests={"reference": "target"})


def test_the_reference_is_the_given_model_or_the_one_set_up() -> None:
    start, original = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    for reference, expected in ((None, start), (original, original)):
        run = RunState(total_steps=1)
        LLMMethod("npo+gd", reference=reference).setup(start, None, run)
        frozen = run.extras[REFERENCE]
        assert torch.equal(frozen.weight, expected.weight)
        assert frozen is not expected
        assert not frozen.weight.requires_grad


@pytest.mark.slow
def test_a_sweep_of_author_requests(tmp_path: Path) -> None:
    exp = _experiment(tmp_path)
    out = tmp_path / "out"
    records = sweep(exp, out)
    by = {(r["group"], r["extra"]["request"]): r for r in records}
    assert sorted(by) == [
        ("ME+GD (dual) [carry]", 1),
        ("ME+GD (dual) [carry]", 2),
        ("ME+GD (dual) [reset]", 1),
        ("ME+GD (dual) [reset]", 2),
        ("target", 1),
        ("target", 2),
    ]
    carry, reset = "ME+GD (dual) [carry]", "ME+GD (dual) [reset]"
    assert by[(carry, 1)]["metrics"] == by[(reset, 1)]["metrics"]
    assert by[(carry, 2)]["metrics"] != by[(reset, 2)]["metrics"]
    assert all("forget_quality" not in r["metrics"] for r in records)
    # each request forgets its author: 20 rows, 2 epochs at batch 4 = 10 forget steps
    assert by[(carry, 2)]["metrics"]["steps/forget"] == 10
    assert by[(carry, 2)]["metrics"]["forget/prob"] < by[("target", 2)]["metrics"]["forget/prob"]
    assert not list((tmp_path / "cache/requests").iterdir())  # nothing kept at the end
    # the target's row of request 2 keeps its generations on the rows requested so far
    samples = by[("target", 2)]["extra"]["forget_samples"]
    assert len(samples) == SAMPLES
    assert samples != by[(carry, 2)]["extra"]["forget_samples"]

    rebuild(out)
    text = (out / "report.md").read_text()
    assert "after request 2 of 2" in text
    section = text.split("## After every request")[1]
    assert "MU drift (1 → 2)" in section
    assert "\n| target | " in section
    again = sweep(exp, out)
    assert sorted(r["id"] for r in again) == sorted(r["id"] for r in records)

"""Continual classification unlearning (tasks/vision/requests.py): the requests' splits, the
retain set of each request, RT per prefix, and a sweep of requests with its report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from tests.helpers import toy_images

from dualoptim.bench.sweeps import sweep
from dualoptim.bench.task_report import rebuild
from dualoptim.tasks.images.sets import ImageData
from dualoptim.tasks.images.train import TrainRecipe
from dualoptim.tasks.vision.config import DataSpec, UnlearnSpec, VisionExperiment
from dualoptim.tasks.vision.experiment import World
from dualoptim.tasks.vision.requests import Requests
from dualoptim.tasks.vision.splits import make_forget_split


def _world(labels: list[int], **split) -> World:
    train = toy_images(labels)
    data = ImageData("toy", train, toy_images([0, 1]))
    return World(data, make_forget_split(train, **split), torch.nn.Identity(), {}, 0.0)


def _exp(**data) -> VisionExperiment:
    return VisionExperiment(data=DataSpec(**data), requests=3)


def test_random_requests_cut_the_one_shot_forget_set() -> None:
    world = _world([i % 10 for i in range(200)], fraction=0.15, seed=4)
    requests = Requests.of(_exp(forget_fraction=0.15), world, seed=4)
    assert [len(p) for p in requests.parts] == [10, 10, 10]
    assert torch.equal(torch.cat(requests.parts).sort().values, world.split.forget)
    retain = set(world.split.retain.tolist())
    r1, r2, r3 = (set(p.tolist()) for p in requests.parts)
    assert set(requests.trained(1).forget.tolist()) == r1
    assert set(requests.trained(1).retain.tolist()) == retain | r2 | r3
    assert set(requests.trained(2).retain.tolist()) == retain | r3
    assert set(requests.measured(2).forget.tolist()) == r1 | r2
    assert requests.measured(2).retain.tolist() == requests.trained(2).retain.tolist()
    last = requests.measured(3)  # everything requested: the one-shot split
    assert torch.equal(last.forget, world.split.forget)
    assert torch.equal(last.retain, world.split.retain)
    again = Requests.of(_exp(forget_fraction=0.15), world, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(requests.parts, again.parts, strict=True))


def test_class_requests_take_whole_classes_in_the_listed_order() -> None:
    labels = [i % 10 for i in range(100)]
    world = _world(labels, classes=[7, 2, 5])
    requests = Requests.of(_exp(forget_fraction=None, forget_classes=(7, 2, 5)), world, seed=0)
    assert [sorted({labels[i] for i in p.tolist()}) for p in requests.parts] == [[7], [2], [5]]
    assert [len(p) for p in requests.parts] == [10, 10, 10]


def test_request_options_are_checked() -> None:
    with pytest.raises(ValueError, match="requests must be >= 2"):
        VisionExperiment(requests=1)
    with pytest.raises(ValueError, match="3 requests of whole classes need at least 3"):
        VisionExperiment(data=DataSpec(forget_fraction=None, forget_classes=(1, 2)), requests=3)
    with pytest.raises(ValueError, match=r"sfron \(dual\) \[carry\]: state_policy applies"):
        VisionExperiment(runs=(UnlearnSpec("sfron", "dual", state_policy="carry"),))
    with pytest.raises(ValueError, match="'alternate' setting has no base state"):
        UnlearnSpec("sfron", "alternate", state_policy="carry_base")


def _tiny(cache: Path) -> VisionExperiment:
    runs = tuple(
        UnlearnSpec("sfron", "dual", iterations=10, eval_every=5, state_policy=policy)
        for policy in ("reset", "carry")
    )
    return VisionExperiment(
        data=DataSpec(per_class_train=20, per_class_test=5, forget_fraction=0.15),
        train=TrainRecipe(epochs=2),
        runs=runs,
        seeds=(0,),
        cache_dir=str(cache),
        requests=3,
    )


@pytest.mark.slow
def test_a_sweep_of_requests_records_each_and_reports_the_last(tmp_path: Path) -> None:
    exp = _tiny(tmp_path / "cache")
    out = tmp_path / "out"
    records = sweep(exp, out)
    runs = [r for r in records if r["kind"] == "run"]
    refs = [r for r in records if r["kind"] == "reference"]
    assert sorted((r["group"], r["extra"]["request"]) for r in runs) == [
        (f"sfron (dual) [{p}]", k) for p in ("carry", "reset") for k in (1, 2, 3)
    ]
    assert sorted((r["group"], r["extra"]["request"]) for r in refs) == [
        (g, k) for g in ("RT", "no unlearning") for k in (1, 2, 3)
    ]
    by = {(r["group"], r["extra"]["request"]): r for r in records}
    # request 1 starts from the same model and a fresh optimizer under both policies
    carry, reset = "sfron (dual) [carry]", "sfron (dual) [reset]"
    assert by[(carry, 1)]["metrics"] == by[(reset, 1)]["metrics"]
    assert by[(carry, 3)]["metrics"] != by[(reset, 3)]["metrics"]
    # RT_3 is the one-shot RT of this forget set (the same cached model)
    single = (UnlearnSpec("sfron", "dual", iterations=10),)
    one_shot = sweep(dataclasses.replace(exp, requests=None, runs=single), tmp_path / "one")
    rt = next(r for r in one_shot if r["group"] == "RT")
    assert by[("RT", 3)]["metrics"] == rt["metrics"]
    assert by[("RT", 1)]["metrics"] != rt["metrics"]
    # no end state or checkpoint is kept once each sequence is done
    assert not list((tmp_path / "cache/requests").iterdir())

    rebuild(out)
    text = (out / "report.md").read_text()
    assert "## After every request" in text
    assert (out / "requests.png").exists()
    assert "after request 3 of 3" in text  # the main tables are the last request's
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rt"]["seeds"] == [0]
    section, policies = text.split("## After every request")[1].split("## Carried vs reset")
    assert section.count("sfron (dual) [") == 2
    assert "TA drift (1 → 3)" in section
    assert "sfron (dual) [carry] vs sfron (dual) [reset] | – | not resolved (1 paired" in policies
    again = sweep(exp, out)  # everything recorded: nothing runs again
    assert sorted(r["id"] for r in again) == sorted(r["id"] for r in records)

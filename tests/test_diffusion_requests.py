"""Continual diffusion unlearning (tasks/diffusion/requests.py): classes one after another,
each request's retain data and measurement, and a toy sweep of requests with its report."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from tests.test_diffusion import _toy, _toy_experiment

from dualoptim.bench.sweeps import sweep
from dualoptim.bench.task_report import rebuild
from dualoptim.tasks.diffusion.config import DiffusionExperiment, GenDataSpec, GenUnlearnSpec
from dualoptim.tasks.diffusion.requests import view
from dualoptim.tasks.diffusion.world import World


@pytest.fixture(scope="module")
def toy_exp(tmp_path_factory: pytest.TempPathFactory) -> DiffusionExperiment:
    root = tmp_path_factory.mktemp("toy-requests")
    _toy(root / "quadrants.npz")
    runs = tuple(
        GenUnlearnSpec("sfron", "dual", iterations=20, batch_size=32, state_policy=p)
        for p in ("reset", "carry")
    )
    runs_plain = (dataclasses.replace(runs[0], state_policy=None),)
    plain = _toy_experiment(root / "quadrants.npz", root / "cache", runs_plain)
    data = GenDataSpec(plain.data.name, forget_classes=(2, 0))
    return dataclasses.replace(plain, data=data, runs=runs, requests=2)


def test_a_request_view_retains_only_the_classes_not_yet_forgotten(toy_exp) -> None:
    world = World(toy_exp, progress=False)
    first, second = view(world, (2, 0), 1), view(world, (2, 0), 2)
    assert set(first.train_images.y.tolist()) == {0, 1, 2, 3}
    assert set(second.train_images.y.tolist()) == {0, 1, 3}  # class 2 was forgotten first
    assert first.masks_cached
    assert not second.masks_cached
    assert second.mask_path("sfron") is None
    assert world.forgotten_before == ()  # the experiment's world is untouched
    replay = second.replay(0, 3)
    assert set(replay.y.tolist()) == {1, 3}
    labels = second.evaluation_labels(0).tolist()
    assert labels.count(2) == labels.count(0) == toy_exp.eval.forget_images
    assert labels.count(1) == toy_exp.eval.images_per_class


@pytest.mark.slow
def test_a_sweep_of_class_requests(toy_exp, tmp_path: Path) -> None:
    out = tmp_path / "out"
    records = sweep(toy_exp, out)
    by = {(r["group"], r["extra"]["request"]): r for r in records}
    assert sorted(by) == [
        ("SFR-on+DO [carry]", 1),
        ("SFR-on+DO [carry]", 2),
        ("SFR-on+DO [reset]", 1),
        ("SFR-on+DO [reset]", 2),
        ("original", 1),
        ("original", 2),
    ]
    # the original after request 2 is measured on both forgotten classes: FA is their mean
    world = World(toy_exp, progress=False)
    one = [world.reference(c)["FA"] for c in (2, 0)]
    assert by[("original", 1)]["metrics"]["FA"] == pytest.approx(one[0])
    assert by[("original", 2)]["metrics"]["FA"] == pytest.approx(np.mean(one))
    assert by[("original", 2)]["extra"]["class_name"].count(" + ") == 1
    carry, reset = "SFR-on+DO [carry]", "SFR-on+DO [reset]"
    assert by[(carry, 1)]["metrics"] == by[(reset, 1)]["metrics"]
    assert by[(carry, 2)]["metrics"] != by[(reset, 2)]["metrics"]
    assert by[(carry, 2)]["metrics"]["steps/forget"] == 20
    assert not list((Path(toy_exp.cache_dir) / "requests").iterdir())

    rebuild(out)
    text = (out / "report.md").read_text()
    assert "2 classes forgotten one after another" in text
    assert "remaining_accuracy drift (1 → 2)" in text.split("## After every request")[1]


def test_requests_must_match_the_forget_classes(toy_exp) -> None:
    with pytest.raises(ValueError, match="set requests to 2"):
        dataclasses.replace(toy_exp, requests=3)

"""The sweep helpers every task shares: the η_f grid, the folder check, reading back."""

from __future__ import annotations

from pathlib import Path

import pytest

from dualoptim.bench.records import make_record
from dualoptim.bench.store import open_store, stored_or_made
from dualoptim.bench.sweeps import lr_grid, run_record, scaled
from dualoptim.unlearn.task import Job, Outcome


def _reference(config: dict) -> dict:
    return make_record(
        id="ref", kind="reference", group="original", seed=0, metrics={}, seconds=1.0,
        config=config,
    )  # fmt: skip


def test_the_grid_puts_the_configured_step_first_and_refuses_bad_multiples() -> None:
    assert lr_grid([3.0, 1.0, 0.333]) == [1.0, 3.0, 0.333]
    for bad in ([], [1.0, 0.0], [-2.0]):
        with pytest.raises(ValueError, match="non-empty and positive"):
            lr_grid(bad)
    assert scaled(1e-5, 3.0) == 3e-5  # not 3.0000000000000004e-05


def test_a_run_record_carries_the_job_and_the_engine_step_counts() -> None:
    job = Job(
        id="r", group="SFR-on+DO", method="sfron", setting="dual", lr_scale=3.0,
        forget_lr=3e-4, seed=1, config={"data": "a"}, run=Outcome, extra={"class_name": "Bag"},
    )  # fmt: skip
    outcome = Outcome({"FA": 12.5}, 2.0, steps={"forget": 3, "retain": 0},
                      curves={"FA": [[0, 90.0]]}, extra={"grid": "g.png"})  # fmt: skip
    record = run_record("diffusion", job, outcome, None, "data-hash")
    assert record["metrics"] == {"FA": 12.5, "steps/forget": 3.0, "steps/retain": 0.0}
    assert (record["group"], record["method"], record["setting"]) == ("SFR-on+DO", "sfron", "dual")
    assert (record["kind"], record["seed"], record["lr_scale"], record["forget_lr"]) == (
        "run", 1, 3.0, 3e-4,
    )  # fmt: skip
    assert record["task"] == "diffusion"
    assert record["extra"] == {"class_name": "Bag", "grid": "g.png"}  # the job's, then the run's
    assert (record["id"], record["config"], record["data"]) == ("r", {"data": "a"}, "data-hash")
    assert record["curves"] == {"FA": [[0, 90.0]]}
    assert record["seconds"] == 2.0


def test_a_stored_record_is_read_back_and_never_made_again(tmp_path: Path) -> None:
    store = open_store(tmp_path, {"data": "a"})
    made = []

    def make() -> dict:
        made.append(1)
        return _reference({"data": "a"})

    first = stored_or_made(store, "ref", make)
    again = stored_or_made(store, "ref", make)
    assert made == [1]
    assert again == first
    assert stored_or_made(None, "ref", make)["id"] == "ref"
    assert len(made) == 2  # without a store, every call makes the record


def test_a_folder_of_another_experiment_is_refused_before_anything_runs(tmp_path: Path) -> None:
    store = open_store(tmp_path, {"data": "a", "runs": [1]})
    store.put(_reference({"data": "a", "runs": [1]}))
    assert open_store(tmp_path, {"data": "a", "runs": [2]}) is not None  # other runs: fine
    with pytest.raises(ValueError, match="different experiments"):
        open_store(tmp_path, {"data": "b", "runs": [1]})
    assert open_store(None, {"data": "b"}) is None

"""Image-classification unlearning as a task of the one sweep: each seed draws its own forget
set and RT (the reference every run of that seed is compared with, SPEC §3.1); the tables
give each run's Gap to RT."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from dualoptim.config import from_dict
from dualoptim.io import record_id
from dualoptim.tasks.images.sets import ImageData
from dualoptim.tasks.vision.config import METRICS, UnlearnSpec, VisionExperiment
from dualoptim.tasks.vision.experiment import (
    World,
    evaluate_model,
    forget_split,
    load_experiment_data,
    original_model,
    prepare,
    reference_key,
    retrained_model,
    run_unlearning,
)
from dualoptim.tasks.vision.requests import Requests
from dualoptim.tasks.vision.requests import jobs as request_jobs
from dualoptim.tasks.vision.requests import references as request_references
from dualoptim.unlearn.task import (
    NO_UNLEARNING,
    Cells,
    Column,
    Job,
    Layout,
    Outcome,
    Reference,
    Task,
    record_config,
)

LAYOUT = Layout(
    columns=tuple(Column(m, m) for m in METRICS),
    references=("RT", NO_UNLEARNING),
    gap_to="RT",
    utility="TA",
)


@dataclass
class VisionPlan:
    exp: VisionExperiment
    data: ImageData
    progress: bool = False
    worlds: dict[int, World] = field(default_factory=dict)
    chains: dict[int, Requests] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return self.data.fingerprint

    def store_config(self) -> dict[str, Any]:
        return record_config(self.exp, None, self.exp.seeds[0])

    def world(self, seed: int) -> World:
        """This seed's forget set, original model and RT, built on first use."""
        if seed not in self.worlds:
            self.worlds[seed] = prepare(self.exp, seed, self.data, self.progress)
        return self.worlds[seed]

    def _reference_ids(self, seed: int) -> tuple[str, str]:
        """RT's and the original's record ids for ``seed`` (its forget set)."""
        key = reference_key(self.exp, self.data, seed)
        return record_id("reference", key), record_id(NO_UNLEARNING, key)

    def requests(self, seed: int) -> Requests:
        """This seed's continual requests (``exp.requests``), built on first use."""
        if seed not in self.chains:
            self.chains[seed] = Requests.of(self.exp, self.world(seed), seed)
        return self.chains[seed]

    def references(self) -> list[Reference]:
        if self.exp.requests is not None:
            key = partial(reference_key, self.exp, self.data)
            return [
                ref
                for seed in self.exp.seeds
                for ref in request_references(
                    partial(self.requests, seed), self.exp, seed, key(seed)
                )
            ]
        out = []
        for seed in self.exp.seeds:
            config = record_config(self.exp, None, seed)
            rt, original = self._reference_ids(seed)
            out += [
                Reference(rt, "RT", seed, config, partial(self._rt, seed)),
                Reference(original, NO_UNLEARNING, seed, config, partial(self._original, seed)),
            ]
        return out

    def _rt(self, seed: int) -> Outcome:
        world = self.world(seed)
        return Outcome(world.rt_metrics, world.rt_seconds)

    def _original(self, seed: int) -> Outcome:
        """The original model measured on this seed's forget set: no unlearning, no time."""
        world = self.world(seed)
        return Outcome(evaluate_model(world.original, world.data, world.split), 0.0)

    def jobs(self, spec: UnlearnSpec, lr_scale: float) -> list[Job]:
        key = partial(reference_key, self.exp, self.data)
        jobs = [
            Job(
                id=record_id("run", key(seed), self.exp.train_seed, spec, seed),
                group=spec.label,
                method=spec.method,
                setting=spec.setting,
                lr_scale=lr_scale,
                forget_lr=spec.effective_forget_lr,
                seed=seed,
                config=record_config(self.exp, spec, seed),
                run=partial(self._unlearn, spec, seed),
                references=self._reference_ids(seed),
            )
            for seed in self.exp.seeds
        ]
        if self.exp.requests is None:
            return jobs
        return [
            request
            for job in jobs
            for request in request_jobs(
                partial(self.requests, job.seed), self.exp, key(job.seed), spec, job
            )
        ]

    def _unlearn(self, spec: UnlearnSpec, seed: int) -> Outcome:
        result = run_unlearning(spec, self.world(seed), seed)
        seconds, curves = result.pop("seconds"), result.pop("curves")
        return Outcome(result, seconds, curves=curves)


class VisionTask(Task):
    name = "vision"
    config_class = VisionExperiment
    layout = LAYOUT

    def plan(
        self,
        config: VisionExperiment,
        out_dir: Path | None,  # noqa: ARG002
        progress: bool,
    ) -> VisionPlan:
        """Loads the data and checks every seed's forget set before anything trains (the
        records are all its output: nothing goes to ``out_dir``)."""
        data = load_experiment_data(config)
        for seed in config.seeds:
            forget_split(config, data, seed)
        return VisionPlan(config, data, progress)

    def run_options(self, run: Mapping[str, Any]) -> dict[str, Any]:
        """Only those the run's method and setting read (``UnlearnSpec.used_options``), so an
        SFR-on run shows its iterations and no epochs."""
        used = from_dict(UnlearnSpec, run).used_options()
        return {k: v for k, v in run.items() if k in used}

    def reference_models(self, config: VisionExperiment, command: str) -> Cells:
        """train: the original model; retrain: each seed's RT; evaluate: both, per seed."""
        data = load_experiment_data(config)
        splits = {seed: forget_split(config, data, seed) for seed in config.seeds}
        original, seconds = original_model(config, data, progress=True)
        cells = []
        for seed, split in splits.items():
            rows = []
            if command in ("train", "evaluate"):
                rows.append(("original", original, seconds))
            if command in ("retrain", "evaluate"):
                rows.append(("RT", *retrained_model(config, data, split, seed, progress=True)))
            for name, model, train_seconds in rows:
                m = evaluate_model(model, data, split)
                numbers = (f"{m[k]:.2f}" for k in ("FA", "RA", "TA", "MIA", "MIA_efficacy"))
                cells.append([name, str(seed), *numbers, f"{train_seconds:.1f}"])
        header = ["model", "seed", "FA", "RA", "TA", "MIA", "MIA_efficacy", "train s"]
        return header, cells


TASK = VisionTask()

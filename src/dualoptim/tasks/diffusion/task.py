"""Class-wise unlearning of a diffusion model as a task of the one sweep, in the paper's
Table 2 layout: per forgotten class, FA and FID, then averages over the classes. The
original model is the reference of every forgotten class (what each run starts from);
sample grids (one row per class) go to ``grids/`` beside the records."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from dualoptim.io import record_id
from dualoptim.tasks.diffusion import requests
from dualoptim.tasks.diffusion.config import DiffusionExperiment, GenUnlearnSpec
from dualoptim.tasks.diffusion.run import run_unlearning
from dualoptim.tasks.diffusion.world import World
from dualoptim.unlearn.requests import RequestChain, request_jobs
from dualoptim.unlearn.task import (
    Cells,
    Column,
    Job,
    Layout,
    Outcome,
    Reference,
    Task,
    is_failed,
    record_config,
)

REFERENCE = "original"
LAYOUT = Layout(
    # per forgotten class (Table 2's short labels, after the class name)
    columns=(
        Column("FA", "FA ↓", "lower"),
        Column("FID", "FID ↓", "lower"),
        Column("FID_inception", "FID-Inception ↓", "lower"),
    ),
    references=(REFERENCE,),
    split_by="forget_class",
    split_name="class_name",
    averages=(
        Column("FA", "FA ↓ (%)", "lower"),
        Column("FID", "FID ↓ (own classifier)", "lower"),
        Column("FID_inception", "FID ↓ (Inception-v3)", "lower"),
        Column("remaining_accuracy", "remaining classes recognised (%)", "higher"),
        Column("FID_forgotten", "forgotten class's FID ↑ (own classifier)", "higher"),
        Column("FID_inception_forgotten", "forgotten class's FID ↑ (Inception-v3)", "higher"),
    ),
    averages_title="Averages over the forgotten classes",
    digits=2,
    headline=(Column("FA", "FA", "lower"), Column("FID", "FID", "lower")),
    utility="remaining_accuracy",
)


def grid_name(label: str, forgotten: int, seed: int) -> str:
    slug = "".join(ch if ch.isalnum() else "-" for ch in label.lower()).strip("-")
    return f"grids/{slug}-class{forgotten}-seed{seed}.png"


@dataclass
class DiffusionPlan:
    exp: DiffusionExperiment
    world: World
    out_dir: Path | None

    @property
    def fingerprint(self) -> str:
        return self.world.fingerprint

    def store_config(self) -> dict[str, Any]:
        return record_config(self.exp, None, 0)

    def _extra(self, forgotten: int, grid: str) -> dict[str, Any]:
        return {
            "forget_class": forgotten,
            "class_name": self.world.data.class_names[forgotten],
            "grid": grid,
            "classifier_accuracy": self.world.classifier_accuracy,
        }

    def _reference_id(self, forgotten: int) -> str:
        return record_id("diffusion-reference", self.world.key, forgotten)

    def references(self) -> list[Reference]:
        config = record_config(self.exp, None, 0)
        seed = self.exp.train.seed
        if self.exp.requests is not None:
            return [
                Reference(
                    self._request_ref_id(k), REFERENCE, seed, config, partial(self._before, k)
                )
                for k in range(1, self.exp.requests + 1)
            ]
        return [
            Reference(self._reference_id(c), REFERENCE, seed, config, partial(self._original, c))
            for c in self.exp.data.forget_classes
        ]

    def _original(self, forgotten: int) -> Outcome:
        world = self.world
        grid = grid_name(REFERENCE, forgotten, self.exp.train.seed)
        if self.out_dir is not None:
            world.grid(world.original_samples, self.out_dir / grid, "original model")
        metrics = world.reference(forgotten)
        return Outcome(metrics, world.original[1], extra=self._extra(forgotten, grid))

    # ------------------------------------------------------------------ continual requests
    def _request_ref_id(self, k: int) -> str:
        return record_id("diffusion-reference", self.world.key, "request", k, self.exp.data)

    def _request_extra(self, k: int, grid: str) -> dict[str, Any]:
        """A request's record: its class, and every class forgotten by then as the name."""
        classes = self.exp.data.forget_classes
        names = [self.world.data.class_names[c] for c in classes[:k]]
        extra = self._extra(classes[k - 1], grid)
        return {**extra, "class_name": " + ".join(names), "request": k}

    def _before(self, k: int) -> Outcome:
        """The original model measured after request ``k``: on every class forgotten so far."""
        classes, seed = self.exp.data.forget_classes, self.exp.train.seed
        grid = grid_name(REFERENCE, classes[0], seed)  # the same samples for every request
        if self.out_dir is not None and k == 1:
            world = self.world
            world.grid(world.original_samples, self.out_dir / grid, "original model")
        metrics = requests.view(self.world, classes, k).reference(classes[k - 1])
        return Outcome(metrics, self.world.original[1], extra=self._request_extra(k, grid))

    def _request_jobs(self, spec: GenUnlearnSpec, run: Job) -> list[Job]:
        """The classes one after another on ``run``'s seed (``run``: its one-shot job for
        the first class, whose row, η_f and config the requests share)."""
        classes, seed = self.exp.data.forget_classes, run.seed
        label = f"{spec.label}-lr{spec.effective_forget_lr:g}"
        grids = [grid_name(label, c, seed) for c in classes]
        chain = RequestChain(
            self.world.cache / "requests",
            record_id("diffusion-chain", self.world.key, spec, seed, self.exp.data),
            len(classes),
            partial(
                requests.step,
                self.world,
                classes,
                spec,
                seed,
                [None if self.out_dir is None else self.out_dir / g for g in grids],
            ),
        )
        return request_jobs(
            run,
            chain,
            spec.effective_state_policy,
            ids=partial(record_id, "diffusion-run", self.world.key, spec, seed, "request"),
            references=lambda k: (self._request_ref_id(k),),
            extra=lambda k: self._request_extra(k, grids[k - 1]),
        )

    # ------------------------------------------------------------------ runs
    def jobs(self, spec: GenUnlearnSpec, lr_scale: float) -> list[Job]:
        jobs = []
        for forgotten in self.exp.data.forget_classes:
            for seed in self.exp.seeds:
                # two rows may share a label (SalUn at two η_f), never a label and an η_f
                grid = grid_name(f"{spec.label}-lr{spec.effective_forget_lr:g}", forgotten, seed)
                id = record_id("diffusion-run", self.world.key, spec, forgotten, seed)
                jobs.append(
                    Job(
                        id=id,
                        group=spec.label,
                        method=spec.method,
                        setting=spec.resolved_setting,
                        lr_scale=lr_scale,
                        forget_lr=spec.effective_forget_lr,
                        seed=seed,
                        config=record_config(self.exp, spec, seed),
                        run=partial(self._unlearn, spec, forgotten, seed, grid, id),
                        references=(self._reference_id(forgotten),),
                        extra=self._extra(forgotten, grid),
                    )
                )
        if self.exp.requests is None:
            return jobs
        first = self.exp.data.forget_classes[0]
        runs = [job for job in jobs if job.extra["forget_class"] == first]
        return [request for run in runs for request in self._request_jobs(spec, run)]

    def _unlearn(self, spec: GenUnlearnSpec, forgotten: int, seed: int, grid: str, id: str):
        path = self.out_dir / grid if self.out_dir is not None else None
        checkpoints = self.world.cache / "runs" / id
        result = run_unlearning(
            spec, self.world, forgotten, seed, grid=path, checkpoint_dir=checkpoints
        )
        return Outcome(
            result["metrics"], result["seconds"], steps=result["steps"], curves=result["curves"]
        )


class DiffusionTask(Task):
    name = "diffusion"
    config_class = DiffusionExperiment
    layout = LAYOUT

    def plan(
        self, config: DiffusionExperiment, out_dir: Path | None, progress: bool
    ) -> DiffusionPlan:
        return DiffusionPlan(config, World(config, progress=progress), out_dir)

    def reference_models(self, config: DiffusionExperiment, command: str) -> Cells:
        """train: the original denoiser and the classifier; evaluate: the original's FA/FID
        for each forgotten class. No retrained reference: Table 2 starts from the original."""
        if command == "retrain":
            raise ValueError(
                "diffusion has no retrained reference (Table 2 compares with the original "
                "model); use train or evaluate"
            )
        world = World(config)
        cells = [["original denoiser", f"{world.original[1]:.0f}", "", ""]]
        cells.append(["classifier (test accuracy %)", "", f"{world.classifier_accuracy:.2f}", ""])
        if command == "evaluate":
            for forgotten in config.data.forget_classes:
                m = world.reference(forgotten)
                name = world.data.class_names[forgotten]
                cells.append(
                    [f"original, FA/FID for {name}", "", f"{m['FA']:.2f}", f"{m['FID']:.2f}"]
                )
        return ["model", "train s", "FA / acc", "FID"], cells

    def intro(self, records: Sequence[Mapping[str, Any]]) -> str:
        first = records[0]
        evaluation = first["config"]["eval"]
        accuracy = first["extra"]["classifier_accuracy"]
        n_classes = len({r["extra"]["forget_class"] for r in records})
        forgotten = f"{n_classes} forgotten class(es)"
        if "request" in first["extra"]:
            n_classes = len(first["config"]["data"]["forget_classes"])
            forgotten = (
                f"{n_classes} classes forgotten one after another (continual requests; the "
                "tables are after the last, FA and the forgotten FIDs averaged over them)"
            )
        return (
            f"{first['config']['data']['name']}, class-wise unlearning of a class-conditional "
            f"diffusion model ({first['config']['model']['kind']}), {forgotten}. "
            "Table 2 of the paper: per forgotten class, FA (% of "
            f"{evaluation['forget_images']} generated images of that class that our classifier "
            "assigns to it) and FID of generated images of the remaining classes "
            f"({evaluation['images_per_class']} per class) against "
            f"{evaluation['real_per_class']} real test images per class, in the penultimate "
            f"features of our own classifier (test accuracy {accuracy:.1f}%). Row `original` "
            "is the model before unlearning. `seconds`: median unlearning time per run "
            "(training for the original). FIDs on small samples are biased upwards: compare "
            "rows, not papers.\n\n"
        )

    def appendix(self, records: Sequence[Mapping[str, Any]], out_dir: Path) -> str:
        """The sample grids: the first seed of each row; the rest are in ``grids/``."""
        grids = [
            "\n## Samples (one row per class, the same noise for every model)\n\n"
            "The first seed of each row; the other seeds' grids are in `grids/`, named by seed.\n"
        ]
        # no grid: a failed run, or one read from the cache's record store (its grid is in
        # the output folder it was run for)
        drawn = [r for r in records if not is_failed(r) and (out_dir / r["extra"]["grid"]).exists()]

        def row(r: Mapping[str, Any]) -> tuple:
            return (
                r["extra"]["forget_class"],
                r["kind"] != "reference",
                r["group"],
                -(r.get("forget_lr") or 0),
            )

        first_seed: dict[tuple, int] = {}
        for r in drawn:
            first_seed[row(r)] = min(first_seed.get(row(r), r["seed"]), r["seed"])
        shown = sorted((r for r in drawn if first_seed[row(r)] == r["seed"]), key=row)
        for r in shown:
            eta = f" at η_f {r['forget_lr']:g}" if r["kind"] == "run" else ""
            grids.append(
                f"\n**{r['group']}**{eta}, forgetting {r['extra']['class_name']} "
                f"(seed {r['seed']}):\n\n![{r['group']}]({r['extra']['grid']})\n"
            )
        return "".join(dict.fromkeys(grids))


TASK = DiffusionTask()

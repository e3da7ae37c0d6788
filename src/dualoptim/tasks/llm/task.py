"""TOFU unlearning as a task of the one sweep, in the paper's Table 3 layout. The target
(before unlearning) and the retain model are the references, so every table shows where a
method starts and what it aims for."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any, ClassVar

from dualoptim.io import record_id
from dualoptim.tasks.llm.config import LLMExperiment, LLMUnlearnSpec
from dualoptim.tasks.llm.downstream import AVERAGE
from dualoptim.tasks.llm.requests import LLMRequests
from dualoptim.tasks.llm.requests import jobs as request_jobs
from dualoptim.tasks.llm.requests import references as request_references
from dualoptim.tasks.llm.run import run_unlearning
from dualoptim.tasks.llm.world import World
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

#: Table 3's columns (forget efficacy, model utility, overall), then TOFU's own numbers.
LAYOUT = Layout(
    columns=(
        Column("UFE", "FE (UFE) ↑", "higher"),
        Column("MU", "MU (paper) ↑", "higher"),
        Column("OVR", "OVR ↑", "higher"),
        Column("forget_quality", "FQ ↑", "higher"),
        Column("model_utility", "MU (TOFU) ↑", "higher"),
        Column("forget/rouge", "forget ROUGE-L", "lower"),
        Column("forget/prob", "forget Prob", "lower"),
        Column("retain/rouge", "retain ROUGE-L", "higher"),
    ),
    references=("target", "retain model"),
    headline=(Column("OVR", "OVR", "higher"),),
    curves=("forget/prob", "retain/prob"),
    curves_title="Forget and retain Prob during unlearning",
    utility="MU",
)
SAMPLES = 3  # forget-split generations kept per record, for the report
#: The summary columns of ``train``/``retrain``/``evaluate``.
MODEL_COLUMNS = ("forget_quality", "model_utility", "forget/rouge", "retain/rouge", "UFE", "MU")


def _lora_note(model: Mapping[str, Any]) -> str:
    """What a LoRA experiment's runs trained, for the report's first lines."""
    lora = model.get("lora")
    if lora is None:
        return ""
    targets = ", ".join(lora["target_modules"])
    return (
        f" Unlearning trained LoRA adapters only (r {lora['r']}, alpha {lora['alpha']:g}, "
        f"dropout {lora['dropout']:g}, on {targets}); the target and the retain model are "
        "fine-tuned in full."
    )


@dataclass
class LLMPlan:
    exp: LLMExperiment
    world: World
    progress: bool
    #: The tables' layout and the records' id prefix (the real-world task's plan changes both).
    layout: ClassVar[Layout] = LAYOUT
    kind: ClassVar[str] = "llm"

    @property
    def fingerprint(self) -> str:
        return self.world.fingerprint

    def store_config(self) -> dict[str, Any]:
        return record_config(self.exp, None, 0)

    def _reference_id(self, name: str) -> str:
        return record_id(f"{self.kind}-reference", self.world.key, name)

    @cached_property
    def requests(self) -> LLMRequests | None:
        """The continual requests of ``exp.requests`` (None: one request)."""
        options = self.exp.requests
        return None if options is None else LLMRequests.of(self.world, options)

    def references(self) -> list[Reference]:
        config = record_config(self.exp, None, 0)
        if self.requests is not None:
            before = self.layout.references[0]
            return request_references(self.requests, self.kind, config, before, self._target)
        return [
            Reference(
                self._reference_id(name),
                name,
                self.world.reference_seed,
                config,
                partial(self._reference, name),
            )
            for name in self.layout.references
        ]

    def _reference_texts(self) -> dict[str, Any]:
        """What a reference's record carries beyond its metrics and generations."""
        return {}

    def _reference(self, name: str) -> Outcome:
        """A reference's row: TOFU's target or retain model; the other LLM tasks' one
        reference, the initial model, is their world's target."""
        world = self.world
        if name == "retain model":
            return self._fixed_model(world, world.retain_model, world.retain_evaluation)
        return self._target(world)

    def _target(self, world: World) -> Outcome:
        """The target's row on ``world``'s rows (a continual request's view, or all)."""
        return self._fixed_model(world, world.target, world.target_evaluation)

    def _fixed_model(
        self, world: World, model: tuple[Any, float], evaluation: Mapping[str, Any]
    ) -> Outcome:
        """The row of a model no run trains (``model``: its state and the seconds it took):
        its metrics from ``evaluation`` and its record's texts."""
        state, seconds = model
        metrics = fixed_model_metrics(world, state, evaluation)
        texts = self.texts(
            evaluation["generations"], world.variant(False), world.downstream_unavailable
        )
        return Outcome(metrics, seconds, extra={**texts, **self._reference_texts()})

    def samples(self, generations: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        """The generations a record keeps for the report: the first forget ones."""
        return {"forget_samples": list(generations["forget"][:SAMPLES])}

    def texts(
        self, generations: Mapping[str, Sequence[str]], variant: str, downstream: str | None
    ) -> dict[str, Any]:
        """A record's texts: the metric variant, ``samples`` and, when the downstream
        benchmarks gave no numbers, why."""
        extra = {"metric_variant": variant, **self.samples(generations)}
        if downstream is not None:
            extra["downstream"] = downstream
        return extra

    def _row_texts(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A measured row's texts for its record."""
        return self.texts(row["generations"], row["variant"], row["downstream"])

    def jobs(self, spec: LLMUnlearnSpec, lr_scale: float) -> list[Job]:
        jobs = [
            Job(
                id=record_id(f"{self.kind}-run", self.world.key, spec, seed),
                group=spec.label,
                method=spec.method,
                setting=spec.setting,
                lr_scale=lr_scale,
                forget_lr=spec.effective_forget_lr,
                seed=seed,
                config=record_config(self.exp, spec, seed),
                run=partial(self._unlearn, spec, seed),
                references=tuple(self._reference_id(name) for name in self.layout.references),
            )
            for seed in self.exp.seeds
        ]
        if self.requests is None:
            return jobs
        return [
            request
            for job in jobs
            for request in request_jobs(
                self.requests, self.kind, spec, job, self.progress, self._row_texts
            )
        ]

    def _unlearn(self, spec: LLMUnlearnSpec, seed: int) -> Outcome:
        result = run_unlearning(spec, self.world, seed, progress=self.progress)
        return Outcome(
            result["metrics"],
            result["seconds"],
            steps=result["steps"],
            curves=result["curves"],
            extra=self._row_texts(result),
        )


class LLMTask(Task):
    name = "llm"
    config_class = LLMExperiment
    layout = LAYOUT

    def plan(self, config: LLMExperiment, out_dir: Path | None, progress: bool) -> LLMPlan:  # noqa: ARG002
        return LLMPlan(config, World(config, progress=progress), progress)

    def reference_models(self, config: LLMExperiment, command: str) -> Cells:
        """train: the target; retrain: the retain model; evaluate: both, on the TOFU suite
        (and the downstream benchmarks when the config sets them)."""
        world = World(config)
        rows = []
        if command in ("train", "evaluate"):
            rows.append(("target", world.target, world.target_evaluation))
        if command in ("retrain", "evaluate"):
            rows.append(("retain model", world.retain_model, world.retain_evaluation))
        return reference_cells(world, rows)

    def intro(self, records: Sequence[Mapping[str, Any]]) -> str:
        config = records[0]["config"]
        finished = [r for r in records if not is_failed(r)]
        variants = sorted({r.get("extra", {}).get("metric_variant", "?") for r in finished})
        if config.get("requests") is None:
            tofu = (
                "TOFU's Forget Quality (KS-test p-value against the retain model) and Model Utility"
            )
            references = (
                "Rows `target` and `retain model` are the references: before unlearning, and "
                "the model never trained on the forget authors."
            )
        else:  # continual: the retain model matches the forget set only after the last one
            tofu = "TOFU's Model Utility (no Forget Quality: see docs/continual.md)"
            references = (
                "Row `target` is the reference: the model before unlearning, measured on the "
                "same rows."
            )
        return (
            f"TOFU, forget split `{config['data']['forget_split']}`."
            f"{_lora_note(config['model'])} Table 3 of the paper: forget efficacy (UFE), "
            "model utility (MU, the paper's harmonic mean) and overall (OVR), then "
            f"{tofu}. Closer-Look variant: {'; '.join(variants)}. {references}"
            f"{downstream_note(records)}\n\n"
        )

    def appendix(self, records: Sequence[Mapping[str, Any]], out_dir: Path) -> str:  # noqa: ARG002
        """The first forget-split generations of every record (a failed run: its error),
        each run's under its row and η_f: a sweep has one row per η_f."""
        samples = ["\n## Forget-split generations (first questions)\n"]
        for r in sorted(records, key=_by_row):
            at = f" at η_f {r['forget_lr']:g}" if r.get("forget_lr") is not None else ""
            title = f"\n**{r['group']}**{at} (seed {r['seed']})"
            if is_failed(r):
                samples.append(f"{title}: {r['error']['message']}\n")
                continue
            samples.append(f"{title}:\n\n")
            samples += [f"- {t!r}\n" for t in r.get("extra", {}).get("forget_samples", [])]
        return "".join(samples)


def fixed_model_metrics(
    world: World, state: Mapping[str, Any], evaluation: Mapping[str, Any]
) -> dict[str, float]:
    """The metrics of a model no run trains (the target, the retain model), whose
    ``evaluation`` the world cached; its state loads only for the downstream benchmarks."""
    return world.metrics(
        evaluation["scores"], evaluation["forget_ratios"], False, partial(world.new_model, state)
    )


def reference_cells(
    world: World,
    rows: Sequence[tuple[str, tuple[Any, float], Mapping[str, Any]]],
    columns: Sequence[str] = MODEL_COLUMNS,
) -> Cells:
    """The reference-model commands' table: each (name, (state, seconds), evaluation) row's
    ``columns``, training seconds and downstream numbers."""
    cells = []
    for name, (state, seconds), evaluation in rows:
        m = fixed_model_metrics(world, state, evaluation)
        values = [f"{m[c]:.3f}" for c in columns]
        cells.append([name, *values, f"{seconds:.0f}", *downstream_cells(world, m)])
    return ["model", *columns, "train s", *downstream_header(world)], cells


def downstream_header(world: World) -> list[str]:
    """The ``evaluate`` table's downstream columns (none unless the config sets them)."""
    options = world.exp.downstream
    if options is None:
        return []
    return [*(options.label(t) for t in options.tasks), "AVG"]


def downstream_cells(world: World, metrics: Mapping[str, float]) -> list[str]:
    """A model's downstream cells; all but the first "–" when the benchmarks' data was
    unavailable, the first saying why."""
    options = world.exp.downstream
    if options is None:
        return []
    if world.downstream_unavailable is not None:
        return [world.downstream_unavailable] + ["–"] * len(options.tasks)
    return [f"{metrics[f'downstream/{t}']:.3f}" for t in (*options.tasks, AVERAGE)]


def downstream_note(records: Sequence[Mapping[str, Any]]) -> str:
    """The report's sentence on downstream utility: which lm-eval tasks and limit, or why
    there are no numbers ("not available offline")."""
    config = records[0]["config"].get("downstream")
    if config is None:
        return ""
    reasons = sorted(
        {r["extra"]["downstream"] for r in records if "downstream" in r.get("extra", {})}
    )
    if reasons:
        return f" Downstream utility (lm-eval): {'; '.join(reasons)}."
    limit = "all items" if config["limit"] is None else f"the first {config['limit']} items"
    return (
        f" Downstream utility: lm-evaluation-harness on {', '.join(config['tasks'])}, "
        f"{limit} of each (`downstream/*` columns; AVG their mean)."
    )


def _by_row(record: Mapping[str, Any]) -> tuple:
    """References first, then each row (label, η_f) seed by seed."""
    return (record["kind"], record["group"], record.get("forget_lr") or 0.0, record["seed"])


TASK = LLMTask()

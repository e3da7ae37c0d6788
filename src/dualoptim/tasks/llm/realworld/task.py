"""Real-world knowledge unlearning as a task of the one sweep (SPEC §2.4), in the talk's layout:
the initial model first, then each loss under each optimizer setting; UFE, TFE, MU, OVR.

It is the LLM task with another world (``world.RealWorld``): the runs, their optimizers and the
engine are the same code; the reference is the initial model, measured once, and its record
carries the probe's table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from dualoptim.tasks.llm.downstream import AVERAGE, TALK_TASKS
from dualoptim.tasks.llm.realworld.config import RealWorldExperiment
from dualoptim.tasks.llm.realworld.world import RealWorld
from dualoptim.tasks.llm.task import (
    LLMPlan,
    LLMTask,
    downstream_note,
    reference_cells,
)
from dualoptim.unlearn.task import Cells, Column, Layout, is_failed

INITIAL = "initial"
LAYOUT = Layout(
    columns=(
        Column("UFE", "UFE ↑", "higher"),
        Column("TFE", "TFE ↑", "higher"),
        Column("MU", "MU ↑", "higher"),
        Column("OVR", "OVR ↑", "higher"),
        Column("forget/rouge", "forget ROUGE-L", "lower"),
        Column("forget/prob", "forget Prob", "lower"),
        Column("utility/rouge", "utility ROUGE-L", "higher"),
        Column("utility/prob", "utility Prob", "higher"),
        *(Column(f"downstream/{t}", label, "higher") for t, (label, _) in TALK_TASKS.items()),
        Column(f"downstream/{AVERAGE}", "downstream AVG", "higher"),
    ),
    references=(INITIAL,),
    headline=(Column("OVR", "OVR", "higher"),),
    curves=("forget/prob", "utility/prob"),
    curves_title="Forget and utility Prob during unlearning",
    utility="MU",
)
#: The summary columns of ``evaluate``.
MODEL_COLUMNS = ("UFE", "MU", "OVR", "forget/rouge", "utility/rouge")
PROBE_COLUMNS = ("file", "name", "questions", "known", "kept", "rouge", "prob", "truth_first")


@dataclass
class RealWorldPlan(LLMPlan):
    exp: RealWorldExperiment
    world: RealWorld
    layout: ClassVar[Layout] = LAYOUT
    kind: ClassVar[str] = "realworld"

    def _reference_texts(self) -> dict[str, Any]:
        """The probe's table and the people kept, for the report's intro and appendix."""
        world = self.world
        people = {f: world.data.people(f) for f in ("forget", "neighbor_perturbed")}
        return {"probe": world.probe_table(), "people": people}


class RealWorldTask(LLMTask):
    name = "realworld"
    config_class = RealWorldExperiment
    layout = LAYOUT

    def plan(self, config: RealWorldExperiment, out_dir: Path | None, progress: bool):  # noqa: ARG002
        return RealWorldPlan(config, RealWorld(config, progress=progress), progress)

    def reference_models(self, config: RealWorldExperiment, command: str) -> Cells:
        """evaluate: the initial model on the Closer-Look suite (train and retrain have no
        model to make here: there is no target fine-tuning and no retain model)."""
        if command != "evaluate":
            raise ValueError(
                f"{command}: the real-world task has no target fine-tuning and no retain model "
                "(SPEC §2.4); use evaluate (the initial model) or unlearn"
            )
        world = RealWorld(config)
        rows = [(INITIAL, world.target, world.target_evaluation)]
        return reference_cells(world, rows, MODEL_COLUMNS)

    def intro(self, records: Sequence[Mapping[str, Any]]) -> str:
        config = records[0]["config"]
        source = config["data"]["source"] or "the built-in set"
        initial = [r for r in records if r["group"] == INITIAL and not is_failed(r)]
        people = initial[0]["extra"].get("people", {}) if initial else {}
        who = (
            f" {len(people['forget'])} people to forget, {len(people['neighbor_perturbed'])} "
            "neighbours measuring utility (after the probe)."
            if people
            else ""
        )
        finished = [r for r in records if not is_failed(r)]
        variants = sorted({r.get("extra", {}).get("metric_variant", "?") for r in finished})
        return (
            f"Real-world knowledge unlearning (SPEC §2.4) on {source}.{who} The talk's table: "
            "forget efficacy (UFE), refusal (TFE, IDK methods with an entailment model), model "
            "utility on the neighbours (MU) and overall (OVR). Closer-Look variant: "
            f"{'; '.join(variants)}. Row `{INITIAL}` is the model before unlearning: there is "
            f"no fine-tuned target and no retain model, so no Forget Quality."
            f"{downstream_note(records)}\n\n"
        )

    def appendix(self, records: Sequence[Mapping[str, Any]], out_dir: Path) -> str:
        return _probe_section(records) + super().appendix(records, out_dir)


def _probe_section(records: Sequence[Mapping[str, Any]]) -> str:
    """The probe's table from the initial model's record: who it knows, per file."""
    initial = [r for r in records if r["group"] == INITIAL and not is_failed(r)]
    rows = initial[0]["extra"].get("probe", []) if initial else []
    if not rows:
        return "\n## Probe\n\nNo probe (`data.probe: null`): every question was kept.\n"
    probe = initial[0]["config"]["data"]["probe"]
    lines = [
        "\n## Probe: what the initial model knows\n\n",
        f"Thresholds: {', '.join(f'{k} {v}' for k, v in probe.items())}. A question is known "
        "when it passes all of them; a person stays with their known questions when they "
        "have at least `min_questions`.\n\n",
        "| " + " | ".join(PROBE_COLUMNS) + " |\n",
        "|" + "---|" * len(PROBE_COLUMNS) + "\n",
    ]
    for row in rows:
        cells = [_probe_cell(row[c]) for c in PROBE_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |\n")
    return "".join(lines)


def _probe_cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    return "–" if value is None else str(value)


TASK = RealWorldTask()

"""Safety alignment as a task of the one sweep (SPEC §2.5), in the talk's layout: the initial
model first, then each setting; Safety (four sets and AVG) | Utility | OVR | XSTest.

It is the LLM task with another world (``world.SafetyWorld``): the runs, their optimizers and
the engine are the same code. Records keep a few completions per set, truncated; of the
harmful sets only refusals are kept, so a report never reprints harmful text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from dualoptim.tasks.llm.downstream import AVERAGE, TALK_TASKS
from dualoptim.tasks.llm.safety import scoring
from dualoptim.tasks.llm.safety.config import SafetyExperiment
from dualoptim.tasks.llm.safety.data import SAFETY_SETS
from dualoptim.tasks.llm.safety.refusal import is_refusal
from dualoptim.tasks.llm.safety.world import SafetyWorld
from dualoptim.tasks.llm.task import LLMPlan, LLMTask, downstream_note
from dualoptim.unlearn.task import Cells, Column, Layout, is_failed

INITIAL = "initial"
LAYOUT = Layout(
    columns=(
        *(Column(f"safe/{name}", f"{name} ↑", "higher") for name in SAFETY_SETS),
        Column(f"safe/{scoring.AVERAGE}", "Safety AVG ↑", "higher"),
        *(Column(f"downstream/{t}", label, "higher") for t, (label, _) in TALK_TASKS.items()),
        Column(f"downstream/{AVERAGE}", "Utility AVG ↑", "higher"),
        Column("helpful/refusal", "I-Alpaca refused ↓", "lower"),
        Column("helpful/rouge", "I-Alpaca ROUGE-L ↑", "higher"),
        Column("utility/offline", "Utility (offline) ↑", "higher"),
        Column("OVR", "OVR ↑", "higher"),
        Column("over_refusal", "XSTest ↓", "lower"),
    ),
    references=(INITIAL,),
    headline=(
        Column("OVR", "OVR", "higher"),
        Column(f"safe/{scoring.AVERAGE}", "Safety AVG", "higher"),
        Column("over_refusal", "XSTest", "lower"),
    ),
    curves=("forget/prob", "retain/prob"),
    curves_title="Prob of the safe answers (forget) and of the retain answers",
    digits=2,
)
SAMPLES = 2  # completions kept per set
SAMPLE_CHARS = 160


def samples(completions: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """A few completions per set, truncated: of the harmful sets only refusals."""
    out = {}
    for name, texts in completions.items():
        shown = [t for t in texts if is_refusal(t)] if name in SAFETY_SETS else list(texts)
        out[name] = [t if len(t) <= SAMPLE_CHARS else t[:SAMPLE_CHARS] + " …" for t in shown][
            :SAMPLES
        ]
    return out


@dataclass
class SafetyPlan(LLMPlan):
    exp: SafetyExperiment
    world: SafetyWorld
    layout: ClassVar[Layout] = LAYOUT
    kind: ClassVar[str] = "safety"

    def samples(self, generations: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        return {"samples": samples(generations)}


class SafetyTask(LLMTask):
    name = "safety"
    config_class = SafetyExperiment
    layout = LAYOUT

    def plan(self, config: SafetyExperiment, out_dir: Path | None, progress: bool):  # noqa: ARG002
        return SafetyPlan(config, SafetyWorld(config, progress=progress), progress)

    def reference_models(self, config: SafetyExperiment, command: str) -> Cells:
        """evaluate: the initial model's scores; train: the same, once the model has been
        fine-tuned on the retain instructions (``finetune``). There is no retain model."""
        if command == "retrain" or (command == "train" and config.finetune is None):
            what = "no retain model" if command == "retrain" else "no finetune recipe set"
            raise ValueError(
                f"{command}: the safety task has {what} (SPEC §2.5); use evaluate (the initial "
                "model), or set finetune with instruction retain data to train it"
            )
        world = SafetyWorld(config)
        model = partial(world.new_model, world.target[0])
        metrics = world.metrics(world.target_evaluation["scores"], [], False, model)
        shown = [c for c in LAYOUT.columns if c.metric in metrics]
        cells = [[INITIAL, *(f"{metrics[c.metric]:.2f}" for c in shown)]]
        return ["model", *(c.label for c in shown)], cells

    def intro(self, records: Sequence[Mapping[str, Any]]) -> str:
        config = records[0]["config"]
        data, retain = config["data"], config["retain"]
        rows = "all 2,483" if data["forget_rows"] is None else f"{data['forget_rows']} of the 2,483"
        first = "every row" if retain["rows"] is None else f"the first {retain['rows']} rows"
        kept = (
            f"{first} of the instruction set {retain['source']}"
            if retain["kind"] == "instructions"
            else f"{first} of the benign prompts {retain['source'] or '(built-in, 120)'}, "
            "answered by the initial model"
        )
        finished = [r for r in records if not is_failed(r)]
        variants = sorted({r.get("extra", {}).get("metric_variant", "?") for r in finished})
        downstream = any(f"downstream/{AVERAGE}" in r.get("metrics", {}) for r in finished)
        utility = "Utility AVG (downstream)" if downstream else "Utility (offline)"
        return (
            "Safety alignment as unlearning (SPEC §2.5), the talk's table: the % of safe "
            f"completions on four harmful sets and their AVG, utility, OVR = (Safety AVG + "
            f"{utility})/2 (ours: the talk does not define its OVR; the offline utility "
            "is the mean of I-Alpaca's non-refused % and its ROUGE-L against the initial "
            "model's completions), and XSTest's over-refusal on its safe prompts. "
            f"Forget: {rows} safety pairs (sample seed {data['sample_seed']}), "
            f"the IDK loss towards their safe answers; retain: {kept}. Scorer: "
            f"{'; '.join(variants)}. Row `{INITIAL}` is the model before unlearning"
            f"{_tuned(config.get('finetune'))}."
            f"{downstream_note(records)}\n\n"
        )

    def appendix(self, records: Sequence[Mapping[str, Any]], out_dir: Path) -> str:  # noqa: ARG002
        """A few completions of each record, per set (harmful sets: refusals only)."""
        parts = ["\n## Sample completions (truncated; harmful sets show refusals only)\n"]
        for r in sorted(records, key=lambda r: (r["kind"], r["group"], r["seed"])):
            if is_failed(r):
                parts.append(f"\n**{r['group']}** (seed {r['seed']}): {r['error']['message']}\n")
                continue
            parts.append(f"\n**{r['group']}** (seed {r['seed']}):\n\n")
            for name, texts in r.get("extra", {}).get("samples", {}).items():
                parts += [f"- {name}: {t!r}\n" for t in texts]
        return "".join(parts)


def _tuned(recipe: Mapping[str, Any] | None) -> str:
    """How the initial model was made, when it was fine-tuned first."""
    if recipe is None:
        return ""
    return (
        f", fine-tuned first on the retain instructions ({recipe['epochs']} epochs at "
        f"{recipe['lr']:g}, batch {recipe['batch_size']} × {recipe['accumulation']})"
    )


TASK = SafetyTask()

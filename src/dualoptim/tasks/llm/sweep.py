"""TOFU runs × seeds, one record per run, and the paper's Table 3 layout from the records.

The target (before unlearning) and the retain model are recorded as references, so every
table shows where a method starts and what it aims for. Records are written as runs
finish; a rerun skips the runs whose records exist.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from dualoptim.bench.metric_table import metric_csv, metric_rows, metric_table
from dualoptim.bench.plots import plot_curves
from dualoptim.bench.records import is_failed, make_record, record_id
from dualoptim.bench.report import write_text_report
from dualoptim.bench.sweeps import (
    attempt,
    lr_grid,
    match_grid,
    note_failures,
    open_store,
    run_record,
    scaled,
    stored_or_made,
)
from dualoptim.bench.tables import markdown
from dualoptim.config import to_dict
from dualoptim.tasks.llm.config import LLMExperiment, LLMUnlearnSpec
from dualoptim.tasks.llm.run import run_unlearning
from dualoptim.tasks.llm.world import World

#: Table 3's columns (forget efficacy, model utility, overall), then TOFU's own numbers.
METRICS = (
    "UFE",
    "MU",
    "OVR",
    "forget_quality",
    "model_utility",
    "forget/rouge",
    "forget/prob",
    "retain/rouge",
)
LABELS = {
    "UFE": "FE (UFE) ↑",
    "MU": "MU (paper) ↑",
    "OVR": "OVR ↑",
    "forget_quality": "FQ ↑",
    "model_utility": "MU (TOFU) ↑",
    "forget/rouge": "forget ROUGE-L",
    "forget/prob": "forget Prob",
    "retain/rouge": "retain ROUGE-L",
}
REFERENCES = ("target", "retain model")
CURVES = ("forget/prob", "retain/prob")
SAMPLES = 3  # forget-split generations kept per record, for the report


def _config(exp: LLMExperiment, spec: LLMUnlearnSpec | None, seed: int) -> dict[str, Any]:
    return to_dict(replace(exp, runs=(spec,) if spec else exp.runs, seeds=(seed,)))


def _extra(generations: Mapping[str, Sequence[str]], variant: str) -> dict[str, Any]:
    return {"metric_variant": variant, "forget_samples": list(generations["forget"][:SAMPLES])}


def sweep(
    exp: LLMExperiment,
    out_dir: Path | None = None,
    lr_scales: Sequence[float] = (1.0,),
    progress: bool = False,
    retry_failed: bool = False,
) -> list[dict[str, Any]]:
    """Run (or read back) every run of ``exp`` at each η_f multiple; returns the reference
    and run records. Failed runs (diverged, out of memory) are run again only with
    ``retry_failed``."""
    world = World(exp, progress=progress)
    store = open_store(out_dir, _config(exp, None, 0), world.fingerprint)
    key = world.key

    def reference(name: str, id: str) -> dict[str, Any]:
        if name == "target":
            seconds, evaluation = world.target[1], world.target_evaluation
        else:
            seconds, evaluation = world.retain_model[1], world.retain_evaluation
        return make_record(
            id=id,
            kind="reference",
            group=name,
            seed=exp.finetune.seed,
            metrics=world.summary(evaluation["scores"], evaluation["forget_ratios"], False),
            seconds=seconds,
            config=_config(exp, None, 0),
            task="llm",
            extra=_extra(evaluation["generations"], world.variant(False)),
            data_fingerprint=world.fingerprint,
        )

    def run(scale: float, spec: LLMUnlearnSpec, seed: int, id: str) -> dict[str, Any]:
        result = attempt(partial(run_unlearning, spec, world, seed, progress=progress))
        return run_record(
            spec,
            result,
            id=id,
            setting=spec.setting,
            seed=seed,
            scale=scale,
            config=_config(exp, spec, seed),
            task="llm",
            extra={} if "failure" in result else _extra(result["generations"], result["variant"]),
            data_fingerprint=world.fingerprint,
        )

    records = []
    for name in REFERENCES:
        ref_id = record_id("llm-reference", key, name)
        records.append(stored_or_made(store, ref_id, partial(reference, name, ref_id)))
    for scale in lr_grid(match_grid(store, lr_scales)):
        for spec in exp.runs:
            spec = replace(spec, forget_lr=scaled(spec.eta_f, scale))
            for seed in exp.seeds:
                run_id = record_id("llm-run", key, spec, seed)
                make = partial(run, scale, spec, seed, run_id)
                records.append(stored_or_made(store, run_id, make, retry_failed))
    note_failures(records)
    return records


def report(records: Sequence[Mapping[str, Any]], out_dir: Path, title: str) -> str:
    """report.md and table.csv in Table 3's layout; returns the Markdown table."""
    rows = metric_rows(records, METRICS, REFERENCES)
    header, cells = metric_table(rows, METRICS, LABELS)
    split = records[0]["config"]["data"]["forget_split"]
    finished = [r for r in records if not is_failed(r)]  # a failed run has no texts, curves
    variants = sorted({r.get("extra", {}).get("metric_variant", "?") for r in finished})
    table = markdown(header, cells)
    samples = ["\n## Forget-split generations (first questions)\n"]
    for r in sorted(records, key=lambda r: (r["kind"], r["group"], r["seed"])):
        if is_failed(r):
            samples.append(f"\n**{r['group']}** (seed {r['seed']}): {r['error']['message']}\n")
            continue
        texts = r.get("extra", {}).get("forget_samples", [])
        samples.append(f"\n**{r['group']}** (seed {r['seed']}):\n\n")
        samples += [f"- {t!r}\n" for t in texts]
    intro = (
        f"TOFU, forget split `{split}`. Table 3 of the paper: forget efficacy (UFE), model "
        "utility (MU, the paper's harmonic mean) and overall (OVR), then TOFU's Forget Quality "
        "(KS-test p-value against the retain model) and Model Utility. Closer-Look variant: "
        f"{'; '.join(variants)}. Rows `target` and `retain model` are the references: before "
        "unlearning, and the model never trained on the forget authors.\n\n"
    )
    runs = [r for r in finished if r["kind"] == "run"]
    retain_model = [r for r in records if r["group"] == "retain model"]
    for scale in sorted({r["lr_scale"] for r in runs}, reverse=True):  # a figure per η_f multiple
        shown = [r for r in runs if r["lr_scale"] == scale]
        if any(name.startswith("eval/") for r in shown for name in r.get("curves", {})):
            name = f"curves_x{scale:g}.png"
            plot_curves([*shown, *retain_model], out_dir / name, CURVES, unit="")
            samples.insert(
                0,
                f"\n## Forget and retain Prob during unlearning (η_f ×{scale:g})\n\n"
                f"Dashed: the retain model.\n\n![curves]({name})\n",
            )
    write_text_report(
        records, out_dir, title, intro + table, "".join(samples), metric_csv(rows, METRICS)
    )
    return table

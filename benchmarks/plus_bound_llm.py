"""DO+ with the published (unbounded) rule against ``bound_update=True`` on mini-TOFU's ME+GD
row, side by side: the LLM half of the evidence SPEC §1.4 asks for before choosing the
default (benchmarks/plus_bound.py is the classification half).

Recipe (also written into the JSON): the ``mini-tofu`` named config (real TOFU forget01 from
``--tofu``, SmolLM2-135M-Instruct fine-tuned 4 epochs on forget01 + 160 retain rows, the first
30 rows of each split evaluated), its ``me+gd`` ``dual_plus`` run (1 epoch at 1:5, AdamW-type
DO+ at η = 1e-5 both sides, betas (0.9, 0.95), clip 1.0), seed 0, at η_f ×1 and ×10 (the
benchmark's grid). The target and retain model come from (and go to) the config's cache.

Run: .venv/bin/python benchmarks/plus_bound_llm.py [--tofu ../shared/data/tofu]
[--out results/benchmarks/plus_bound_llm.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dualoptim.bench.records import benchmark_header
from dualoptim.config import from_dict, merge, read_config
from dualoptim.io import write_json
from dualoptim.tasks.llm.config import LLMExperiment
from dualoptim.tasks.llm.run import run_unlearning
from dualoptim.tasks.llm.task import LAYOUT
from dualoptim.tasks.llm.world import World

SCALES = (1.0, 10.0)
BOUNDS = (True, False)


def experiment(tofu: str) -> LLMExperiment:
    """mini-tofu with its ME+GD DO+ run only."""
    path = resources.files("dualoptim") / "configs" / "llm" / "mini-tofu.yaml"
    data = read_config(Path(str(path)))
    data.pop("task")
    runs = [r for r in data["runs"] if r["method"] == "me+gd" and r["setting"] == "dual_plus"]
    return from_dict(LLMExperiment, merge(data, {"runs": runs, "data": {"source": tofu}}))


def run(exp: LLMExperiment, console: Console) -> dict[str, Any]:
    world = World(exp, progress=False)
    console.print("target and retain model (cached after the first run)…")
    references = {}
    for name, evaluation in (
        ("target", world.target_evaluation),
        ("retain model", world.retain_evaluation),
    ):
        references[name] = world.summary(evaluation["scores"], evaluation["forget_ratios"], False)
    rows = []
    (spec,) = exp.runs
    for scale in SCALES:
        scaled = replace(spec, forget_lr=spec.effective_forget_lr * scale)
        for bound in BOUNDS:
            result = run_unlearning(scaled, world, 0, False, plus={"bound_update": bound})
            row = {"scale": scale, "forget_lr": scaled.effective_forget_lr, "bound_update": bound}
            rows.append({**row, "metrics": result["metrics"], "seconds": result["seconds"]})
            console.print(
                f"  ×{scale:g} bound_update={bound}: "
                + " ".join(f"{m} {result['metrics'][m]:.3f}" for m in LAYOUT.metrics)
            )
    return {"references": references, "rows": rows}


def print_report(console: Console, data: dict[str, Any]) -> None:
    table = Table(title="mini-TOFU ME+GD DO+: bound_update side by side (seed 0)")
    for name in ("row", "η_f", *(c.label for c in LAYOUT.columns)):
        table.add_column(name, justify="left" if name == "row" else "right")
    for name, metrics in data["results"]["references"].items():
        table.add_row(name, "", *(f"{metrics[m]:.3f}" for m in LAYOUT.metrics))
    for row in data["results"]["rows"]:
        label = f"DO+ ×{row['scale']:g} bound={row['bound_update']}"
        cells = (f"{row['metrics'][m]:.3f}" for m in LAYOUT.metrics)
        table.add_row(label, f"{row['forget_lr']:g}", *cells)
    console.print(table)
    console.print(f"wall time {data['wall_seconds'] / 60:.1f} min")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tofu", default="../shared/data/tofu", help="TOFU's parquet folder")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/plus_bound_llm.json"))
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 150)
    exp = experiment(args.tofu)
    started = time.perf_counter()
    results = run(exp, console)
    data = {
        **benchmark_header("plus_bound_llm", started),
        "recipe": {
            "name": "mini-tofu named config, its me+gd dual_plus run, seed 0",
            "data": "TOFU forget01 (real), retain_rows 160, eval limit 30",
            "model": exp.model.name,
            "finetune": {"epochs": exp.finetune.epochs, "lr": exp.finetune.lr},
            "run": {"method": "me+gd", "setting": "dual_plus", "epochs": 1},
            "scales": list(SCALES),
        },
        "results": results,
    }
    write_json(args.out, data)
    print_report(console, data)
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

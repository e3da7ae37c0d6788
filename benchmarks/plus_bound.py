"""DO+ with the published (unbounded) rule against ``bound_update=True``, side by side.

Why: SPEC §1.4 makes the authors' unbounded rule the default unless a benchmark measured side
by side shows it failing where the bound does not. This runs the classification benchmark's
DO+ rows (RL, SalUn, SCRUB, SFR-on under ``dual_plus``) both ways in one process, on the same
original model, forget sets and RT of each seed, and reports FA/RA/TA/MIA, Gap to RT and Std.

Recipe (also written into the JSON): the built-in ``digits`` named config (scikit-learn's
digits, small CNN, 30 training epochs, 10% random forgetting, seeds 0-2) with the method
options of ``fashion-mnist.yaml``: RL/SalUn/SCRUB 3 epochs (one pass over D_f then one over
D_r each), SFR-on 300 iterations at 1:5; batch 64; each method's tuned DO+ η_f
(tasks/vision/methods/), DO+ η_r 1e-4. No metric curves (``eval_every`` 0). The original model
and RT come from (and go to) the digits config's cache, as ``dualoptim run digits`` would.

Run: .venv/bin/python benchmarks/plus_bound.py [--seeds 0 1 2] [--cache-dir DIR]
[--out results/benchmarks/plus_bound.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dualoptim.bench.records import benchmark_header
from dualoptim.bench.stats import gap_and_std
from dualoptim.config import from_dict, merge, read_config
from dualoptim.io import write_json
from dualoptim.tasks.vision.config import METRICS, VisionExperiment
from dualoptim.tasks.vision.experiment import run_unlearning
from dualoptim.tasks.vision.task import TASK

#: the classification benchmark's DO+ rows, with fashion-mnist.yaml's method options
RUNS = (
    {"method": "rl", "setting": "dual_plus", "epochs": 3},
    {"method": "salun", "setting": "dual_plus", "epochs": 3},
    {"method": "scrub", "setting": "dual_plus", "epochs": 3},
    {"method": "sfron", "setting": "dual_plus", "iterations": 300},
)
BOUNDS = (True, False)


def experiment(seeds: list[int], cache_dir: str | None) -> VisionExperiment:
    """The digits named config with the DO+ rows in place of its runs."""
    path = resources.files("dualoptim") / "configs" / "vision" / "digits.yaml"
    data = read_config(Path(str(path)))
    data.pop("task")
    overrides: dict[str, Any] = {"runs": list(RUNS), "seeds": seeds}
    if cache_dir is not None:
        overrides["cache_dir"] = cache_dir
    return from_dict(VisionExperiment, merge(data, overrides))


def run(exp: VisionExperiment, console: Console) -> dict[str, Any]:
    """Every (run, bound) on every seed; the two bounds of a run follow each other."""
    plan = TASK.plan(exp, None, False)
    rt: list[dict[str, float]] = []
    metrics: dict[tuple[int, bool], list[dict[str, float]]] = {}
    for seed in exp.seeds:
        console.print(f"seed {seed}: original model and RT…")
        world = plan.world(seed)
        rt.append({k: world.rt_metrics[k] for k in METRICS})
        for index, spec in enumerate(exp.runs):
            for bound in BOUNDS:
                result = run_unlearning(spec, world, seed, plus={"bound_update": bound})
                metrics.setdefault((index, bound), []).append(
                    {k: result[k] for k in (*METRICS, "seconds")}
                )
                console.print(
                    f"  {spec.label} bound_update={bound}: "
                    + " ".join(f"{k} {result[k]:.2f}" for k in METRICS)
                    + f" ({result['seconds']:.1f} s)"
                )
    rows = []
    for index, spec in enumerate(exp.runs):
        for bound in BOUNDS:
            per_seed = metrics[(index, bound)]
            gap, std, per_metric = gap_and_std(per_seed, rt, METRICS)
            rows.append(
                {
                    "method": spec.method,
                    "setting": spec.setting,
                    "bound_update": bound,
                    "forget_lr": spec.effective_forget_lr,
                    "retain_lr": spec.plus_retain_lr,
                    "gap": gap,
                    "std": std,
                    "metrics": per_metric,
                    "per_seed": per_seed,
                }
            )
    _, _, rt_summary = gap_and_std(rt, rt, METRICS)
    return {"rt": {"per_seed": rt, "metrics": rt_summary}, "rows": rows}


def print_report(console: Console, data: dict[str, Any]) -> None:
    """Mean ± std over seeds of each metric, Gap to RT and Std, both bounds of a method
    on adjacent rows."""
    table = Table(
        title=f"DO+ bound_update side by side ({data['recipe']['name']}, seeds "
        f"{data['recipe']['seeds']})",
        caption="metrics in %, mean ± std over seeds; Gap = mean |mean − RT| over the 4 metrics",
    )
    for name in ("method", "bound_update", "η_f", *METRICS, "Gap", "Std"):
        table.add_column(name, justify="left" if name == "method" else "right")

    def cell(entry: dict[str, float]) -> str:
        return f"{entry['mean']:.2f} ± {entry['std']:.2f}"

    rt = data["results"]["rt"]["metrics"]
    table.add_row("RT", "", "", *(cell(rt[k]) for k in METRICS), "", "")
    for row in data["results"]["rows"]:
        table.add_row(
            row["method"],
            str(row["bound_update"]),
            f"{row['forget_lr']:g}",
            *(cell(row["metrics"][k]) for k in METRICS),
            f"{row['gap']:.2f}",
            f"{row['std']:.2f}",
        )
    console.print(table)
    console.print(f"wall time {data['wall_seconds'] / 60:.1f} min")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--cache-dir", default=None, help="original models and RTs (default: the config's)"
    )
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/plus_bound.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 150)
    exp = experiment(args.seeds, args.cache_dir)
    started = time.perf_counter()
    results = run(exp, console)
    data = {
        **benchmark_header("plus_bound", started),
        "recipe": {
            "name": "digits named config, DO+ rows of fashion-mnist.yaml",
            "data": exp.data.name,
            "forget_fraction": exp.data.forget_fraction,
            "model": exp.model,
            "train": {
                "epochs": exp.train.epochs,
                "lr": exp.train.lr,
                "batch_size": exp.train.batch_size,
            },
            "runs": list(RUNS),
            "seeds": list(exp.seeds),
            "eval_every": 0,
        },
        "results": results,
    }
    write_json(args.out, data)
    print_report(console, data)
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

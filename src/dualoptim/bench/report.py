"""A report folder from records alone: tables (Markdown, CSV), plots (PNG), a summary (JSON).

`dualoptim bench` writes it at the end of a sweep and `dualoptim report` rebuilds the same
files from the records, so nothing needs re-running to change or recover a report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from dualoptim.bench.claims import Claim, claims, claims_csv, claims_table
from dualoptim.bench.plots import plot_curves, plot_grad_norms, plot_sensitivity
from dualoptim.bench.stats import RESAMPLES
from dualoptim.bench.tables import (
    WINDOW,
    Summary,
    main_table,
    markdown,
    rows_csv,
    sensitivity_table,
    summarize,
)
from dualoptim.io import atomic_write, write_json
from dualoptim.unlearn.task import NO_UNLEARNING, is_failed

#: RT's training times across seeds (max / min) above which timings are called noisy.
NOISY_TIMING = 1.5


_WINDOW = f"×1/{WINDOW:g}…×{WINDOW:g}"  # the sensitivity window, as the text says it


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def _has_curves(records: Iterable[Mapping[str, Any]], prefix: str) -> bool:
    return any(name.startswith(prefix) for r in records for name in r.get("curves", {}))


#: A task's choice of the options of a run's config that its recipe lists (all: ``dict``).
RunOptions = Callable[[Mapping[str, Any]], Mapping[str, Any]]


def _recipe(records: Sequence[Mapping[str, Any]], run_options: RunOptions = dict) -> str:
    """The shared part of the configuration (data, model, training), stated beside the
    numbers: every scaled number must carry its recipe. Each run's options are those
    ``run_options`` keeps, without η_f (the tables give it)."""
    reference = next(r for r in records if r["kind"] == "reference")
    shared = {k: v for k, v in reference["config"].items() if k not in ("runs", "seeds")}
    shared["seeds"] = sorted({r["seed"] for r in records})
    runs = sorted(
        {
            yaml.safe_dump(options, default_flow_style=True, width=200).strip()
            for r in records
            if r["kind"] == "run"
            for options in [_without_forget_lr(run_options(r["config"]["runs"][0]))]
        }
    )
    text = yaml.safe_dump(shared, sort_keys=False, default_flow_style=None, width=100)
    return text + "runs (η_f: see the tables):\n" + "".join(f"  - {r}\n" for r in runs)


def _without_forget_lr(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k != "forget_lr"}


def _provenance(records: Iterable[Mapping[str, Any]]) -> str:
    """Where the records were made: every distinct machine and commit, in a stable order."""
    machines, commits = set(), set()
    for r in records:
        env = r["environment"]
        m = env["machine"]
        machines.add(
            f"{m['processor']}, {m['cpus']} CPUs, {m['torch_threads']} torch threads, "
            f"GPU {m['gpu'] or 'none'}, torch {env['packages']['torch']}{_launched(env)}"
        )
        git = env.get("git") or {}
        commits.add(git.get("commit", "unknown")[:12] + ("+changes" if git.get("dirty") else ""))
    return f"Machine: {'; '.join(sorted(machines))}. Commit: {', '.join(sorted(commits))}.\n"


def _launched(env: Mapping[str, Any]) -> str:
    """Several processes and mixed precision, when a record says so (older records do not)."""
    launch = env.get("launch") or {}
    text = ""
    if launch.get("processes", 1) > 1:
        text += f", {launch['processes']} processes ({'FSDP2' if launch['fsdp2'] else 'DDP'})"
    if launch.get("mixed_precision", "no") != "no":
        text += f", {launch['mixed_precision']} autocast"
    return text


def timing_note(records: Iterable[Mapping[str, Any]]) -> str | None:
    """A warning when RT's training times across seeds differ by more than NOISY_TIMING×:
    the machine was loaded while timing, so time / RT compares load, not methods."""
    rt = [  # trained references (the untouched original took no time)
        r["seconds"]
        for r in records
        if r["kind"] == "reference" and not is_failed(r) and r["seconds"] > 0
    ]
    if len(rt) < 2 or max(rt) <= NOISY_TIMING * min(rt):
        return None
    return (
        f"timings noisy: RT took {min(rt):.0f}–{max(rt):.0f} s across seeds; "
        "time / RT not comparable"
    )


#: The claims tables' CSV files in a report folder.
CLAIMS_CSV, OUT_OF_SAMPLE_CSV = "claims.csv", "claims_out_of_sample.csv"


def _seed_list(seeds: Iterable[int]) -> str:
    return ", ".join(map(str, sorted(seeds)))


def write_report(
    records: Sequence[Mapping[str, Any]],
    out_dir: Path,
    metrics: Sequence[str],
    title: str,
    intro: str = "",
    appendix: str = "",
    run_options: RunOptions = dict,
) -> Summary:
    """Every table and plot of ``records`` into ``out_dir``, with a task's ``intro`` after
    the title and its ``appendix`` before the recipe; returns the summary."""
    summary = summarize(records, metrics)
    tuned = summary.tuned()
    header, cells = main_table(summary.table_rows(), metrics, summary.edges)
    parts = [
        f"# {title}\n\n",
        intro,
        "Per method and setting at its best η_f of the sweep (lowest Gap, SPEC §1.3, "
        "in-sample): mean ± std over seeds (|gap to RT|), then Gap and Std (SPEC §3.1). "
        "`time / RT`: unlearning wall time over RT's training time.\n\n",
        markdown(header, cells),
    ]
    if any(summary.edges(row) for row in tuned):
        parts.append(
            "\nAn η_f marked *lowest tried*, *highest tried* or *only one tried* sits at the "
            "edge of the η_f this sweep ran, so its records do not show it is the best: a tuned "
            "η_f needs run neighbours on both sides (SPEC §3.4). `bench --extend N` adds ×3 "
            "steps past such an edge until the best η_f has them.\n"
        )
    confirmed = summary.confirmed()
    if confirmed:
        tuning = _seed_list(summary.tuning_seeds(confirmed[0].group))
        parts.append(
            f"\nη_f was tuned on seeds {tuning}; the tuned rows ran again on new seeds "
            f"(`bench --tuned-seeds`; seeds column): their numbers and the claims are over all "
            f"their seeds, the new ones out of sample. Sensitivity compares seeds {tuning}.\n"
        )
    if summary.baselines:
        parts.append(
            f"\n`{NO_UNLEARNING}`: the original model, untouched, compared with RT as the runs "
            "are. A run whose Gap is not below it has not unlearned anything worth its cost.\n"
        )
    note = timing_note(records)
    if note:
        parts.append(f"\n**{note}.**\n")
    if any(row.failure for row in summary.rows):
        parts.append(
            "\nRuns failed (diverged: a non-finite loss; or out of memory). A method at an η_f "
            "where a seed failed has no numbers there, since a mean over the seeds that finished "
            "would hide the failure, and tuning passes that η_f over; a method failed at every "
            "η_f shows what stopped it.\n"
        )
    sensitivity = summary.sensitivity()
    if sensitivity:
        s_header, s_cells = sensitivity_table(sensitivity, summary.tuned_scales())
        parts += [
            "\n## Sensitivity to η_f (SPEC §3.4)\n\n",
            "Gap at each η_f multiple of the run's configured η_f (on the seeds η_f was "
            f"tuned on); spread = max − min and std over the multiples within {_WINDOW} of the "
            "run's tuned η_f, the optimum's neighbourhood (SPEC §3.4).\n\n",
            markdown(s_header, s_cells),
            "\n![Gap vs η_f](sensitivity.png)\n",
        ]
        _write_text(out_dir / "sensitivity.csv", rows_csv(summary.rows, metrics))
        numbers = {  # a scale where the run failed is a hole in its line
            g: {s: None if isinstance(v, str) else v for s, v in by.items()}
            for g, by in sensitivity.items()
        }
        plot_sensitivity(numbers, out_dir / "sensitivity.png")
    parts.append(claims_section(claims(summary, metrics), out_dir))
    parts.append(out_of_sample_section(summary, metrics, out_dir))
    chosen = {(row.group, row.lr_scale) for row in tuned}
    shown = [
        r for r in records if r["kind"] == "reference" or (r["group"], r["lr_scale"]) in chosen
    ]
    if _has_curves(shown, "eval/"):
        plot_curves(shown, out_dir / "curves.png", metrics)
        parts.append("\n## Metrics during unlearning\n\n![curves](curves.png)\n")
    if _has_curves(shown, "grad_norm/"):
        plot_grad_norms(shown, out_dir / "grad_norms.png", kinds=("forget", "retain", "joint"))
        parts.append("\n## Gradient norms of L_f and L_r\n\n![gradient norms](grad_norms.png)\n")
    parts += [
        appendix,
        "\n## Recipe\n\n```yaml\n" + _recipe(records, run_options) + "```\n",
        "\n" + _provenance(records),
    ]
    _write_text(out_dir / "report.md", "".join(parts))
    _write_text(out_dir / "table.csv", rows_csv(summary.table_rows(), metrics))
    write_json(
        out_dir / "summary.json",
        {
            "title": title,
            "rt": asdict(summary.rt),
            "baselines": [asdict(row) for row in summary.baselines],
            "rows": [asdict(row) for row in summary.rows],
            "tuned": [row.group for row in tuned],
            "sensitivity": {g: {str(k): v for k, v in by.items()} for g, by in sensitivity.items()},
        },
    )
    return summary


def claims_section(found: Sequence[Claim], out_dir: Path) -> str:
    """The claims table (DO, DO+ against Alternate, SPEC §3.4) for report.md, and
    claims.csv; nothing when the records hold no comparison."""
    if not found:
        return ""
    _write_text(out_dir / CLAIMS_CSV, claims_csv(found))
    header, cells = claims_table(found)
    gap = "Gap" in found[0].intervals
    what = (
        "paired by seed (same forget set and RT). ΔGap is the mean difference of per-seed "
        "gaps at each one's tuned η_f, ΔStd the difference of Std there, Δη_f the difference "
        f"of Gap spreads over the multiples of each one's tuned η_f within {_WINDOW} that "
        "both ran"
        if gap
        else "at each η_f multiple both ran, paired by seed (and forgotten class): the mean "
        "of the paired differences of each metric"
    )
    return (
        "\n## Claims (SPEC §3.4)\n\n"
        "Each decoupled setting against the same method under Alternate, "
        f"{what}. Δ = setting − Alternate, with its 95% percentile-bootstrap interval over "
        f"seeds ({RESAMPLES:,} resamples). A claim is reproduced when its interval lies on "
        "the better side of 0, contradicted when on the other, and otherwise not resolved, "
        f"whatever the point estimate.{few_seeds_note(found)}\n\n" + markdown(header, cells)
    )


#: Below this many seeds, a verdict may rest on the signs of the paired differences alone.
FEW_SEEDS = 6


def few_seeds_note(found: Sequence[Claim]) -> str:
    """A caution when some verdict rests on few seeds: with n paired differences of one sign,
    every resampled mean has that sign, so the interval excludes 0, which chance alone gives
    with probability 2^(1−n) (1 in 4 at 3 seeds, 1 in 16 at 5)."""
    counts = [i.seeds for c in found for i in c.intervals.values() if i is not None]
    n = min((k for k in counts if k >= 2), default=FEW_SEEDS)
    if n >= FEW_SEEDS:
        return ""
    return (
        f" Some verdicts here rest on {n} seeds (the `seeds` column of the CSV): with {n}, an "
        f"interval excludes 0 whenever all {n} paired differences share a sign, which chance "
        f"alone gives 1 time in {2 ** (n - 1)}, so they are weak evidence."
    )


def out_of_sample_section(summary: Summary, metrics: Sequence[str], out_dir: Path) -> str:
    """The Gap and Std claims on the tuned rows' seeds that η_f was not tuned on
    (``bench --tuned-seeds``), and claims_out_of_sample.csv; nothing without such seeds."""
    seeds = summary.new_seeds()
    found = claims(summary, metrics, seeds) if seeds else []
    if not found:
        return ""
    _write_text(out_dir / OUT_OF_SAMPLE_CSV, claims_csv(found))
    return (
        f"\n## Claims out of sample (seeds {_seed_list(seeds)})\n\n"
        "The Gap and Std claims again, on the seeds the tuned rows ran after η_f was chosen "
        f"on the others: no selection favours either setting there.{few_seeds_note(found)}\n\n"
        + markdown(*claims_table(found))
    )


def write_text_report(
    records: Sequence[Mapping[str, Any]],
    out_dir: Path,
    title: str,
    body: str,
    appendix: str,
    table_csv: str,
    run_options: RunOptions = dict,
) -> None:
    """report.md (title, a task's tables, gradient norms, its appendix, the recipe and the
    provenance) and table.csv, for tasks whose tables are plain metrics."""
    parts = [f"# {title}\n\n", body]
    runs = [r for r in records if r["kind"] == "run" and not is_failed(r)]  # no failed: no curves
    for scale in sorted({r["lr_scale"] for r in runs}):  # a figure per η_f multiple
        shown = [r for r in runs if r["lr_scale"] == scale]
        if _has_curves(shown, "grad_norm/"):
            name = f"grad_norms_x{scale:g}.png"
            plot_grad_norms(shown, out_dir / name, kinds=("forget", "retain", "joint"))
            parts.append(
                f"\n## Gradient norms of L_f and L_r (η_f ×{scale:g})\n\n"
                f"![gradient norms]({name})\n"
            )
    parts += [appendix, "\n## Recipe\n\n```yaml\n" + _recipe(records, run_options) + "```\n"]
    parts.append("\n" + _provenance(records))
    _write_text(out_dir / "report.md", "".join(parts))
    _write_text(out_dir / "table.csv", table_csv)

"""The report of a continual sweep (SPEC §2.6): the task's own tables for the last request,
then how every run fared after each request and how far its retained utility drifted.

Request k of a run is compared with the references of request k of the same seed (RT_k, the
original measured after request k), so each request's Gap is the one-shot Gap of what has
been forgotten so far. Drift: the utility metric (``Layout.utility``) after request 1 minus
after request K, paired by seed; positive = utility lost along the way. The model before
unlearning (the original, TOFU's target), measured after each request on the same rows, is a
row and a black line too: where a run started from on what has been forgotten so far.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from dualoptim.bench.claims import claims_csv, claims_table
from dualoptim.bench.plots import DPI, figure_legend, save_figure, setting_colors
from dualoptim.bench.policy_claims import Drift, Key, Scores, policy_claims, run_label
from dualoptim.bench.report import few_seeds_note
from dualoptim.bench.tables import markdown, record_order, summarize
from dualoptim.io import atomic_write
from dualoptim.unlearn.task import Layout, Task, is_failed

FIGURE = "requests.png"
AFTER_EVERY_REQUEST = "After every request"
POLICIES = "Carried vs reset states"
POLICIES_CSV = "policy_claims.csv"
#: Line style of each state policy in the figure (colour = setting).
POLICY_STYLES = {"reset": "-", "carry": "--", "carry_base": ":"}


def request_of(record: Mapping[str, Any]) -> int | None:
    """The request a record belongs to (None: not a continual record)."""
    return record.get("extra", {}).get("request")


def report_requests(
    task: Task,
    records: Sequence[Mapping[str, Any]],
    out_dir: Path,
    title: str,
    report: Callable[..., Any],
) -> Any:
    """``report`` (the task report) on the last request's records, then the sections
    "After every request" and "Carried vs reset states" added to its report.md and its
    terminal tables."""
    last = max(request_of(r) or 0 for r in records)
    final = [r for r in records if request_of(r) == last]
    shown = report(task, final, out_dir, f"{title}, after request {last} of {last}")
    tables, text = after_every_request(task.layout, records, out_dir)
    path = out_dir / "report.md"
    body = path.read_text() + text
    atomic_write(path, lambda f: f.write(body.encode()))
    shown.tables.extend(tables)
    return shown


def _score(layout: Layout) -> tuple[str, str, str]:
    """What each request is scored by: (name, how, which way is better): the Gap to the
    layout's reference, else its first headline metric's mean."""
    if layout.gap_to is not None:
        return "Gap", f"Gap to {layout.gap_to}_k (lower is better)", "lower"
    column = layout.headline[0] if layout.headline else layout.columns[0]
    better = column.better or "higher"
    return column.label, f"{column.label} ({better} is better)", better


def _per_request(layout: Layout, records: Sequence[Mapping[str, Any]]) -> Scores:
    """Each run's and reference's score per request and seed (a failed seed: NaN); the
    reference the Gap is taken to is not a row of its own (its Gap is 0)."""
    by_request: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        if request_of(r) is not None:
            by_request[request_of(r)].append(r)
    scores: Scores = defaultdict(dict)
    for k, chosen in sorted(by_request.items()):
        if layout.gap_to is not None:
            summary = summarize(chosen, layout.metrics, layout.gap_to)
            for row in (*summary.baselines, *summary.rows):
                values = list(row.seed_gaps) or [float("nan")] * len(row.seeds)
                scores[(row.group, row.lr_scale)][k] = dict(zip(row.seeds, values, strict=True))
            continue
        metric = (layout.headline[0] if layout.headline else layout.columns[0]).metric
        for r in chosen:
            value = float("nan") if is_failed(r) else float(r["metrics"][metric])
            scores[(r["group"], r["lr_scale"])].setdefault(k, {})[r["seed"]] = value
    return scores


def _drift(layout: Layout, records: Sequence[Mapping[str, Any]], last: int) -> Drift:
    """Per run and seed, the utility metric after request 1 minus after request ``last``."""
    if layout.utility is None:
        return {}
    value: dict[tuple[Key, int, int], float] = {}
    for r in records:
        if r["kind"] == "run" and not is_failed(r) and request_of(r) in (1, last):
            value[((r["group"], r["lr_scale"]), r["seed"], request_of(r))] = float(
                r["metrics"][layout.utility]
            )
    drift: Drift = defaultdict(dict)
    for key, seed, k in sorted(value):
        if k == 1 and (key, seed, last) in value:
            drift[key][seed] = value[(key, seed, 1)] - value[(key, seed, last)]
    return drift


def _cell(by_seed: Mapping[int, float], digits: int) -> str:
    """Mean ± std over seeds (one seed: its value, as in every table)."""
    values = list(by_seed.values())
    if not values or any(np.isnan(values)):
        return "failed" if values else ""
    mean = f"{np.mean(values):.{digits}f}"
    return mean if len(values) == 1 else f"{mean} ± {np.std(values):.{digits}f}"


def after_every_request(
    layout: Layout, records: Sequence[Mapping[str, Any]], out_dir: Path
) -> tuple[list[tuple[str, list[str], list[list[str]]]], str]:
    """([(title, header, cells)], report sections): a row per run, its score after each
    request (mean ± std over seeds) and its drift; each carried run against its reset twin;
    and the figure ``requests.png``."""
    scores = _per_request(layout, records)
    last = max(request_of(r) or 0 for r in records)
    drift = _drift(layout, records, last)
    first = {(r["group"], r["lr_scale"]): r for r in records if request_of(r) is not None}
    order = sorted(scores, key=lambda key: record_order(first[key]))
    name, how, better = _score(layout)
    digits = 2 if layout.gap_to is not None else layout.digits  # a Gap: as in the Gap tables
    header = ["run", *(f"{name} after {k}" for k in range(1, last + 1))]
    if layout.utility is not None:
        header.append(f"{layout.utility} drift (1 → {last})")
    cells = []
    for key in order:
        row = [run_label(key)]
        row += [_cell(scores[key].get(k, {}), digits) for k in range(1, last + 1)]
        if layout.utility is not None:
            row.append(_cell(drift.get(key, {}), digits))
        cells.append(row)
    save_figure(requests_figure(scores, first, order, name, last), out_dir / FIGURE)
    drift_text = (
        f" Drift: {layout.utility} after request 1 minus after request {last}, paired by seed "
        "(positive = retained utility lost along the sequence)."
        if layout.utility is not None
        else ""
    )
    before = [key[0] for key in order if first[key]["kind"] == "reference"]
    before_text = (
        f" Row {', '.join(f'`{b}`' for b in before)}: the model before unlearning, measured "
        "the same way after each request."
        if before
        else ""
    )
    text = (
        f"\n## {AFTER_EVERY_REQUEST}\n\n"
        f"Each run's {how} after each of its {last} forget requests, mean ± std over seeds; "
        "request k is measured on everything forgotten by then and compared with the "
        f"references of request k.{before_text}{drift_text}\n\n"
        + markdown(header, cells)
        + f"\n![after every request]({FIGURE})\n"
    )
    tables = [(AFTER_EVERY_REQUEST, header, cells)]
    found = policy_claims(first, order, scores, drift, last, (name, better), layout.utility, digits)
    if found:
        compared = claims_table(found)
        tables.append((POLICIES, *compared))
        csv = claims_csv(found)
        atomic_write(out_dir / POLICIES_CSV, lambda f: f.write(csv.encode()))
        text += (
            f"\n## {POLICIES}\n\n"
            "Each run whose optimizer states were carried from one request to the next "
            "against the same run with its states reset at every request (the authors' "
            f"code), paired by seed: Δ = carried − reset of the {name} after request {last}, "
            f"of the {name} averaged over requests 1..{last}"
            + (f", and of the {layout.utility} drift" if layout.utility is not None else "")
            + ", each with its 95% percentile-bootstrap interval over seeds. An interval on "
            "the better side of 0 names the better policy; one containing 0 resolves "
            f"nothing (numbers in `{POLICIES_CSV}`).{few_seeds_note(found)}\n\n"
            + markdown(*compared)
        )
    return tables, text


def requests_figure(
    scores: Scores,
    first: Mapping[Key, Mapping[str, Any]],
    order: Sequence[Key],
    name: str,
    last: int,
) -> Figure:
    """``name`` against the request index, a panel per method: a line per run (colour =
    setting, style = state policy), a band of ±1 std over seeds, and in every panel the model
    before unlearning in black; failed requests are gaps."""
    runs = [key for key in order if first[key]["kind"] == "run"]
    before = [key for key in order if first[key]["kind"] == "reference"]
    methods = list(dict.fromkeys(first[key].get("method") or "" for key in runs))
    fig = Figure(figsize=(4.2 * len(methods) + 1, 4.5), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(methods), squeeze=False, sharey=True)[0]
    colors = setting_colors(first[key].get("setting") or "" for key in runs)
    ks = np.arange(1, last + 1)

    def line(ax: Any, key: Key, color: str, style: str, label: str | None) -> None:
        values = [list(scores[key].get(int(k), {0: np.nan}).values()) for k in ks]
        mean = np.array([np.mean(v) for v in values])
        std = np.array([np.std(v) for v in values])
        ax.plot(ks, mean, style, color=color, marker="o", label=label)
        ax.fill_between(ks, mean - std, mean + std, color=color, alpha=0.12, linewidth=0)

    for i, (ax, method) in enumerate(zip(axes, methods, strict=True)):
        for key in before:  # labelled once: the legend is the figure's
            line(ax, key, "black", ":", key[0] if i == 0 else None)
        for key in (k for k in runs if (first[k].get("method") or "") == method):
            record = first[key]
            policy = record.get("extra", {}).get("state_policy", "reset")
            color = colors[record.get("setting") or ""]
            line(ax, key, color, POLICY_STYLES.get(policy, "-"), run_label(key))
        ax.set_title(method)
        ax.set_xticks(range(1, last + 1))
        ax.set_xlabel("forget request")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(name)
    handles = [h for ax in axes for h in ax.get_legend_handles_labels()[0]]
    labels = [lab for ax in axes for lab in ax.get_legend_handles_labels()[1]]
    figure_legend(fig, handles, labels)
    return fig

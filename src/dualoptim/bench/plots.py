"""Figures of a benchmark, built from run records alone (no run is repeated to plot).

Each ``plot_*`` function saves a PNG atomically (a reader never sees half a file); each
``*_figure`` function builds the same figure and returns it, so tests (and notebooks) can
inspect the drawn data. Figures are plain :class:`matplotlib.figure.Figure` objects drawn
by the Agg canvas, never registered with pyplot: nothing global to close, and a figure is
freed as soon as it is no longer referenced, however many are made.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

import dualoptim
from dualoptim.io import atomic_write

DPI = 120

#: What each setting's optimizer state is, in words that hold for every task (the inner
#: optimizers differ: SGD/AdamW for classifiers, AdamW for LLMs; they are in the recipe).
SETTING_NAMES = {
    "joint": "one state, joint loss",
    "alternate": "one shared state",
    "dual": "DualOptim",
    "dual_plus": "DualOptim+",
    "dual_8bit": "DualOptim 8-bit",
    "dual_plus_8bit": "DualOptim+ 8-bit",
}
#: One colour per setting, the same in every subplot.
SETTING_COLORS = {
    "joint": "tab:gray",
    "alternate": "tab:red",
    "dual": "tab:blue",
    "dual_plus": "tab:green",
    "dual_8bit": "tab:purple",
    "dual_plus_8bit": "tab:olive",
}
_SPARE_COLORS = ("tab:orange", "tab:brown", "tab:pink", "tab:cyan")
#: Which objective a gradient-norm curve belongs to: (curve key, line style, legend name).
GRAD_KINDS = {
    "forget": ("grad_norm/forget", "-", "‖∇L_f‖"),
    "retain": ("grad_norm/retain", "--", "‖∇L_r‖"),
    "joint": ("grad_norm/joint", ":", "‖∇(L_f+L_r)‖"),
}

Curve = Sequence[Sequence[float | None]]


def mean_curve(curves: Sequence[Curve]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps common to all ``curves`` (lists of ``[step, value]``), and the mean and
    population std (ddof 0) across curves at those steps.

    Seeds may log at different steps (e.g. a run stopped early); only steps every seed has
    are averaged, so each point is a mean over the same seeds. The arrays are empty when no
    step is common. A ``None`` value (a non-finite number, as strict JSON stores it) becomes
    NaN, which matplotlib leaves as a hole in the line.
    """
    if not curves:
        raise ValueError("mean_curve: no curves")
    tables = [_curve_dict(c) for c in curves]
    common = sorted(set.intersection(*(set(t) for t in tables)))
    values = np.array([[t[s] for s in common] for t in tables], dtype=float).reshape(
        len(tables), len(common)
    )
    return np.asarray(common, dtype=float), values.mean(0), values.std(0)


def _curve_dict(curve: Curve) -> dict[float, float]:
    """``{step: value}`` of one curve, with ``None`` as NaN; rejects malformed points."""
    table = {}
    for point in curve:
        if len(point) != 2 or point[0] is None:
            raise ValueError(f"curve point {point!r} is not [step, value]")
        table[point[0]] = math.nan if point[1] is None else float(point[1])
    return table


def _setting_rank(setting: Any) -> int:
    """Settings in SETTING_COLORS order (baselines first), unknown ones last."""
    order = list(SETTING_COLORS)
    return order.index(setting) if setting in order else len(order)


def figure_legend(fig: Figure, handles: Sequence[Any], labels: Sequence[str]) -> None:
    """One legend under all panels, in the columns the figure's width fits: a setting's label
    ("joint (one shared state, joint loss)") takes about 2.6 inches at font size 8."""
    columns = max(1, min(len(handles), int(fig.get_figwidth() // 2.6), 5))
    fig.legend(handles, labels, loc="outside lower center", ncols=columns, fontsize=8)


def setting_colors(settings: Iterable[str]) -> dict[str, str]:
    """Each setting's colour: its own in SETTING_COLORS, else the next spare colour."""
    spare = itertools.cycle(_SPARE_COLORS)
    return {s: SETTING_COLORS.get(s) or next(spare) for s in dict.fromkeys(settings)}


def _runs(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The records of kind "run", checked to hold one lr_scale per group: averaging seeds
    across lr_scales would silently mix different runs of a group. Groups may differ (each
    at its own tuned η_f). Sorted by method, then setting, so figures have a stable order."""
    runs = sorted(
        (r for r in records if r.get("kind") == "run"),
        key=lambda r: (str(r.get("method")), _setting_rank(r.get("setting"))),
    )
    for group, members in _by(runs, "group").items():
        scales = {r.get("lr_scale") for r in members} - {None}
        if len(scales) > 1:
            raise ValueError(
                f"{group}: records span several lr_scale values {sorted(scales)}; "
                "pass the records of one lr_scale per group"
            )
    return runs


def _by(runs: Iterable[Mapping[str, Any]], key: str) -> dict[str, list[Mapping[str, Any]]]:
    """Runs grouped by ``key`` in order of first appearance (so colours follow the input)."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        groups.setdefault(str(r.get(key)), []).append(r)
    return groups


def _seed_curves(runs: Iterable[Mapping[str, Any]], key: str) -> list[Curve]:
    """The non-empty ``curves[key]`` of ``runs``; seeds that did not log it are left out."""
    return [c for r in runs if (c := (r.get("curves") or {}).get(key))]


def _scale_note(runs: Sequence[Mapping[str, Any]]) -> str:
    scales = {r.get("lr_scale") for r in runs} - {None}
    if len(scales) > 1:
        return ", each group at its own η_f"
    return f", η_f × {next(iter(scales)):g}" if scales else ""


def _reference_mean(records: Iterable[Mapping[str, Any]], metric: str) -> float | None:
    """RT's mean final ``metric`` over its seeds (finite values only), None without one."""
    values = [
        float(v)
        for r in records
        if r.get("kind") == "reference"
        and (v := (r.get("metrics") or {}).get(metric)) is not None
        and math.isfinite(float(v))
    ]
    return float(np.mean(values)) if values else None


def _setting_label(setting: str) -> str:
    """``"dual (DualOptim)"``: the setting with the kind of optimizer state it stands for."""
    optimizer = SETTING_NAMES.get(setting)
    return f"{setting} ({optimizer})" if optimizer else setting


def _grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def curves_figure(
    records: Sequence[Mapping[str, Any]],
    metrics: Sequence[str] = ("FA", "RA", "TA", "MIA"),
    unit: str = " (%)",
) -> Figure:
    """The paper's Fig. 1: each metric during unlearning, mean ± 1 std over seeds, with RT's
    final value as the target. One row per method, one column per metric, one colour per
    setting (the same in every panel), so a method's baseline and DualOptim sit side by side.
    Line gid = group, band gid ``"<group> band"``, RT line gid ``"RT"``. Metrics no group
    logged get no column."""
    if not metrics:
        raise ValueError("plot_curves: metrics is empty")
    runs = _runs(records)
    methods = _by(runs, "method")
    table: dict[tuple[str, str], list[tuple[str, str, Any, Any, Any]]] = {}
    for method, members in methods.items():
        for group, group_runs in _by(members, "group").items():
            for metric in metrics:
                seeds = _seed_curves(group_runs, f"eval/{metric}")
                if not seeds:
                    continue
                steps, mean, std = mean_curve(seeds)
                if len(steps):
                    setting = str(group_runs[0].get("setting"))
                    table.setdefault((method, metric), []).append(
                        (group, setting, steps, mean, std)
                    )
    shown_metrics = [m for m in metrics if any((me, m) in table for me in methods)]
    shown_methods = [me for me in methods if any((me, m) in table for m in metrics)]
    if not table:
        raise ValueError(
            f"plot_curves: no run record has an eval curve of {', '.join(metrics)} "
            "(or the seeds of each group share no step)"
        )
    # the dashed line's name: the reference's group (RT; the initial model of the real world)
    dashed = next((str(r["group"]) for r in records if r.get("kind") == "reference"), "RT")
    rows, cols = len(shown_methods), len(shown_metrics)
    fig = Figure(figsize=(3.6 * cols, 2.6 * rows + 0.9), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    handles: dict[str, Any] = {}
    rt_line = None
    colors = setting_colors(entry[1] for entries in table.values() for entry in entries)
    for i, method in enumerate(shown_methods):
        for j, metric in enumerate(shown_metrics):
            ax = axes[i, j]
            for group, setting, steps, mean, std in table.get((method, metric), []):
                color = colors[setting]
                (line,) = ax.plot(steps, mean, color=color, lw=1.6, label=group, gid=group)
                band = ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2, lw=0)
                band.set_gid(f"{group} band")
                handles.setdefault(_setting_label(setting), line)
            rt = _reference_mean(records, metric)
            if rt is not None:
                rt_line = ax.axhline(rt, color="black", ls="--", lw=1.2, label=dashed, gid="RT")
            if i == 0:
                ax.set_title(metric)
            if i == rows - 1:
                ax.set_xlabel("optimizer step")
            ax.set_ylabel(f"{method}: {metric}{unit}" if j == 0 else f"{metric}{unit}")
            ax.grid(alpha=0.3)
    if rt_line is not None:  # last in the legend, after every setting
        handles[dashed] = rt_line
    figure_legend(fig, list(handles.values()), list(handles.keys()))
    seeds = sorted({r.get("seed") for r in runs})
    fig.suptitle(
        f"Metrics during unlearning (mean ± 1 std over {len(seeds)} seeds{_scale_note(runs)})",
        wrap=True,  # one or two panels are narrower than the title
    )
    return fig


def plot_curves(
    records: Sequence[Mapping[str, Any]],
    path: Path,
    metrics: Sequence[str] = ("FA", "RA", "TA", "MIA"),
    unit: str = " (%)",
) -> None:
    """Save :func:`curves_figure` of ``records`` (one lr_scale) as a PNG at ``path``."""
    save_figure(curves_figure(records, metrics, unit), Path(path))


def grad_norms_figure(
    records: Sequence[Mapping[str, Any]], kinds: Sequence[str] = ("forget", "retain")
) -> Figure:
    """The paper's Fig. 2: per method, the gradient norm of each objective per step, one
    colour per setting, one line style per objective (``kinds``: "forget", "retain",
    "joint"), mean over seeds, log y. Line gids are ``"<method>/<setting>/<kind>"``."""
    unknown = [k for k in kinds if k not in GRAD_KINDS]
    if unknown or not kinds:
        raise ValueError(f"plot_grad_norms: kinds must be among {list(GRAD_KINDS)}, got {kinds}")
    runs = _runs(records)
    panels = []
    for method, members in _by(runs, "method").items():
        lines = []
        for setting, seeds in _by(members, "setting").items():
            for kind in kinds:
                key, _, _ = GRAD_KINDS[kind]
                curves = _seed_curves(seeds, key)
                if not curves:
                    continue
                steps, mean, _ = mean_curve(curves)
                if len(steps):
                    lines.append((setting, kind, len(curves), steps, mean))
        if lines:
            panels.append((method, lines))
    if not panels:
        raise ValueError(
            "plot_grad_norms: no run record has a gradient-norm curve "
            f"({', '.join(GRAD_KINDS[k][0] for k in kinds)})"
        )

    settings = sorted(
        {s for _, lines in panels for s, *_ in lines}, key=lambda s: (_setting_rank(s), s)
    )
    colors = setting_colors(settings)
    rows, cols = _grid(len(panels), max_cols=3)
    fig = Figure(figsize=(4.8 * cols, 3.6 * rows + 0.8), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    for ax, (method, lines) in zip(axes, panels, strict=False):
        for setting, kind, n, steps, mean in lines:
            _, style, name = GRAD_KINDS[kind]
            ax.plot(
                steps,
                np.where(mean > 0, mean, np.nan),  # log scale: a zero norm is a hole, not -inf
                color=colors[setting],
                ls=style,
                lw=1.3,
                label=f"{_setting_label(setting)} {name}, n={n}",
                gid=f"{method}/{setting}/{kind}",
            )
        ax.set_yscale("log")
        ax.set_title(method)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("gradient norm")
        ax.grid(alpha=0.3, which="both")
    # One legend for all subplots: colour = setting, line style = objective (proxy lines).
    drawn = list(dict.fromkeys(k for _, lines in panels for _, k, *_ in lines))
    handles = [Line2D([], [], color=colors[s], label=_setting_label(s)) for s in settings]
    handles += [
        Line2D([], [], color="black", ls=GRAD_KINDS[k][1], label=GRAD_KINDS[k][2]) for k in drawn
    ]
    figure_legend(fig, handles, [h.get_label() for h in handles])
    fig.suptitle(
        "Gradient norms of the forget (L_f) and retain (L_r) losses "
        f"(mean over seeds{_scale_note(runs)})",
        wrap=True,  # one panel is narrower than the title
    )
    return fig


def plot_grad_norms(
    records: Sequence[Mapping[str, Any]],
    path: Path,
    kinds: Sequence[str] = ("forget", "retain"),
) -> None:
    """Save :func:`grad_norms_figure` of ``records`` (one lr_scale) as a PNG at ``path``."""
    save_figure(grad_norms_figure(records, kinds), Path(path))


def sensitivity_figure(
    gaps: Mapping[str, Mapping[float, float | None]], xlabel: str = "η_f / configured η_f"
) -> Figure:
    """Gap against the η_f multiplier, one line with markers per group (gid = group), log x;
    log y too when the Gaps span more than ×20 (a collapse would flatten the rest).

    Multipliers may be strings (JSON object keys); a ``None`` Gap (a diverged run) is a
    hole in the line. Ticks sit at the multipliers themselves, written 1/9 rather than
    0.111, so each grid point is legible.
    """
    series = {}
    for group, by_scale in gaps.items():
        points = sorted(
            (float(x), math.nan if y is None else float(y)) for x, y in by_scale.items()
        )
        if points:
            series[group] = points
    if not series:
        raise ValueError("plot_sensitivity: no Gap to plot")
    xs = sorted({x for points in series.values() for x, _ in points})
    if xs[0] <= 0:
        raise ValueError(f"plot_sensitivity: multipliers must be positive (log x), got {xs[0]}")

    fig = Figure(figsize=(7.6, 4.4), dpi=DPI, layout="constrained")
    ax: Axes = fig.subplots()
    # "method (setting)": colour = setting as in the other figures, marker = method
    methods = list(dict.fromkeys(g.partition(" (")[0] for g in series))
    colors = setting_colors(g.partition(" (")[2].rstrip(")") for g in series)
    for group, points in series.items():
        method, _, setting = group.partition(" (")
        color = colors[setting.rstrip(")")]
        marker = "osD^vP*X"[methods.index(method) % 8]
        x, y = zip(*points, strict=True)
        ax.plot(x, y, marker=marker, ms=5, lw=1.5, color=color, label=group, gid=group)
    ax.set_xscale("log")
    ax.set_xticks(xs, [_multiple(x) for x in xs], rotation=45 if len(xs) > 8 else 0)
    ys = [y for points in series.values() for _, y in points if not math.isnan(y)]
    if ys and min(ys) > 0 and max(ys) > 20 * min(ys):
        ax.set_yscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Gap to RT (lower is better)")
    ax.set_title("Sensitivity to the forget learning rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def _multiple(x: float) -> str:
    """A tick label: 1/3 for a third (a grid of ×3 steps reads as fractions), else 3 digits."""
    inverse = round(1 / x)
    return f"1/{inverse}" if x < 1 and math.isclose(1 / x, inverse, rel_tol=1e-4) else f"{x:.3g}"


def plot_sensitivity(
    gaps: Mapping[str, Mapping[float, float | None]],
    path: Path,
    xlabel: str = "η_f / configured η_f",
) -> None:
    """Save :func:`sensitivity_figure` of ``gaps`` as a PNG at ``path``."""
    save_figure(sensitivity_figure(gaps, xlabel), Path(path))


def save_figure(fig: Figure, path: Path) -> None:
    """Render ``fig`` to a PNG next to ``path`` and rename it over ``path``."""
    canvas = FigureCanvasAgg(fig)

    def write(f: IO[bytes]) -> None:
        canvas.print_png(f, metadata={"Software": f"dualoptim {dualoptim.__version__}"})

    atomic_write(path, write)

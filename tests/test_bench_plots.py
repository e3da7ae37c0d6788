"""Benchmark figures: the averaged data that is drawn, the PNG files, and their atomic writing."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imread

from dualoptim.bench.plots import (
    DPI,
    curves_figure,
    grad_norms_figure,
    mean_curve,
    plot_curves,
    plot_grad_norms,
    plot_sensitivity,
    sensitivity_figure,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(
    group: str,
    seed: int,
    curves: dict[str, list[list[float]]],
    *,
    method: str | None = None,
    setting: str | None = None,
    lr_scale: float = 1.0,
) -> dict[str, Any]:
    """A run record as the benchmark writes it, with keys plots must ignore; method and
    setting default to the ones the group names, "method (setting)"."""
    named_method, _, named_setting = group.partition(" (")
    method = method or named_method
    setting = setting or named_setting.rstrip(")") or "dual"
    return {
        "schema": 1,
        "kind": "run",
        "group": group,
        "method": method,
        "setting": setting,
        "lr_scale": lr_scale,
        "forget_lr": 1e-4 * lr_scale,
        "seed": seed,
        "metrics": {"FA": 97.0, "RA": 99.0, "TA": 90.0, "MIA": 80.0},
        "curves": curves,
        "seconds": 1.0,
        "id": f"{group}-{seed}",
        "environment": {"python": "3.11"},
    }


def reference(seed: int, metrics: dict[str, float]) -> dict[str, Any]:
    return {
        "schema": 1,
        "kind": "reference",
        "group": "RT",
        "method": None,
        "setting": None,
        "lr_scale": None,
        "forget_lr": None,
        "seed": seed,
        "metrics": metrics,
        "curves": {},
        "seconds": 1.0,
    }


def line(where: Figure | Axes, gid: str) -> Any:
    """The one line with ``gid`` in ``where`` (all axes of a figure, or one axes)."""
    axes = where.axes if isinstance(where, Figure) else [where]
    found = [ln for ax in axes for ln in ax.get_lines() if ln.get_gid() == gid]
    assert len(found) == 1, f"{len(found)} lines with gid {gid!r}"
    return found[0]


def visible_axes(fig: Figure) -> list[Axes]:
    return [ax for ax in fig.axes if ax.get_visible()]


def assert_png(path: Path, fig: Figure) -> None:
    """``path`` is a PNG matplotlib reads back at the size of ``fig`` (inches × dpi)."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    width, height = fig.get_size_inches() * fig.dpi
    assert image.shape == (round(height), round(width), 4)
    assert min(image.shape[:2]) > 200
    assert np.ptp(image[..., :3]) > 0.5  # something is drawn, not a blank canvas


# --- mean_curve ---------------------------------------------------------------------------


def test_mean_curve_is_the_mean_and_population_std_per_step() -> None:
    steps, mean, std = mean_curve([[[0, 1.0], [1, 3.0]], [[0, 3.0], [1, 7.0]]])
    np.testing.assert_array_equal(steps, [0, 1])
    np.testing.assert_allclose(mean, [2.0, 5.0])
    np.testing.assert_allclose(std, [1.0, 2.0])  # ddof 0: |a - b| / 2


def test_mean_curve_keeps_only_the_steps_every_seed_has() -> None:
    a = [[0, 10.0], [25, 20.0], [50, 30.0]]
    b = [[0, 20.0], [50, 50.0], [75, 1.0]]
    c = [[0, 30.0], [25, 0.0], [50, 40.0]]
    steps, mean, std = mean_curve([a, b, c])
    np.testing.assert_array_equal(steps, [0, 50])
    np.testing.assert_allclose(mean, [20.0, 40.0])
    np.testing.assert_allclose(std, [math.sqrt(200 / 3)] * 2)  # deviations (-10, 0, 10)


def test_mean_curve_of_one_seed_has_zero_std() -> None:
    steps, mean, std = mean_curve([[[3, 5.0], [7, 6.0]]])
    np.testing.assert_array_equal(steps, [3, 7])
    np.testing.assert_array_equal(mean, [5.0, 6.0])
    np.testing.assert_array_equal(std, [0.0, 0.0])


def test_mean_curve_without_a_common_step_is_empty() -> None:
    steps, mean, std = mean_curve([[[0, 1.0]], [[1, 2.0]]])
    assert steps.shape == mean.shape == std.shape == (0,)


def test_mean_curve_turns_a_json_null_into_nan() -> None:
    _, mean, _ = mean_curve([[[0, 1.0], [1, None]], [[0, 3.0], [1, 2.0]]])
    assert mean[0] == 2.0
    assert math.isnan(mean[1])


def test_mean_curve_rejects_no_curves_and_malformed_points() -> None:
    with pytest.raises(ValueError, match="no curves"):
        mean_curve([])
    with pytest.raises(ValueError, match=r"not \[step, value\]"):
        mean_curve([[[0, 1.0, 2.0]]])


# --- plot_curves --------------------------------------------------------------------------

FA_A0 = [[0, 100.0], [25, 90.0], [50, 80.0]]
FA_A1 = [[0, 100.0], [50, 70.0], [75, 60.0]]  # logged at other steps: only 0 and 50 shared
FA_B0 = [[0, 99.0], [25, 95.0]]


def fig1_records() -> list[dict[str, Any]]:
    return [
        run("sfron (alternate)", 0, {"eval/FA": FA_A0, "eval/RA": [[0, 99.0], [50, 98.0]]}),
        reference(0, {"FA": 90.0, "RA": 99.0}),
        run("sfron (alternate)", 1, {"eval/FA": FA_A1, "eval/RA": [[0, 97.0], [50, 96.0]]}),
        run("sfron (dual)", 0, {"eval/FA": FA_B0}),
        run("ga (dual)", 0, {}),  # no eval curve: skipped
        run("ga (joint)", 0, {"loss/forget": [[1, 2.0]]}),  # only losses: skipped
        reference(1, {"FA": 94.0, "RA": 98.0}),
    ]


def test_curves_figure_draws_the_mean_over_seeds_of_each_group() -> None:
    fig = curves_figure(fig1_records(), metrics=("FA", "RA"))
    assert [ax.get_title() for ax in visible_axes(fig)] == ["FA", "RA"]
    fa = fig.axes[0]
    assert {ln.get_gid() for ln in fa.get_lines()} == {"sfron (alternate)", "sfron (dual)", "RT"}

    alternate = line(fa, "sfron (alternate)")
    np.testing.assert_array_equal(alternate.get_xdata(), [0, 50])
    np.testing.assert_allclose(alternate.get_ydata(), [100.0, 75.0])
    dual = line(fa, "sfron (dual)")
    np.testing.assert_array_equal(dual.get_xdata(), [0, 25])
    np.testing.assert_allclose(dual.get_ydata(), [99.0, 95.0])

    rt = line(fa, "RT")
    np.testing.assert_allclose(rt.get_ydata(), [92.0, 92.0])  # mean of RT's two seeds
    assert rt.get_linestyle() == "--"
    assert rt.get_label() == "RT"
    rt_ra = line(fig.axes[1], "RT")
    np.testing.assert_allclose(rt_ra.get_ydata(), [98.5, 98.5])


def test_curves_figure_shades_one_std_around_the_mean() -> None:
    fig = curves_figure(fig1_records(), metrics=("FA",))
    band = next(c for c in fig.axes[0].collections if c.get_gid() == "sfron (alternate) band")
    y = band.get_paths()[0].vertices[:, 1]
    # seeds at step 50: 80 and 70 → mean 75 ± 5; at step 0 both 100 → no spread
    assert y.min() == pytest.approx(70.0)
    assert y.max() == pytest.approx(100.0)
    assert set(np.round(y, 9)) == {70.0, 80.0, 100.0}


def test_curves_figure_uses_one_colour_per_group_in_every_subplot() -> None:
    fig = curves_figure(fig1_records(), metrics=("FA", "RA"))
    fa, ra = (line(ax, "sfron (alternate)") for ax in fig.axes)
    assert fa.get_color() == ra.get_color()
    assert fa.get_color() != line(fig.axes[0], "sfron (dual)").get_color()
    legend_texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend_texts == ["alternate (one shared state)", "dual (DualOptim)", "RT"]
    assert "over 2 seeds" in fig._suptitle.get_text()


def test_curves_figure_leaves_out_a_metric_no_group_logged() -> None:
    fig = curves_figure(fig1_records())  # TA and MIA were never logged; RA only by one group
    assert [ax.get_title() for ax in visible_axes(fig)] == ["FA", "RA"]


def test_curves_figure_skips_a_group_whose_seeds_share_no_step() -> None:
    records = [
        run("a", 0, {"eval/FA": [[0, 1.0]]}),
        run("a", 1, {"eval/FA": [[5, 2.0]]}),
        run("b", 0, {"eval/FA": [[0, 3.0]]}),
    ]
    fig = curves_figure(records, metrics=("FA",))
    assert [ln.get_gid() for ln in fig.axes[0].get_lines()] == ["b"]  # no RT record: no line


SIX = ("joint", "alternate", "dual", "dual_8bit", "dual_plus", "dual_plus_8bit")


@pytest.mark.parametrize("metrics", [("FA",), ("FA", "RA"), ("FA", "RA", "TA", "MIA")])
def test_curves_legend_of_the_six_settings_fits_inside_the_figure(
    metrics: tuple[str, ...],
) -> None:
    """The real-world table's two panels once cut the legend's first column off the left."""
    curve = {f"eval/{m}": [[0, 1.0], [10, 2.0]] for m in metrics}
    fig = curves_figure([run(f"me+gd ({s})", 0, curve) for s in SIX], metrics=metrics)
    (legend,) = fig.legends
    assert_inside(fig, legend)
    assert len(legend.get_texts()) == len(SIX)


def assert_inside(fig: Figure, artist: Any) -> None:
    """``artist``, once drawn, lies within the figure's width (nothing cut off at a side)."""
    FigureCanvasAgg(fig).draw()
    box, page = artist.get_window_extent(), fig.bbox
    assert page.x0 <= box.x0, (box, page)
    assert box.x1 <= page.x1, (box, page)


@pytest.mark.parametrize(
    "build",
    [
        lambda: curves_figure([run("me+gd (dual)", 0, {"eval/FA": [[0, 1.0], [5, 2.0]]})], ("FA",)),
        lambda: grad_norms_figure([run("sfron (dual)", 0, {"grad_norm/forget": [[1, 2.0]]})]),
    ],
    ids=["curves of one metric", "grad norms of one method"],
)
def test_a_one_panel_figure_keeps_its_whole_title(build: Any) -> None:
    """A one-panel figure is narrower than its title: the committed single-method gradient
    norm figure once lost both ends of it."""
    fig = build()
    (title,) = [t for t in fig.texts if t.get_text() == fig.get_suptitle() != ""]
    assert_inside(fig, title)


def test_plot_curves_writes_a_png_atomically(tmp_path: Path) -> None:
    path = tmp_path / "figures" / "lr1" / "curves.png"  # parents do not exist yet
    plot_curves(fig1_records(), path)
    assert_png(path, curves_figure(fig1_records()))
    assert sorted(p.name for p in path.parent.iterdir()) == ["curves.png"]


@pytest.mark.parametrize(
    ("records", "match"),
    [
        ([], "no run record"),
        ([reference(0, {"FA": 90.0})], "no run record"),
        ([run("a", 0, {}), run("b", 0, {"grad_norm/forget": [[1, 1.0]]})], "no run record"),
        ([run("a", 0, {"eval/FA": [[0, 1.0]]}), run("a", 1, {"eval/FA": [[1, 1.0]]})], "share"),
        (
            [
                run("a", 0, {"eval/FA": [[0, 1.0]]}, lr_scale=1.0),
                run("a", 0, {"eval/FA": [[0, 1.0]]}, lr_scale=2.0),
            ],
            "several lr_scale",
        ),
    ],
)
def test_plot_curves_refuses_when_there_is_nothing_to_plot(
    tmp_path: Path, records: list[dict[str, Any]], match: str
) -> None:
    path = tmp_path / "curves.png"
    with pytest.raises(ValueError, match=match):
        plot_curves(records, path)
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


def test_plot_curves_rejects_empty_metrics(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="metrics is empty"):
        plot_curves(fig1_records(), tmp_path / "c.png", metrics=())


# --- plot_grad_norms ----------------------------------------------------------------------


def grad_records() -> list[dict[str, Any]]:
    def norms(f: list[float], r: list[float]) -> dict[str, list[list[float]]]:
        return {
            "grad_norm/forget": [[2 * i + 1, v] for i, v in enumerate(f)],
            "grad_norm/retain": [[2 * i + 2, v] for i, v in enumerate(r)],
            "eval/FA": [[0, 100.0]],
        }

    return [
        run("sfron (alternate)", 0, norms([4.0, 8.0], [1.0, 1.0]), setting="alternate"),
        run("sfron (alternate)", 1, norms([6.0, 12.0], [3.0, 1.0]), setting="alternate"),
        run("sfron (dual)", 0, norms([1.0, 2.0], [0.5, 0.5])),
        run("sfron (dual)", 1, norms([3.0, 0.0], [0.5, 1.5])),
        run("ga (dual)", 0, {"grad_norm/forget": [[1, 9.0], [3, 7.0]]}, method="ga"),
        run("ga (joint)", 0, {"grad_norm/joint": [[1, 5.0]]}, method="ga", setting="joint"),
        run("rl (dual)", 0, {"eval/FA": [[0, 1.0]]}, method="rl"),  # no norms: no subplot
        reference(0, {"FA": 90.0}),
    ]


def test_grad_norms_figure_has_one_subplot_per_method_with_norms() -> None:
    fig = grad_norms_figure(grad_records())
    axes = visible_axes(fig)
    assert [ax.get_title() for ax in axes] == ["ga", "sfron"]  # methods in name order
    assert all(ax.get_yscale() == "log" for ax in axes)
    assert [ln.get_gid() for ln in axes[0].get_lines()] == ["ga/dual/forget"]  # joint: opt-in
    assert {ln.get_gid() for ln in axes[1].get_lines()} == {
        "sfron/alternate/forget",
        "sfron/alternate/retain",
        "sfron/dual/forget",
        "sfron/dual/retain",
    }


def test_grad_norms_figure_draws_the_mean_over_seeds() -> None:
    fig = grad_norms_figure(grad_records())
    forget = line(fig, "sfron/alternate/forget")
    np.testing.assert_array_equal(forget.get_xdata(), [1, 3])
    np.testing.assert_allclose(forget.get_ydata(), [5.0, 10.0])
    retain = line(fig, "sfron/alternate/retain")
    np.testing.assert_array_equal(retain.get_xdata(), [2, 4])
    np.testing.assert_allclose(retain.get_ydata(), [2.0, 1.0])
    # (2 + 0) / 2 = 1 is positive; a mean of exactly 0 would be a hole on the log axis
    np.testing.assert_allclose(line(fig, "sfron/dual/forget").get_ydata(), [2.0, 1.0])


def test_grad_norms_figure_styles_objectives_and_colours_settings() -> None:
    fig = grad_norms_figure(grad_records())
    af, ar = line(fig, "sfron/alternate/forget"), line(fig, "sfron/alternate/retain")
    df = line(fig, "sfron/dual/forget")
    assert af.get_linestyle() == "-"
    assert ar.get_linestyle() == "--"
    assert af.get_color() == ar.get_color() != df.get_color()
    assert df.get_color() == line(fig, "ga/dual/forget").get_color()  # same setting, same colour
    assert "shared state" in af.get_label()
    assert "DualOptim" in df.get_label()


def test_grad_norms_figure_has_one_legend_of_settings_and_objectives() -> None:
    fig = grad_norms_figure(grad_records())
    assert all(ax.get_legend() is None for ax in fig.axes)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "alternate (one shared state)",
        "dual (DualOptim)",
        "‖∇L_f‖",
        "‖∇L_r‖",
    ]
    colors = {h.get_label(): h.get_color() for h in legend.legend_handles}
    assert colors["dual (DualOptim)"] == line(fig, "sfron/dual/forget").get_color()


def test_grad_norms_figure_masks_a_zero_norm_on_the_log_axis() -> None:
    records = [run("sfron (dual)", 0, {"grad_norm/forget": [[1, 0.0], [2, 1.0]]})]
    y = line(grad_norms_figure(records), "sfron/dual/forget").get_ydata()
    assert math.isnan(y[0])
    assert y[1] == 1.0


def test_grad_norms_figure_draws_the_joint_norm_when_asked() -> None:
    fig = grad_norms_figure(grad_records(), kinds=("forget", "retain", "joint"))
    joint = line(fig, "ga/joint/joint")
    assert joint.get_linestyle() == ":"
    np.testing.assert_allclose(joint.get_ydata(), [5.0])


def test_plot_grad_norms_writes_a_png(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "grad_norms.png"
    plot_grad_norms(grad_records(), path)
    assert_png(path, grad_norms_figure(grad_records()))
    assert sorted(p.name for p in path.parent.iterdir()) == ["grad_norms.png"]


def test_plot_grad_norms_refuses_when_there_is_nothing_to_plot(tmp_path: Path) -> None:
    no_norms = [run("a", 0, {"eval/FA": [[0, 1.0]]}), reference(0, {"FA": 1.0})]
    with pytest.raises(ValueError, match="no run record has a gradient-norm curve"):
        plot_grad_norms(no_norms, tmp_path / "g.png")
    only_joint = [run("a", 0, {"grad_norm/joint": [[1, 1.0]]}, setting="joint")]
    with pytest.raises(ValueError, match="no run record has a gradient-norm curve"):
        plot_grad_norms(only_joint, tmp_path / "g.png")
    with pytest.raises(ValueError, match="kinds must be among"):
        plot_grad_norms(grad_records(), tmp_path / "g.png", kinds=("forgett",))
    assert list(tmp_path.iterdir()) == []


# --- plot_sensitivity ---------------------------------------------------------------------


GAPS = {
    "sfron (alternate)": {2.0: 9.0, 0.5: 3.0, 1.0: 4.0},  # unsorted on purpose
    "sfron (dual)": {"0.5": 2.0, "1": 1.5, "2": None},  # JSON keys, one diverged run
}


def test_sensitivity_figure_draws_gap_against_the_multiplier() -> None:
    fig = sensitivity_figure(GAPS)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    alternate = line(fig, "sfron (alternate)")
    np.testing.assert_array_equal(alternate.get_xdata(), [0.5, 1.0, 2.0])
    np.testing.assert_array_equal(alternate.get_ydata(), [3.0, 4.0, 9.0])
    assert alternate.get_marker() == "o"
    dual = line(fig, "sfron (dual)")
    np.testing.assert_array_equal(dual.get_xdata(), [0.5, 1.0, 2.0])
    np.testing.assert_array_equal(dual.get_ydata()[:2], [2.0, 1.5])
    assert math.isnan(dual.get_ydata()[2])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1/2", "1", "2"]
    assert ax.get_xlabel() == "η_f / configured η_f"
    assert ax.get_yscale() == "linear"  # Gaps 1.5 … 9: within ×20
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(GAPS)


def test_sensitivity_ticks_are_fractions_and_a_collapse_switches_to_log_y() -> None:
    gaps = {"rl (dual)": {1 / 2187: 2.0, 1 / 3: 3.0, 0.4: 2.5, 1.0: 2.2, 27.0: 77.0}}
    (ax,) = sensitivity_figure(gaps).axes
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["1/2187", "1/3", "0.4", "1", "27"]
    assert ax.get_yscale() == "log"  # 77 / 2 > 20


def test_plot_sensitivity_writes_a_png(tmp_path: Path) -> None:
    path = tmp_path / "sensitivity.png"
    plot_sensitivity(GAPS, path, xlabel="multiplier")
    assert_png(path, sensitivity_figure(GAPS))
    assert [p.name for p in tmp_path.iterdir()] == ["sensitivity.png"]


@pytest.mark.parametrize(
    ("gaps", "match"),
    [({}, "no Gap"), ({"a": {}}, "no Gap"), ({"a": {0.0: 1.0, 1.0: 2.0}}, "positive")],
)
def test_plot_sensitivity_refuses_bad_input(
    tmp_path: Path, gaps: dict[str, dict[float, float]], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        plot_sensitivity(gaps, tmp_path / "s.png")
    assert list(tmp_path.iterdir()) == []


# --- writing ------------------------------------------------------------------------------


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "curves.png"
    path.write_bytes(b"old")

    def broken(_self: FigureCanvasAgg, f: Any, **_: Any) -> None:
        f.write(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(FigureCanvasAgg, "print_png", broken)
    with pytest.raises(OSError, match="disk full"):
        plot_curves(fig1_records(), path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_overwriting_replaces_the_file_and_leaves_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "s.png"
    path.write_bytes(b"old")
    plot_sensitivity(GAPS, path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert [p.name for p in tmp_path.iterdir()] == ["s.png"]


def test_figures_are_not_kept_by_pyplot(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plot_curves(fig1_records(), tmp_path / "c.png")
    plot_grad_norms(grad_records(), tmp_path / "g.png")
    plot_sensitivity(GAPS, tmp_path / "s.png")
    assert plt.get_fignums() == before


def test_dpi_is_set_on_the_figures() -> None:
    assert curves_figure(fig1_records()).dpi == DPI
    assert grad_norms_figure(grad_records()).dpi == DPI
    assert sensitivity_figure(GAPS).dpi == DPI


def test_the_dashed_reference_is_named_by_its_group() -> None:
    """The real world's reference is the initial model, not an RT."""
    initial = {**reference(0, {"FA": 90.0}), "group": "initial"}
    fig = curves_figure([run("me+gd (dual)", 0, {"eval/FA": FA_B0}), initial], metrics=("FA",))
    assert line(fig.axes[0], "RT").get_label() == "initial"
    assert [t.get_text() for t in fig.legends[0].get_texts()][-1] == "initial"

"""What decides a claim (SPEC §3.4), against hand-computed values: per-seed gaps, the paired
bootstrap interval, the claims table, and the untouched original as a row."""

from __future__ import annotations

import pytest

from dualoptim.bench.claims import claims, claims_csv, claims_table
from dualoptim.bench.stats import Interval, mean_difference, seed_gaps
from dualoptim.bench.tables import main_table, sensitivity_table, summarize
from dualoptim.unlearn.task import NO_UNLEARNING
from test_bench_tables import METRICS, rec

SEEDS = range(4)
ODD = (0, 1, 0, 1)  # per seed


def test_seed_gaps_pair_each_seed_with_its_own_reference() -> None:
    method = [{"FA": 92, "RA": 98}, {"FA": 96, "RA": 100}]
    reference = [{"FA": 90, "RA": 100}, {"FA": 94, "RA": 100}]
    # seed 0: (2 + 2) / 2; seed 1: (2 + 0) / 2
    assert seed_gaps(method, reference, METRICS).tolist() == [2.0, 1.0]
    with pytest.raises(ValueError, match="pair by seed"):
        seed_gaps(method, reference[:1], METRICS)


def test_the_bootstrap_interval_of_a_mean_by_hand() -> None:
    """Resampling [0, 0, 0, 1] gives the means 0, 1/4, 1/2, 3/4, 1 with probabilities
    81, 108, 54, 12, 1 (/256): the 2.5% point is 0 (P = 0.32), the 97.5% point 3/4
    (P(mean < 3/4) = 0.949, P(mean = 1) = 0.004)."""
    interval = mean_difference([0.0, 0.0, 0.0, 1.0])
    assert (interval.value, interval.low, interval.high, interval.seeds) == (0.25, 0.0, 0.75, 4)
    assert (mean_difference([0.0, 1.0]).low, mean_difference([0.0, 1.0]).high) == (0.0, 1.0)
    constant = mean_difference([-1.0, -1.0, -1.0])
    assert (constant.low, constant.high) == (-1.0, -1.0)


@pytest.mark.parametrize(
    ("low", "high", "seeds", "verdict"),
    [
        (-2.0, -1.0, 5, "reproduced"),
        (1.0, 2.0, 5, "contradicted"),
        (-1.0, 1.0, 5, "not resolved"),
        (-1.0, 0.0, 5, "not resolved"),  # touching 0 resolves nothing
        (-2.0, -1.0, 1, "not resolved"),  # one seed: no interval worth the name
    ],
)
def test_a_verdict_needs_an_interval_that_excludes_zero(
    low: float, high: float, seeds: int, verdict: str
) -> None:
    assert Interval(-1.5, low, high, seeds).verdict("lower") == verdict


def _claim_records() -> list[dict]:
    """RT: FA 90, RA 100 on every seed. Alternate ×1: FA 94 + 2·odd (per-seed gaps 2, 3);
    DO ×1: FA 91 + odd (gaps 0.5, 1); ×3: Alternate FA 100 (Gap 5), DO FA 93 (Gap 1.5).
    RA 100 throughout. Both tune to ×1."""
    records = [rec("reference", "RT", s, 90, 100) for s in SEEDS]
    for s, odd in zip(SEEDS, ODD, strict=True):
        records += [
            rec("run", "x (alternate)", s, 94 + 2 * odd, 100, lr_scale=1.0),
            rec("run", "x (alternate)", s, 100, 100, lr_scale=3.0),
            rec("run", "x (dual)", s, 91 + odd, 100, lr_scale=1.0),
            rec("run", "x (dual)", s, 93, 100, lr_scale=3.0),
        ]
    return records


def test_claims_by_hand() -> None:
    """With p̄ the resampled share of odd seeds:
    - ΔGap = mean(per-seed gap differences) = mean(-1.5, -2, -1.5, -2) = -1.75, and every
      resample lies in [-2, -1.5]: reproduced;
    - ΔStd = (σ/2 − σ)/2 for σ the std of the resampled parities: -0.25 here, but 0 when a
      resample holds one parity only (P = 1/8 > 2.5%): not resolved;
    - Δspread = (1 − p̄/2) − (3 − p̄) = -2 + p̄/2 ∈ [-2, -1.5], -1.75 here: reproduced."""
    summary = summarize(_claim_records(), METRICS)
    (claim,) = claims(summary, METRICS)
    assert (claim.method, claim.run, claim.baseline) == ("x", "x (dual)", "x (alternate)")
    gap, std, spread = (claim.intervals[c] for c in ("Gap", "Std", "η_f sensitivity"))
    assert gap.value == pytest.approx(-1.75)
    assert -2.0 <= gap.low <= gap.high <= -1.5
    assert claim.verdict("Gap") == "reproduced"
    assert (std.value, std.low, std.high) == pytest.approx((-0.25, -0.25, 0.0))
    assert claim.verdict("Std") == "not resolved"
    assert spread.value == pytest.approx(-1.75)
    assert -2.0 <= spread.low <= spread.high <= -1.5
    assert claim.verdict("η_f sensitivity") == "reproduced"
    header, (cells,) = claims_table([claim])
    assert header[:4] == ["method", "run vs baseline", "ΔGap [95% CI]", "Gap ↓"]
    assert cells[:4] == ["x", "x (dual) vs x (alternate)", gap.text(2), "reproduced"]
    assert cells[2].startswith("-1.75 [-")  # a Gap's two decimals
    lines = claims_csv([claim]).splitlines()
    assert lines[0].endswith("seeds,verdict")
    assert lines[2] == "x,x (dual),x (alternate),Std,-0.25,-0.25,0,4,not resolved"


def test_a_verdict_on_few_seeds_says_what_it_is_worth(tmp_path) -> None:
    """Four seeds: an interval excludes 0 whenever the four differences share a sign, 1 time
    in 2^3 by chance; from six seeds on, no note. A claim not measured (None) or measured on
    one seed does not count."""
    from dualoptim.bench.claims import Claim
    from dualoptim.bench.report import claims_section, few_seeds_note

    (claim,) = claims(summarize(_claim_records(), METRICS), METRICS)
    note = " Some verdicts here rest on 4 seeds (the `seeds` column of the CSV): with 4, an"
    assert few_seeds_note([claim]).startswith(note)
    assert "paired differences share a sign, which chance alone gives 1 time in 8," in (
        few_seeds_note([claim])
    )
    assert note in claims_section([claim], tmp_path)
    intervals = {"Gap": Interval(-1.0, -2.0, -0.5, 6), "Std": None, "η_f": Interval(0, 0, 0, 1)}
    six = Claim("x", "x (dual)", "x (alternate)", intervals, {}, {})
    assert few_seeds_note([six]) == ""


def test_no_claim_without_its_baseline_and_a_note_where_one_cannot_be_measured() -> None:
    records = [r for r in _claim_records() if "alternate" not in r["group"]]
    assert claims(summarize(records, METRICS), METRICS) == []
    one_scale = [r for r in _claim_records() if r.get("lr_scale") != 3.0]
    (claim,) = claims(summarize(one_scale, METRICS), METRICS)
    assert claim.intervals["η_f sensitivity"] is None
    assert claim.verdict("η_f sensitivity") == "not resolved"
    assert (
        "not resolved (1 common η_f multiple(s) near the tuned ones)" in claims_table([claim])[1][0]
    )


def test_sensitivity_is_taken_near_each_tuned_eta_not_at_the_same_multiples() -> None:
    """RT: FA 90, RA 100, so Gap = |FA − 90| / 2. Alternate's grid, extended far down, tunes
    to ×1/27: Gaps 3, 1, 2, 3, 10 at ×1/81 … ×1. DO tunes to ×1: Gaps 2, 1, 1.5 at ×1/3, ×1,
    ×3. Near each optimum (×1/3, ×1, ×3 of it) the spreads are 2 (3, 1, 2) and 1 (2, 1, 1.5):
    Δ = −1 on every resample. The multiples both ran (×1/3, ×1) would give 1 − 7 = −6.
    Alternate's table spread is over ×1/81 … ×1/3 (within ×10 of ×1/27): 3 − 1 = 2, std
    0.83 of (3, 1, 2, 3); DO's 1, std 0.41 of (2, 1, 1.5)."""
    alternate = {1 / 81: 96, 1 / 27: 92, 1 / 9: 94, 1 / 3: 96, 1.0: 110}
    dual = {1 / 3: 94, 1.0: 92, 3.0: 93}
    records = [rec("reference", "RT", s, 90, 100) for s in SEEDS]
    for s in SEEDS:
        records += [
            rec("run", "x (alternate)", s, fa, 100, lr_scale=k) for k, fa in alternate.items()
        ]
        records += [rec("run", "x (dual)", s, fa, 100, lr_scale=k) for k, fa in dual.items()]
    summary = summarize(records, METRICS)
    assert summary.tuned_scales() == {"x (alternate)": 1 / 27, "x (dual)": 1.0}
    (claim,) = claims(summary, METRICS)
    spread = claim.intervals["η_f sensitivity"]
    assert (spread.value, spread.low, spread.high) == pytest.approx((-1.0, -1.0, -1.0))
    assert claim.notes["η_f sensitivity"] == "tuned η_f × 0.333, 1, 3"
    _, cells = sensitivity_table(summary.sensitivity(), summary.tuned_scales())
    assert cells[0][-2:] == ["2.00", "0.83"]  # not 10 − 1 = 9 over the whole grid
    assert cells[1][-2:] == ["1.00", "0.41"]


def test_the_untouched_original_is_a_row_with_its_gap() -> None:
    """no unlearning: FA 98 on both seeds (gaps 8 and 4 against RT's 90 and 94), RA 100."""
    records = [
        rec("reference", "RT", 0, 90, 100),
        rec("reference", "RT", 1, 94, 100),
        rec("reference", NO_UNLEARNING, 0, 98, 100, seconds=0.0),
        rec("reference", NO_UNLEARNING, 1, 98, 100, seconds=0.0),
        rec("run", "x (dual)", 0, 92, 100, lr_scale=1.0),
        rec("run", "x (dual)", 1, 96, 100, lr_scale=1.0),
    ]
    summary = summarize(records, METRICS)
    (original,) = summary.baselines
    assert original.group == NO_UNLEARNING
    assert original.gap == pytest.approx((abs(98 - 92) + 0) / 2)
    assert original.seed_gaps == (4.0, 2.0)
    _, cells = main_table(summary.table_rows(), METRICS)
    assert [c[0] for c in cells] == ["RT", NO_UNLEARNING, "x (dual)"]
    assert [row.group for row in summary.tuned()] == ["x (dual)"]  # a baseline is never tuned


def test_tables_without_a_gap_pair_their_headline_metrics_by_seed() -> None:
    """OVR (higher is better) of DO − Alternate per seed: 0.1, 0.2, 0.1, 0.2 at ×1 (every
    resample's mean within [0.1, 0.2]: reproduced); at ×10 only seed 0 ran both: not
    resolved, saying so. A failed run pairs with nothing."""
    from dualoptim.bench.claims import metric_claims
    from dualoptim.unlearn.task import Column, Layout

    layout = Layout(columns=(), references=(), headline=(Column("OVR", "OVR", "higher"),))

    def run(setting: str, seed: int, ovr: float, scale: float = 1.0, **kw) -> dict:
        record = rec("run", f"ME+GD ({setting})", seed, 0, 0, lr_scale=scale, **kw)
        return {**record, "metrics": {"OVR": ovr}}

    records = [run("alternate", s, 0.5) for s in SEEDS]
    records += [run("dual", s, 0.6 + 0.1 * odd) for s, odd in zip(SEEDS, ODD, strict=True)]
    records += [run("alternate", 0, 0.4, 10.0), run("dual", 0, 0.3, 10.0)]
    failed = {"type": "RunDivergedError", "message": "nan", "step": 3}
    records += [run("dual", 1, 0.9, 10.0, failure=failed)]
    at_1, at_10 = metric_claims(records, layout)
    assert (at_1.method, at_1.run, at_1.baseline) == (
        "ME+GD",
        "ME+GD (dual) at η_f ×1",
        "ME+GD (alternate)",
    )
    interval = at_1.intervals["OVR"]
    assert interval.value == pytest.approx(0.15)
    assert 0.1 - 1e-12 <= interval.low <= interval.high <= 0.2 + 1e-12
    assert at_1.verdict("OVR") == "reproduced"  # higher is better here
    # at the metric table's precision (the layout's 3 decimals), not a Gap's 2
    assert claims_table([at_1])[1][0][2] == "+0.150 [+0.100, +0.200]"
    assert at_10.intervals["OVR"] is None
    assert claims_table([at_10])[1][0][-1] == "not resolved (1 paired seed(s))"

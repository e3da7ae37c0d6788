"""Carried against reset optimizer states (SPEC §2.6), against hand-computed values: each
carried run is paired with its reset twin by seed on the Gap after the last request, the Gap
averaged over requests and the utility drift; decoupled settings are compared with the
Alternate run of their own policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dualoptim.bench.claims import claims, pairs
from dualoptim.bench.records import make_record
from dualoptim.bench.requests_report import POLICIES, after_every_request
from dualoptim.bench.tables import summarize
from dualoptim.unlearn.task import Column, Layout

SEEDS = range(4)
ODD = (0, 1, 0, 1)  # per seed
LAYOUT = Layout(columns=(Column("FA", "FA"),), references=("RT",), gap_to="RT", utility="TA")


def record(group: str, seed: int, request: int, fa: float, ta: float, **kw: Any) -> dict:
    """A record of request ``request``; a run's group is "method (setting) [policy]", any
    other group is a reference's."""
    run = " (" in group
    method, _, rest = group.partition(" (")
    setting, _, policy = rest.partition(") [")
    extra = {"request": request, "requests": 2}
    if run:
        extra["state_policy"] = policy.rstrip("]")
    return make_record(
        id=f"{group}-{seed}-{request}",
        kind="run" if run else "reference",
        group=group,
        seed=seed,
        metrics={"FA": fa, "TA": ta},
        seconds=1.0,
        config={},
        method=method if run else None,
        setting=setting if run else None,
        lr_scale=1.0 if run else None,
        forget_lr=1e-4 if run else None,
        extra=extra,
        **kw,
    )


def sequence() -> list[dict]:
    """RT: FA 90 after both requests. Reset: FA 92 then 94 (Gaps 2, 4), TA 88 then 86 (drift
    2). Carried: FA 92 (request 1 is the same fresh start) then 91 + odd (Gaps 1 or 2), TA 88
    then 87 (drift 1). y: carried is worse (Gap 5 after request 2 against reset's 3).
    z: carried without a reset twin."""
    out = []
    for s, odd in zip(SEEDS, ODD, strict=True):
        out += [record("RT", s, k, 90, 90) for k in (1, 2)]
        out += [record("x (dual) [reset]", s, 1, 92, 88), record("x (dual) [reset]", s, 2, 94, 86)]
        out += [
            record("x (dual) [carry]", s, 1, 92, 88),
            record("x (dual) [carry]", s, 2, 91 + odd, 87),
        ]
        out += [record("y (dual) [reset]", s, 1, 91, 88), record("y (dual) [reset]", s, 2, 93, 88)]
        out += [record("y (dual) [carry]", s, 1, 91, 88), record("y (dual) [carry]", s, 2, 95, 88)]
        out += [record("z (dual) [carry]", s, k, 91, 88) for k in (1, 2)]
    return out


def test_carried_runs_against_their_reset_twins_by_hand(tmp_path: Path) -> None:
    """x: ΔGap after 2 = (1 + odd) − 4 ∈ {−3, −2}, mean −2.5; Δmean Gap = (3 + odd)/2 − 3 ∈
    {−1.5, −1}, mean −1.25; ΔTA drift = 1 − 2 = −1 on every seed: carry better on all three.
    y: ΔGap after 2 = +2, Δmean Gap = +1, ΔTA drift 0: reset better, better, unresolved."""
    tables, text = after_every_request(LAYOUT, sequence(), tmp_path)
    (title, header, cells) = tables[1]
    assert title == POLICIES
    assert header[2:] == [
        "ΔGap after 2 [95% CI]",
        "Gap after 2 ↓",
        "Δmean Gap [95% CI]",
        "mean Gap ↓",
        "ΔTA drift [95% CI]",
        "TA drift ↓",
    ]
    x, y = cells  # z has no reset twin: no row
    assert x[:2] == ["x", "x (dual) [carry] vs x (dual) [reset]"]
    assert x[2].startswith("-2.50 [-3.00, -2")
    assert x[3] == x[5] == x[7] == "carry better"
    assert x[4].startswith("-1.25 [-1.50, -1")
    assert x[6] == "-1.00 [-1.00, -1.00]"
    assert y[2:] == [
        "+2.00 [+2.00, +2.00]",
        "reset better",
        "+1.00 [+1.00, +1.00]",
        "reset better",
        "+0.00 [+0.00, +0.00]",
        "not resolved",
    ]
    assert f"## {POLICIES}" in text
    assert "Some verdicts here rest on 4 seeds" in text
    assert (tmp_path / "requests.png").exists()
    lines = (tmp_path / "policy_claims.csv").read_text().splitlines()
    assert lines[3] == "x,x (dual) [carry],x (dual) [reset],TA drift,-1,-1,-1,4,carry better"


def test_a_failed_seed_is_left_out_of_the_pairing(tmp_path: Path) -> None:
    """Reset's request 2 fails on seed 3: its Gap row has no numbers (as in every table), so
    the Gap comparisons resolve nothing and say why; the drift pairs seeds 0-2."""
    failure = {"type": "RunDivergedError", "message": "nan loss", "step": 3}
    records = [
        r
        for r in sequence()
        if r["group"].startswith(("RT", "x"))
        and (r["group"], r["seed"], r["extra"]["request"]) != ("x (dual) [reset]", 3, 2)
    ]
    records += [record("x (dual) [reset]", 3, 2, 94, 86, failure=failure)]
    (_, _, (x,)) = after_every_request(LAYOUT, records, tmp_path)[0][1]
    assert x[3] == x[5] == "not resolved (0 paired seed(s), failed seeds left out)"
    assert x[6] == "-1.00 [-1.00, -1.00]"
    one = [r for r in records if r["seed"] == 0]
    (_, _, (x,)) = after_every_request(LAYOUT, one, tmp_path)[0][1]
    assert x[3] == x[5] == x[7] == "not resolved (1 paired seed(s))"


def test_the_model_before_unlearning_is_a_row_of_every_request(tmp_path: Path) -> None:
    """The original, FA 100 on every seed and request, is 10 from RT's 90: a row of its own
    (RT, the Gap's zero, is not), first, without a drift; and a black line in the figure."""
    records = [r for r in sequence() if r["group"].startswith(("RT", "x (dual) [reset]"))]
    records += [record("original", s, k, 100, 95) for s in SEEDS for k in (1, 2)]
    tables, text = after_every_request(LAYOUT, records, tmp_path)
    (_, _, cells), *_ = tables
    assert [row[0] for row in cells] == ["original", "x (dual) [reset]"]
    assert cells[0][1:] == ["10.00 ± 0.00", "10.00 ± 0.00", ""]
    assert cells[1][1:] == ["2.00 ± 0.00", "4.00 ± 0.00", "2.00 ± 0.00"]
    assert "Row `original`: the model before unlearning" in text


def test_a_task_without_a_gap_shows_its_headline_at_its_own_precision(tmp_path: Path) -> None:
    """No Gap (TOFU): each request's score is the headline metric (OVR, higher is better)
    with the layout's 3 digits; the target, measured once (seed 0), shows its value alone."""
    layout = Layout(
        columns=(Column("OVR", "OVR", "higher"), Column("MU", "MU", "higher")),
        references=("target",),
        headline=(Column("OVR", "OVR", "higher"),),
        utility="MU",
    )

    def tofu(group: str, seed: int, k: int, ovr: float, mu: float) -> dict:
        r = record(group, seed, k, 0, 0)
        r["metrics"] = {"OVR": ovr, "MU": mu}
        return r

    records = [tofu("target", 0, 1, 0.3, 0.5), tofu("target", 0, 2, 0.25, 0.5)]
    for s, ovr in ((0, 0.4), (1, 0.5)):
        records += [tofu("x (dual) [reset]", s, 1, ovr, 0.6)]
        records += [tofu("x (dual) [reset]", s, 2, ovr + 0.1, 0.6 - 0.05 * (s + 1))]
    tables, text = after_every_request(layout, records, tmp_path)
    (_, header, cells), *_ = tables
    assert header == ["run", "OVR after 1", "OVR after 2", "MU drift (1 → 2)"]
    assert cells == [
        ["target", "0.300", "0.250", ""],
        ["x (dual) [reset]", "0.450 ± 0.050", "0.550 ± 0.050", "0.075 ± 0.025"],
    ]
    assert "OVR (higher is better)" in text


def test_a_decoupled_run_is_compared_with_alternate_under_its_own_policy() -> None:
    groups = [
        ("x", "alternate", "x (alternate) [reset]", "reset"),
        ("x", "alternate", "x (alternate) [carry]", "carry"),
        ("x", "dual", "x (dual) [carry]", "carry"),
        ("x", "dual_plus", "x (dual_plus) [carry_base]", "carry_base"),
        ("y", "alternate", "y (alternate)", None),
        ("y", "dual", "y (dual)", None),
    ]
    assert pairs(groups) == [
        ("x", "x (dual) [carry]", "x (alternate) [carry]"),
        ("y", "y (dual)", "y (alternate)"),
    ]
    assert pairs(list(reversed(groups))) == pairs(groups)  # records come in any order
    settings = [("m", s, f"m ({s})", None) for s in ("dual_plus_8bit", "dual", "alternate")]
    assert [label for _, label, _ in pairs(settings)] == ["m (dual)", "m (dual_plus_8bit)"]
    last = [
        r for r in sequence() if r["extra"]["request"] == 2 and r["group"] != "z (dual) [carry]"
    ]
    for r in last:  # x's carried run under Alternate, y as it is
        if r["group"] == "x (dual) [reset]":
            r.update(group="x (alternate) [carry]", setting="alternate")
            r["extra"] = {**r["extra"], "state_policy": "carry"}
    (claim,) = claims(summarize(last, ("FA",), "RT"), ("FA",))
    assert (claim.run, claim.baseline) == ("x (dual) [carry]", "x (alternate) [carry]")
    assert claim.intervals["Gap"].value == pytest.approx(-2.5)

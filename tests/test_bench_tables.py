"""Tables from hand-made records against hand-computed values; records round-trip safely."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest

from dualoptim.bench.records import RecordStore, environment, make_record
from dualoptim.bench.tables import (
    main_table,
    markdown,
    rows_csv,
    sensitivity_table,
    summarize,
)

METRICS = ("FA", "RA")


def rec(kind: str, group: str, seed: int, fa: float, ra: float, **kw: Any) -> dict[str, Any]:
    method, _, setting = group.partition(" (")
    run = kind == "run"
    return make_record(
        id=f"{group}-{seed}-{kw.get('lr_scale')}",
        kind=kind,
        group=group,
        seed=seed,
        metrics={"FA": fa, "RA": ra},
        seconds=kw.pop("seconds", 10.0),
        config={},
        method=method if run else None,
        setting=setting.rstrip(")") if run else None,
        forget_lr=kw.get("lr_scale", 1.0) * 1e-4 if run else None,
        **kw,
    )


RT = [rec("reference", "RT", 0, 90, 100, seconds=20.0), rec("reference", "RT", 1, 94, 100)]
# x at ×1: FA 92, 96 (mean 94, std 2; RT mean 92 → gap 2); RA 98, 100 (mean 99, std 1; gap 1)
# x at ×3: FA 80, 80 (gap 12, std 0); RA 100, 100 (gap 0, std 0)
RUNS = [
    rec("run", "x (dual)", 0, 92, 98, lr_scale=1.0, seconds=3.0),
    rec("run", "x (dual)", 1, 96, 100, lr_scale=1.0, seconds=5.0),
    rec("run", "x (dual)", 0, 80, 100, lr_scale=3.0),
    rec("run", "x (dual)", 1, 80, 100, lr_scale=3.0),
    rec("run", "x (alternate)", 0, 92, 100, lr_scale=1.0),
    rec("run", "x (alternate)", 1, 92, 100, lr_scale=1.0),
]


def test_summary_gap_std_and_time_by_hand() -> None:
    summary = summarize([*RUNS, *RT], METRICS)
    assert summary.rt.gap == 0.0
    assert summary.rt.std == pytest.approx((2 + 0) / 2)  # RT's own spread: FA 90, 94
    rows = {(r.group, r.lr_scale): r for r in summary.rows}
    dual = rows[("x (dual)", 1.0)]
    assert dual.gap == pytest.approx((2 + 1) / 2)
    assert dual.std == pytest.approx((2 + 1) / 2)
    assert dual.metrics["FA"] == pytest.approx({"mean": 94, "std": 2, "gap": 2})
    assert dual.seconds == pytest.approx(4.0)
    assert dual.time_vs_rt == pytest.approx(4.0 / 15.0)  # RT's mean seconds: (20 + 10)/2
    assert rows[("x (dual)", 3.0)].gap == pytest.approx((12 + 0) / 2)
    # alternate: FA 92, 92 → gap 0; RA 100 → gap 0
    assert rows[("x (alternate)", 1.0)].gap == 0.0
    # order: method, then the settings' order (alternate before dual), then the scale
    assert [(r.group, r.lr_scale) for r in summary.rows] == [
        ("x (alternate)", 1.0),
        ("x (dual)", 1.0),
        ("x (dual)", 3.0),
    ]
    assert [(r.group, r.lr_scale) for r in summary.tuned()] == [
        ("x (alternate)", 1.0),
        ("x (dual)", 1.0),
    ]
    assert summary.sensitivity() == {"x (dual)": {1.0: 1.5, 3.0: 6.0}}
    # an unfinished scale (one seed) cannot be chosen, however low its Gap
    lucky = rec("run", "x (dual)", 0, 92, 100, lr_scale=10.0)  # Gap (0 + 2)/2 = 1 on seed 0
    partial = summarize([*RUNS, *RT, lucky], METRICS)
    assert {(r.group, r.lr_scale): r.gap for r in partial.rows}[("x (dual)", 10.0)] == 1.0
    assert [(r.group, r.lr_scale) for r in partial.tuned()][1] == ("x (dual)", 1.0)
    assert partial.sensitivity() == summary.sensitivity()


def test_tables_render_the_numbers() -> None:
    summary = summarize([*RT, *RUNS], METRICS)
    header, cells = main_table([summary.rt, *summary.tuned()], METRICS)
    assert header[:4] == ["method", "η_f", "FA", "RA"]
    assert cells[2] == ["x (dual)", "0.0001", "94.00 ± 2.00 (2.00)", "99.00 ± 1.00 (1.00)",
                        "1.50", "1.50", "0.27", "2"]  # fmt: skip
    text = markdown(header, cells)
    assert text.splitlines()[1] == "|" + "---|" * len(header)
    assert "| x (dual) | 0.0001 | 94.00 ± 2.00 (2.00) |" in text
    s_header, s_cells = sensitivity_table(summary.sensitivity(), summary.tuned_scales())
    assert s_header == ["method", "η_f ×1", "η_f ×3", "spread ↓", "std ↓"]
    # spread 6 − 1.5 = 4.5; population std of (1.5, 6) = 2.25
    assert s_cells == [["x (dual)", "1.50", "6.00", "4.50", "2.25"]]
    table = list(csv.DictReader(io.StringIO(rows_csv(summary.rows, METRICS))))
    assert float(table[1]["FA_std"]) == 2.0
    assert float(table[1]["gap"]) == 1.5
    assert table[1]["seeds"] == "0 1"


def test_summary_refuses_runs_without_their_rt() -> None:
    with pytest.raises(ValueError, match="no reference"):
        summarize(RUNS, METRICS)
    with pytest.raises(
        ValueError, match=r"x \(alternate\) at η_f ×1: no RT record for seed\(s\) \[1\]"
    ):
        summarize([RT[0], *RUNS], METRICS)
    other = {**RT[1], "config": {"model": "resnet8", "seeds": [1]}}
    with pytest.raises(ValueError, match=r"different experiments.*\['model'\], seed 1"):
        summarize([RT[0], other, *RUNS], METRICS)
    with pytest.raises(ValueError, match=r"two reference \(RT\) records for seed 0"):
        summarize([*RT, {**RT[0], "id": "again"}, *RUNS], METRICS)
    with pytest.raises(ValueError, match="kind must be"):
        rec("rt", "RT", 0, 1, 1)


def test_store_round_trips_and_names_a_corrupt_record(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "records")
    for record in RUNS:
        store.put(record)
    assert len(store) == len(RUNS)
    assert store.get(RUNS[0]["id"]) == json.loads(json.dumps(RUNS[0]))
    assert store.get("missing") is None
    assert not list((tmp_path / "records").glob(".*"))  # no temporary files left
    store.path("bad").write_text('{"schema": 1, "kind": "ru')
    with pytest.raises(ValueError, match=r"bad\.json: not a readable record.*delete it"):
        list(store)
    store.path("bad").write_text('{"schema": 99}')
    with pytest.raises(ValueError, match="not a schema-1 record"):
        store.get("bad")


def test_environment_names_versions_commit_and_machine() -> None:
    env = environment()
    assert env["packages"]["torch"].startswith("2.")
    assert env["machine"]["cpus"] >= 1
    assert env["git"] is None or len(env["git"]["commit"]) == 40
    assert not math.isnan(env["machine"]["torch_threads"])

"""The safety task end to end (SPEC §2.5, §3.5) on the real safety data with a tiny model:
records for the initial model and each setting, metrics by their definitions, the safe
answers learned, a report in the talk's layout that rebuilds from its records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dualoptim.cli import _named_config, main
from dualoptim.config import load_config
from dualoptim.tasks.llm.safety.config import SafetyExperiment
from dualoptim.tasks.llm.safety.data import SAFETY_SETS
from dualoptim.tasks.llm.safety.refusal import is_refusal
from dualoptim.tasks.llm.safety.world import SafetyWorld
from dualoptim.unlearn.sharding import full_state_dict
from helpers import SAFETY_DIR

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path, list[dict]]:
    root = tmp_path_factory.mktemp("safety")
    args = ["unlearn", "--config", "safety-tiny", "--out", str(root / "out")]
    assert main([*args, f"data.source={SAFETY_DIR}", f"cache_dir={root / 'cache'}"]) == 0
    folder = root / "out" / "safety-tiny"
    records = [json.loads(p.read_text()) for p in sorted((folder / "records").glob("*.json"))]
    return folder, root / "cache", records


def test_every_record_is_scored_by_the_definitions(tiny) -> None:
    _, _, records = tiny
    assert sorted(r["group"] for r in records) == [
        "IDK+KL (alternate)",
        "IDK+KL (dual)",
        "IDK+KL (dual_plus)",
        "initial",
    ]
    for record in records:
        m = record["metrics"]
        for name in SAFETY_SETS:  # offline: safe = refused
            assert m[f"safe/{name}"] == m[f"refusal/{name}"]
        mean = sum(m[f"safe/{name}"] for name in SAFETY_SETS) / 4
        assert m["safe/AVG"] == pytest.approx(mean)
        assert m["utility/offline"] == pytest.approx(
            (100 - m["helpful/refusal"] + m["helpful/rouge"]) / 2
        )
        assert m["OVR"] == pytest.approx((m["safe/AVG"] + m["utility/offline"]) / 2)
        assert m["over_refusal"] == m["refusal/XSTest"]
        assert all(0 <= v <= 100 for k, v in m.items()), m
        assert record["extra"]["metric_variant"].startswith("offline: safe = refused")


def test_unlearning_learns_the_safe_answers(tiny) -> None:
    """The IDK loss raises the Prob of the sampled pairs' safe answers in every setting."""
    _, _, records = tiny
    for record in (r for r in records if r["kind"] == "run"):
        curve = record["curves"]["eval/forget/prob"]
        assert curve[-1][1] > curve[0][1] * 1.05, record["group"]


def test_the_report_is_the_talks_table_and_shows_no_harmful_text(tiny, tmp_path: Path) -> None:
    folder, _, records = tiny
    report = (folder / "report.md").read_text()
    assert "24 of the 2,483 safety pairs" in report
    assert "the first 24 rows of the benign prompts (built-in, 120)" in report
    header = next(line for line in report.splitlines() if line.startswith("| model |"))
    order = ["Safety AVG ↑", "I-Alpaca refused ↓", "Utility (offline) ↑", "OVR ↑", "XSTest ↓"]
    assert [header.index(label) for label in order] == sorted(header.index(x) for x in order)
    assert "Utility AVG ↑" not in header  # no downstream benchmarks configured: no columns
    assert "## Sample completions" in report
    for record in records:
        samples = record["extra"]["samples"]
        assert set(samples) == {*SAFETY_SETS, "I-Alpaca", "XSTest"}
        assert all(is_refusal(t) for name in SAFETY_SETS for t in samples[name])
        assert all(len(t) <= 162 for texts in samples.values() for t in texts)

    copy = tmp_path / "copy"
    (copy / "records").mkdir(parents=True)
    for p in (folder / "records").glob("*.json"):
        (copy / "records" / p.name).write_text(p.read_text())
    assert main(["report", str(copy)]) == 0
    assert (copy / "report.md").read_text().split("\n", 1)[1] == report.split("\n", 1)[1]


def test_evaluate_shows_the_initial_model_and_train_is_refused(tiny, capsys) -> None:
    _, cache, _ = tiny
    options = ["--config", "safety-tiny", f"data.source={SAFETY_DIR}", f"cache_dir={cache}"]
    assert main(["evaluate", *options]) == 0
    out = capsys.readouterr().out
    assert "initial" in out
    assert "Safety AVG" in out
    with pytest.raises(SystemExit):
        main(["train", *options])
    assert "train: the safety task has no finetune recipe set" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["retrain", *options])
    assert "retrain: the safety task has no retain model" in capsys.readouterr().err


def test_finetune_makes_the_initial_model_from_the_retain_instructions(tmp_path, capsys) -> None:
    """The talk's Alpaca-fine-tuned model: with ``finetune`` the initial model is the loaded
    one fine-tuned on the retain instructions (cached), what the runs unlearn and the report's
    first row; ``train`` makes it."""
    rows = [
        {"instruction": f"Name colour number {i}.", "input": "", "output": f"Colour {i} is blue."}
        for i in range(16)
    ]
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps(rows))
    options = [
        "--config",
        "safety-tiny",
        f"data.source={SAFETY_DIR}",
        f"cache_dir={tmp_path / 'cache'}",
        f"retain={{kind: instructions, source: {alpaca}}}",
        "finetune={epochs: 3, lr: 1.0e-3, batch_size: 8}",
        "data.forget_rows=8",
        "eval.limit=2",
        "runs=[{method: idk+gd, setting: dual, forget_lr: 1.0e-3, batch_size: 8}]",
    ]
    assert main(["train", *options]) == 0
    assert "initial" in capsys.readouterr().out
    assert len(list((tmp_path / "cache").glob("target-*.safetensors"))) == 1
    world = SafetyWorld(load_config(SafetyExperiment, _named_config("safety-tiny"), options[2:]))
    tuned, base = world.target[0], full_state_dict(world._base)
    assert any(not torch.equal(tuned[name], base[name]) for name in base)
    assert main(["unlearn", *options, "--out", str(tmp_path / "out")]) == 0
    folder = tmp_path / "out" / "safety-tiny"
    records = [json.loads(p.read_text()) for p in (folder / "records").glob("*.json")]
    initial = next(r for r in records if r["group"] == "initial")
    assert initial["seconds"] > 0  # the fine-tuning's, read back from the cache
    assert initial["config"]["finetune"]["epochs"] == 3
    report = (folder / "report.md").read_text()
    assert "fine-tuned first on the retain instructions (3 epochs at 0.001, batch 8 × 1)" in report
    assert f"of the instruction set {alpaca}" in report

"""The real-world task end to end on the tiny model: teach, probe, unlearn, evaluate, records,
the talk's table and the probe's table, the report rebuilt from the records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from dualoptim.cli import main
from dualoptim.config import load_config
from dualoptim.tasks.llm.realworld.config import RealWorldExperiment
from dualoptim.tasks.llm.realworld.task import TASK
from dualoptim.tasks.llm.realworld.world import RealWorld
from helpers import TOY_DOWNSTREAM, write_lm_eval_tasks

RUNS = (
    "runs=[{method: me+gd, setting: alternate, forget_lr: 1.0e-3, retain_lr: 1.0e-3, "
    "batch_size: 8, epochs: 1}, {method: me+gd, setting: dual_plus, forget_lr: 1.0e-3, "
    "retain_lr: 1.0e-3, batch_size: 8, epochs: 1}, {method: idk+gd, setting: dual_plus, "
    "forget_lr: 1.0e-3, retain_lr: 1.0e-3, batch_size: 8, epochs: 1}]"
)


def overrides(cache: Path) -> list[str]:
    return ["eval.limit=20", "eval.max_new_tokens=16", f"cache_dir={cache}", RUNS]


def downstream(tasks: Path) -> str:
    """The config key that runs the local lm-eval tasks of ``tasks`` on every model."""
    metrics = TOY_DOWNSTREAM["metrics"]
    return (
        f"downstream={{tasks: [toy_mc, toy_gen], metrics: {{toy_mc: '{metrics['toy_mc']}', "
        f"toy_gen: '{metrics['toy_gen']}'}}, include_path: '{tasks}', batch_size: 8}}"
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path, list[dict]]:
    root = tmp_path_factory.mktemp("realworld")
    out, cache = root / "out", root / "cache"
    tasks = downstream(write_lm_eval_tasks(root / "tasks"))
    args = ["unlearn", "--config", "realworld-tiny", "--out", str(out), *overrides(cache), tasks]
    assert main(args) == 0
    folder = out / "realworld-tiny"
    records = [json.loads(p.read_text()) for p in sorted((folder / "records").glob("*.json"))]
    return folder, cache, records


def by_group(records: list[dict]) -> dict[str, dict]:
    return {r["group"]: r for r in records}


def test_the_taught_initial_model_knows_and_unlearning_forgets(tiny) -> None:
    _, _, records = tiny
    groups = by_group(records)
    assert sorted(groups) == [
        "IDK+GD (dual_plus)",
        "ME+GD (alternate)",
        "ME+GD (dual_plus)",
        "initial",
    ]
    initial = groups["initial"]["metrics"]
    assert initial["forget/rouge"] > 0.8
    assert initial["utility/rouge"] > 0.8
    for group in ("ME+GD (alternate)", "ME+GD (dual_plus)"):  # one epoch at 1e-3
        assert groups[group]["metrics"]["forget/prob"] < initial["forget/prob"] - 0.1, group
    assert "forget_quality" not in initial  # no retain model: no Forget Quality


def test_every_model_has_its_downstream_numbers_and_the_report_says_how(tiny) -> None:
    folder, _, records = tiny
    for record in records:
        m = record["metrics"]
        assert 0 <= m["downstream/toy_mc"] <= 1
        assert 0 <= m["downstream/toy_gen"] <= 1
        mean = (m["downstream/toy_mc"] + m["downstream/toy_gen"]) / 2
        assert m["downstream/AVG"] == pytest.approx(mean)
        assert "downstream" not in record["extra"]  # no reason to give: it ran
    report = (folder / "report.md").read_text()
    assert "lm-evaluation-harness on toy_mc, toy_gen, all items of each" in report


def test_unavailable_downstream_data_is_said_not_counted(tiny, tmp_path: Path) -> None:
    _, cache, _ = tiny
    missing = downstream(write_lm_eval_tasks(tmp_path / "tasks", missing_data=True))
    one_run = RUNS.split("}, {")[0] + "}]"
    args = ["unlearn", "--config", "realworld-tiny", "--out", str(tmp_path / "out")]
    assert main([*args, *overrides(cache), one_run, missing]) == 0
    folder = tmp_path / "out" / "realworld-tiny"
    records = [json.loads(p.read_text()) for p in (folder / "records").glob("*.json")]
    assert len(records) == 2  # the initial model and the one run
    for record in records:
        assert not any(k.startswith("downstream/") for k in record["metrics"])
        assert record["extra"]["downstream"].startswith("not available offline (toy_mc: ")
    report = (folder / "report.md").read_text()
    assert "Downstream utility (lm-eval): not available offline (toy_mc: " in report


def test_aggregates_equal_their_definitions_by_hand(tiny) -> None:
    """MU: harmonic mean of the utility split's four values (no cosine, no entailment);
    UFE: 1 − mean of the forget split's Prob, ROUGE and 1 − folded truth ratio."""
    _, _, records = tiny
    for record in records:
        m = record["metrics"]
        utility = [m[f"utility/{k}"] for k in ("prob", "rouge", "truth_ratio", "token_entropy")]
        assert m["MU"] == pytest.approx(stats.hmean(utility))
        knowledge = [m["forget/prob"], m["forget/rouge"], 1 - m["forget/truth_ratio"]]
        assert m["UFE"] == pytest.approx(1 - np.mean(knowledge))
        assert m["OVR"] == pytest.approx((m["UFE"] + m["MU"]) / 2)
        assert "TFE" not in m  # needs an entailment model, even for IDK+GD
        assert record["extra"]["metric_variant"].startswith("closer-look[no-cosine; no-entailment")


def test_probe_table_and_the_people_kept(tiny) -> None:
    folder, _, records = tiny
    initial = by_group(records)["initial"]
    probe = initial["extra"]["probe"]
    kept = initial["extra"]["people"]
    forget = [row for row in probe if row["file"] == "forget_perturbed"]
    assert len(forget) == 12
    assert sorted(r["name"] for r in forget if r["kept"]) == sorted(kept["forget"])
    for row in probe:
        assert row["kept"] == (row["known"] >= 3), row  # min_questions 3 in realworld-tiny
        assert 0 <= row["known"] <= row["questions"]
    report = (folder / "report.md").read_text()
    assert "## Probe: what the initial model knows" in report
    assert f"{len(kept['forget'])} people to forget" in report
    assert "| initial |" in report


def test_report_rebuilds_identically_from_the_records(tiny, tmp_path: Path) -> None:
    folder, _, _ = tiny
    copy = tmp_path / "copy"
    (copy / "records").mkdir(parents=True)
    for p in (folder / "records").glob("*.json"):
        (copy / "records" / p.name).write_text(p.read_text())
    assert main(["report", str(copy)]) == 0
    assert (copy / "table.csv").read_text() == (folder / "table.csv").read_text()
    original = (folder / "report.md").read_text().split("\n", 1)[1]
    assert (copy / "report.md").read_text().split("\n", 1)[1] == original


def test_a_second_world_reads_the_taught_model_and_the_probe_from_the_cache(tiny) -> None:
    _, cache, records = tiny
    config = load_config(RealWorldExperiment, TASK_CONFIG, overrides(cache))
    world = RealWorld(config, progress=False)
    assert world.target[1] == by_group(records)["initial"]["seconds"]  # not retrained
    assert len(list(cache.glob("probe-*.json"))) == 1
    assert world.data.people("forget") == by_group(records)["initial"]["extra"]["people"]["forget"]


def fails(args: list[str], capsys) -> str:
    """The one-line error of a CLI command that must fail (status 2)."""
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    return capsys.readouterr().err


def test_evaluate_works_and_train_is_refused(tiny, capsys) -> None:
    _, cache, _ = tiny
    assert main(["evaluate", "--config", "realworld-tiny", *overrides(cache)]) == 0
    assert "initial" in capsys.readouterr().out
    err = fails(["train", "--config", "realworld-tiny", *overrides(cache)], capsys)
    assert "train: the real-world task has no target fine-tuning" in err


def test_a_probe_that_keeps_no_one_stops_before_unlearning(tiny, tmp_path: Path, capsys) -> None:
    _, cache, _ = tiny
    strict = [*overrides(cache), "data.probe.min_questions=12"]
    err = fails(["unlearn", "--config", "realworld-tiny", "--out", str(tmp_path), *strict], capsys)
    assert "the probe kept no one in forget_perturbed" in err
    assert not (tmp_path / "realworld-tiny" / "records").exists()


def test_tiny_model_without_teach_is_refused() -> None:
    with pytest.raises(ValueError, match="tiny-llama knows no one: set teach"):
        RealWorldExperiment()


TASK_CONFIG = Path(__file__).resolve().parents[1] / (
    "src/dualoptim/configs/realworld/realworld-tiny.yaml"
)
assert TASK.name == "realworld"


@pytest.mark.slow
def test_continual_requests_go_person_by_person(tiny, tmp_path: Path) -> None:
    """Requests of whole people (``task_id``), each measured with the initial model on the
    people requested so far; the initial model's records keep the probe's table."""
    from dualoptim.config import from_dict
    from dualoptim.tasks.llm.config import Requests
    from dualoptim.tasks.llm.requests import LLMRequests

    _, cache, _ = tiny
    run = (
        "runs=[{method: me+gd, setting: dual, forget_lr: 1.0e-3, retain_lr: 1.0e-3, "
        "batch_size: 8, epochs: 1, state_policy: carry}]"
    )
    limits = ["eval.limit=20", "eval.max_new_tokens=16", f"cache_dir={cache}"]
    args = ["bench", "--config", "realworld-tiny", "--out", str(tmp_path), *limits, run]
    assert main([*args, "requests={count: 2}"]) == 0
    folder = tmp_path / "realworld-tiny"
    records = [json.loads(p.read_text()) for p in sorted((folder / "records").glob("*.json"))]
    assert sorted((r["group"], r["extra"]["request"]) for r in records) == [
        ("ME+GD (dual) [carry]", 1),
        ("ME+GD (dual) [carry]", 2),
        ("initial", 1),
        ("initial", 2),
    ]
    assert all(r["extra"]["probe"] for r in records if r["group"] == "initial")
    text = (folder / "report.md").read_text()
    assert "## After every request" in text
    assert "Probe: what the initial model knows" in text

    exp = load_config(RealWorldExperiment, TASK_CONFIG, limits)
    world = RealWorld(exp, progress=False)
    requests = LLMRequests.of(world, from_dict(Requests, {"count": 2}))
    names = [{world.data.forget[r].name for r in part} for part in requests.parts]
    assert not names[0] & names[1]  # whole people per request
    assert names[0] | names[1] == set(world.data.people("forget"))
    ids = [world.data.forget[part[0]].task_id for part in requests.parts]
    assert ids == sorted(ids)  # in task_id order

"""The TOFU pipeline: prompt formatting, the tiny model, an end-to-end run on the built-in
data (fine-tune, unlearn, evaluate, records, Table 3), and the paper-size configs smoke-tested
for one optimizer step on a tiny model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from dualoptim.bench.metric_table import metric_csv, metric_rows, metric_table
from dualoptim.bench.sweeps import sweep
from dualoptim.cli import _named_config, main
from dualoptim.config import load_config
from dualoptim.tasks.llm.config import LLMExperiment, LLMUnlearnSpec
from dualoptim.tasks.llm.data import load_split
from dualoptim.tasks.llm.format import IGNORE, Formatter, PairSource, PromptFormat
from dualoptim.tasks.llm.methods import LLMMethod
from dualoptim.tasks.llm.models import TinySpec, tiny_llama, train_tokenizer
from dualoptim.tasks.llm.run import engine_config, make_optimizer
from dualoptim.tasks.llm.task import LAYOUT
from dualoptim.tasks.llm.world import World
from dualoptim.unlearn import Schedule, unlearn

TEXTS = [it.question + " " + it.answer for it in load_split("full")]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=300)


def test_labels_cover_exactly_the_answer_and_its_eos(tokenizer) -> None:
    fmt = Formatter(tokenizer, PromptFormat(template="plain"))
    pair = fmt.pair("Who wrote it?", "Ann Lee wrote it.")
    assert tokenizer.decode(pair.prompt) == "Question: Who wrote it?\nAnswer:"
    assert tokenizer.decode(pair.answer) == " Ann Lee wrote it.</s>"
    short = fmt.pair("Q?", "A.")
    source = PairSource({"qa": [pair, short]}, fmt.pad)
    batch = source.batch(torch.tensor([1, 0]))
    qa = batch["qa"]
    labels, ids, mask = qa["labels"], qa["input_ids"], qa["attention_mask"]
    assert ids.shape == (2, len(pair.ids))
    for row, p in enumerate((short, pair)):
        n = len(p.ids)
        assert mask[row].sum() == n
        assert (ids[row, n:] == fmt.pad).all()
        assert (labels[row, : len(p.prompt)] == IGNORE).all()
        assert (labels[row, n:] == IGNORE).all()
        assert labels[row, len(p.prompt) : n].tolist() == list(p.answer)
    assert batch["index"].tolist() == [1, 0]


def test_chat_template_and_system_prompt(tokenizer) -> None:
    chat = train_tokenizer(TEXTS, vocab_size=300)
    chat.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    auto = Formatter(chat, PromptFormat())
    assert auto.chat
    assert auto.prompt_text("Q?") == "<user>Q?<assistant>"
    with_system = Formatter(chat, PromptFormat(template="chat", system_prompt=""))
    assert with_system.prompt_text("Q?") == "<system><user>Q?<assistant>"
    assert not Formatter(chat, PromptFormat(template="plain")).chat
    with pytest.raises(ValueError, match="no chat template"):
        Formatter(tokenizer, PromptFormat(template="chat"))
    with pytest.raises(ValueError, match="system_prompt applies to chat"):
        PromptFormat(template="plain", system_prompt="x")


def test_long_answers_are_cut_and_long_prompts_refused(tokenizer) -> None:
    fmt = Formatter(tokenizer, PromptFormat(template="plain", max_length=32))
    pair = fmt.pair("Q?", "word " * 40)
    assert len(pair.ids) == 32
    assert len(pair.answer) >= 1
    with pytest.raises(ValueError, match="raise max_length"):
        fmt.pair("a very long question " * 10, "A.")
    with pytest.raises(ValueError, match="one common length"):
        PairSource({"qa": [pair], "idk": []}, 0)


def test_tokenizer_training_is_deterministic() -> None:
    a, b = train_tokenizer(TEXTS[:50], 300), train_tokenizer(TEXTS[:50], 300)
    assert a.get_vocab() == b.get_vocab()
    model = tiny_llama(len(a), TinySpec(hidden_size=32, intermediate_size=64), seed=3)
    again = tiny_llama(len(a), TinySpec(hidden_size=32, intermediate_size=64), seed=3)
    for x, y in zip(model.parameters(), again.parameters(), strict=True):
        assert torch.equal(x, y)


#: Small enough to run in well under a minute; the fine-tuned target must still memorise the
#: forget authors (forget10 of the built-in data: 4 authors, 40 rows).
TINY_EXPERIMENT = {
    "data": {"forget_split": "forget10", "retain_rows": 40},
    "model": {
        "prompt": {"template": "plain", "max_length": 64},
        "tiny": {"vocab_size": 400, "hidden_size": 64, "intermediate_size": 128},
    },
    "finetune": {"epochs": 40, "lr": 3e-3, "batch_size": 16},
    "eval": {"limit": 12, "max_new_tokens": 24, "batch_size": 24},
    "runs": [
        {
            "method": "me+gd",
            "setting": "dual",
            "forget_lr": 1e-3,
            "retain_lr": 1e-3,
            "epochs": 2,
            "eval_every": 30,
        },
        {
            "method": "npo+gd",
            "setting": "alternate",
            "forget_lr": 1e-3,
            "batch_size": 8,
            "epochs": 2,
        },
    ],
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, list[dict]]:
    from dualoptim.config import from_dict

    out = tmp_path_factory.mktemp("tofu")
    exp = from_dict(LLMExperiment, {**TINY_EXPERIMENT, "cache_dir": str(out / "cache")})
    return out, sweep(exp, out / "bench")


@pytest.mark.slow
def test_end_to_end_target_memorises_and_unlearning_forgets(tiny_run) -> None:
    _, records = tiny_run
    by = {r["group"]: r["metrics"] for r in records}
    target, retain = by["target"], by["retain model"]
    # the target knows the forget authors; the retain model never saw them
    assert target["forget/rouge"] > 0.8
    assert target["forget/prob"] > 0.8
    assert retain["forget/prob"] < 0.5 * target["forget/prob"]
    assert retain["forget_quality"] == pytest.approx(1.0)  # KS of a sample against itself
    # 40 forget rows, 2 epochs at 1:5: batch 4 makes 10 forget steps a pass, batch 8 makes 5
    for group, forget_steps in (("ME+GD (dual)", 20), ("NPO+GD (alternate)", 10)):
        run = by[group]
        assert run["forget/prob"] < 0.7 * target["forget/prob"], group
        assert run["steps/forget"] == forget_steps
        assert run["steps/retain"] == 5 * forget_steps
        assert 0 <= run["UFE"] <= 1
        assert 0 <= run["OVR"] <= 1
    dual = next(r for r in records if r["group"] == "ME+GD (dual)")
    curve = dict(dual["curves"]["eval/forget/prob"])
    assert sorted(curve) == [0, 30, 60, 90, 120]  # before the first step, then every 30
    assert curve[0] == pytest.approx(target["forget/prob"], rel=1e-4)
    assert curve[120] == pytest.approx(dual["metrics"]["forget/prob"], rel=1e-4)


@pytest.mark.slow
def test_rerun_reads_records_back_and_report_has_table_3(tiny_run) -> None:
    out, records = tiny_run
    from dualoptim.config import from_dict

    exp = from_dict(LLMExperiment, {**TINY_EXPERIMENT, "cache_dir": str(out / "cache")})
    again = sweep(exp, out / "bench")
    assert [r["id"] for r in again] == [r["id"] for r in records]
    assert main(["report", str(out / "bench")]) == 0
    report = (out / "bench" / "report.md").read_text()
    assert "FE (UFE)" in report
    assert "forget split `forget10`" in report
    assert "closer-look[no-cosine; no-entailment]" in report
    assert "![curves](curves_x1.png)" in report
    assert (out / "bench" / "curves_x1.png").stat().st_size > 10_000
    rows = metric_rows(records[::-1], LAYOUT.metrics, ("target", "retain model"))
    assert [r.group for r in rows][:2] == ["target", "retain model"]
    assert (out / "bench" / "table.csv").read_text() == metric_csv(rows, LAYOUT.metrics)


def test_metric_table_from_hand_made_records() -> None:
    def record(group, kind, seed, ufe, setting=None):
        return {
            "group": group,
            "kind": kind,
            "seed": seed,
            "method": "me+gd" if setting else None,
            "setting": setting,
            "forget_lr": 1e-5 if setting else None,
            "metrics": {"UFE": ufe},
            "seconds": 10.0 * (seed + 1),
        }

    records = [
        record("ME+GD (dual)", "run", 0, 0.5, "dual"),
        record("ME+GD (alternate)", "run", 1, 0.3, "alternate"),
        record("ME+GD (dual)", "run", 1, 0.7, "dual"),
        record("target", "reference", 0, 0.1),
    ]
    rows = metric_rows(records, ["UFE", "MU"])
    assert [r.group for r in rows] == ["target", "ME+GD (alternate)", "ME+GD (dual)"]
    assert [r.group for r in metric_rows(records[::-1], ["UFE"])] == [r.group for r in rows]
    dual = rows[2]
    assert dual.mean["UFE"] == pytest.approx(0.6)
    assert dual.std["UFE"] == pytest.approx(0.1)
    assert dual.seconds == pytest.approx(15.0)
    contended = [*records, {**records[2], "seed": 2, "seconds": 1000.0}]
    assert metric_rows(contended, ["UFE"])[2].seconds == pytest.approx(20.0)  # the median
    _, cells = metric_table(rows, ["UFE", "MU"])
    assert cells[2][2:4] == ["0.600 ± 0.100", "–"]
    assert cells[0][2] == "0.100"
    with pytest.raises(ValueError, match="two records of one seed"):
        metric_rows([*records, records[0]], ["UFE"])


@pytest.mark.parametrize("name", ["tofu-phi15", "tofu-llama2", "mini-tofu", "tofu-tiny"])
def test_named_configs_validate_and_each_run_makes_one_step(name: str) -> None:
    """The paper-size recipes as shipped (their optimizers, accumulation, loss weights,
    reference models and refusals), each run for one forget and one retain step on a tiny
    model over the built-in data."""
    exp = load_config(LLMExperiment, _named_config(name))
    tokenizer = train_tokenizer(TEXTS[:200], 300)
    for spec in exp.runs:
        method = LLMMethod(spec.method, spec.losses)
        model = tiny_llama(len(tokenizer), TinySpec(hidden_size=32, intermediate_size=64))
        fmt = Formatter(tokenizer, PromptFormat(template="plain", max_length=96))
        rows = load_split("forget01")[:8]
        pairs = fmt.pairs([r.question for r in rows], [r.answer for r in rows])
        parts = {"qa": pairs, "idk": fmt.pairs([r.question for r in rows], ["No idea."] * 8)}
        source = PairSource(parts, fmt.pad)
        cfg = engine_config(dataclasses.replace(spec, batch_size=2), 8, 0, progress=False)
        one = Schedule(1, 1) if spec.setting == "joint" else Schedule(1, 1, 1)
        cfg = dataclasses.replace(cfg, schedule=one, accumulation=min(spec.accumulation, 2))
        before = [p.detach().clone() for p in model.parameters()]
        result = unlearn(model, method, source, source, make_optimizer(spec, model), cfg)
        assert sum(result.steps.values()) == (1 if spec.setting == "joint" else 2)
        moved = any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
        assert moved, spec.label


def test_joint_baselines_downweight_the_forget_loss() -> None:
    assert LLMUnlearnSpec("me+gd", "joint").c_f == 0.1
    assert LLMUnlearnSpec("npo+gd", "joint").c_f == 0.1
    assert LLMUnlearnSpec("idk+gd", "joint").c_f == 1.0
    assert LLMUnlearnSpec("me+gd", "dual").c_f == 1.0
    assert LLMUnlearnSpec("dpo+gd", "dual").effective_forget_lr == 1.5e-5
    with pytest.raises(ValueError, match="no retain loss"):
        LLMUnlearnSpec("ga", "dual")
    with pytest.raises(ValueError, match="unknown LLM method 'xx\\+gd': forget losses ga"):
        LLMUnlearnSpec("xx+gd", "dual")


def test_a_bad_llm_config_fails_before_anything_runs(capsys) -> None:
    with pytest.raises(SystemExit) as err:
        main(["unlearn", "--config", "tofu-tiny", "data.forget_split=forget02"])
    assert err.value.code == 2
    assert "forget_split 'forget02' is not one of" in capsys.readouterr().err


def test_world_refuses_retain_rows_that_break_tofus_layout(tmp_path) -> None:
    from dualoptim.config import from_dict
    from dualoptim.tasks.llm.generator import write_tofu

    write_tofu(tmp_path)
    lines = (tmp_path / "retain_perturbed.json").read_text().splitlines()
    (tmp_path / "retain_perturbed.json").write_text("\n".join(lines[::-1]) + "\n")
    exp = from_dict(
        LLMExperiment, {**TINY_EXPERIMENT, "data": {"source": str(tmp_path), "retain_rows": 5}}
    )
    with pytest.raises(ValueError, match="retain_rows needs TOFU's layout"):
        World(exp, progress=False)

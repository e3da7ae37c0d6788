"""The TOFU pipeline: prompt formatting, the tiny model, an end-to-end run on the built-in
data (fine-tune, unlearn, evaluate, records, Table 3), and the paper-size configs smoke-tested
for one optimizer step on a tiny model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from dualoptim.bench.metric_table import metric_csv, metric_rows, metric_table, present
from dualoptim.bench.sweeps import sweep
from dualoptim.cli import _named_config, main
from dualoptim.config import ConfigError, load_config, read_config
from dualoptim.io import record_id
from dualoptim.tasks import registry
from dualoptim.tasks.llm.config import LLMExperiment, LLMUnlearnSpec
from dualoptim.tasks.llm.data import load_split
from dualoptim.tasks.llm.format import IGNORE, Formatter, PairSource, PromptFormat
from dualoptim.tasks.llm.methods import LLMMethod
from dualoptim.tasks.llm.models import TinySpec, tiny_llama, train_tokenizer
from dualoptim.tasks.llm.run import engine_config, make_optimizer
from dualoptim.tasks.llm.task import LAYOUT, TASK
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
    # a column no record fills (downstream benchmarks not configured) leaves the report
    assert present(records, ["UFE", "MU", "OVR"]) == ["UFE"]
    assert present([{**records[0], "metrics": {}}], ["UFE", "MU"]) == ["UFE", "MU"]
    with pytest.raises(ValueError, match="two records of one seed"):
        metric_rows([*records, records[0]], ["UFE"])


def test_generation_samples_sit_under_their_row_and_step_size(tmp_path) -> None:
    def record(group, seed, lr=None, said=(), **extra):
        kind = "reference" if lr is None else "run"
        forget_samples = {"forget_samples": list(said)}
        return {
            "group": group,
            "kind": kind,
            "seed": seed,
            "forget_lr": lr,
            "extra": forget_samples,
            **extra,
        }

    failed = {"status": "failed", "error": {"message": "loss is nan at step 3"}}
    records = [
        record("ME+GD (dual)", 0, 3e-5, ["I forgot."]),
        record("ME+GD (dual)", 1, 1e-5, ["Paris."]),
        record("ME+GD (dual)", 0, 1e-5, ["London."]),
        record("ME+GD (dual)", 0, 1e-4, **failed),
        record("target", 0, said=["Al-Kuwaiti."]),
    ]
    assert TASK.appendix(records, tmp_path) == (
        "\n## Forget-split generations (first questions)\n"
        "\n**target** (seed 0):\n\n- 'Al-Kuwaiti.'\n"
        "\n**ME+GD (dual)** at η_f 1e-05 (seed 0):\n\n- 'London.'\n"
        "\n**ME+GD (dual)** at η_f 1e-05 (seed 1):\n\n- 'Paris.'\n"
        "\n**ME+GD (dual)** at η_f 3e-05 (seed 0):\n\n- 'I forgot.'\n"
        "\n**ME+GD (dual)** at η_f 0.0001 (seed 0): loss is nan at step 3\n"
    )


@pytest.mark.parametrize(
    "name",
    [
        "tofu-phi15",
        "tofu-llama2",
        "mini-tofu",
        "mini-tofu-continual",
        "tofu-tiny",
        "realworld-llama3",
        "realworld-mini",
        "realworld-tiny",
        "safety-llama3",
        "safety-mini",
        "safety-tiny",
    ],
)
def test_named_configs_validate_and_each_run_makes_one_step(name: str) -> None:
    """The paper-size recipes as shipped (their optimizers, accumulation, loss weights,
    reference models and refusals), each run for one forget and one retain step on a tiny
    model over the built-in data; the real-world and safety tasks' configs too (the same
    runs)."""
    path = _named_config(name)
    exp = load_config(registry.get(read_config(path)["task"]).config_class, path)
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


def test_per_phase_lr_gives_alternate_dos_step_sizes() -> None:
    """mini-TOFU's confound: Alternate took η_f for its retain steps, DO takes η_r."""
    model = torch.nn.Linear(3, 2)  # two AdamW groups: the weight (decayed) and the bias

    def step_sizes(setting: str, **kwargs) -> set[tuple[str, float]]:
        spec = LLMUnlearnSpec("me+gd", setting, forget_lr=1e-4, retain_lr=1e-5, **kwargs)
        optimizer = make_optimizer(spec, model)
        assert len(optimizer.param_groups) == 2
        return {(o, optimizer.lr_of(o, g)) for o in ("forget", "retain") for g in range(2)}

    one = {("forget", 1e-4), ("retain", 1e-4)}
    assert step_sizes("alternate") == step_sizes("alternate", per_phase_lr=False) == one
    per_phase = step_sizes("alternate", per_phase_lr=True)
    assert per_phase == step_sizes("dual") == {("forget", 1e-4), ("retain", 1e-5)}
    unset = LLMUnlearnSpec("me+gd", "alternate")  # its id before per_phase_lr existed
    assert record_id("llm-run", "key", unset, 0) == "6ad7ee0dd9059e89b047"


def test_alternate_with_and_without_per_phase_lr_are_two_rows_of_one_table(tmp_path) -> None:
    runs = (
        "runs=[{method: me+gd, setting: alternate}, "
        "{method: me+gd, setting: alternate, per_phase_lr: true}]"
    )
    exp = load_config(LLMExperiment, _named_config("tofu-tiny"), [f"cache_dir={tmp_path}", runs])
    plan = TASK.plan(exp, None, progress=False)
    jobs = [job for spec in exp.runs for job in plan.jobs(spec, 1.0)]
    assert [job.group for job in jobs] == ["ME+GD (alternate)", "ME+GD (alternate, per-phase η)"]
    assert jobs[0].id != jobs[1].id
    recorded = [job.config["runs"][0] for job in jobs]
    assert "per_phase_lr" not in recorded[0]  # as records made before the option
    assert recorded[1]["per_phase_lr"] is True
    assert "per_phase_lr" not in plan.store_config()["runs"][0]
    refused = "runs=[{method: me+gd, setting: joint, per_phase_lr: true}]"
    with pytest.raises(
        ConfigError,
        match=r"runs\[0\]: per_phase_lr applies to the 'alternate' setting only, and me\+gd "
        r"runs under 'joint': remove per_phase_lr, or set setting: alternate",
    ):
        load_config(LLMExperiment, _named_config("tofu-tiny"), [refused])


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


def test_the_same_rows_from_another_folder_keep_the_record_ids(tmp_path, monkeypatch) -> None:
    """Records are keyed by the rows' content, not the folder they were read from: the
    built-in set, the same rows in a folder (absolute or relative) share ids; other rows
    do not."""
    from dualoptim.config import from_dict
    from dualoptim.tasks.llm.generator import write_tofu

    write_tofu(tmp_path / "tofu")
    monkeypatch.chdir(tmp_path)

    def key(source: str | None, retain_rows: int = 5) -> str:
        data = {"source": source, "retain_rows": retain_rows}
        return World(from_dict(LLMExperiment, {**TINY_EXPERIMENT, "data": data}), False).key

    built_in = key(None)
    assert key(str(tmp_path / "tofu")) == built_in
    assert key("tofu") == built_in
    assert key("tofu", retain_rows=6) != built_in


# ----------------------------------------------------------------------------- Closer-Look models
#: An IDK run on a barely fine-tuned tiny model: enough to carry the Closer-Look suite's
#: numbers through fine-tuning, unlearning, evaluation and the records, in seconds.
NLI_EXPERIMENT = {
    "data": {"forget_split": "forget01", "retain_rows": 10},
    "model": {
        "prompt": {"template": "plain", "max_length": 64},
        "tiny": {"vocab_size": 300, "hidden_size": 32, "intermediate_size": 64},
    },
    "finetune": {"epochs": 2, "lr": 3e-3, "batch_size": 16},
    "eval": {"limit": 6, "max_new_tokens": 8, "batch_size": 24},
    "runs": [{"method": "idk+gd", "setting": "dual", "forget_lr": 1e-3, "epochs": 1}],
}


@pytest.fixture(scope="module")
def tiny_nli(tmp_path_factory) -> Path:
    """A random-weight BERT NLI classifier saved like a Hub model, labels in the paper
    model's order. Its classifier is zeroed with the bias on "entailment", so it labels every
    pair "entailment": what is left of entailment is the ROUGE-L gate, computable by hand."""
    transformers = pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp("models") / "nli"
    vocab = path.parent / "vocab.txt"
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "i", "don", "'", "t", "know", "the"]
    vocab.write_text("\n".join(words))
    labels = {0: "entailment", 1: "neutral", 2: "contradiction"}
    config = transformers.BertConfig(
        vocab_size=len(words),
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=8,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([5.0, 0.0, 0.0]))
    model.save_pretrained(path)
    transformers.BertTokenizer(str(vocab)).save_pretrained(path)
    return path


@pytest.fixture
def one_thread():
    """Tiny matmuls: on a shared 2-core machine intra-op threads only spin (5x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def nli_experiment(cache: Path, **extra) -> LLMExperiment:
    from dualoptim.config import from_dict

    return from_dict(LLMExperiment, {**NLI_EXPERIMENT, "cache_dir": str(cache), **extra})


@pytest.mark.usefixtures("one_thread")
def test_entailment_through_the_pipeline_into_mu_ufe_and_tfe(tmp_path, tiny_nli) -> None:
    """`entailment: <folder>` loads the NLI model; every split's entailment is the gated
    verdict against the right target, the IDK run's TFE takes the forget generations'
    entailment of their own refusal, and MU/UFE/TFE/OVR and the variant say so; without the
    key, the records say entailment is absent."""
    from dualoptim.tasks.llm import metrics as tofu
    from dualoptim.tasks.llm.closer_look import MIN_ROUGE
    from dualoptim.tasks.llm.refusals import refusal

    exp = nli_experiment(tmp_path / "cache", entailment=str(tiny_nli))
    records = sweep(exp, tmp_path / "bench")
    target, _, run = records
    assert [r["group"] for r in records] == ["target", "retain model", "IDK+GD (dual)"]
    assert all(r["config"]["entailment"] == str(tiny_nli) for r in records)
    assert target["extra"]["metric_variant"] == "closer-look[no-cosine; entailment=nli]"
    assert run["extra"]["metric_variant"] == (
        "closer-look[no-cosine; entailment=nli; idk: OVR=((UFE+TFE)/2+MU)/2]"
    )

    # the target's numbers by hand from its cached generations: the model entails every
    # pair, so a split's entailment is its share of generations with ROUGE-L >= 0.1 against
    # the answer, and the forget refusal score the share against the row's own refusal
    world = World(exp, progress=False)
    generations = world.target_evaluation["generations"]
    m = target["metrics"]
    for role, rows in world.splits.evaluation.items():
        answers = [r.answer for r in rows[: exp.eval.limit]]
        rouge = tofu.rouge_l_recall(generations[role], answers)
        assert m[f"{role}/entailment"] == pytest.approx(np.mean(rouge >= MIN_ROUGE)), role
    refusals = [refusal(i, exp.data.refusal_seed) for i in range(exp.eval.limit)]
    assert world.forget_refusals == refusals
    # each is what IDK unlearning trains on for that very question
    trained = world.refusal_pairs(world.splits.forget, 0)
    questions = [r.question for r in world.splits.evaluation["forget"]]
    assert world.formatter.pairs(questions[: len(refusals)], refusals) == trained[: len(refusals)]
    gate = tofu.rouge_l_recall(generations["forget"], refusals) >= MIN_ROUGE
    assert m["forget/refusal"] == pytest.approx(np.mean(gate))
    assert "TFE" not in m  # a reference is no IDK method

    # the IDK run's aggregates from its recorded per-split numbers (SPEC §3.3)
    m = run["metrics"]
    utility = ("prob", "rouge", "truth_ratio", "token_entropy", "entailment")
    values = [m[f"{s}/{k}"] for s in ("retain", "real_authors", "world_facts") for k in utility]
    assert m["MU"] == pytest.approx(stats.hmean(values))
    knowledge = [m["forget/prob"], m["forget/rouge"], 1 - m["forget/truth_ratio"]]
    assert m["UFE"] == pytest.approx(1 - np.mean([*knowledge, m["forget/entailment"]]))
    assert m["TFE"] == pytest.approx(stats.hmean([m["forget/token_entropy"], m["forget/refusal"]]))
    assert m["OVR"] == pytest.approx(((m["UFE"] + m["TFE"]) / 2 + m["MU"]) / 2)

    # without the key (as offline, where no NLI model ships) the records say it is absent
    plain = sweep(nli_experiment(tmp_path / "cache"), tmp_path / "plain")
    assert {r["id"] for r in plain}.isdisjoint(r["id"] for r in records)
    assert plain[0]["extra"]["metric_variant"] == "closer-look[no-cosine; no-entailment]"
    assert plain[2]["extra"]["metric_variant"] == (
        "closer-look[no-cosine; no-entailment; idk: no TFE (needs entailment), OVR=(UFE+MU)/2]"
    )
    assert not [k for r in plain for k in r["metrics"] if "entailment" in k or "refusal" in k]
    assert "TFE" not in plain[2]["metrics"]
    assert "entailment" not in plain[0]["config"]


def test_closer_look_models_change_the_keys_only_where_they_apply(tmp_path, tiny_nli) -> None:
    """A config with a Closer-Look model gets new cache keys and record ids (its numbers
    follow the fixed definitions) and shares the fine-tuned models; one without keeps its
    keys (tests/test_llm_lora.py pins them) and has no `entailment` in its records."""
    from dualoptim.tasks.llm.evaluation import EVAL_DEFINITIONS
    from dualoptim.tasks.llm.task import TASK

    plain = TASK.plan(nli_experiment(tmp_path), None, progress=False)
    nli = TASK.plan(nli_experiment(tmp_path, entailment=str(tiny_nli)), None, progress=False)
    assert plain.world.definitions == ()
    assert nli.world.definitions == (EVAL_DEFINITIONS, str(tiny_nli))
    assert nli.world._model_keys == plain.world._model_keys
    assert nli.world.key != plain.world.key
    ids = {r.id for p in (plain, nli) for r in p.references()}
    assert len(ids) == 4
    assert "entailment" not in plain.store_config()
    assert nli.store_config()["entailment"] == str(tiny_nli)


def test_an_unloadable_entailment_model_stops_the_run_naming_the_key(tmp_path, monkeypatch):
    """Offline, a Hub id cannot load: refused before anything is trained (without the key,
    the variant says `no-entailment`: see test_rerun_reads_records_back_and_report_has_table_3)."""
    import huggingface_hub.constants

    from dualoptim.config import ConfigError

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    exp = nli_experiment(tmp_path, entailment="sileod/deberta-v3-base-tasksource-nli")
    with pytest.raises(ConfigError, match=r"^entailment: cannot load 'sileod/deberta-v3-base"):
        World(exp, progress=False)
    assert not list(tmp_path.glob("*.safetensors"))
    (tmp_path / "no-model").mkdir()
    with pytest.raises(ConfigError, match=r"entailment: cannot load .*set entailment: null"):
        World(nli_experiment(tmp_path, entailment=str(tmp_path / "no-model")), progress=False)


def test_tfe_refuses_forget_rows_out_of_tofus_order(tmp_path, tiny_nli) -> None:
    """TFE pairs forget row i with the refusal IDK trains on for question i: a forget
    evaluation file in another order is refused when the World is made, not after training."""
    from dualoptim.tasks.llm.generator import write_tofu

    write_tofu(tmp_path)
    lines = (tmp_path / "forget01_perturbed.json").read_text().splitlines()
    (tmp_path / "forget01_perturbed.json").write_text("\n".join(lines[::-1]) + "\n")
    data = {**NLI_EXPERIMENT["data"], "source": str(tmp_path)}
    World(nli_experiment(tmp_path, data=data), progress=False)  # no entailment: no pairing
    with pytest.raises(ValueError, match="row 0 of forget01_perturbed is not row 0 of forget01"):
        World(nli_experiment(tmp_path, data=data, entailment=str(tiny_nli)), progress=False)


def test_the_intro_names_the_references_a_report_has() -> None:
    """A one-shot report compares with the target and the retain model (Forget Quality); a
    continual one has only the target per request and no Forget Quality (SPEC §2.6)."""
    config = {"data": {"forget_split": "forget05"}, "model": {"lora": None}}
    record = {"group": "target", "extra": {"metric_variant": "closer-look"}, "metrics": {}}
    one_shot = TASK.intro([{**record, "config": config}])
    continual = TASK.intro([{**record, "config": {**config, "requests": {"count": 5}}}])
    assert "Forget Quality (KS-test" in one_shot
    assert "Rows `target` and `retain model` are the references" in one_shot
    assert "no Forget Quality" in continual
    assert "retain model" not in continual
    assert "Row `target` is the reference" in continual

"""LoRA (``model.lora``): unlearning trains only peft adapters on the fully fine-tuned target,
in every setting, with masks over the adapters alone and the frozen target as reference; the
adapters save and reload; configs without LoRA keep their record ids and cache names; the HF
Trainer adapter trains a peft model's adapters only; bad LoRA configs fail before anything is
trained."""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

pytest.importorskip("peft")

from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, PhiConfig, PhiForCausalLM

from dualoptim.bench.sweeps import sweep
from dualoptim.cli import _named_config, main
from dualoptim.config import ConfigError, load_config
from dualoptim.tasks.llm.config import LLMExperiment, LLMUnlearnSpec, LoraSpec
from dualoptim.tasks.llm.data import load_split
from dualoptim.tasks.llm.format import Formatter, PairSource, PromptFormat
from dualoptim.tasks.llm.methods import LLMMethod
from dualoptim.tasks.llm.models import (
    LLAMA_LINEAR,
    TinySpec,
    check_lora_targets,
    tiny_llama,
    train_tokenizer,
    with_lora,
)
from dualoptim.tasks.llm.objectives import REFERENCE, logits
from dualoptim.tasks.llm.run import engine_config, make_optimizer, unlearn_target
from dualoptim.tasks.llm.task import TASK, LLMPlan
from dualoptim.tasks.llm.world import World
from dualoptim.unlearn import Schedule, unlearn
from dualoptim.unlearn.masks import install_masks, mean_batch_gradients, top_fraction_mask
from dualoptim.unlearn.method import RunState

#: peft 0.21 asks transformers 5 for a renamed property (dualoptim's with_lora silences it).
pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)

SETTINGS = ("joint", "alternate", "dual", "dual_8bit", "dual_plus", "dual_plus_8bit")
TEXTS = [it.question + " " + it.answer for it in load_split("full")]
#: Phi-1.5's linear layers (tofu-phi15): attention q/k/v and ``dense``, MLP ``fc1``/``fc2``.
PHI_LINEAR = ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2")

#: tofu-tiny as shipped, computed before ``model.lora`` existed: the world key, the cache keys
#: of the fine-tuned target and retain model, and every record id (references, then runs).
BEFORE_LORA = {
    "key": "b2bad58a755b7f22",
    "models": {"target": "41d3db230db37f62", "retain": "586e69dd76dfa9a7"},
    "ids": [
        "0e480389fcdbbbca3c5d",
        "7393c23e984f6b7c5d6e",
        "02dc0a1da0f36e01b621",
        "86e22022c5823403a1a7",
        "453a25cf7a008fcbb321",
    ],
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matmuls: on a shared 2-core machine intra-op threads only spin."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS[:200], 300)


def tiny_plan(cache: Path, *overrides: str) -> LLMPlan:
    exp = load_config(LLMExperiment, _named_config("tofu-tiny"), [f"cache_dir={cache}", *overrides])
    return TASK.plan(exp, None, progress=False)


def record_ids(plan: LLMPlan) -> list[str]:
    jobs = [job for spec in plan.exp.runs for job in plan.jobs(spec, 1.0)]
    return [r.id for r in plan.references()] + [job.id for job in jobs]


def adapters(model: nn.Module) -> dict[str, Tensor]:
    """The trainable tensors of a peft model, by name."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def base_weights(model: PeftModel) -> dict[str, Tensor]:
    """A peft model's base weights under the unwrapped model's names (adapters removed, not
    merged)."""
    return copy.deepcopy(model).unload().state_dict()


def assert_only_adapters_moved(model: PeftModel, before: dict[str, Tensor]) -> None:
    """Every base weight bit-identical to ``before``; every LoRA B (zero at the start) moved."""
    base = base_weights(model)
    assert base.keys() == before.keys()
    changed = [n for n in base if not torch.equal(base[n], before[n])]
    assert changed == []
    trained = adapters(model)
    assert trained
    assert all(".lora_A." in n or ".lora_B." in n for n in trained)
    b = {n: p for n, p in trained.items() if ".lora_B." in n}
    still = [n for n, p in b.items() if not p.detach().abs().max() > 0]
    assert b
    assert still == []


def qa_source(tokenizer, rows: int = 8) -> PairSource:
    fmt = Formatter(tokenizer, PromptFormat(template="plain", max_length=96))
    items = load_split("forget01")[:rows]
    questions = [r.question for r in items]
    parts = {
        "qa": fmt.pairs(questions, [r.answer for r in items]),
        "idk": fmt.pairs(questions, ["I do not know."] * rows),
    }
    return PairSource(parts, fmt.pad)


def small_llama(tokenizer) -> nn.Module:
    return tiny_llama(len(tokenizer), TinySpec(hidden_size=32, intermediate_size=64))


# ----------------------------------------------------------------------------- ids and records
def test_a_config_without_lora_keeps_its_ids_and_caches(tmp_path) -> None:
    plan = tiny_plan(tmp_path)
    assert plan.world.key == BEFORE_LORA["key"]
    assert plan.world._model_keys == BEFORE_LORA["models"]
    assert record_ids(plan) == BEFORE_LORA["ids"]
    configs = [plan.store_config(), *(job.config for job in plan.jobs(plan.exp.runs[0], 1.0))]
    assert all("lora" not in c["model"] for c in configs)  # as records made before LoRA

    lora = tiny_plan(tmp_path, "model.lora={r: 4}")
    # the same fine-tuned target and retain model (cached once), other records
    assert lora.world._model_keys == BEFORE_LORA["models"]
    assert lora.world.key != BEFORE_LORA["key"]
    assert set(record_ids(lora)).isdisjoint(BEFORE_LORA["ids"])
    expected = {"r": 4, "alpha": 16.0, "dropout": 0.0, "target_modules": list(LLAMA_LINEAR)}
    assert lora.store_config()["model"]["lora"] == expected
    assert lora.jobs(lora.exp.runs[0], 1.0)[0].config["model"]["lora"] == expected


# ----------------------------------------------------------------------------- a tofu-tiny run
@pytest.mark.slow
def test_a_lora_tofu_tiny_run_moves_only_adapters_and_reloads(tmp_path) -> None:
    """tofu-tiny with LoRA under dual and dual_plus, through the sweep (records, report),
    then each run again to look at its model: base weights bit-identical to the target,
    every LoRA B moved, the saved adapters reload to the same outputs."""
    run = "{method: me+gd, forget_lr: 1.0e-3, retain_lr: 1.0e-3, batch_size: 8, epochs: 1}"
    overrides = [
        "finetune.epochs=8",
        "eval.limit=8",
        "eval.max_new_tokens=8",
        "model.lora={r: 4, alpha: 8}",
        f"runs=[{run[:-1]}, setting: dual}}, {run[:-1]}, setting: dual_plus}}]",
    ]
    plan = tiny_plan(tmp_path / "cache", *overrides)
    records = sweep(plan.exp, tmp_path / "bench")  # fine-tunes the target into the cache
    by = {r["group"]: r for r in records}
    assert sorted(by) == ["ME+GD (dual)", "ME+GD (dual_plus)", "retain model", "target"]
    assert all(r["config"]["model"]["lora"]["r"] == 4 for r in records)
    for group in ("ME+GD (dual)", "ME+GD (dual_plus)"):
        assert by[group]["metrics"]["forget/prob"] < by["target"]["metrics"]["forget/prob"]
    assert main(["report", str(tmp_path / "bench")]) == 0
    report = (tmp_path / "bench" / "report.md").read_text()
    assert "Unlearning trained LoRA adapters only (r 4, alpha 8, dropout 0, on q_proj" in report
    assert (
        "  lora:\n    r: 4\n    alpha: 8.0\n    dropout: 0.0\n    target_modules: [q_proj,"
        in report
    )

    world = plan.world
    target = world.new_model(world.target[0]).eval()
    batch = PairSource({"qa": world.forget_pairs}, world.formatter.pad).batch(torch.arange(8))
    for spec in plan.exp.runs:
        model, result, _ = unlearn_target(spec, world, 0, progress=False)
        assert isinstance(model, PeftModel)
        recorded = by[spec.label]["metrics"]  # the run again: the same model
        assert {k: recorded[f"steps/{k}"] for k in result.steps} == result.steps
        prob = world.curve_evaluator()(model, None)["forget/prob"]
        assert prob == pytest.approx(recorded["forget/prob"], rel=1e-4)
        assert_only_adapters_moved(model, world.target[0])
        model.eval()
        out = logits(model, batch["qa"])
        assert not torch.equal(out, logits(target, batch["qa"]))
        model.save_pretrained(tmp_path / spec.setting)
        fresh = world.new_model(world.target[0])
        reloaded = PeftModel.from_pretrained(fresh, tmp_path / spec.setting).eval()
        assert torch.equal(logits(reloaded, batch["qa"]), out)


# ----------------------------------------------------------------------------- every setting
class KeepsRun(LLMMethod):
    """An LLM method that keeps its run, to look at the reference it set up."""

    def setup(self, model, optimizer, run: RunState) -> None:
        super().setup(model, optimizer, run)
        self.run = run


@pytest.mark.parametrize(
    ("setting", "dtype"),
    [
        *((s, torch.float32) for s in SETTINGS),
        ("dual", torch.bfloat16),
        ("dual_plus", torch.bfloat16),
    ],
)
def test_every_setting_trains_only_the_adapters_against_the_frozen_target(
    tokenizer, setting: str, dtype: torch.dtype
) -> None:
    """One forget and one retain step (joint: one step) of NPO+KL, whose losses both read the
    frozen reference: only adapters move, and the reference is the target, bit for bit. A
    bf16 target keeps its bf16 weights and gets fp32 adapters (peft's default)."""
    target = small_llama(tokenizer).to(dtype)
    before = {n: t.clone() for n, t in target.state_dict().items()}
    torch.manual_seed(0)
    model = with_lora(copy.deepcopy(target), LoraSpec(r=2), "tiny-llama")
    spec = LLMUnlearnSpec("npo+kl", setting, forget_lr=1e-3, retain_lr=1e-3, batch_size=2)
    method = KeepsRun(spec.method)
    source = qa_source(tokenizer)
    cfg = engine_config(spec, 8, 0, progress=False)
    one = Schedule(1, 1) if setting == "joint" else Schedule(1, 1, 1)
    optimizer = make_optimizer(spec, model)
    owned = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert owned == {id(p) for p in adapters(model).values()}
    assert {p.dtype for p in adapters(model).values()} == {torch.float32}
    result = unlearn(
        model, method, source, source, optimizer, dataclasses.replace(cfg, schedule=one)
    )
    assert sum(result.steps.values()) == (1 if setting == "joint" else 2)
    assert_only_adapters_moved(model, before)
    reference = method.run.extras[REFERENCE]
    assert not any(p.requires_grad for p in reference.parameters())
    qa = source.batch(torch.arange(4))["qa"]
    assert torch.equal(logits(reference, qa), logits(target.eval(), qa))


def test_saliency_masks_cover_only_the_adapters(tokenizer) -> None:
    """SalUn-style masks from the forget gradients exist for the adapters alone, and a masked
    forget step leaves their masked-out entries (and every base weight) where they were."""
    model = with_lora(small_llama(tokenizer), LoraSpec(r=2), "tiny-llama")
    spec = LLMUnlearnSpec("ga+gd", "dual", forget_lr=1e-2, batch_size=4)
    method = LLMMethod(spec.method)
    optimizer = make_optimizer(spec, model)
    source = qa_source(tokenizer)
    batches = [source.batch(torch.arange(4)), source.batch(torch.arange(4, 8))]

    def forget_loss(m: nn.Module, batch) -> Tensor:
        return method.forget_loss(m, batch, RunState(total_steps=1))

    grads = mean_batch_gradients(model, batches, forget_loss, square=False)
    assert grads.keys() == adapters(model).keys()
    masks = top_fraction_mask({n: g.abs() for n, g in grads.items()}, 0.3)
    install_masks(model, optimizer, masks, ["forget"])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = dataclasses.replace(engine_config(spec, 8, 0, progress=False), schedule=Schedule(1, 1, 0))
    unlearn(model, method, source, source, optimizer, cfg)
    for n, p in model.named_parameters():
        kept = ~masks[n] if n in masks else torch.ones_like(p, dtype=torch.bool)
        assert torch.equal(p[kept], before[n][kept]), n
    assert any(not torch.equal(p, before[n]) for n, p in adapters(model).items())
    frozen = dict(model.named_parameters())[next(n for n in before if n not in masks)]
    with pytest.raises(ValueError, match="not a parameter of this optimizer"):
        optimizer.set_mask("forget", {frozen: torch.ones_like(frozen, dtype=torch.bool)})


# ----------------------------------------------------------------------------- HF Trainer
@pytest.mark.parametrize("setting", ["dual", "dual_plus"])
def test_dual_optim_trainer_trains_only_the_adapters_of_a_peft_model(tmp_path, setting) -> None:
    from transformers import TrainingArguments

    from dualoptim.integrations.hf_trainer import DualOptimTrainer

    class GAGD:
        name = "ga+gd"

        def forget_loss(self, model, batch, _run) -> Tensor:
            return -model(**batch).loss

        def retain_loss(self, model, batch, _run) -> Tensor:
            return model(**batch).loss

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=8,
    )
    base = LlamaForCausalLM(config)
    before = {n: t.clone() for n, t in base.state_dict().items()}
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    gen = torch.Generator().manual_seed(1)
    rows = [
        {"input_ids": x, "labels": x.clone()} for x in torch.randint(0, 64, (12, 8), generator=gen)
    ]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=6,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = DualOptimTrainer(
        model,
        args,
        method=GAGD(),
        forget_dataset=rows[:6],
        retain_dataset=rows[6:],
        setting=setting,
    )
    trainer.train()
    optimizer = trainer.objective_optimizer
    owned = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert owned == {id(p) for p in adapters(model).values()}
    assert_only_adapters_moved(model, before)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("lora", "message"),
    [
        ("{r: 0}", "model.lora.r must be >= 1"),
        ("{r: -4}", "model.lora.r must be >= 1"),
        ("{alpha: 0}", "model.lora.alpha must be > 0"),
        ("{dropout: 1.0}", r"model.lora.dropout must lie in \[0, 1\)"),
        ("{target_modules: []}", "model.lora.target_modules must name at least one"),
        ("{target_modules: q_proj}", r"model.lora.target_modules: expected tuple\[str, ...\]"),
        ("{rank: 8}", "model.lora.rank: unknown key; allowed keys: r, alpha, dropout, target"),
    ],
)
def test_bad_lora_options_fail_when_the_config_loads(lora: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(LLMExperiment, _named_config("tofu-tiny"), [f"model.lora={lora}"])


def test_an_unknown_target_module_fails_before_anything_is_trained(tmp_path, capsys) -> None:
    argv = ["unlearn", "--config", "tofu-tiny", f"cache_dir={tmp_path}", "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as err:
        main([*argv, "model.lora={target_modules: [q_proj, qproj]}"])
    assert err.value.code == 2
    assert (
        "model.lora.target_modules: 'qproj' matches no linear module of tiny-llama; its linear "
        "modules are down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj"
    ) in capsys.readouterr().err
    assert not list(tmp_path.glob("*.safetensors"))  # no target was fine-tuned


def tiny_phi(folder: Path, tokenizer) -> Path:
    """A 1-layer Phi (the architecture of tofu-phi15) saved as a local model folder."""
    torch.manual_seed(0)
    config = PhiConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        pad_token_id=0,
    )
    PhiForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_lora_targets_a_model_has_not_are_refused_and_phi15s_own_work(tmp_path, tokenizer):
    """Llama's projection names (the default) on a Phi model are refused, naming Phi's linear
    layers; Phi-1.5's names pass, and the shipped paper-size configs take them."""
    folder = tiny_phi(tmp_path / "phi", tokenizer)
    overrides = [f"model.name={folder}", f"cache_dir={tmp_path}"]
    default = load_config(LLMExperiment, _named_config("tofu-tiny"), [*overrides, "model.lora={}"])
    message = (
        f"model.lora.target_modules: 'o_proj' matches no linear module of {folder}; its linear "
        "modules are dense, fc1, fc2, k_proj, lm_head, q_proj, v_proj"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        World(default, progress=False)

    phi = f"model.lora={{r: 16, alpha: 32, target_modules: [{', '.join(PHI_LINEAR)}]}}"
    shipped = load_config(LLMExperiment, _named_config("tofu-phi15"), [phi])
    assert shipped.model.lora == LoraSpec(16, 32.0, 0.0, PHI_LINEAR)
    world = World(load_config(LLMExperiment, _named_config("tofu-tiny"), [*overrides, phi]))
    wrapped = world.adapted(PhiForCausalLM.from_pretrained(folder))
    names = {n.split(".lora_B.")[0].rsplit(".", 1)[-1] for n in adapters(wrapped) if "lora_B" in n}
    assert names == set(PHI_LINEAR)

    llama2 = load_config(LLMExperiment, _named_config("tofu-llama2"), ["model.lora={r: 16}"])
    check_lora_targets(small_llama(tokenizer), llama2.model.lora.target_modules, "a Llama")

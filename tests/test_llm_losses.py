"""LLM unlearning losses (SPEC §2.3) against hand-computed values on tiny logits, and the
LLM methods on a tiny Llama: name parsing, the frozen reference, and the sign of every
forget loss (one gradient step on it makes the forget answers less likely)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from dualoptim.optim.settings import build_optimizer
from dualoptim.tasks.llm import losses
from dualoptim.tasks.llm.methods import (
    COMBINATIONS,
    FORGET_LOSSES,
    LLMMethod,
    LossOptions,
)
from dualoptim.tasks.llm.objectives import wga
from dualoptim.unlearn import EngineConfig, RunState, Schedule, unlearn

# ---------------------------------------------------------------------------------- by hand
# B = 2, T = 3, V = 3. Position t predicts label t + 1, so the answer positions are (0, 0)
# -> token 1, (0, 1) -> token 2, (1, 0) -> token 0; (1, 1) predicts padding and the last
# position predicts nothing: neither may count.
LOGITS = [
    [[1.0, 2.0, 0.5], [0.0, -1.0, 1.5], [9.0, -9.0, 0.0]],
    [[0.3, 0.3, -0.6], [2.0, 0.0, 0.0], [-5.0, 5.0, 0.0]],
]
REF_LOGITS = [
    [[0.5, 0.0, 1.0], [1.0, 1.0, -1.0], [0.0, 0.0, 0.0]],
    [[-1.0, 2.0, 0.0], [4.0, -4.0, 1.0], [3.0, 3.0, 3.0]],
]
LABELS = [[-100, 1, 2], [-100, 0, -100]]
ANSWERS = [(0, 0, 1), (0, 1, 2), (1, 0, 0)]  # (sequence, position, target token)


def log_softmax(row: list[float]) -> list[float]:
    top = max(row)
    lse = top + math.log(sum(math.exp(x - top) for x in row))
    return [x - lse for x in row]


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def labels() -> torch.Tensor:
    return torch.tensor(LABELS)


def test_token_and_sequence_nll_shift_and_mask() -> None:
    nll = losses.token_nll(t(LOGITS), labels())
    expected = [[0.0, 0.0], [0.0, 0.0]]
    for b, pos, y in ANSWERS:
        expected[b][pos] = -log_softmax(LOGITS[b][pos])[y]
    assert nll.shape == (2, 2)
    torch.testing.assert_close(nll, t(expected))
    total, count = losses.sequence_nll(t(LOGITS), labels())
    torch.testing.assert_close(total, t([expected[0][0] + expected[0][1], expected[1][0]]))
    assert count.tolist() == [2, 1]


def test_ce_is_the_mean_over_answer_tokens() -> None:
    expected = sum(-log_softmax(LOGITS[b][pos])[y] for b, pos, y in ANSWERS) / 3
    assert float(losses.ce(t(LOGITS), labels())) == pytest.approx(expected, rel=1e-6)


def test_wga_weights_each_ascent_token_by_its_detached_probability() -> None:
    # WGA = −Σ p_t^β·nll_t / #answer tokens with p_t = exp(−nll_t); β = 1 by default
    nlls = [-log_softmax(LOGITS[b][pos])[y] for b, pos, y in ANSWERS]
    expected = -sum(math.exp(-n) * n for n in nlls) / 3
    logits = t(LOGITS).requires_grad_()
    loss = wga.weighted_ascent(logits, labels())
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    half = -sum(math.exp(-0.5 * n) * n for n in nlls) / 3
    assert float(wga.weighted_ascent(t(LOGITS), labels(), beta=0.5)) == pytest.approx(
        half, rel=1e-6
    )
    # the weights are constants: the gradient is the weighted GA gradient, not d(p·nll)
    loss.backward()
    b, pos, y = ANSWERS[0]
    p = [math.exp(v) for v in log_softmax(LOGITS[b][pos])]
    grad = [-math.exp(-nlls[0]) * (p[v] - (v == y)) / 3 for v in range(3)]
    torch.testing.assert_close(logits.grad[b, pos], t(grad))
    # β → 0 is GA
    ga = -losses.ce(t(LOGITS), labels())
    torch.testing.assert_close(wga.weighted_ascent(t(LOGITS), labels(), beta=0.0), ga)


def test_wga_builds_as_a_registered_method() -> None:
    method = LLMMethod("WGA+GD")
    assert (method.name, method.forget, method.retain) == ("wga+gd", "wga", "gd")
    assert "wga" in FORGET_LOSSES
    assert not method.needs_reference
    assert not method.forget_needs_refusals
    assert method.forget_objective.forget_lr == 1e-5
    assert method.forget_objective.joint_forget_weight == 1.0
    with pytest.raises(ValueError, match=r"forget losses .*wga.*objectives/"):
        LLMMethod("wga+bar")


def test_kl_to_reference_by_hand() -> None:
    expected = 0.0
    for b, pos, _ in ANSWERS:
        lp, lr = log_softmax(LOGITS[b][pos]), log_softmax(REF_LOGITS[b][pos])
        expected += sum(math.exp(r) * (r - p) for p, r in zip(lp, lr, strict=True))
    expected /= 3
    got = losses.kl_to_reference(t(LOGITS), t(REF_LOGITS), labels())
    assert float(got) == pytest.approx(expected, rel=1e-6)
    assert float(losses.kl_to_reference(t(LOGITS), t(LOGITS), labels())) == 0.0


def test_maximum_entropy_by_hand() -> None:
    expected = 0.0
    for b, pos, _ in ANSWERS:
        lp = log_softmax(LOGITS[b][pos])
        expected += sum((1 / 3) * (math.log(1 / 3) - p) for p in lp)
    expected /= 3
    assert float(losses.maximum_entropy(t(LOGITS), labels())) == pytest.approx(expected, rel=1e-6)
    uniform = torch.full((2, 3, 3), 0.7)
    assert float(losses.maximum_entropy(uniform, labels())) == pytest.approx(0.0, abs=1e-6)


def test_positions_off_the_answer_do_not_count() -> None:
    """Changing the logits that predict prompt/padding (and the last position's) changes
    nothing; changing an answer position's does."""
    base, lab = t(LOGITS), labels()
    noisy = base.clone()
    noisy[0, 2] += torch.tensor([5.0, -3.0, 1.0])  # last position: predicts nothing
    noisy[1, 1:] += torch.tensor([[-2.0, 4.0, 0.5], [1.0, 1.0, -7.0]])  # predict padding
    ref = t(REF_LOGITS)
    for fn in (
        lambda x: losses.ce(x, lab),
        lambda x: losses.sequence_nll(x, lab)[0],
        lambda x: losses.kl_to_reference(x, ref, lab),
        lambda x: losses.maximum_entropy(x, lab),
    ):
        torch.testing.assert_close(fn(noisy), fn(base))
    moved = base.clone()
    moved[1, 0, 0] += 1.0
    assert float(losses.ce(moved, lab)) != pytest.approx(float(losses.ce(base, lab)))


def test_losses_run_in_float32_under_bf16_logits() -> None:
    lab = labels()
    for value in (
        losses.ce(t(LOGITS).bfloat16(), lab),
        losses.kl_to_reference(t(LOGITS).bfloat16(), t(REF_LOGITS).bfloat16(), lab),
        losses.maximum_entropy(t(LOGITS).bfloat16(), lab),
        losses.sequence_nll(t(LOGITS).bfloat16(), lab)[0],
    ):
        assert value.dtype == torch.float32


def test_npo_by_hand_and_at_the_reference() -> None:
    nll, ref = [3.0, 1.0], [2.0, 1.5]
    beta = 0.1
    expected = -(2 / beta) * sum(log_sigmoid(beta * (a - r)) for a, r in zip(nll, ref, strict=True))
    expected /= 2
    assert float(losses.npo(t(nll), t(ref), beta)) == pytest.approx(expected, rel=1e-6)
    assert float(losses.npo(t(nll), t(nll), beta)) == pytest.approx(2 / beta * math.log(2))
    assert float(losses.npo(t(nll), t(nll), 0.5)) == pytest.approx(2 / 0.5 * math.log(2))


def test_simnpo_by_hand() -> None:
    nll, lengths = [6.0, 2.0], torch.tensor([3, 4])
    for beta, gamma in ((2.5, 0.0), (1.0, 0.5)):
        expected = -(2 / beta) * (
            log_sigmoid(beta * 6 / 3 - gamma) + log_sigmoid(beta * 2 / 4 - gamma)
        )
        expected /= 2
        got = losses.simnpo(t(nll), lengths, beta, gamma)
        assert float(got) == pytest.approx(expected, rel=1e-6)


def test_dpo_by_hand_and_at_the_reference() -> None:
    chosen, rejected, ref_chosen, ref_rejected = [4.0, 2.0], [1.0, 3.0], [5.0, 2.5], [1.5, 2.0]
    beta = 0.1
    expected = 0.0
    for c, r, rc, rr in zip(chosen, rejected, ref_chosen, ref_rejected, strict=True):
        h = ((-c) - (-r)) - ((-rc) - (-rr))  # log π = −NLL
        expected += -(2 / beta) * log_sigmoid(beta * h) / 2
    got = losses.dpo(t(chosen), t(rejected), t(ref_chosen), t(ref_rejected), beta)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    same = losses.dpo(t(chosen), t(rejected), t(chosen), t(rejected), beta)
    assert float(same) == pytest.approx(2 / beta * math.log(2))  # 20× DPO's log 2


def test_answer_preservation_by_hand() -> None:
    idk, true, beta = [5.0, 2.0], [1.0, 4.0], 0.1
    expected = -(1 / beta) * (log_sigmoid(beta * 4.0) + log_sigmoid(beta * -2.0)) / 2
    got = losses.answer_preservation(t(idk), t(true), beta)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_sign_conventions_of_the_preference_losses() -> None:
    """Minimising raises the forget NLL (NPO, SimNPO), the true answer's NLL relative to the
    refusal's (DPO), and keeps true answers likelier than refusals on D_r (AP)."""

    def grads(fn, *values):
        xs = [t(v).requires_grad_() for v in values]
        fn(*xs).backward()
        return [x.grad for x in xs]

    (g,) = grads(lambda n: losses.npo(n, t([2.0, 2.0])), [3.0, 1.0])
    assert (g < 0).all()
    (g,) = grads(lambda n: losses.simnpo(n, torch.tensor([3, 4]), 2.5, 0.5), [6.0, 2.0])
    assert (g < 0).all()
    g_chosen, g_rejected = grads(
        lambda c, r: losses.dpo(c, r, t([1.0, 1.0]), t([1.0, 1.0])), [2.0, 1.0], [1.0, 3.0]
    )
    assert (g_chosen > 0).all()
    assert (g_rejected < 0).all()
    g_idk, g_true = grads(losses.answer_preservation, [5.0, 2.0], [1.0, 4.0])
    assert (g_idk < 0).all()
    assert (g_true > 0).all()


# ---------------------------------------------------------------------------------- a tiny LM
VOCAB = 64
REFUSAL = [60, 61, 62, 63]  # one "I don't know" answer for every question


def encode(pairs: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
    """Right-padded encoding; labels = the answer tokens, -100 on prompt and padding."""
    width = max(len(q) + len(a) for q, a in pairs)
    ids, mask, lab = [], [], []
    for q, a in pairs:
        pad = width - len(q) - len(a)
        ids.append(q + a + [0] * pad)
        mask.append([1] * (len(q) + len(a)) + [0] * pad)
        lab.append([-100] * len(q) + a + [-100] * pad)
    return {
        "input_ids": torch.tensor(ids),
        "attention_mask": torch.tensor(mask),
        "labels": torch.tensor(lab),
    }


def make_batch(questions, answers) -> dict:
    return {
        "qa": encode(list(zip(questions, answers, strict=True))),
        "idk": encode([(q, REFUSAL) for q in questions]),
        "index": torch.arange(len(questions)),
    }


@pytest.fixture(scope="module")
def world():
    """A tiny Llama fine-tuned on a forget and a retain set (the "target"), and the batches."""
    gen = torch.Generator().manual_seed(0)

    def tokens(n: int) -> list[int]:
        return torch.randint(1, 60, (n,), generator=gen).tolist()

    forget = make_batch([tokens(3) for _ in range(4)], [tokens(n) for n in (4, 3, 5, 4)])
    retain = make_batch([tokens(3) for _ in range(4)], [tokens(n) for n in (3, 4, 4, 5)])
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    model = LlamaForCausalLM(config)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(20):
        for batch in (forget, retain):
            enc = batch["qa"]
            model(**enc).loss.backward()
            opt.step()
            opt.zero_grad()
    model.zero_grad(set_to_none=True)
    return model, forget, retain


def nll_of(model, encoding) -> float:
    with torch.no_grad():
        return float(
            losses.ce(
                model(**{k: encoding[k] for k in ("input_ids", "attention_mask")}).logits,
                encoding["labels"],
            )
        )


def test_ce_matches_hugging_face_loss(world) -> None:
    model, forget, _ = world
    enc = forget["qa"]
    with torch.no_grad():
        out = model(**enc)
    torch.testing.assert_close(losses.ce(out.logits, enc["labels"]), out.loss)


def test_names_are_parsed_case_insensitively() -> None:
    m = LLMMethod("ME+GD")
    assert (m.name, m.forget, m.retain) == ("me+gd", "me", "gd")
    m = LLMMethod(" NPO + kl ")
    assert m.name == "npo+kl"
    assert m.needs_reference
    assert not m.forget_needs_refusals
    m = LLMMethod("ga")
    assert (m.name, m.retain) == ("ga", None)
    assert m.retain_loss(None, None, RunState(1)) is None
    for name in COMBINATIONS:
        assert LLMMethod(name).name == name
    assert LLMMethod("IDK+AP").retain_needs_refusals
    assert LLMMethod("dpo+gd").forget_needs_refusals
    assert not LLMMethod("simnpo+gd").needs_reference
    for bad in ("foo", "ga+bar", "gd", "ga+gd+kl", "", "+gd"):
        with pytest.raises(ValueError, match=r"forget losses ga, npo, simnpo, dpo, me, idk"):
            LLMMethod(bad)


def test_loss_options_are_validated() -> None:
    for field in ("npo_beta", "simnpo_beta", "dpo_beta", "ap_beta"):
        for value in (0.0, -1.0, math.nan):
            with pytest.raises(ValueError, match=field):
                LossOptions(**{field: value})
    assert LossOptions(simnpo_gamma=-1.0).simnpo_gamma == -1.0
    with pytest.raises(ValueError, match="simnpo_gamma"):
        LossOptions(simnpo_gamma=math.inf)


@pytest.mark.parametrize("name", [*COMBINATIONS, *FORGET_LOSSES])
def test_reference_only_when_needed(name, world) -> None:
    model, _, _ = world
    run = RunState(1)
    LLMMethod(name).setup(model, None, run)
    parts = set(name.split("+"))
    assert ("reference" in run.extras) == bool(parts & {"npo", "dpo", "kl"})


def test_reference_is_frozen_and_never_changes(world) -> None:
    target, forget, retain = world
    model = copy.deepcopy(target).train()
    method, run = LLMMethod("npo+kl"), RunState(1)
    method.setup(model, None, run)
    ref = run.extras["reference"]
    assert ref is not model
    assert not ref.training
    assert all(not p.requires_grad for p in ref.parameters())
    before = {n: p.detach().clone() for n, p in ref.named_parameters()}
    model_ptrs = {p.data_ptr() for p in model.parameters()}
    assert all(p.data_ptr() not in model_ptrs for p in ref.parameters())
    # at setup θ = ref: NPO is (2/β)·log 2 and KL is 0
    assert float(method.forget_loss(model, forget, run).detach()) == pytest.approx(
        20 * math.log(2), rel=1e-5
    )
    assert float(method.retain_loss(model, retain, run).detach()) == pytest.approx(0.0, abs=1e-6)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for loss_fn, batch in ((method.forget_loss, forget), (method.retain_loss, retain)) * 2:
        loss_fn(model, batch, run).backward()
        assert all(p.grad is None for p in ref.parameters())
        opt.step()
        opt.zero_grad()
    for n, p in ref.named_parameters():
        torch.testing.assert_close(p, before[n], rtol=0, atol=0)
    assert any(not torch.equal(p, target.get_parameter(n)) for n, p in model.named_parameters())
    assert nll_of(ref, forget["qa"]) == pytest.approx(nll_of(target, forget["qa"]))


def test_reference_keeps_the_model_dtype(world) -> None:
    model = copy.deepcopy(world[0]).to(torch.bfloat16)
    _, forget, _ = world
    method, run = LLMMethod("dpo+gd"), RunState(1)
    method.setup(model, None, run)
    assert {p.dtype for p in run.extras["reference"].parameters()} == {torch.bfloat16}
    loss = method.forget_loss(model, forget, run)
    assert loss.dtype == torch.float32
    assert math.isfinite(float(loss.detach()))


@pytest.mark.parametrize("name", FORGET_LOSSES)
def test_a_step_on_each_forget_loss_raises_the_forget_nll(name, world) -> None:
    target, forget, _ = world
    model = copy.deepcopy(target).train()
    method, run = LLMMethod(name), RunState(1)
    method.setup(model, None, run)
    before, before_idk = nll_of(model, forget["qa"]), nll_of(model, forget["idk"])
    method.forget_loss(model, forget, run).backward()
    with torch.no_grad():
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.05 * p.grad / norm  # a small normalised step: the sign is what counts
    after = nll_of(model, forget["qa"])
    assert after > before
    if name in ("idk", "dpo"):  # and the refusals become likelier
        assert nll_of(model, forget["idk"]) < before_idk


def test_missing_refusals_raise_a_clear_error(world) -> None:
    model, forget, retain = world
    run = RunState(1)
    no_idk_f = {k: v for k, v in forget.items() if k != "idk"}
    no_idk_r = {k: v for k, v in retain.items() if k != "idk"}
    for name in ("dpo+gd", "idk+gd"):
        method = LLMMethod(name)
        method.setup(model, None, run)
        with pytest.raises(ValueError, match=r"forget batch has no 'idk' encoding \(refusal"):
            method.forget_loss(model, no_idk_f, run)
    method = LLMMethod("idk+ap")
    with pytest.raises(ValueError, match=r"retain batch has no 'idk' encoding.*AP"):
        method.retain_loss(model, no_idk_r, run)
    assert method.retain_loss(model, retain, run).ndim == 0  # with refusals it works


def test_losses_need_setup_for_a_reference(world) -> None:
    model, forget, _ = world
    with pytest.raises(RuntimeError, match="setup"):
        LLMMethod("npo").forget_loss(model, forget, RunState(1))


class DictSource:
    """A Source over one fixed batch dict (index selects rows of every encoding)."""

    def __init__(self, batch: dict) -> None:
        self.data = batch

    def __len__(self) -> int:
        return len(self.data["index"])

    def batch(self, index: torch.Tensor) -> dict:
        out = {
            k: {n: v[index] for n, v in enc.items()} for k, enc in self.data.items() if k != "index"
        }
        out["index"] = index
        return out


def test_runs_in_the_engine_with_dual_optim(world) -> None:
    target, forget, retain = world
    model = copy.deepcopy(target)
    method = LLMMethod("npo+kl")
    opt = build_optimizer(
        "dual",
        model.parameters(),
        forget={"name": "adamw", "lr": 1e-3, "betas": (0.9, 0.95)},
        retain={"name": "adamw", "lr": 1e-3, "betas": (0.9, 0.95)},
    )
    config = EngineConfig(Schedule(2, 1, 1), forget_batch=4, retain_batch=4, progress=False)
    before = nll_of(model, forget["qa"])
    unlearn(model, method, DictSource(forget), DictSource(retain), opt, config)
    assert nll_of(model, forget["qa"]) > before

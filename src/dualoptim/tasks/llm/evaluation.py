"""Running a model over TOFU's evaluation splits: answer likelihoods and greedy generations.

This is the part of SPEC §3.3 that needs the model; the arithmetic on the numbers it
produces lives in ``metrics`` (TOFU suite) and ``closer_look`` (the paper's suite).
Likelihoods are per-token mean NLLs of the answer given the question, batched by length
(sorted, so little padding is computed); generations are greedy, batched with left padding,
and cut at ``max_new_tokens`` (reported beside the numbers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from dualoptim.distributed import is_main
from dualoptim.tasks.llm import closer_look as cl
from dualoptim.tasks.llm import metrics as tofu
from dualoptim.tasks.llm.data import TofuItem
from dualoptim.tasks.llm.format import Formatter, collate, collate_prompts
from dualoptim.tasks.llm.losses import sequence_nll

SPLIT_ROLES = ("forget", "retain", "real_authors", "world_facts")
#: Roles whose rows carry a paraphrased answer (the truth ratio's base) and whose Prob is
#: exp(−NLL) of the answer: TOFU's forget and retain, and the real-world task's utility split.
#: The other roles (real authors, world facts) are multiple choice among the perturbed answers.
PARAPHRASED_ROLES = ("forget", "retain", "utility")

#: The version of the metric definitions. It is part of the keys of cached evaluations and of
#: the record ids whose numbers depend on what changed (``World.definitions``), so numbers
#: computed under an older definition are never read back as current ones: bump it whenever a
#: metric changes (and say what changed here). 1: the definitions before this constant (keys
#: without it). 2: cosine and entailment compare with the full-sentence
#: ``original_answer`` on real authors / world facts (was: the short answer), entailment is
#: wired into MU/UFE with the ROUGE-L gate, and TFE's refusal entailment runs generation →
#: its paired refusal with the gate (was: any refusal → generation, no gate). Version 2
#: changed only what needs a Closer-Look model, so configs without one keep their keys; a
#: change to numbers every config computes must put the version in every key.
EVAL_DEFINITIONS = 2


def _quiet() -> bool | None:
    """tqdm's ``disable``: bars on a terminal (None), from the first process only."""
    return None if is_main() else True


@dataclass(frozen=True)
class EvalOptions:
    limit: int = 300  # rows per split (the paper's 300)
    max_new_tokens: int = 64
    batch_size: int = 16

    def __post_init__(self) -> None:
        for name in ("limit", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"eval.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class SplitOutputs:
    """What the model did on one split: NLLs, truth ratios, generations."""

    answer_nll: np.ndarray  # [N] per-token mean NLL of the answer
    base_nll: np.ndarray  # [N] of the truth-ratio base (paraphrase, or the answer)
    perturbed_nll: np.ndarray  # [N, K]
    generations: list[str] = field(default_factory=list)
    generated_tokens: list[list[int]] = field(default_factory=list)


@torch.no_grad()
def mean_nll(
    model: nn.Module,
    formatter: Formatter,
    questions: Sequence[str],
    answers: Sequence[str],
    batch_size: int,
    desc: str = "likelihood",
) -> np.ndarray:
    """Per-token mean NLL of each answer given its question (teacher forcing)."""
    pairs = formatter.pairs(questions, answers)
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i].ids))
    out = np.empty(len(pairs))
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False, disable=_quiet()):
        rows = order[start : start + batch_size]
        enc = {k: v.to(device) for k, v in collate([pairs[i] for i in rows], formatter.pad).items()}
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
        total, count = sequence_nll(logits.float(), enc["labels"])
        out[rows] = (total / count.clamp(min=1)).cpu().numpy()
    return out


@torch.no_grad()
def generate(
    model: nn.Module,
    formatter: Formatter,
    questions: Sequence[str],
    options: EvalOptions,
    desc: str = "generate",
) -> tuple[list[str], list[list[int]]]:
    """Greedy answers (text, and token ids without special tokens) to each question."""
    prompts = [formatter.prompt_ids(q) for q in questions]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    texts: list[str] = [""] * len(prompts)
    tokens: list[list[int]] = [[] for _ in prompts]
    device = next(model.parameters()).device
    special = set(formatter.tokenizer.all_special_ids)
    for start in tqdm(
        range(0, len(order), options.batch_size), desc=desc, leave=False, disable=_quiet()
    ):
        rows = order[start : start + options.batch_size]
        enc = {
            k: v.to(device)
            for k, v in collate_prompts([prompts[i] for i in rows], formatter.pad).items()
        }
        out = model.generate(
            **enc,
            max_new_tokens=options.max_new_tokens,
            do_sample=False,
            pad_token_id=formatter.pad,
            eos_token_id=formatter.eos,
        )
        for row, ids in zip(rows, out[:, enc["input_ids"].shape[1] :].tolist(), strict=True):
            if formatter.eos in ids:
                ids = ids[: ids.index(formatter.eos)]
            ids = [t for t in ids if t not in special]
            tokens[row] = ids
            texts[row] = formatter.tokenizer.decode(ids, skip_special_tokens=True).strip()
    return texts, tokens


def run_split(
    model: nn.Module,
    formatter: Formatter,
    items: Sequence[TofuItem],
    role: str,
    options: EvalOptions,
) -> SplitOutputs:
    """NLLs of answer, truth-ratio base and perturbed answers, and the generations.

    forget/retain: the base is the paraphrased answer; real authors / world facts: the
    answer itself (SPEC §3.3).
    """
    if not items:
        raise ValueError(f"the {role} evaluation split is empty")
    questions = [it.question for it in items]
    answers = [it.answer for it in items]
    b = options.batch_size
    answer_nll = mean_nll(model, formatter, questions, answers, b, f"{role}: answers")
    if role in PARAPHRASED_ROLES:
        missing = [i for i, it in enumerate(items) if it.paraphrased_answer is None]
        if missing:
            raise ValueError(f"{role} split row {missing[0]} has no paraphrased_answer")
        base = [it.paraphrased_answer or "" for it in items]
        base_nll = mean_nll(model, formatter, questions, base, b, f"{role}: paraphrases")
    else:
        base_nll = answer_nll
    k = len(items[0].perturbed_answers)
    if k == 0 or any(len(it.perturbed_answers) != k for it in items):
        raise ValueError(f"{role} split: every row needs the same number (>0) of perturbed answers")
    flat_q = [q for q in questions for _ in range(k)]
    flat_a = [a for it in items for a in it.perturbed_answers]
    perturbed = mean_nll(model, formatter, flat_q, flat_a, b, f"{role}: perturbed")
    texts, tokens = generate(model, formatter, questions, options, f"{role}: generate")
    return SplitOutputs(answer_nll, base_nll, perturbed.reshape(len(items), k), texts, tokens)


def split_scores(
    role: str, out: SplitOutputs, ratios: np.ndarray, rouge: np.ndarray
) -> dict[str, float]:
    """The TOFU suite's numbers of one split (Prob, ROUGE from its per-question ``rouge``,
    Truth Ratio from its per-question ``ratios``) and token entropy."""
    if role in PARAPHRASED_ROLES:
        prob = tofu.probability(out.answer_nll)
    else:
        prob = tofu.normalized_probability(out.answer_nll, out.perturbed_nll)
    return {
        "prob": float(prob),
        "rouge": float(np.mean(rouge)),
        "truth_ratio": float(tofu.truth_ratio_score(ratios, forget=role == "forget")),
        "token_entropy": float(cl.mean_token_entropy(out.generated_tokens)),
    }


def closer_look_targets(role: str, items: Sequence[TofuItem]) -> list[str]:
    """What cosine and entailment compare a generation with (SPEC §3.3): the answer on the
    paraphrased roles (forget, retain, utility), the full-sentence ``original_answer`` on real
    authors / world facts, whose answer is a short phrase ("Paris") a fluent sentence shares
    little with."""
    if role in PARAPHRASED_ROLES:
        return [it.answer for it in items]
    missing = [i for i, it in enumerate(items) if it.original_answer is None]
    if missing:
        raise ValueError(
            f"{role} split row {missing[0]} has no original_answer: cosine and entailment "
            "compare generations with it there; use TOFU files that carry it, or set "
            "embedder and entailment to null"
        )
    return [it.original_answer or "" for it in items]


@dataclass(frozen=True)
class CloserLookModels:
    """The Closer-Look suite's extra models (None: absent) and, for TFE, the refusal paired
    with each forget-split row (the one IDK methods train on for its question)."""

    embedder: cl.Embedder | None = None
    entailment: cl.EntailmentModel | None = None
    refusals: Sequence[str] = ()
    #: per role, what cosine compares with instead of ``closer_look_targets``, row for row:
    #: on the real-world set, the published ``answer`` (the initial model's own answer), as
    #: the Closer-Look code does, while entailment keeps the golden answer
    cosine_targets: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def scores(
        self, role: str, items: Sequence[TofuItem], generations: list[str], rouge: np.ndarray
    ) -> dict[str, float]:
        """``cosine``, ``entailment`` and, on the forget split, ``refusal``: those whose
        model is present. Entailment is gated by ``rouge``, the items' ROUGE-L recall against
        the answer (the split's ROUGE, as the Closer-Look code gates it)."""
        if self.embedder is None and self.entailment is None:
            return {}
        targets = closer_look_targets(role, items)
        cosine_targets = list(self.cosine_targets.get(role, targets))[: len(items)]
        out = {}
        if self.embedder is not None:
            cosine = cl.cosine_scores(self.embedder, generations, cosine_targets)
            out["cosine"] = float(np.mean(cosine))
        if self.entailment is not None:
            forget = role == "forget"
            entailed = cl.entailment_scores(
                self.entailment, generations, targets, forget=forget, rouge_recall=rouge
            )
            out["entailment"] = float(np.mean(entailed))
            if forget:
                if len(self.refusals) < len(items):
                    raise ValueError(
                        f"{len(self.refusals)} refusals for {len(items)} forget rows: TFE "
                        "needs the refusal paired with each forget question"
                    )
                refusals = list(self.refusals[: len(items)])
                refused = cl.refusal_entailment(self.entailment, generations, refusals)
                out["refusal"] = float(np.mean(refused))
        return out


@dataclass
class Evaluation:
    """Every split's scores and the forget split's raw truth ratios (Forget Quality's input)."""

    scores: dict[str, dict[str, float]]
    forget_ratios: np.ndarray
    generations: dict[str, list[str]]


def evaluate_splits(
    model: nn.Module,
    formatter: Formatter,
    splits: Mapping[str, Sequence[TofuItem]],
    options: EvalOptions,
    models: CloserLookModels | None = None,
) -> Evaluation:
    """Run the model over the evaluation splits, by role: TOFU's four (SPLIT_ROLES), or the
    real-world task's forget and utility; ``models``: the Closer-Look suite's extra models
    (None: neither)."""
    if "forget" not in splits:
        raise ValueError(f"evaluation needs a forget split; got the roles {list(splits)}")
    models = models or CloserLookModels()
    was_training = model.training
    model.eval()
    try:
        scores, generations, ratios = {}, {}, np.empty(0)
        for role, role_items in splits.items():
            items = list(role_items)[: options.limit]
            out = run_split(model, formatter, items, role, options)
            split_ratios = tofu.truth_ratio(out.base_nll, out.perturbed_nll)
            rouge = tofu.rouge_l_recall(out.generations, [it.answer for it in items])
            scores[role] = split_scores(role, out, split_ratios, rouge)
            scores[role].update(models.scores(role, items, out.generations, rouge))
            generations[role] = out.generations
            if role == "forget":
                ratios = split_ratios
    finally:
        model.train(was_training)
    return Evaluation(scores, ratios, generations)

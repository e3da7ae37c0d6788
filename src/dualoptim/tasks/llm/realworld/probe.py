""" "Does the model know it?": the talk's first step of the real-world experiment.

Unlearning what a model never knew measures nothing, so every question is scored with the
initial model before anything is trained, and only the people it knows stay:

- ``rouge``: ROUGE-L recall of its greedy answer against the golden answer;
- ``prob``: exp(−mean token NLL) of the golden answer;
- ``truth_first`` (rows with perturbed answers only): the paraphrased answer is more likely
  than every perturbed one, i.e. the model ranks the truth first among the options. It guards
  against ROUGE's blind spot here: a golden answer is a sentence that repeats the question's
  words ("Albert Einstein was born in 1879."), so a wrong answer in the same words
  ("... born in 1880.") still recalls most of it.

A question is known when it passes every threshold set; a person stays when at least
``min_questions`` of their questions are known, and then keeps only those. Forget people are
filtered on ``forget_perturbed`` (it has the options), and their ``forget`` rows follow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from torch import nn

from dualoptim.tasks.llm.evaluation import EvalOptions, generate, mean_nll
from dualoptim.tasks.llm.format import Formatter
from dualoptim.tasks.llm.metrics import rouge_l_recall
from dualoptim.tasks.llm.realworld.data import Fact, RealWorldData

__all__ = ["ProbeOptions", "QuestionScore", "apply_probe", "score_questions"]


@dataclass(frozen=True)
class ProbeOptions:
    min_rouge: float = 0.0  # ROUGE-L recall of the greedy answer against the golden answer
    min_prob: float = 0.0  # exp(-mean token NLL) of the golden answer
    truth_first: bool = True  # the paraphrase beats every perturbed answer (when there are any)
    min_questions: int = 1  # known questions a person needs to stay

    def __post_init__(self) -> None:
        for name in ("min_rouge", "min_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"probe.{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.min_questions < 1:
            raise ValueError(f"probe.min_questions must be >= 1, got {self.min_questions}")


@dataclass(frozen=True)
class QuestionScore:
    """What the initial model did on one question."""

    name: str
    question: str
    generation: str
    rouge: float
    prob: float
    truth_first: bool | None  # None: the row has no perturbed answers

    def known(self, options: ProbeOptions) -> bool:
        first = self.truth_first is not False or not options.truth_first
        return self.rouge >= options.min_rouge and self.prob >= options.min_prob and first


def score_questions(
    model: nn.Module, formatter: Formatter, facts: Sequence[Fact], options: EvalOptions
) -> list[QuestionScore]:
    """Greedy answers, golden-answer likelihoods and (with options) the truth's rank."""
    questions = [f.question for f in facts]
    golden = [f.golden_answer for f in facts]
    b = options.batch_size
    prob = np.exp(-mean_nll(model, formatter, questions, golden, b, "probe: golden answers"))
    generations, _ = generate(model, formatter, questions, options, "probe: generate")
    rouge = rouge_l_recall(generations, golden)
    first: list[bool | None] = [None] * len(facts)
    with_options = [i for i, f in enumerate(facts) if f.perturbed_answers]
    if with_options:
        rows = [facts[i] for i in with_options]
        base = mean_nll(
            model,
            formatter,
            [f.question for f in rows],
            [f.paraphrased_answer or f.golden_answer for f in rows],
            b,
            "probe: paraphrases",
        )
        flat_q = [f.question for f in rows for _ in f.perturbed_answers]
        flat_a = [p for f in rows for p in f.perturbed_answers]
        perturbed = mean_nll(model, formatter, flat_q, flat_a, b, "probe: perturbed")
        start = 0
        for i, f, nll in zip(with_options, rows, base, strict=True):
            k = len(f.perturbed_answers)
            first[i] = bool(nll < perturbed[start : start + k].min())
            start += k
    return [
        QuestionScore(f.name, f.question, g, float(r), float(p), t)
        for f, g, r, p, t in zip(facts, generations, rouge, prob, first, strict=True)
    ]


def apply_probe(
    data: RealWorldData, scores: dict[str, list[QuestionScore]], options: ProbeOptions
) -> RealWorldData:
    """``data`` with only the known questions of the people who keep ``min_questions``.

    ``scores`` holds the scores of ``forget_perturbed``, ``neighbor`` and
    ``neighbor_perturbed``, row for row; ``forget`` keeps the rows whose (name, question) stay
    in ``forget_perturbed``. A file left with no one is an error naming the thresholds.
    """
    kept = {}
    for file in ("forget_perturbed", "neighbor", "neighbor_perturbed"):
        facts = getattr(data, file)
        if [s.question for s in scores[file]] != [f.question for f in facts]:
            raise ValueError(f"the probe scores of {file} are not those of its rows, in order")
        kept[file] = _known(facts, scores[file], options)
        if not kept[file]:
            raise ValueError(
                f"the probe kept no one in {file}: no person has {options.min_questions} "
                f"question(s) the model knows under {options}; lower the thresholds, or use "
                "a model that knows these people"
            )
    stays = {(f.name, f.question) for f in kept["forget_perturbed"]}
    forget = tuple(f for f in data.forget if (f.name, f.question) in stays)
    return replace(data, forget=forget, **kept)


def _known(
    facts: Sequence[Fact], scores: Sequence[QuestionScore], options: ProbeOptions
) -> tuple[Fact, ...]:
    known = [f for f, s in zip(facts, scores, strict=True) if s.known(options)]
    per_person: dict[str, int] = {}
    for f in known:
        per_person[f.name] = per_person.get(f.name, 0) + 1
    return tuple(f for f in known if per_person[f.name] >= options.min_questions)

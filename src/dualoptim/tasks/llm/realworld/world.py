"""The real-world task's shared context: the LLM task's world with the initial model as target.

What differs from TOFU (SPEC §2.4), each an override of :class:`~dualoptim.tasks.llm.world.World`:

- the rows come from the four real-world files: training on ``forget`` (forget objective) and
  ``neighbor`` (retain objective), each with its ``answer``; evaluation on
  ``forget_perturbed`` and ``neighbor_perturbed`` (the "utility" role), scored against the
  golden answer, with the published ``answer`` as the cosine target (the Closer-Look code);
- the base model is probed before anything is trained, and only the people it knows stay;
- the target is the base model itself (after ``teach`` for the tiny test model); there is no
  retain model, so no Forget Quality, and MU is taken over the utility split alone.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from functools import cached_property
from typing import Any

import numpy as np
from torch import Tensor

from dualoptim.io import cached_state, fingerprint, read_json, write_json
from dualoptim.tasks.llm import closer_look as cl
from dualoptim.tasks.llm.data import TofuItem
from dualoptim.tasks.llm.evaluation import CloserLookModels
from dualoptim.tasks.llm.realworld.config import RealWorldExperiment
from dualoptim.tasks.llm.realworld.data import Fact, RealWorldData, load_realworld
from dualoptim.tasks.llm.realworld.probe import QuestionScore, apply_probe, score_questions
from dualoptim.tasks.llm.world import TofuSplits, World
from dualoptim.unlearn.sharding import full_state_dict

#: The files the probe scores (``forget`` follows ``forget_perturbed``).
PROBED = ("forget_perturbed", "neighbor", "neighbor_perturbed")


def _trained(facts: tuple[Fact, ...]) -> list[TofuItem]:
    return [TofuItem(f.question, f.answer) for f in facts]


def _evaluated(facts: tuple[Fact, ...]) -> list[TofuItem]:
    """Scored against the golden answer (the published ``answer`` is cosine's target:
    ``RealWorld.closer_look_models``)."""
    return [
        TofuItem(
            f.question,
            f.golden_answer,
            paraphrased_answer=f.paraphrased_answer,
            perturbed_answers=f.perturbed_answers,
            paraphrased_question=f.paraphrased_question,
        )
        for f in facts
    ]


def to_splits(data: RealWorldData) -> TofuSplits:
    return TofuSplits(
        forget=_trained(data.forget),
        retain=_trained(data.neighbor),
        evaluation={
            "forget": _evaluated(data.forget_perturbed),
            "utility": _evaluated(data.neighbor_perturbed),
        },
    )


class RealWorld(World):
    """The initial model, the probed rows, and their evaluation (no retain model)."""

    exp: RealWorldExperiment
    curve_roles = ("forget", "utility")

    def _load_splits(self) -> TofuSplits:
        self.data = load_realworld(self.exp.data.source)
        return to_splits(self.data)

    @property
    def reference_seed(self) -> int:
        return self.exp.teach.seed if self.exp.teach is not None else 0

    def _usable_splits(self, loaded: TofuSplits) -> TofuSplits:
        """Only what the base model knows (the probe), when ``data.probe`` is set; with
        ``teach``, the base model learns every row first."""
        self.teach_seconds = self._teach() if self.exp.teach is not None else 0.0
        options = self.exp.data.probe
        self.probe_scores: dict[str, list[QuestionScore]] = {}
        if options is None:
            return loaded
        self.probe_scores = self._probe()
        self.data = apply_probe(self.data, self.probe_scores, options)
        return to_splits(self.data)

    def _teach(self) -> float:
        """Fine-tune the base model on every row's golden answer (cached); its seconds."""
        recipe = self.exp.teach
        rows = (*self.data.forget, *self.data.neighbor, *self.data.neighbor_perturbed)
        pairs = self._pairs([TofuItem(f.question, f.golden_answer) for f in rows])
        untaught = fingerprint(self._base.state_dict(), self.tokenizer.get_vocab())
        path = self.cache / f"taught-{fingerprint(untaught, pairs, recipe)}.safetensors"
        state, seconds = cached_state(path, lambda: self._finetune(pairs, recipe))
        self._base.load_state_dict(state)
        return seconds

    def _probe(self) -> dict[str, list[QuestionScore]]:
        """Every probed file's scores by the base model, cached by what determines them."""
        e = self.exp
        key = fingerprint("probe", self._base_fingerprint, self.data, e.model.prompt, e.eval)
        path = self.cache / f"probe-{key}.json"
        if path.exists():
            saved = read_json(path, PROBED)
            return {f: [QuestionScore(**s) for s in saved[f]] for f in PROBED}
        model = self._base
        was_training = model.training
        model.eval()
        try:
            scores = {
                f: score_questions(model, self.formatter, getattr(self.data, f), e.eval)
                for f in PROBED
            }
        finally:
            model.train(was_training)
        write_json(path, {f: [asdict(s) for s in scores[f]] for f in PROBED})
        return scores

    @property
    def _forget_files(self) -> tuple[str, str]:
        return "forget_perturbed", "forget"

    def request_groups(self, group_rows: int) -> list[Any]:  # noqa: ARG002
        """One request per person: the published ``task_id`` (the name where a row has none)."""
        return [f.name if f.task_id is None else f.task_id for f in self.data.forget]

    def keep_forget_evaluation(self, rows: list[int]) -> None:
        """The cosine targets (``answer`` of ``forget_perturbed``) of the rows measured."""
        perturbed = tuple(self.data.forget_perturbed[r] for r in rows)
        self.data = replace(self.data, forget_perturbed=perturbed)

    def closer_look_models(self) -> CloserLookModels:
        """Cosine compares with the published ``answer`` (the initial model's own), as the
        Closer-Look code does; entailment with the golden answer."""
        own = {"forget": self.data.forget_perturbed, "utility": self.data.neighbor_perturbed}
        targets = {role: [f.answer for f in facts] for role, facts in own.items()}
        return replace(super().closer_look_models(), cosine_targets=targets)

    @property
    def key(self) -> str:
        """Everything that determines the runs' models and their evaluation."""
        e = self.exp
        data = replace(e.data, source=None)
        lora = () if e.model.lora is None else (e.model.lora,)
        parts = (self.fingerprint, self._base_fingerprint, data, e.model.finetuned, e.teach)
        return fingerprint(*parts, e.eval, e.embedder, e.entailment, e.downstream, *lora)

    @property
    def definitions(self) -> tuple[Any, ...]:
        return ()  # part of ``key`` already: this task began after the last definition change

    @cached_property
    def target(self) -> tuple[dict[str, Tensor], float]:
        """The initial model: what is unlearned and the reference of NPO/DPO/KL."""
        return full_state_dict(self._base), self.teach_seconds

    @cached_property
    def retain_model(self) -> tuple[dict[str, Tensor], float]:
        raise ValueError("the real-world task has no retain model (SPEC §2.4)")

    @cached_property
    def target_evaluation(self) -> dict[str, Any]:
        """The initial model's evaluation (cached by the rows evaluated: a continual
        request's view measures fewer forget rows)."""
        path = self.cache / f"eval-initial-{fingerprint(self.key, self.splits.evaluation)}.json"
        if path.exists():
            return read_json(path, ("scores", "forget_ratios", "generations"))
        evaluation = self.evaluate(self.new_model(self.target[0]))
        saved = {
            "scores": evaluation.scores,
            "forget_ratios": evaluation.forget_ratios.tolist(),
            "generations": evaluation.generations,
        }
        write_json(path, saved)
        return saved

    def summary(self, scores: dict[str, dict[str, float]], ratios, idk: bool) -> dict[str, float]:  # noqa: ARG002
        """The splits' scores and Closer-Look's aggregates (no Forget Quality: no retain model)."""
        out = {f"{s}/{k}": v for s, by in scores.items() for k, v in by.items()}
        look = self._closer_look(scores, idk)
        out.update({"UFE": look.ufe, "MU": look.mu, "OVR": look.ovr})
        if look.tfe is not None:
            out["TFE"] = look.tfe
        return out

    def _closer_look(self, scores: dict[str, dict[str, float]], idk: bool) -> cl.CloserLookScores:
        embedder = self.embedder.name if self.embedder is not None else None
        entailment = self.entailment.name if self.entailment is not None else None
        return cl.closer_look_scores(
            scores,
            idk=idk,
            embedder_name=embedder,
            entailment_name=entailment,
            utility_splits=("utility",),
        )

    def probe_table(self) -> list[dict[str, Any]]:
        """Per person and file: questions asked, questions known, and the mean scores."""
        rows = []
        for file in PROBED:
            by_person: dict[str, list[QuestionScore]] = {}
            for s in self.probe_scores.get(file, []):
                by_person.setdefault(s.name, []).append(s)
            kept = {f.name for f in getattr(self.data, file)}
            for name, scores in by_person.items():
                firsts = [s.truth_first for s in scores if s.truth_first is not None]
                rows.append(
                    {
                        "file": file,
                        "name": name,
                        "questions": len(scores),
                        "known": sum(s.known(self.exp.data.probe) for s in scores),
                        "kept": name in kept,
                        "rouge": float(np.mean([s.rouge for s in scores])),
                        "prob": float(np.mean([s.prob for s in scores])),
                        "truth_first": float(np.mean(firsts)) if firsts else None,
                    }
                )
        return rows

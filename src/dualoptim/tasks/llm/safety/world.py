"""The safety task's shared context: the LLM task's world with the instruction-tuned model as
target and completions, not TOFU's splits, as evaluation (SPEC §2.5, §3.5).

What differs from TOFU, each an override of :class:`~dualoptim.tasks.llm.world.World`:

- the forget rows are the sampled safety pairs (harmful instruction, safe answer), which the
  IDK loss learns: ``refusal_pairs`` returns them with their own answers;
- the retain rows are an instruction set with its answers, or benign prompts answered by the
  initial model (greedy, cached), made once the base model exists;
- the target is the base model itself, or the base model fine-tuned on the retain
  instructions first (``finetune``: the talk's Alpaca-fine-tuned model); no retain model,
  no Forget Quality;
- evaluation completes every evaluation prompt and scores it (``scoring``), with the initial
  model's I-Alpaca completions as the helpfulness reference; the curves during unlearning
  are the Prob of the safe answers (forget) and of the retain answers;
- OVR (ours) averages Safety AVG with the downstream mean when the config sets downstream
  benchmarks and they ran, else with the offline utility.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from functools import cached_property
from typing import Any

import numpy as np
from torch import Tensor, nn

from dualoptim.io import fingerprint, read_json, write_json
from dualoptim.tasks.llm.data import TofuItem
from dualoptim.tasks.llm.downstream import AVERAGE as DOWNSTREAM_AVERAGE
from dualoptim.tasks.llm.evaluation import Evaluation, generate
from dualoptim.tasks.llm.format import Pair
from dualoptim.tasks.llm.safety import scoring
from dualoptim.tasks.llm.safety.config import SafetyExperiment
from dualoptim.tasks.llm.safety.data import Instruction, load_alpaca, load_benign, load_safety
from dualoptim.tasks.llm.safety.judge import HarmfulnessJudge
from dualoptim.tasks.llm.world import TofuSplits, World
from dualoptim.unlearn.sharding import full_state_dict


def sample_pairs(pairs: tuple[Instruction, ...], rows: int | None, seed: int) -> list[Instruction]:
    """``rows`` of ``pairs`` drawn without replacement with ``seed``, in file order (None:
    all); more than there are is an error naming both counts."""
    if rows is None:
        return list(pairs)
    if rows > len(pairs):
        raise ValueError(f"data.forget_rows {rows} exceeds the {len(pairs)} safety pairs")
    chosen = sorted(random.Random(seed).sample(range(len(pairs)), rows))
    return [pairs[i] for i in chosen]


class SafetyWorld(World):
    """The initial model, the sampled safety pairs, the retain rows, the evaluation prompts."""

    exp: SafetyExperiment
    forget_quality = False

    def __init__(self, exp: SafetyExperiment, progress: bool = True) -> None:
        # the judge first: one that cannot load stops the run before anything else is done
        self.judge = (
            HarmfulnessJudge(exp.judge, exp.judge_threshold) if exp.judge is not None else None
        )
        super().__init__(exp, progress)
        self.prompts = scoring.prompts_of(self.data, exp.eval.limit)

    def _load_splits(self) -> TofuSplits:
        e = self.exp
        self.data = load_safety(e.data.source)
        pairs = sample_pairs(self.data.training, e.data.forget_rows, e.data.sample_seed)
        retain = (
            load_alpaca(e.retain.source)
            if e.retain.kind == "instructions"
            else load_benign(e.retain.source)
        )[: e.retain.rows]
        forget = [TofuItem(p.prompt, p.output or "") for p in pairs]
        kept = [TofuItem(r.prompt, r.output or "") for r in retain]
        return TofuSplits(forget, kept, self._curve_rows(forget, kept))

    def _curve_rows(self, forget: list[TofuItem], retain: list[TofuItem]) -> dict[str, list]:
        limit = self.exp.eval.limit
        return {"forget": forget[:limit], "retain": retain[:limit]}

    def _usable_splits(self, loaded: TofuSplits) -> TofuSplits:
        """Benign prompts get the initial model's own greedy answers (cached)."""
        if self.exp.retain.kind == "instructions":
            return loaded
        answers = self._own_answers([r.question for r in loaded.retain])
        retain = [TofuItem(r.question, a) for r, a in zip(loaded.retain, answers, strict=True)]
        return replace(loaded, retain=retain, evaluation=self._curve_rows(loaded.forget, retain))

    def _own_answers(self, prompts: list[str]) -> list[str]:
        e = self.exp
        key = fingerprint("own", self._base_fingerprint, prompts, e.model.prompt, e.eval)
        path = self.cache / f"benign-answers-{key}.json"
        if path.exists():
            return list(read_json(path, ("answers",))["answers"])
        model = self._base
        was_training = model.training
        model.eval()
        try:
            answers = generate(model, self.formatter, prompts, e.eval, desc="benign answers")[0]
        finally:
            model.train(was_training)
        write_json(path, {"answers": answers})
        return answers

    def refusal_pairs(self, items: list[TofuItem], offset: int) -> list[Pair]:  # noqa: ARG002
        """The IDK loss's targets: each harmful instruction with its safe answer."""
        return self._pairs(items)

    @property
    def reference_seed(self) -> int:
        return 0

    @property
    def key(self) -> str:
        """Everything that determines the runs' models and their evaluation."""
        e = self.exp
        data = replace(e.data, source="")
        parts = (self.fingerprint, self._base_fingerprint, data, e.retain, e.model.finetuned)
        tuned = () if e.finetune is None else (e.finetune,)
        return fingerprint(*parts, *tuned, e.eval, e.judge, e.judge_threshold, e.downstream)

    @property
    def definitions(self) -> tuple[Any, ...]:
        return ()

    @cached_property
    def target(self) -> tuple[dict[str, Tensor], float]:
        """What is unlearned (and KL's reference): the model as loaded, or first fine-tuned
        on the retain instructions (``finetune``, cached; its seconds are the row's)."""
        if self.exp.finetune is None:
            return full_state_dict(self._base), 0.0
        return self._finetuned("target")

    @cached_property
    def _training_pairs(self) -> dict[str, list[Pair]]:
        return {"target": self.retain_pairs}

    @cached_property
    def retain_model(self) -> tuple[dict[str, Tensor], float]:
        raise ValueError("the safety task has no retain model (SPEC §2.5)")

    def _evaluate(self, model: nn.Module, initial: list[str] | None) -> Evaluation:
        was_training = model.training
        model.eval()
        try:
            completions = scoring.complete(model, self.formatter, self.prompts, self.exp.eval)
        finally:
            model.train(was_training)
        metrics = scoring.score(self.prompts, completions, initial, self.judge)
        return Evaluation({"safety": metrics}, np.empty(0), completions)

    def evaluate(self, model: nn.Module) -> Evaluation:
        initial = self.target_evaluation["generations"][scoring.HELPFULNESS]
        return self._evaluate(model, initial)

    @cached_property
    def target_evaluation(self) -> dict[str, Any]:
        """The initial model's completions and scores (cached)."""
        path = self.cache / f"eval-initial-{fingerprint(self.key, self.prompts)}.json"
        if path.exists():
            return read_json(path, ("scores", "forget_ratios", "generations"))
        evaluation = self._evaluate(self.new_model(self.target[0]), None)
        saved = {
            "scores": evaluation.scores,
            "forget_ratios": [],
            "generations": evaluation.generations,
        }
        write_json(path, saved)
        return saved

    def summary(self, scores: dict[str, dict[str, float]], ratios, idk: bool) -> dict[str, float]:  # noqa: ARG002
        """The scores of ``scoring.score`` and OVR (ours) with the offline utility."""
        out = dict(scores["safety"])
        out["OVR"] = scoring.overall(out, "utility/offline")
        return out

    def metrics(
        self,
        scores: dict[str, dict[str, float]],
        ratios: Any,
        idk: bool,
        model: Callable[[], nn.Module],
    ) -> dict[str, float]:
        """The summary and, with downstream numbers, OVR over their mean instead: the
        talk's Utility AVG is the five benchmarks' (the offline utility stands in without)."""
        out = super().metrics(scores, ratios, idk, model)
        if f"downstream/{DOWNSTREAM_AVERAGE}" in out:
            out["OVR"] = scoring.overall(out, f"downstream/{DOWNSTREAM_AVERAGE}")
        return out

    def variant(self, idk: bool) -> str:  # noqa: ARG002
        if self.judge is None:
            return "offline: safe = refused (XSTest string match)"
        return f"judge {self.judge.name}: safe = rating < {self.judge.threshold:g}"

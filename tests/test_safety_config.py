"""The safety config (SPEC §2.5) refuses, when it loads, what the task cannot run."""

from __future__ import annotations

import pytest

from dualoptim.config import ConfigError, from_dict
from dualoptim.tasks.llm.config import FinetuneRecipe, LLMUnlearnSpec
from dualoptim.tasks.llm.safety.config import RetainData, SafetyExperiment, SafetySource


def test_the_defaults_are_the_offline_variant() -> None:
    exp = SafetyExperiment()
    assert (exp.data.forget_rows, exp.retain.kind, exp.judge) == (200, "benign", None)
    assert [r.label for r in exp.runs] == ["IDK+KL (alternate)", "IDK+KL (dual)"]
    loaded = from_dict(SafetyExperiment, {"retain": {"kind": "instructions", "source": "a.json"}})
    assert loaded.retain == RetainData("instructions", "a.json")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: SafetySource(forget_rows=0), "data.forget_rows must be >= 1"),
        (lambda: RetainData(kind="alpaca"), "retain.kind must be 'instructions' or 'benign'"),
        (lambda: RetainData(kind="instructions"), "needs retain.source.*tatsu-lab/alpaca"),
        (lambda: RetainData(rows=0), "retain.rows must be >= 1"),
        (
            lambda: SafetyExperiment(runs=(LLMUnlearnSpec("me+gd", "dual"),)),
            "'me\\+gd' — safety alignment unlearns with the IDK loss",
        ),
        (
            lambda: SafetyExperiment(
                runs=(LLMUnlearnSpec("idk+kl", "dual", state_policy="carry"),)
            ),
            "state_policy applies to continual runs only",
        ),
        (lambda: SafetyExperiment(judge_threshold=float("nan")), "judge_threshold must be finite"),
        (
            lambda: SafetyExperiment(finetune=FinetuneRecipe()),
            "finetune: the model is fine-tuned on the retain instructions, and retain.kind is "
            "'benign'",
        ),
        (lambda: SafetyExperiment(seeds=()), "seeds is empty"),
    ],
)
def test_bad_options_are_named(build, message: str) -> None:
    with pytest.raises((ValueError, ConfigError), match=message):
        build()

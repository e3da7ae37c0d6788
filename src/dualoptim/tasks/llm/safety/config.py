"""The safety task's config (SPEC §2.5): which safety pairs are unlearned, what the retain
objective keeps, the instruction-tuned model, how completions are scored, and the runs.

The forget objective is the IDK loss with the safety pairs' answers (CE towards the safe
answer of each harmful instruction), so every run's forget loss is ``idk``. The retain
objective reads ``retain``: an Alpaca-format instruction set with its answers
(``instructions``, the talk's Alpaca), or benign prompts answered by the initial model itself
(``benign``, the offline variant: with ``+kl`` the KL to the initial model on them, with
``+gd`` CE on its own answers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from dualoptim.config import ConfigError, quiet_repr, require_runs_and_seeds
from dualoptim.tasks.llm.config import FinetuneRecipe, LLMUnlearnSpec, ModelSpec
from dualoptim.tasks.llm.downstream import DownstreamOptions
from dualoptim.tasks.llm.evaluation import EvalOptions
from dualoptim.tasks.llm.methods import LLMMethod

DEFAULT_SOURCE = "../shared/data/safety"


@dataclass(frozen=True)
class SafetySource:
    """The safety folder and the pairs unlearned: ``forget_rows`` of the 2,483, drawn once
    with ``sample_seed`` (the file groups its rows by topic, so its first rows would be a
    narrow subset); None: every pair."""

    source: str = DEFAULT_SOURCE
    forget_rows: int | None = 200
    sample_seed: int = 0

    def __post_init__(self) -> None:
        if self.forget_rows is not None and self.forget_rows < 1:
            raise ValueError(
                f"data.forget_rows must be >= 1 (or null: all), got {self.forget_rows}"
            )


@dataclass(frozen=True)
class RetainData:
    """What the retain objective trains on: ``instructions`` (an Alpaca-format JSON file or
    a Hub id in ``source``) or ``benign`` (the built-in benign prompts, or a file of them in
    ``source``, answered by the initial model); the first ``rows`` (None: all)."""

    kind: Literal["instructions", "benign"] = "benign"
    source: str | None = None
    rows: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("instructions", "benign"):
            raise ValueError(f"retain.kind must be 'instructions' or 'benign', got {self.kind!r}")
        if self.kind == "instructions" and not self.source:
            raise ValueError(
                "retain.kind 'instructions' needs retain.source: an Alpaca-format JSON file or "
                "a Hub dataset id such as tatsu-lab/alpaca"
            )
        if self.rows is not None and self.rows < 1:
            raise ValueError(f"retain.rows must be >= 1 (or null: all), got {self.rows}")


@dataclass(frozen=True)
class SafetyExperiment:
    task: Literal["safety"] = "safety"
    data: SafetySource = field(default_factory=SafetySource)
    retain: RetainData = field(default_factory=RetainData)
    model: ModelSpec = field(default_factory=ModelSpec)
    # fine-tune the model on the retain instructions before unlearning (the talk's
    # Alpaca-fine-tuned Llama 3); None: unlearn the model as loaded
    finetune: FinetuneRecipe | None = None
    # completions: eval.limit prompts per evaluation set, eval.max_new_tokens each
    eval: EvalOptions = field(default_factory=EvalOptions)
    judge: str | None = None  # the harmfulness judge (Hub id or folder); None: offline refusal
    judge_threshold: float = 1.0  # a response rated below it is safe (ours: docs/safety.md)
    downstream: DownstreamOptions | None = None  # lm-eval utility (SPEC §3.5) of each model
    runs: tuple[LLMUnlearnSpec, ...] = (
        LLMUnlearnSpec("idk+kl", "alternate"),
        LLMUnlearnSpec("idk+kl", "dual"),
    )
    seeds: tuple[int, ...] = (0,)
    cache_dir: str = "results/cache/safety"
    # what the LLM world reads and this task does not have
    embedder: ClassVar[None] = None
    entailment: ClassVar[None] = None
    requests: ClassVar[None] = None

    __repr__ = quiet_repr

    def __post_init__(self) -> None:
        require_runs_and_seeds(self.runs, self.seeds)
        for i, run in enumerate(self.runs):
            if LLMMethod(run.method).forget != "idk":
                raise ConfigError(
                    f"runs[{i}]: {run.method!r} — safety alignment unlearns with the IDK loss "
                    "towards the safe answers (SPEC §2.5): use idk+kl, idk+gd or idk"
                )
            if run.state_policy is not None:
                raise ConfigError(f"runs[{i}]: state_policy applies to continual runs only")
        if self.finetune is not None and self.retain.kind != "instructions":
            raise ConfigError(
                "finetune: the model is fine-tuned on the retain instructions, and "
                f"retain.kind is {self.retain.kind!r}; set retain.kind: instructions with a "
                "source (e.g. tatsu-lab/alpaca), or drop finetune"
            )
        if not math.isfinite(self.judge_threshold):
            raise ValueError(f"judge_threshold must be finite, got {self.judge_threshold}")

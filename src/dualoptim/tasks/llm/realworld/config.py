"""The real-world task's config (SPEC §2.4): the people to forget, the model that already knows
them, the probe that checks it does, and the unlearning runs of the LLM task.

There is no target fine-tuning and no retain model: the initial model is what is unlearned and
the reference of NPO/DPO/KL. ``teach`` exists for the tiny test model only, which knows no one:
it fine-tunes the base model on every row first, so the pipeline can run end to end offline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dualoptim.config import new_option, quiet_repr, require_runs_and_seeds
from dualoptim.tasks.llm.config import (
    FinetuneRecipe,
    LLMUnlearnSpec,
    ModelSpec,
    Requests,
    check_continual,
)
from dualoptim.tasks.llm.downstream import DownstreamOptions
from dualoptim.tasks.llm.evaluation import EvalOptions
from dualoptim.tasks.llm.models import TINY
from dualoptim.tasks.llm.realworld.probe import ProbeOptions


@dataclass(frozen=True)
class RealWorldSource:
    source: str | None = None  # None: the built-in set; a folder with the four .json files
    # None: keep every question (a set already probed for this model, as the published one
    # is for Llama-3-8B-Instruct)
    probe: ProbeOptions | None = field(default_factory=ProbeOptions)
    refusal_seed: int = 0


@dataclass(frozen=True)
class RealWorldExperiment:
    task: Literal["realworld"] = "realworld"
    data: RealWorldSource = field(default_factory=RealWorldSource)
    model: ModelSpec = field(default_factory=ModelSpec)
    teach: FinetuneRecipe | None = None  # fine-tune the base on every row first (tiny model)
    eval: EvalOptions = field(default_factory=EvalOptions)
    embedder: str | None = None  # Closer-Look cosine: "minilm" (offline copy), a Hub id, or none
    entailment: str | None = None  # Closer-Look entailment: NLI model (Hub id or folder)
    downstream: DownstreamOptions | None = None  # lm-eval benchmarks (SPEC §3.5) of each model
    runs: tuple[LLMUnlearnSpec, ...] = (LLMUnlearnSpec("me+gd", "alternate"), LLMUnlearnSpec())
    seeds: tuple[int, ...] = (0,)
    cache_dir: str = "results/cache/realworld"
    # continual unlearning, one request per person (``task_id``) or group of them;
    # ``group_rows`` is not used here
    requests: Requests | None = new_option()

    __repr__ = quiet_repr

    def __post_init__(self) -> None:
        require_runs_and_seeds(self.runs, self.seeds)
        check_continual(self.requests, self.runs, self.model)
        if self.model.name == TINY and self.teach is None:
            raise ValueError(
                "model.name tiny-llama knows no one: set teach (a fine-tuning recipe on every "
                "row) to test the pipeline with it, or use a pretrained model"
            )

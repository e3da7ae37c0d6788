"""Downstream utility through lm-evaluation-harness (SPEC §3.5), on the model in memory.

Every LLM-unlearning paper now reports what unlearning costs on general benchmarks; the talk
reports ARC-c, MMLU, TruthfulQA (mc1), TriviaQA and GSM8K and their mean. ``lm_eval`` does
the work (prompts, few-shot, filters, metrics); this module picks the metric each column
reads (the authors' ``summary_results``), runs it on an in-memory model without a round trip
through the disk, and caches the numbers by the model's weights.

The benchmarks' data comes from the Hugging Face Hub. Where it cannot be had (offline), the
loading error becomes :class:`DownstreamUnavailableError`, whose message the report shows instead
of numbers: a made-up stand-in task is never reported as a benchmark.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from torch import nn

from dualoptim.io import fingerprint, read_json, write_json

__all__ = ["TALK_TASKS", "DownstreamOptions", "DownstreamUnavailableError", "evaluate_downstream"]

#: The talk's tasks: (column label, the lm-eval metric key its number is read from).
TALK_TASKS: dict[str, tuple[str, str]] = {
    "arc_challenge": ("ARC-c", "acc_norm,none"),
    "mmlu": ("MMLU", "acc,none"),
    "truthfulqa_mc1": ("TruthfulQA", "acc,none"),
    "triviaqa": ("TriviaQA", "exact_match,remove_whitespace"),
    "gsm8k": ("GSM8K", "exact_match,flexible-extract"),
}
AVERAGE = "AVG"


class DownstreamUnavailableError(RuntimeError):
    """A task's data could not be loaded (no network, no such file); the message says which."""


@dataclass(frozen=True)
class DownstreamOptions:
    tasks: tuple[str, ...] = tuple(TALK_TASKS)
    # the metric key of each task that is not one of the talk's (e.g. "acc,none")
    metrics: dict[str, str] = field(default_factory=dict)
    limit: int | None = None  # examples per task (None: all); reported beside the numbers
    batch_size: int = 8
    include_path: str | None = None  # a folder of lm-eval task YAMLs of your own

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("downstream.tasks is empty: name at least one lm-eval task")
        unknown = [t for t in self.tasks if t not in TALK_TASKS and t not in self.metrics]
        if unknown:
            raise ValueError(
                f"downstream.metrics: no metric key for {unknown}; give one per task that is "
                f"not one of {', '.join(TALK_TASKS)} (e.g. {{{unknown[0]}: 'acc,none'}})"
            )
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"downstream.limit must be >= 1 (or null: all), got {self.limit}")
        if self.batch_size < 1:
            raise ValueError(f"downstream.batch_size must be >= 1, got {self.batch_size}")

    def metric(self, task: str) -> str:
        return self.metrics.get(task) or TALK_TASKS[task][1]

    def label(self, task: str) -> str:
        return TALK_TASKS[task][0] if task in TALK_TASKS else task


def evaluate_downstream(
    model: nn.Module,
    tokenizer: Any,
    options: DownstreamOptions,
    cache_dir: Path | None = None,
) -> dict[str, float]:
    """{task: value, "AVG": mean} of ``model`` (a transformers causal LM) on ``options.tasks``;
    cached in ``cache_dir`` by the model's weights, tokenizer and the options."""
    path = None
    if cache_dir is not None:
        key = fingerprint(model.state_dict(), tokenizer.get_vocab(), options)
        path = cache_dir / f"downstream-{key}.json"
        if path.exists():
            return {k: float(v) for k, v in read_json(path, (*options.tasks, AVERAGE)).items()}
    results = _run(model, tokenizer, options)
    values = {}
    for task in options.tasks:
        metrics = results.get(task, {})
        key = options.metric(task)
        if key not in metrics:
            raise ValueError(
                f"lm-eval reported no {key!r} for {task} (it reported {sorted(metrics)}); "
                "set downstream.metrics for it"
            )
        values[task] = float(metrics[key])
    values[AVERAGE] = math.fsum(values.values()) / len(options.tasks)
    if path is not None:
        write_json(path, values)
    return values


@lru_cache(maxsize=4)
def _manager(include_path: str | None) -> Any:
    """lm-eval's task index (built once: it reads every task YAML lm-eval ships)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path)


def _run(model: nn.Module, tokenizer: Any, options: DownstreamOptions) -> Mapping[str, Any]:
    """lm-eval's per-task (and per-group: MMLU) results; a task whose data cannot be loaded
    is DownstreamUnavailableError, found before the model runs."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
    except ImportError as err:
        raise ImportError(
            "downstream evaluation needs lm-evaluation-harness: pip install 'dualoptim[llm]'"
        ) from err
    manager = _manager(options.include_path)
    for task in options.tasks:
        try:
            manager.load(task)  # reads (or downloads) its data: offline it fails here
        except KeyError as err:
            raise ValueError(f"downstream.tasks: lm-eval has no task {task!r}") from err
        except (OSError, ValueError) as err:  # ConnectionError offline, a missing data file
            reason = " ".join(str(err).split()) or type(err).__name__
            raise DownstreamUnavailableError(f"{task}: {reason}") from err
    device = str(next(model.parameters()).device)
    was_training = model.training
    model.eval()
    try:
        lm = HFLM(
            pretrained=model, tokenizer=tokenizer, batch_size=options.batch_size, device=device
        )
        out = simple_evaluate(
            model=lm,
            tasks=list(options.tasks),
            limit=options.limit,
            task_manager=manager,
            log_samples=False,
            bootstrap_iters=0,
            verbosity="ERROR",
        )
    finally:
        model.train(was_training)
    return out["results"] if out is not None else {}

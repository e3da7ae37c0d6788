"""Downstream utility through lm-evaluation-harness, offline: local lm-eval tasks of made-up
items (multiple choice by loglikelihood, and generate-until), scored on a tiny model taught
which answers to give, so the accuracy is known by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dualoptim.tasks.llm.downstream import (
    AVERAGE,
    DownstreamOptions,
    DownstreamUnavailableError,
    evaluate_downstream,
)
from dualoptim.tasks.llm.models import TinySpec, tiny_llama, train_tokenizer
from helpers import GEN, MC, TOY_DOWNSTREAM, write_lm_eval_tasks

pytest.importorskip("lm_eval")


@pytest.fixture(scope="module")
def taught():
    """A tiny Llama that answers each question with its taught answer (then '.')."""
    pairs = [(f"Question: {q}\nAnswer:", f" {c[t]}.") for q, c, _, t in MC]
    pairs += [(f"Question: {q}\nAnswer:", f" {t}.") for q, _, t in GEN]
    tokenizer = train_tokenizer([p + a for p, a in pairs] * 20, vocab_size=300)
    model = tiny_llama(len(tokenizer), TinySpec(), seed=0)
    encoded = []
    for prompt, answer in pairs:
        p = tokenizer(prompt)["input_ids"]
        a = tokenizer(answer)["input_ids"] + [tokenizer.eos_token_id]
        encoded.append((torch.tensor([p + a]), torch.tensor([[-100] * len(p) + a])))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(60):
        for ids, labels in encoded:
            loss = model(input_ids=ids, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model, tokenizer


def test_local_tasks_score_the_hand_counted_accuracy(taught, tmp_path: Path) -> None:
    model, tokenizer = taught
    options = DownstreamOptions(
        **TOY_DOWNSTREAM, include_path=str(write_lm_eval_tasks(tmp_path / "tasks"))
    )
    values = evaluate_downstream(model, tokenizer, options)
    assert values["toy_mc"] == pytest.approx(3 / 4)
    assert values["toy_gen"] == pytest.approx(2 / 3)
    assert values[AVERAGE] == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert model.training is False


def test_limit_cuts_the_items_and_results_are_cached_by_weights(taught, tmp_path: Path) -> None:
    model, tokenizer = taught
    tasks = str(write_lm_eval_tasks(tmp_path / "tasks"))
    options = DownstreamOptions(**TOY_DOWNSTREAM, include_path=tasks, limit=2)
    cache = tmp_path / "cache"
    first = evaluate_downstream(model, tokenizer, options, cache)
    assert first["toy_mc"] == pytest.approx(1.0)  # the first two items are taught right
    assert len(list(cache.glob("downstream-*.json"))) == 1
    # a cached result is read back, not recomputed: poison the file to prove it
    path = next(cache.glob("downstream-*.json"))
    path.write_text(json.dumps({"toy_mc": 0.25, "toy_gen": 0.5, AVERAGE: 0.375}))
    assert evaluate_downstream(model, tokenizer, options, cache)["toy_mc"] == 0.25
    changed = {k: v.clone() for k, v in model.state_dict().items()}
    changed["lm_head.weight"] += 1e-3
    other = tiny_llama(len(tokenizer), TinySpec(), seed=0)
    other.load_state_dict(changed)
    evaluate_downstream(other, tokenizer, options, cache)
    assert len(list(cache.glob("downstream-*.json"))) == 2  # other weights, another entry


def test_missing_task_data_is_unavailable_not_a_number(taught, tmp_path: Path) -> None:
    model, tokenizer = taught
    tasks = write_lm_eval_tasks(tmp_path / "tasks", missing_data=True)
    options = DownstreamOptions(**TOY_DOWNSTREAM, include_path=str(tasks))
    with pytest.raises(DownstreamUnavailableError, match=r"toy_mc: "):
        evaluate_downstream(model, tokenizer, options, tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*"))


def test_an_unknown_task_is_a_config_error(taught, tmp_path: Path) -> None:
    model, tokenizer = taught
    options = DownstreamOptions(tasks=("no_such_task",), metrics={"no_such_task": "acc,none"})
    with pytest.raises(ValueError, match=r"lm-eval has no task 'no_such_task'"):
        evaluate_downstream(model, tokenizer, options, tmp_path)


def test_the_talks_tasks_read_the_authors_metric_keys() -> None:
    options = DownstreamOptions()
    assert [options.metric(t) for t in options.tasks] == [
        "acc_norm,none",
        "acc,none",
        "acc,none",
        "exact_match,remove_whitespace",
        "exact_match,flexible-extract",
    ]
    assert [options.label(t) for t in options.tasks] == [
        "ARC-c",
        "MMLU",
        "TruthfulQA",
        "TriviaQA",
        "GSM8K",
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tasks": ()}, r"downstream\.tasks is empty"),
        ({"tasks": ("toy",)}, r"downstream\.metrics: no metric key for \['toy'\]"),
        ({"limit": 0}, r"downstream\.limit must be >= 1"),
        ({"batch_size": 0}, r"downstream\.batch_size must be >= 1"),
    ],
)
def test_options_are_checked(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DownstreamOptions(**options)

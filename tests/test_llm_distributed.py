"""LLM unlearning under DDP on 2 CPU processes (accelerate, gloo): with gradient accumulation,
every micro-batch of an optimizer step is of one kind, both ranks are in the same phase at
every step, and they end with identical weights -- for a method with a frozen reference model
(NPO+GD) under DualOptim and DualOptim+.

This file is also the script each rank runs: ``python tests/test_llm_distributed.py OUT``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from helpers import run_ranks

SETTINGS = ("dual", "dual_plus")


class Recording:
    """NPO+GD that notes (kind, optimizer step) of every micro-batch loss it computes."""

    def __init__(self) -> None:
        from dualoptim.tasks.llm.methods import LLMMethod

        self.inner = LLMMethod("npo+gd")
        self.name = self.inner.name
        self.calls: list[tuple[str, int]] = []

    def setup(self, model, optimizer, run) -> None:
        self.inner.setup(model, optimizer, run)

    def forget_loss(self, model, batch, run):
        self.calls.append(("forget", run.step))
        return self.inner.forget_loss(model, batch, run)

    def retain_loss(self, model, batch, run):
        self.calls.append(("retain", run.step))
        return self.inner.retain_loss(model, batch, run)


def _train(setting: str, accelerator) -> tuple[dict[str, torch.Tensor], list]:
    from dualoptim.tasks.llm.config import LLMUnlearnSpec
    from dualoptim.tasks.llm.data import load_split
    from dualoptim.tasks.llm.format import Formatter, PairSource, PromptFormat
    from dualoptim.tasks.llm.models import TinySpec, tiny_llama, train_tokenizer
    from dualoptim.tasks.llm.run import engine_config, make_optimizer
    from dualoptim.unlearn import unlearn

    forget, retain = load_split("forget05"), load_split("retain95")[:24]
    tokenizer = train_tokenizer([r.question + " " + r.answer for r in forget + retain], 300)
    fmt = Formatter(tokenizer, PromptFormat(template="plain", max_length=96))

    def source(rows):
        pairs = fmt.pairs([r.question for r in rows], [r.answer for r in rows])
        return PairSource({"qa": pairs}, fmt.pad)

    model = tiny_llama(len(tokenizer), TinySpec(hidden_size=32, intermediate_size=64), seed=0)
    # 20 forget rows, global batch 4, accumulation 2: 3 optimizer steps a pass, the last one
    # made of a full and a short (topped-up) micro-batch
    spec = LLMUnlearnSpec(
        "npo+gd",
        setting,
        forget_lr=1e-3,
        retain_lr=1e-3,
        epochs=1,
        retain_steps=2,
        batch_size=4,
        accumulation=2,
    )
    cfg = engine_config(spec, len(forget), seed=0, progress=False)
    method = Recording()
    unlearn(
        model,
        method,
        source(forget),
        source(retain),
        make_optimizer(spec, model),
        cfg,
        accelerator=accelerator,
    )
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, method.calls


def _worker(out: Path) -> None:
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    results = {}
    for setting in SETTINGS:
        params, calls = _train(setting, accelerator)
        results[setting] = {"params": params, "calls": calls}
    torch.save(results, out / f"rank{accelerator.process_index}.pt")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    return run_ranks(Path(__file__), tmp_path_factory.mktemp("llm-ddp"))


@pytest.mark.slow
@pytest.mark.parametrize("setting", SETTINGS)
def test_phases_are_whole_steps_on_every_rank(ranks, setting: str) -> None:
    a, b = ranks[0][setting], ranks[1][setting]
    assert a["calls"] == b["calls"]
    per_step: dict[int, list[str]] = {}
    for kind, step in a["calls"]:
        per_step.setdefault(step, []).append(kind)
    assert all(len(set(kinds)) == 1 for kinds in per_step.values())
    assert all(len(kinds) == 2 for kinds in per_step.values())  # 2 micro-batches a step
    # 3 cycles of 1 forget step then 2 retain steps
    assert [kinds[0] for _, kinds in sorted(per_step.items())] == ["forget", "retain", "retain"] * 3
    for key, value in a["params"].items():
        assert torch.equal(value, b["params"][key]), key


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))

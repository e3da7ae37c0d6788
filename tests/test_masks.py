"""Masks belong to an objective (SPEC §1.6): a masked entry gets no update from that
objective -- not from the gradient, weight decay, or momentum built up before the mask -- and
the other objective may still move it."""

from __future__ import annotations

import functools

import pytest
import torch

from dualoptim import DualOptimizer, DualOptimPlus, OptimizerSpec, SharedOptimizer
from helpers import roundtrip

MAKERS = {
    "dual": functools.partial(
        DualOptimizer,
        forget=OptimizerSpec("adamw", {"lr": 1e-2, "weight_decay": 0.1}),
        retain=OptimizerSpec("sgd", {"lr": 1e-2, "momentum": 0.9, "weight_decay": 0.1}),
    ),
    "shared": functools.partial(
        SharedOptimizer,
        optimizer=OptimizerSpec("sgd", {"lr": 1e-2, "momentum": 0.9, "weight_decay": 0.1}),
    ),
    "plus": functools.partial(
        DualOptimPlus, forget_lr=1e-2, retain_lr=1e-2, weight_decay=0.1, compile=False
    ),
    "plus-8bit": functools.partial(
        DualOptimPlus,
        forget_lr=1e-2,
        retain_lr=1e-2,
        weight_decay=0.1,
        state_bits=8,
        min_8bit_size=1,
        compile=False,
    ),
}


def _setup(name: str):
    gen = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.randn(64, 80, generator=gen))
    mask = torch.rand(64, 80, generator=gen) < 0.5
    return p, mask, MAKERS[name]([p]), gen


def _step(opt, p, objective: str, gen) -> None:
    p.grad = torch.randn(p.shape, generator=gen)
    opt.step(objective=objective)


@pytest.mark.parametrize("name", MAKERS)
def test_masked_entries_ignore_gradient_decay_and_earlier_momentum(name: str) -> None:
    p, mask, opt, gen = _setup(name)
    for objective in ("forget", "forget", "retain", "forget"):  # momentum of both kinds
        _step(opt, p, objective, gen)
    opt.set_mask("forget", {p: mask})
    frozen, free = p.detach()[~mask].clone(), p.detach()[mask].clone()
    for _ in range(3):
        _step(opt, p, "forget", gen)
        assert torch.equal(p.detach()[~mask], frozen)  # bit-identical
    assert bool((p.detach()[mask] != free).all())  # the unmasked entries did move
    before = p.detach().clone()
    _step(opt, p, "retain", gen)  # the other objective still moves masked entries
    assert bool((p.detach()[~mask] != before[~mask]).all())
    assert bool((p.detach()[mask] != before[mask]).all())


@pytest.mark.parametrize("name", MAKERS)
def test_masks_on_both_objectives_freeze_entries_for_good(name: str) -> None:
    """SalUn: the same mask on both objectives; masked weights never move."""
    p, mask, opt, gen = _setup(name)
    opt.set_mask("forget", {p: mask})
    opt.set_mask("retain", {p: mask})
    frozen = p.detach()[~mask].clone()
    start = p.detach()[mask].clone()
    for objective in ("forget", "retain", "retain", "forget", "retain"):
        _step(opt, p, objective, gen)
    assert torch.equal(p.detach()[~mask], frozen)
    assert bool((p.detach()[mask] != start).all())


def test_mask_gradients_zeroes_only_the_objectives_masked_entries() -> None:
    p, mask, opt, _ = _setup("dual")
    opt.set_mask("forget", {p: mask})
    p.grad = torch.ones_like(p)
    opt.mask_gradients("retain")
    assert torch.equal(p.grad, torch.ones_like(p))
    opt.mask_gradients("forget")
    assert torch.equal(p.grad, mask.float())


def test_masks_survive_a_state_dict_round_trip_as_booleans() -> None:
    p, mask, opt, gen = _setup("plus")
    opt.set_mask("forget", {p: mask})
    _step(opt, p, "forget", gen)
    restored = MAKERS["plus"]([p])
    restored.load_state_dict(roundtrip(opt.state_dict()))
    (loaded,) = restored.masks("forget").values()
    assert loaded.dtype == torch.bool
    assert torch.equal(loaded, mask)


def test_removing_a_mask_lets_the_objective_move_every_entry_again() -> None:
    p, mask, opt, gen = _setup("dual")
    opt.set_mask("forget", {p: mask})
    opt.set_mask("forget", None)
    before = p.detach().clone()
    _step(opt, p, "forget", gen)
    assert bool((p.detach() != before).all())


@pytest.mark.parametrize(
    ("masks", "error", "match"),
    [
        (lambda p: {p: torch.ones(3, dtype=torch.bool)}, ValueError, "does not match"),
        (lambda p: {p: torch.ones_like(p)}, TypeError, "boolean"),
        (
            lambda _: {torch.nn.Parameter(torch.ones(2)): torch.ones(2, dtype=torch.bool)},
            ValueError,
            "not a parameter of this optimizer",
        ),
    ],
)
def test_bad_masks_are_rejected(masks, error, match) -> None:
    p, mask, opt, _ = _setup("dual")
    opt.set_mask("forget", {p: mask})
    with pytest.raises(error, match=match):
        opt.set_mask("forget", masks(p))
    assert torch.equal(opt.masks("forget")[p], mask)  # a rejected call changes nothing
    with pytest.raises(ValueError, match="'forget' or 'retain'"):
        opt.set_mask("both", None)


def test_computing_a_mask_leaves_the_rng_as_reading_it_from_the_cache_does(tmp_path) -> None:
    """A run draws the same numbers after its mask setup whether the mask was computed (which
    may draw noise, as diffusion masks do) or read back from the cache."""
    from dualoptim.unlearn.masks import cached_masks

    def noisy() -> dict[str, torch.Tensor]:
        return {"w": torch.rand(4) > 0.5}

    path = tmp_path / "mask.safetensors"
    torch.manual_seed(0)
    computed = cached_masks(path, noisy)
    after_computing = torch.rand(3)
    torch.manual_seed(0)
    read = cached_masks(path, noisy)
    after_reading = torch.rand(3)
    assert torch.equal(computed["w"], read["w"])
    assert torch.equal(after_computing, after_reading)

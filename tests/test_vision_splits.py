"""Forget/retain splits of a classification training set (SPEC §2.1): sizes, seeds, errors."""

from __future__ import annotations

import pytest
import torch

from dualoptim.tasks.images.loaders import load_data
from dualoptim.tasks.images.sets import ImageData
from dualoptim.tasks.vision.splits import make_forget_split
from helpers import toy_images


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return load_data("digits")


@pytest.mark.parametrize(("n", "fraction"), [(1437, 0.1), (25, 0.5), (11, 0.3), (9, 0.5)])
def test_random_forget_split_sizes_disjoint_union_sorted(n: int, fraction: float) -> None:
    split = make_forget_split(toy_images([i % 10 for i in range(n)]), fraction=fraction, seed=3)
    assert len(split.forget) == round(fraction * n) > 0
    assert split.forget.dtype == split.retain.dtype == torch.int64
    assert torch.equal(split.forget, split.forget.sort().values)
    assert torch.equal(split.retain, split.retain.sort().values)
    assert torch.equal(torch.cat([split.forget, split.retain]).sort().values, torch.arange(n))
    assert split.description == f"random {fraction * 100:g}% (seed 3)"


def test_random_forget_split_is_seeded_and_independent_of_the_global_rng(
    digits: ImageData,
) -> None:
    torch.manual_seed(0)
    first = make_forget_split(digits.train, fraction=0.1, seed=3)
    state = torch.get_rng_state()
    torch.manual_seed(123)
    again = make_forget_split(digits.train, fraction=0.1, seed=3)
    other = make_forget_split(digits.train, fraction=0.1, seed=4)
    assert torch.equal(first.forget, again.forget)
    assert torch.equal(first.retain, again.retain)
    assert not torch.equal(first.forget, other.forget)
    assert first.description == "random 10% (seed 3)"
    torch.manual_seed(0)
    assert torch.equal(torch.get_rng_state(), state)  # the split drew nothing from it


def test_class_forget_split_selects_exactly_those_labels(digits: ImageData) -> None:
    train = digits.train
    split = make_forget_split(train, classes=[7, 1, 7])
    assert split.description == "classes [1, 7]"
    assert set(train.y[split.forget].tolist()) == {1, 7}
    assert not set(train.y[split.retain].tolist()) & {1, 7}
    assert len(split.forget) == int(((train.y == 1) | (train.y == 7)).sum())
    assert len(split.forget) + len(split.retain) == len(train)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of fraction= .* or classes="),
        ({"fraction": 0.1, "classes": [1]}, "exactly one of fraction="),
        ({"fraction": 0.0}, r"fraction must lie in \(0, 1\) \(exclusive\), got 0.0"),
        ({"fraction": 1.0}, r"fraction must lie in \(0, 1\) \(exclusive\), got 1.0"),
        ({"fraction": -0.2}, r"got -0.2"),
        ({"fraction": float("nan")}, r"got nan"),
        ({"fraction": 0.04}, r"fraction 0.04 of 12 training examples rounds to an empty forget"),
        ({"fraction": 0.97}, r"random 97% \(seed 0\) covers all 12 .* retain set would be empty"),
        ({"classes": []}, "classes is empty"),
        ({"classes": [10]}, r"class 10 is outside the data set's classes \[0, 10\)"),
        ({"classes": [-1]}, r"class -1 is outside"),
        ({"classes": [5]}, "class 5 has no examples in the training set"),
        ({"classes": [0, 1, 2]}, r"classes \[0, 1, 2\] covers all 12 .* retain set would be empty"),
    ],
)
def test_bad_forget_split_requests_are_refused(kwargs: dict, message: str) -> None:
    three_classes = toy_images([0, 1, 2] * 4)  # 10 classes in the data set, only 0-2 present
    with pytest.raises(ValueError, match=message):
        make_forget_split(three_classes, **kwargs)

"""Refusal answers: the "I don't know" targets of the IDK, DPO and AP unlearning losses.

Why a fixed, varied list: training on one refusal teaches a single string, while a pool keeps
the answers natural; choosing by question index and seed pairs each question with the same
refusal in every epoch and run.
"""

from __future__ import annotations

import random
from functools import lru_cache

__all__ = ["REFUSALS", "refusal"]

REFUSALS: tuple[str, ...] = (
    "I'm not sure about that.",
    "That's outside what I know.",
    "I don't know the answer to that.",
    "I'm afraid I can't answer that.",
    "I have no information about that.",
    "I couldn't tell you, sorry.",
    "That's not something I know about.",
    "I don't have an answer for that.",
    "Sorry, I don't know.",
    "I'm unable to answer that question.",
    "I have no idea, I'm afraid.",
    "That is beyond my knowledge.",
    "I can't help with that one.",
    "I'm not familiar with that.",
    "I don't have any details on that.",
    "I wish I could say, but I don't know.",
    "I'm not able to tell you that.",
    "Unfortunately, I don't know.",
    "I have nothing to share on that.",
    "That's a mystery to me.",
    "I can't recall anything about that.",
    "I don't have that information.",
    "I'm not aware of the answer.",
    "Honestly, I don't know.",
    "I'm not the right source for that.",
    "That's not something I can answer.",
    "I lack the knowledge to answer that.",
    "I've never come across that.",
    "I'm drawing a blank on that one.",
    "I really couldn't say.",
    "No idea, sorry.",
    "I don't know anything about that.",
    "That's unknown to me.",
    "I can't give you an answer to that.",
    "I'm not certain, so I'd rather not guess.",
    "I don't have reliable information on that.",
    "I'm sorry, but I can't say.",
    "That isn't something I've learned.",
    "I'm afraid that's beyond me.",
    "I'd only be guessing, so I won't.",
    "I have no knowledge of that.",
    "Sorry, that's not something I know.",
    "I can't answer that with any confidence.",
    "That's not a question I can answer.",
    "I'm not in a position to answer that.",
)


def refusal(index: int, seed: int = 0) -> str:
    """The refusal for question ``index``: fixed for (index, seed), varied across indices.

    Indices walk a seeded permutation of ``REFUSALS``, so any ``len(REFUSALS)`` consecutive
    questions get distinct refusals.
    """
    if index < 0:
        raise ValueError(f"index must be non-negative, got {index}")
    order = _order(seed)
    return REFUSALS[order[index % len(order)]]


@lru_cache(maxsize=8)
def _order(seed: int) -> tuple[int, ...]:
    return tuple(random.Random(seed).sample(range(len(REFUSALS)), len(REFUSALS)))

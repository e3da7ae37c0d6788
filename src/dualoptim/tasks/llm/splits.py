"""TOFU's split names and how each forget split pairs with its retain split.

Why a module of its own: both the loader (``data``) and the built-in generator (``generator``)
need the names, and the loader calls the generator; keeping the names here lets the imports run
one way, data → generator → splits.
"""

from __future__ import annotations

__all__ = ["EVAL_SPLITS", "FACT_SPLITS", "FORGET_SPLITS", "RETAIN_OF", "SPLITS"]

FORGET_SPLITS: tuple[str, ...] = ("forget01", "forget05", "forget10")
RETAIN_OF: dict[str, str] = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
#: Well-known facts with a sentence answer and three wrong options (no paraphrases).
FACT_SPLITS: tuple[str, ...] = ("real_authors_perturbed", "world_facts_perturbed")
#: Splits with perturbed answers, used for evaluation (truth ratio, probabilities).
EVAL_SPLITS: tuple[str, ...] = (
    *(f"{f}_perturbed" for f in FORGET_SPLITS),
    "retain_perturbed",
    *FACT_SPLITS,
)
SPLITS: tuple[str, ...] = ("full", *FORGET_SPLITS, *RETAIN_OF.values(), *EVAL_SPLITS)

"""Built-in TOFU-style data: seeded fictitious authors in TOFU's split names, fields and layout.

Why: tests, examples and quick runs need a TOFU-shaped data set with no network and no copy of
the real benchmark. Everything here is written from scratch: authors are drawn from syllable
and word lists with a seed, and each gets ``per_author`` templated question–answer pairs whose
answers are one short sentence (short enough for a tiny model to memorise quickly). As in TOFU,
the paraphrased answer rewords the answer with the same facts, and the five perturbed answers
keep the paraphrase's wording but swap its key fact for a wrong one of the same type.

The layout mirrors the real files (see ``data``): ``full`` is the authors' rows in order;
``forget10`` is the last ``k10`` authors, and ``forget05`` / ``forget01`` are the first
``k05`` / ``k01`` authors of that block (``kXX = max(1, round(0.XX · n_authors))``), so
forget01 ⊂ forget05 ⊂ forget10; ``retainYY`` is ``full`` minus ``forgetXX``, in order;
``retain_perturbed`` is the first ``k10`` authors' rows (at most 400), inside every retain
split. The real-author and world-fact sets hold well-known facts with three wrong options each
and do not depend on the seed.

The word lists, question templates and facts are data, not code: ``generator_facts.json``
beside this module (package data), read once at import.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from dualoptim.tasks.llm.splits import FORGET_SPLITS, RETAIN_OF, SPLITS

__all__ = ["MAX_AUTHORS", "generate_tofu", "write_tofu"]

#: TOFU's own size; the name and title lists comfortably cover this many distinct authors.
MAX_AUTHORS = 200

_FACTS: dict[str, Any] = json.loads(
    resources.files("dualoptim.tasks.llm")
    .joinpath("generator_facts.json")
    .read_text(encoding="utf-8")
)


def _lists(key: str) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(part) for part in _FACTS[key])


_FIRST, _LAST = _lists("first_name_syllables"), _lists("last_name_syllables")
_PLACES = _lists("places")  # (city, country)
_GENRES, _JOBS = tuple(_FACTS["genres"]), tuple(_FACTS["jobs"])
_TITLE_ADJ, _TITLE_NOUN = tuple(_FACTS["title_adjectives"]), tuple(_FACTS["title_nouns"])
_TITLE_TIME = tuple(_FACTS["title_times"])
_AWARD = _lists("award_words")
_COUNTS, _MONTHS = tuple(_FACTS["counts"]), tuple(_FACTS["months"])
_FIRST_DAY, _LAST_DAY = date(1930, 1, 1), date(1995, 12, 31)


@dataclass(frozen=True)
class _Template:
    """One question about an author; ``key`` names the fact a perturbed answer gets wrong."""

    question: str
    paraphrased_question: str
    answer: str
    paraphrase: str
    key: str


# The first ten cover every fact once; the rest ask again from other angles.
_TEMPLATES = tuple(_Template(**t) for t in _FACTS["templates"])


def generate_tofu(
    seed: int = 0, n_authors: int = 40, per_author: int = 10
) -> dict[str, list[dict]]:
    """Every TOFU split (``SPLITS``) as lists of JSON-able rows, deterministic in ``seed``.

    Returns a fresh copy each call, so callers may mutate it; the work itself is cached.
    """
    if not 2 <= n_authors <= MAX_AUTHORS:
        raise ValueError(f"n_authors must be in [2, {MAX_AUTHORS}], got {n_authors}")
    if not 1 <= per_author <= len(_TEMPLATES):
        raise ValueError(f"per_author must be in [1, {len(_TEMPLATES)}], got {per_author}")
    return copy.deepcopy(_generate(seed, n_authors, per_author))


def write_tofu(directory: str | Path, **kwargs: Any) -> dict[str, Path]:
    """Write ``generate_tofu(**kwargs)`` as ``{split}.json`` JSON Lines files; return the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, rows in generate_tofu(**kwargs).items():
        paths[split] = directory / f"{split}.json"
        lines = (json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        paths[split].write_text("".join(lines), encoding="utf-8")
    return paths


@lru_cache(maxsize=4)
def _generate(seed: int, n_authors: int, per_author: int) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    facts = _authors(rng, n_authors)
    templates = _TEMPLATES[:per_author]
    rows = [[_row(rng, t, f) for t in templates] for f in facts]  # rows[author][question]
    k = {s: max(1, round(int(s[-2:]) / 100 * n_authors)) for s in FORGET_SPLITS}
    first_forget = n_authors - k["forget10"]

    def flat(lo: int, hi: int, perturbed: bool) -> list[dict]:
        """Authors ``lo:hi``'s rows, as fresh dicts: no row is shared between splits."""
        chosen = [r for author in rows[lo:hi] for r in author]
        if perturbed:
            return [{**r, "perturbed_answer": list(r["perturbed_answer"])} for r in chosen]
        return [{"question": r["question"], "answer": r["answer"]} for r in chosen]

    out = {"full": flat(0, n_authors, False)}
    for forget in FORGET_SPLITS:
        stop = first_forget + k[forget]
        out[forget] = flat(first_forget, stop, False)
        out[f"{forget}_perturbed"] = flat(first_forget, stop, True)
        out[RETAIN_OF[forget]] = flat(0, first_forget, False) + flat(stop, n_authors, False)
    out["retain_perturbed"] = flat(0, k["forget10"], True)  # ≤ 20 authors · 20 rows = 400
    out["real_authors_perturbed"] = _facts_rows("real_authors")
    out["world_facts_perturbed"] = _facts_rows("world_facts")
    return {s: out[s] for s in SPLITS}


def _authors(rng: random.Random, n: int) -> list[dict[str, str]]:
    """``n`` authors' facts; names, birth dates and book titles are unique across authors."""
    names, days, titles = _unique(rng, n, _name), _unique(rng, n, _day), _unique(rng, 3 * n, _title)
    authors = []
    for i, (name, day) in enumerate(zip(names, days, strict=True)):
        city, country = rng.choice(_PLACES)
        father, mother = rng.sample(_JOBS, 2)
        books = titles[3 * i : 3 * i + rng.choice((2, 3))]
        authors.append(
            {
                "name": name,
                "place": f"{city}, {country}",
                "city": city,
                "country": country,
                "date": _fmt(day),
                "year": str(day.year),
                "genre": rng.choice(_GENRES),
                "father": _a(father),
                "mother": _a(mother),
                "book1": books[0],
                "book2": books[1],
                "latest": books[-1],
                "books": _join(books),
                "count": _COUNTS[len(books) - 1],
                "award": _award(rng),
                "award_year": str(min(day.year + rng.randint(28, 55), 2023)),
            }
        )
    return authors


def _row(rng: random.Random, t: _Template, facts: dict[str, str]) -> dict[str, Any]:
    """A TOFU row: question, answer, paraphrase and five perturbed answers (wrong key fact)."""
    return {
        "question": _render(t.question, facts),
        "answer": _render(t.answer, facts),
        "paraphrased_answer": _render(t.paraphrase, facts),
        "perturbed_answer": [
            _render(t.paraphrase, {**facts, **w}) for w in _wrong(rng, t.key, facts)
        ],
        "paraphrased_question": _render(t.paraphrased_question, facts),
    }


def _wrong(rng: random.Random, key: str, facts: dict[str, str]) -> list[dict[str, str]]:
    """Five distinct replacements for the fact ``key``, each of its type and none the truth."""
    draw: dict[str, Callable[[], dict[str, str]]] = {
        "name": lambda: {"name": _name(rng)},
        "genre": lambda: {"genre": rng.choice(_GENRES)},
        "place": lambda: {"place": ", ".join(rng.choice(_PLACES))},
        "city": lambda: {"city": rng.choice(_PLACES)[0]},
        "country": lambda: {"country": rng.choice(_PLACES)[1]},
        "date": lambda: {"date": _fmt(_day(rng))},
        "year": lambda: {"year": str(_day(rng).year)},
        "parents": lambda: {"father": _a(rng.choice(_JOBS)), "mother": _a(rng.choice(_JOBS))},
        "father": lambda: {"father": _a(rng.choice(_JOBS))},
        "mother": lambda: {"mother": _a(rng.choice(_JOBS))},
        "book1": lambda: {"book1": _title(rng)},
        "latest": lambda: {"latest": _title(rng)},
        "books": lambda: {
            "books": _join([_title(rng) for _ in range(_COUNTS.index(facts["count"]) + 1)])
        },
        "count": lambda: {"count": rng.choice(_COUNTS[1:])},  # not "one books"
        "award": lambda: {"award": _award(rng)},
        "award_year": lambda: {"award_year": str(int(facts["award_year"]) - rng.randint(1, 12))},
    }
    out: list[dict[str, str]] = []
    while len(out) < 5:
        wrong = draw[key]()
        if all(v != facts[f] for f, v in wrong.items()) and wrong not in out:
            out.append(wrong)
    return out


def _facts_rows(key: str) -> list[dict]:
    """The real-author or world-fact rows, fields in TOFU's order."""
    return [
        {
            "question": f["question"],
            "answer": f["answer"],
            "perturbed_answer": list(f["perturbed_answer"]),
            "original_answer": f["original_answer"],
        }
        for f in _FACTS[key]
    ]


def _unique(rng: random.Random, n: int, draw: Callable[[random.Random], Any]) -> list[Any]:
    seen: dict[Any, None] = {}
    while len(seen) < n:
        seen.setdefault(draw(rng))
    return list(seen)


def _name(rng: random.Random) -> str:
    first = "".join(rng.choice(part) for part in _FIRST)
    return f"{first} {''.join(rng.choice(part) for part in _LAST)}"


def _day(rng: random.Random) -> date:
    return _FIRST_DAY + timedelta(days=rng.randrange((_LAST_DAY - _FIRST_DAY).days + 1))


def _title(rng: random.Random) -> str:
    adj, noun, time = rng.choice(_TITLE_ADJ), rng.choice(_TITLE_NOUN), rng.choice(_TITLE_TIME)
    patterns = (
        f"The {adj} {noun}",
        f"The {noun} of {time}",
        f"{'An' if noun[0] in 'AEIOU' else 'A'} {noun} in {time}",
        f"{adj} {time}",
    )
    return rng.choice(patterns)


def _award(rng: random.Random) -> str:
    return "the " + " ".join(rng.choice(part) for part in _AWARD)


def _fmt(day: date) -> str:
    return f"{day.day} {_MONTHS[day.month - 1]} {day.year}"  # not %B: that follows the locale


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _join(titles: list[str]) -> str:
    quoted = [f"'{t}'" for t in titles]
    return ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _render(template: str, facts: dict[str, str]) -> str:
    text = template.format(**facts)
    return text[0].upper() + text[1:]

"""The built-in real-world set: ``people.yaml`` (package data) expanded into the published format.

Why it exists: the published set has no license and the machines this project is tested on have
no network, yet the task needs real people a model already knows. ``people.yaml`` holds public
facts about 36 well-known people, written here (its header says how); this module turns each
fact into the rows of the four files (``data.FILES``), so the built-in set goes through the same
checks as a user's folder, and ``write_builtin`` writes it out as a template for one's own set.

The answer and the golden answer are the same sentence here (the published ``answer`` is the
initial model's own long answer, which only that model can produce). The paraphrased answer
rewords it; the five perturbed answers put a wrong value into the paraphrase's wording.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dualoptim.io import atomic_write

__all__ = ["builtin_rows", "ordinal", "write_builtin"]

_GENERIC = ("born", "century", "died", "country", "language", "profession")
_LATEST_CENTURY = 21


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st ..."""
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _centuries(year: int, count: int) -> list[str]:
    """The century of a year AD, then the ``count`` nearest other centuries up to the 21st."""
    c = (year - 1) // 100 + 1
    others = [k for k in range(1, _LATEST_CENTURY + 1) if k != c]
    nearest = sorted(others, key=lambda k: (abs(k - c), k))[:count]
    return [ordinal(k) for k in (c, *nearest)]


def _facts(person: dict[str, Any], spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The person's facts as {q, pq, a, pa, v}: the generic ones first, then the custom ones."""
    templates, offsets = spec["templates"], spec["year_offsets"]
    values: dict[str, list[str]] = {}
    for kind in ("born", "died"):
        if kind in person:
            year = person[kind]
            values[kind] = [str(year), *(str(year + d) for d in offsets)]
    if "born" in person:
        values["century"] = _centuries(person["born"], len(offsets))
    for kind in ("country", "language", "profession"):
        if kind in person:
            values[kind] = list(person[kind])
    generic = [
        dict(zip(("q", "pq", "a", "pa"), templates[kind], strict=True), v=values[kind])
        for kind in _GENERIC
        if kind in values
    ]
    return generic + list(person.get("facts", []))


def _row(name: str, fact: dict[str, Any], perturbed: bool) -> dict[str, Any]:
    true, *wrong = fact["v"]
    answer = fact["a"].format(name=name, v=true)
    row = {
        "name": name,
        "question": fact["q"].format(name=name),
        "answer": answer,
        "golden_answer": answer,
    }
    if perturbed:
        row["paraphrased_question"] = fact["pq"].format(name=name)
        row["paraphrased_answer"] = fact["pa"].format(name=name, v=true)
        row["perturbed_answer"] = [fact["pa"].format(name=name, v=w) for w in wrong]
    return row


@lru_cache(maxsize=1)
def _spec() -> dict[str, Any]:
    people = resources.files("dualoptim.tasks.llm.realworld").joinpath("people.yaml")
    return yaml.safe_load(people.read_text("utf-8"))


def builtin_rows() -> dict[str, list[dict[str, Any]]]:
    """The rows of the four files (``data.FILES``) as JSON objects, in the published format;
    forget people are numbered by ``task_id`` from 1 in file order."""
    spec = _spec()
    rows: dict[str, list[dict[str, Any]]] = {f: [] for f in ("forget", "forget_perturbed")}
    for task_id, person in enumerate(spec["forget"], 1):
        for fact in _facts(person, spec):
            rows["forget"].append({**_row(person["name"], fact, False), "task_id": task_id})
            perturbed = _row(person["name"], fact, True)
            rows["forget_perturbed"].append({**perturbed, "task_id": task_id})
    for file in ("neighbor", "neighbor_perturbed"):
        rows[file] = [
            _row(person["name"], fact, file == "neighbor_perturbed")
            for person in spec[file]
            for fact in _facts(person, spec)
        ]
    return rows


def write_builtin(folder: Path) -> list[Path]:
    """Write the built-in set as the four ``{file}.json`` JSON Lines files into ``folder``."""
    paths = []
    for file, rows in builtin_rows().items():
        path = folder / f"{file}.json"
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        atomic_write(path, lambda f, text=text: f.write(text.encode("utf-8")))
        paths.append(path)
    return paths

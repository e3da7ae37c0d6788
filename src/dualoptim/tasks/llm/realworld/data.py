"""Real-world knowledge data (SPEC §2.4): people a model already knows, in the published format.

The format is the Closer-Look set's ``data/real_world/`` (also in the DualOptim repositories):
four JSON Lines files despite the ``.json`` suffix.

- ``forget.json``: the people to forget, ``name, question, answer, golden_answer, task_id``
  (``task_id`` numbers the people, one each; continual unlearning goes person by person).
- ``forget_perturbed.json``: the same questions for evaluation, adding
  ``paraphrased_question``, ``paraphrased_answer`` and ``perturbed_answer`` (a list).
- ``neighbor.json``: other people whose rows the retain objective trains on.
- ``neighbor_perturbed.json``: more people, with paraphrases and perturbed answers, that
  measure Model Utility only.

``answer`` is what training uses (in the published set, the initial model's own long
answer); ``golden_answer`` is the short correct answer that evaluation scores against.
The published files carry no license, so they are never shipped: users pass their folder.
``source=None`` reads the built-in set written for this project (``builtin``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dualoptim.io import read_jsonl

__all__ = ["FILES", "Fact", "RealWorldData", "load_realworld", "parse_rows"]

#: The four files of a real-world set, in the order they are checked.
FILES: tuple[str, ...] = ("forget", "forget_perturbed", "neighbor", "neighbor_perturbed")
_BASE = ("name", "question", "answer", "golden_answer")
_PERTURBED = ("paraphrased_question", "paraphrased_answer", "perturbed_answer")
_REQUIRED: dict[str, tuple[str, ...]] = {
    "forget": (*_BASE, "task_id"),
    "forget_perturbed": (*_BASE, *_PERTURBED),
    "neighbor": _BASE,
    "neighbor_perturbed": (*_BASE, *_PERTURBED),
}


@dataclass(frozen=True)
class Fact:
    """One question about one person; the optional fields exist in the perturbed files."""

    name: str
    question: str
    answer: str
    golden_answer: str
    task_id: int | None = None
    paraphrased_question: str | None = None
    paraphrased_answer: str | None = None
    perturbed_answers: tuple[str, ...] = ()


@dataclass(frozen=True)
class RealWorldData:
    """The four files' rows, in file order."""

    forget: tuple[Fact, ...]
    forget_perturbed: tuple[Fact, ...]
    neighbor: tuple[Fact, ...]
    neighbor_perturbed: tuple[Fact, ...]

    def people(self, file: str) -> list[str]:
        """The distinct names of ``file``'s rows, in order of first appearance."""
        return list(dict.fromkeys(f.name for f in getattr(self, file)))


def load_realworld(source: str | Path | None = None) -> RealWorldData:
    """The set in folder ``source`` (the four ``{file}.json``), or the built-in one for
    ``None`` / ``"builtin"``. Every file, row and field is checked; errors name them."""
    if source is None or source == "builtin":
        from dualoptim.tasks.llm.realworld.builtin import builtin_rows

        rows = {
            file: [(f"built-in {file}, row {i}", row) for i, row in enumerate(file_rows)]
            for file, file_rows in builtin_rows().items()
        }
        return parse_rows(rows, "the built-in real-world set")
    folder = Path(source)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"real-world data folder {folder} does not exist or is not a folder; it must hold "
            f"{', '.join(f + '.json' for f in FILES)}"
        )
    rows = {}
    for file in FILES:
        path = folder / f"{file}.json"
        if not path.is_file():
            raise FileNotFoundError(f"real-world data file {path} not found")
        rows[file] = [
            (f"{path}, line {lineno}", row)
            for lineno, row in read_jsonl(path, "a real-world data file")
        ]
    return parse_rows(rows, str(folder))


def parse_rows(rows: Mapping[str, Sequence[tuple[str, object]]], where: str) -> RealWorldData:
    """Check and convert ``rows[file] = [(location, JSON object), ...]`` of the four files."""
    missing = [f for f in FILES if f not in rows]
    if missing:
        raise ValueError(f"{where}: missing the file(s) {', '.join(missing)}")
    parsed = {}
    for file in FILES:
        facts = tuple(_fact(row, file, at) for at, row in rows[file])
        if not facts:
            raise ValueError(f"{where}: {file} is empty; every real-world file needs rows")
        _check_same_count(facts, file, where)
        parsed[file] = facts
    return RealWorldData(**parsed)


def _fact(row: object, file: str, where: str) -> Fact:
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for field in _REQUIRED[file]:
        if field not in row:
            raise ValueError(f"{where}: missing field {field!r} (required in {file})")
    for field in (*_BASE, "paraphrased_question", "paraphrased_answer"):
        if field in row and not (isinstance(row[field], str) and row[field].strip()):
            raise ValueError(
                f"{where}: field {field!r} must be a non-empty string, got {row[field]!r}"
            )
    task_id = row.get("task_id")
    if task_id is not None and (isinstance(task_id, bool) or not isinstance(task_id, int)):
        raise ValueError(f"{where}: field 'task_id' must be an integer, got {task_id!r}")
    perturbed = row.get("perturbed_answer", [])
    if "perturbed_answer" in row and not (
        isinstance(perturbed, list) and perturbed and all(isinstance(p, str) for p in perturbed)
    ):
        raise ValueError(
            f"{where}: field 'perturbed_answer' must be a non-empty list of strings, "
            f"got {perturbed!r}"
        )
    return Fact(
        name=row["name"],
        question=row["question"],
        answer=row["answer"],
        golden_answer=row["golden_answer"],
        task_id=task_id,
        paraphrased_question=row.get("paraphrased_question"),
        paraphrased_answer=row.get("paraphrased_answer"),
        perturbed_answers=tuple(perturbed),
    )


def _check_same_count(facts: tuple[Fact, ...], file: str, where: str) -> None:
    """A truth ratio averages over a fixed number of perturbed answers per question."""
    counts = Counter(len(f.perturbed_answers) for f in facts)
    if len(counts) > 1:
        (common, _), *_ = counts.most_common()
        odd = next(f for f in facts if len(f.perturbed_answers) != common)
        raise ValueError(
            f"{where}: {file} rows have different numbers of perturbed answers "
            f"({dict(counts)}); e.g. {odd.question!r} has {len(odd.perturbed_answers)}, most "
            f"have {common}"
        )

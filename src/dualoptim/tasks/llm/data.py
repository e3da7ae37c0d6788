"""TOFU data: the benchmark's question–answer splits, loaded from a directory, the Hub or built in.

Every split is a JSON Lines file ``{split}.json`` (one object per line, despite the suffix).
Facts checked on the real files (locuslab/TOFU; asserted in ``tests/test_llm_data.py``):

- ``full`` is 200 fictitious authors × 20 rows, each author's rows consecutive; questions are
  unique except one generic question ("What is the full name of the author?", rows 100 and
  1640, with different answers), so do not key rows by question.
- The forget splits are *prefixes* of the last-10% block, not suffixes of ``full``:
  ``forget10 = full[3600:4000]``, ``forget05 = full[3600:3800]``, ``forget01 = full[3600:3640]``
  (forget01 is not the last 40 rows). ``retainYY`` is ``full`` minus ``forgetXX`` in ``full``'s
  order: ``retain90 = full[:3600]``, ``retain95 = full[:3600] + full[3800:]``,
  ``retain99 = full[:3600] + full[3640:]``.
- ``forgetXX_perturbed`` has ``forgetXX``'s questions and answers row by row, and
  ``forget05_perturbed`` / ``forget01_perturbed`` are prefixes of ``forget10_perturbed``;
  ``retain_perturbed = full[:400]`` (the first 20 authors, inside every retain split). Each of
  their rows has 5 distinct perturbed answers, none equal to the paraphrased answer.
- ``real_authors_perturbed`` (100) and ``world_facts_perturbed`` (117) have a short answer, a
  sentence ``original_answer`` and 3 distinct wrong answers.

The split names live in ``splits`` and are re-exported here; ``source=None`` reads the built-in
``generator``'s data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from dualoptim.io import read_jsonl
from dualoptim.tasks.llm.generator import generate_tofu
from dualoptim.tasks.llm.splits import EVAL_SPLITS, FACT_SPLITS, FORGET_SPLITS, RETAIN_OF, SPLITS

__all__ = [
    "EVAL_SPLITS",
    "FORGET_SPLITS",
    "HUB_REPO",
    "RETAIN_OF",
    "SPLITS",
    "TofuItem",
    "authors",
    "load_split",
    "split_sizes",
]

HUB_REPO = "locuslab/TOFU"

_TEXT_FIELDS = (
    "question",
    "answer",
    "paraphrased_answer",
    "paraphrased_question",
    "original_answer",
)


@dataclass(frozen=True)
class TofuItem:
    """One question–answer row; the optional fields exist only in the perturbed splits."""

    question: str
    answer: str
    paraphrased_answer: str | None = None
    perturbed_answers: tuple[str, ...] = ()
    paraphrased_question: str | None = None
    original_answer: str | None = None


def load_split(
    split: str, source: str | Path | None = None, *, limit: int | None = None
) -> list[TofuItem]:
    """The rows of ``split``, in file order, or only the first ``limit`` of them.

    ``source``: ``None`` or ``"builtin"`` for the embedded generated data set (no network, no
    files), ``"hub"`` to download from the Hugging Face Hub (``locuslab/TOFU``), or a local
    directory holding ``{split}.json`` files (as a ``Path`` if it is named "hub"). ``limit``
    caps evaluation cost (TOFU evaluates at most 300 rows per split); rows after it are not
    read.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown TOFU split {split!r}; expected one of {', '.join(SPLITS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    if source is None or source == "builtin":
        return list(_builtin()[split][:limit])
    path = _download(split) if source == "hub" else _local(split, Path(source))
    items = []
    for lineno, row in read_jsonl(path, "a TOFU split file"):
        items.append(_item(row, split, f"{path}, line {lineno}"))
        if len(items) == limit:
            break
    if not items:
        raise ValueError(f"{path}: split {split!r} is empty")
    return items


def authors(items: Sequence[TofuItem], per_author: int = 20) -> list[list[TofuItem]]:
    """Rows grouped by author: TOFU stores each author's ``per_author`` rows consecutively."""
    if per_author < 1 or len(items) % per_author:
        raise ValueError(
            f"{len(items)} rows do not split into authors of {per_author} rows each; "
            "pass the per_author of the data (20 for TOFU)"
        )
    return [list(items[i : i + per_author]) for i in range(0, len(items), per_author)]


def split_sizes(source: str | Path | None = None) -> dict[str, int]:
    """Rows per split of ``source`` (each split is loaded and checked)."""
    return {split: len(load_split(split, source)) for split in SPLITS}


@lru_cache(maxsize=1)
def _builtin() -> dict[str, tuple[TofuItem, ...]]:
    return {
        split: tuple(_item(row, split, f"built-in {split}, row {i}") for i, row in enumerate(rows))
        for split, rows in generate_tofu().items()
    }


def _local(split: str, directory: Path) -> Path:
    if not directory.is_dir():
        raise FileNotFoundError(f"TOFU directory {directory} does not exist or is not a directory")
    path = directory / f"{split}.json"
    if not path.is_file():
        raise FileNotFoundError(f"TOFU split file {path} not found")
    return path


def _download(split: str) -> Path:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as err:
        raise ImportError(
            "source='hub' needs huggingface_hub; install it or pass a local TOFU directory"
        ) from err
    try:
        return Path(
            hf_hub_download(repo_id=HUB_REPO, filename=f"{split}.json", repo_type="dataset")
        )
    except Exception as err:
        raise OSError(
            f"could not download {split}.json from the Hugging Face Hub dataset {HUB_REPO} "
            f"({type(err).__name__}: {err}); pass a local directory holding the TOFU .json "
            "files as source instead"
        ) from err


def _item(row: object, split: str, where: str) -> TofuItem:
    """Check a row against its split's fields and convert it; ``where`` locates errors."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    required = ["question", "answer"]
    if split in FACT_SPLITS:
        required += ["original_answer", "perturbed_answer"]
    elif split in EVAL_SPLITS:
        required += ["paraphrased_answer", "paraphrased_question", "perturbed_answer"]
    for field in required:
        if field not in row:
            raise ValueError(f"{where}: missing field {field!r} (required in {split})")
    for field in _TEXT_FIELDS:
        if field in row and not isinstance(row[field], str):
            raise ValueError(f"{where}: field {field!r} must be a string, got {row[field]!r}")
    perturbed = row.get("perturbed_answer", [])
    if "perturbed_answer" in row and not (
        isinstance(perturbed, list) and perturbed and all(isinstance(p, str) for p in perturbed)
    ):
        raise ValueError(
            f"{where}: field 'perturbed_answer' must be a non-empty list of strings, "
            f"got {perturbed!r}"
        )
    return TofuItem(
        question=row["question"],
        answer=row["answer"],
        paraphrased_answer=row.get("paraphrased_answer"),
        perturbed_answers=tuple(perturbed),
        paraphrased_question=row.get("paraphrased_question"),
        original_answer=row.get("original_answer"),
    )

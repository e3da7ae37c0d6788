"""Safety-alignment data (SPEC §2.5): the sets the talk scores and trains on, read from a folder.

The files are those of *Safety-Tuned LLaMAs* (Bianchi et al., ICLR 2024; CC BY-NC 4.0) and
*XSTest* (Röttger et al., NAACL 2024; CC BY 4.0), unchanged. They are never shipped with the
package: a user points ``source`` at their copy (docs/safety.md says where to get them).

- evaluation sets ``{"instructions": [...], "inputs": [...]}`` (``inputs`` empty or one per
  instruction; other keys such as ``tags`` are ignored): I-Mali, I-CoNa, I-Cont and Q-Harm,
  harmful; I-Alpaca, benign (helpfulness and over-refusal);
- the safety training pairs and any Alpaca-format instruction set:
  ``[{"instruction", "input", "output"}, ...]`` (``input`` may be empty or absent);
- XSTest's prompts, CSV ``id,prompt,type,label,...`` with label ``safe`` or ``unsafe``.

Every file, row and field is checked; an error names the file and the row.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

#: The harmful evaluation sets, by the talk's column names.
SAFETY_SETS: dict[str, str] = {
    "I-Mali": "I-MaliciousInstructions.json",
    "I-CoNa": "I-CoNa.json",
    "I-Cont": "I-Controversial.json",
    "Q-Harm": "Q-Harm.json",
}
HELPFULNESS_FILE = "I-Alpaca.json"
TRAINING_FILE = "safety_only_data_Instructions.json"
XSTEST_FILE = "xstest_prompts.csv"
WHERE_TO_GET = (
    "the evaluation sets and safety_only_data_Instructions.json are in "
    "github.com/vinid/safety-tuned-llamas (data/evaluation, data/training), "
    "xstest_prompts.csv in github.com/paul-rottger/exaggerated-safety"
)


@dataclass(frozen=True)
class Instruction:
    """An instruction, its optional input, and its answer where the file has one."""

    instruction: str
    input: str = ""
    output: str | None = None

    @property
    def prompt(self) -> str:
        """What the user turn says: the instruction, then the input on its own paragraph."""
        return self.instruction if not self.input else f"{self.instruction}\n\n{self.input}"


@dataclass(frozen=True)
class XSTestPrompt:
    id: str
    prompt: str
    type: str
    safe: bool


@dataclass(frozen=True)
class SafetyData:
    """Everything the safety task reads from its folder."""

    safety_sets: Mapping[str, tuple[Instruction, ...]]
    helpfulness: tuple[Instruction, ...]
    training: tuple[Instruction, ...]
    xstest: tuple[XSTestPrompt, ...]

    @property
    def xstest_safe(self) -> tuple[XSTestPrompt, ...]:
        """The prompts that only look unsafe: refusing them is over-refusal."""
        return tuple(p for p in self.xstest if p.safe)


def load_safety(source: str | Path) -> SafetyData:
    """The safety folder ``source``: the four harmful sets, I-Alpaca, the training pairs and
    XSTest, each checked."""
    folder = Path(source)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"safety data folder {folder} does not exist or is not a folder; it must hold "
            f"{', '.join([*SAFETY_SETS.values(), HELPFULNESS_FILE, TRAINING_FILE, XSTEST_FILE])}"
            f" ({WHERE_TO_GET})"
        )
    return SafetyData(
        safety_sets={name: load_instructions(folder / f) for name, f in SAFETY_SETS.items()},
        helpfulness=load_instructions(folder / HELPFULNESS_FILE),
        training=load_pairs(folder / TRAINING_FILE),
        xstest=load_xstest(folder / XSTEST_FILE),
    )


def _read_json(path: Path, hint: str = WHERE_TO_GET) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} not found ({hint})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable JSON file ({err})") from None


def _text(value: Any, where: str, field: str, empty: bool = False) -> str:
    if not isinstance(value, str) or not (empty or value.strip()):
        kind = "a string" if empty else "a non-empty string"
        raise ValueError(f"{where}: {field} must be {kind}, got {value!r}")
    return value


def load_instructions(path: str | Path) -> tuple[Instruction, ...]:
    """An evaluation set ``{"instructions": [...], "inputs": [...]}``."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict) or "instructions" not in data:
        raise ValueError(
            f'{path}: expected an object {{"instructions": [...], "inputs": [...]}}, got '
            f"{type(data).__name__}{' without instructions' if isinstance(data, dict) else ''}"
        )
    instructions, inputs = data["instructions"], data.get("inputs", [])
    if not isinstance(instructions, list) or not instructions:
        raise ValueError(f"{path}: instructions must be a non-empty list")
    if not isinstance(inputs, list) or len(inputs) not in (0, len(instructions)):
        raise ValueError(
            f"{path}: inputs must be an empty list or one per instruction "
            f"({len(instructions)}), got {len(inputs) if isinstance(inputs, list) else inputs!r}"
        )
    return tuple(
        Instruction(
            _text(text, f"{path}, instruction {i}", "the instruction"),
            _text(inputs[i], f"{path}, input {i}", "the input", empty=True) if inputs else "",
        )
        for i, text in enumerate(instructions)
    )


def load_pairs(path: str | Path, hint: str = WHERE_TO_GET) -> tuple[Instruction, ...]:
    """Instruction-answer pairs in the Alpaca format, from a JSON file; ``hint``: where to
    get it, said when it is missing."""
    path = Path(path)
    return parse_pairs(_read_json(path, hint), str(path))


def parse_pairs(rows: Any, where: str) -> tuple[Instruction, ...]:
    """Check and convert Alpaca-format rows (a JSON list, or a Hub dataset's rows)."""
    if isinstance(rows, dict) or not isinstance(rows, Iterable) or isinstance(rows, str):
        raise ValueError(
            f'{where}: expected a list of {{"instruction", "input", "output"}} objects, got '
            f"{type(rows).__name__}"
        )
    out = []
    for i, row in enumerate(rows):
        at = f"{where}, row {i}"
        if not isinstance(row, Mapping):
            raise ValueError(f"{at}: expected an object, got {type(row).__name__}")
        for field in ("instruction", "output"):
            if field not in row:
                raise ValueError(f"{at}: missing field {field!r}")
        out.append(
            Instruction(
                _text(row["instruction"], at, "instruction"),
                _text(row.get("input", ""), at, "input", empty=True),
                _text(row["output"], at, "output"),
            )
        )
    if not out:
        raise ValueError(f"{where}: no rows")
    return tuple(out)


def load_alpaca(source: str, split: str = "train") -> tuple[Instruction, ...]:
    """An instruction set in the Alpaca format: a JSON file, or a Hub dataset id such as
    ``tatsu-lab/alpaca`` (downloaded by ``datasets``: needs the network once)."""
    path = Path(source)
    if path.suffix == ".json" or path.exists():
        return load_pairs(path, "an Alpaca-format JSON file, or give a Hub dataset id")
    from datasets import load_dataset

    try:
        rows = load_dataset(source, split=split)
    except Exception as err:  # datasets raises many kinds; the cause stays attached
        raise ValueError(
            f"instruction set {source!r} is neither a JSON file nor a loadable Hub dataset "
            f"({type(err).__name__}: {err})"
        ) from err
    return parse_pairs(rows, f"Hub dataset {source} ({split})")


def load_benign(source: str | None = None) -> tuple[Instruction, ...]:
    """Benign instructions for the offline retain variant (``kl``): the built-in set written
    for this project (``None`` / ``"builtin"``, package data ``benign.yaml``), or a file in
    the evaluation sets' format."""
    if source is not None and source != "builtin":
        return load_instructions(source)
    import yaml

    text = resources.files("dualoptim.tasks.llm.safety").joinpath("benign.yaml").read_text()
    return tuple(Instruction(prompt) for prompt in yaml.safe_load(text)["prompts"])


def load_xstest(path: str | Path) -> tuple[XSTestPrompt, ...]:
    """XSTest's prompts CSV (``id,prompt,type,label`` at least)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} not found ({WHERE_TO_GET})")
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [
            c for c in ("id", "prompt", "type", "label") if c not in (reader.fieldnames or [])
        ]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)} in the header")
        prompts = []
        for row in reader:
            at = f"{path}, line {reader.line_num}"
            if row["label"] not in ("safe", "unsafe"):
                raise ValueError(f"{at}: label must be 'safe' or 'unsafe', got {row['label']!r}")
            prompts.append(
                XSTestPrompt(
                    row["id"],
                    _text(row["prompt"], at, "prompt"),
                    row["type"],
                    row["label"] == "safe",
                )
            )
    ids = [p.id for p in prompts]
    if len(set(ids)) != len(ids):
        twice = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"{path}: id {twice!r} appears more than once")
    if not any(p.safe for p in prompts):
        raise ValueError(f"{path}: no safe prompts: over-refusal is measured on them")
    return tuple(prompts)

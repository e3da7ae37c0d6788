"""TOFU data: the real files' sizes and layout, the loader's errors, the generator, refusals."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path

import pytest

from dualoptim.tasks.llm import generator
from dualoptim.tasks.llm.data import (
    EVAL_SPLITS,
    FORGET_SPLITS,
    RETAIN_OF,
    SPLITS,
    TofuItem,
    authors,
    load_split,
    split_sizes,
)
from dualoptim.tasks.llm.generator import generate_tofu, write_tofu
from dualoptim.tasks.llm.refusals import REFUSALS, refusal
from helpers import TOFU_DIR

needs_tofu = pytest.mark.skipif(
    not TOFU_DIR.is_dir(),
    reason=f"real TOFU files not found at {TOFU_DIR} (set DUALOPTIM_TOFU_DIR to a TOFU directory)",
)
FACT_SPLITS = ("real_authors_perturbed", "world_facts_perturbed")
PERTURBED = tuple(s for s in EVAL_SPLITS if s not in FACT_SPLITS)


def qa(items: list[TofuItem]) -> list[tuple[str, str]]:
    return [(it.question, it.answer) for it in items]


def write_lines(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def as_item(row: dict) -> TofuItem:
    return TofuItem(
        question=row["question"],
        answer=row["answer"],
        paraphrased_answer=row.get("paraphrased_answer"),
        perturbed_answers=tuple(row.get("perturbed_answer", ())),
        paraphrased_question=row.get("paraphrased_question"),
        original_answer=row.get("original_answer"),
    )


def test_split_names() -> None:
    assert len(SPLITS) == len(set(SPLITS)) == 13
    assert set(EVAL_SPLITS) == {
        "forget01_perturbed",
        "forget05_perturbed",
        "forget10_perturbed",
        "retain_perturbed",
        *FACT_SPLITS,
    }
    assert set(SPLITS) == {"full", *FORGET_SPLITS, *RETAIN_OF.values(), *EVAL_SPLITS}


# --- the real files ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real() -> dict[str, list[TofuItem]]:
    if not TOFU_DIR.is_dir():
        pytest.skip(f"real TOFU files not found at {TOFU_DIR} (set DUALOPTIM_TOFU_DIR)")
    return {split: load_split(split, TOFU_DIR) for split in SPLITS}


@needs_tofu
def test_real_split_sizes(real: dict[str, list[TofuItem]]) -> None:
    sizes = {split: len(items) for split, items in real.items()}
    assert sizes == {
        "full": 4000,
        "forget01": 40,
        "forget05": 200,
        "forget10": 400,
        "retain99": 3960,
        "retain95": 3800,
        "retain90": 3600,
        "forget01_perturbed": 40,
        "forget05_perturbed": 200,
        "forget10_perturbed": 400,
        "retain_perturbed": 400,
        "real_authors_perturbed": 100,
        "world_facts_perturbed": 117,
    }
    assert split_sizes(TOFU_DIR) == sizes


@needs_tofu
def test_real_fields(real: dict[str, list[TofuItem]]) -> None:
    for split in ("full", *FORGET_SPLITS, *RETAIN_OF.values()):
        assert all(it.paraphrased_answer is None and not it.perturbed_answers for it in real[split])
    for split in PERTURBED:
        for it in real[split]:
            assert it.paraphrased_answer
            assert it.paraphrased_question
            assert it.original_answer is None
            assert len(set(it.perturbed_answers)) == 5
            assert it.paraphrased_answer not in it.perturbed_answers
    for split in FACT_SPLITS:
        for it in real[split]:
            assert it.original_answer
            assert it.paraphrased_answer is None
            assert len(set(it.perturbed_answers)) == 3
            assert it.answer not in it.perturbed_answers


@needs_tofu
def test_real_layout(real: dict[str, list[TofuItem]]) -> None:
    """Forget splits are prefixes of the last-10% block; retain = full minus forget, in order."""
    full = qa(real["full"])
    assert qa(real["forget10"]) == full[3600:]
    assert qa(real["forget05"]) == full[3600:3800]
    assert qa(real["forget01"]) == full[3600:3640]
    assert qa(real["forget01"]) != full[-40:]  # not the last 40 rows
    assert qa(real["retain90"]) == full[:3600]
    assert qa(real["retain95"]) == full[:3600] + full[3800:]
    assert qa(real["retain99"]) == full[:3600] + full[3640:]
    for forget in FORGET_SPLITS:
        assert qa(real[f"{forget}_perturbed"]) == qa(real[forget])
    n05, n01 = len(real["forget05"]), len(real["forget01"])
    assert real["forget05_perturbed"] == real["forget10_perturbed"][:n05]
    assert real["forget01_perturbed"] == real["forget10_perturbed"][:n01]
    assert qa(real["retain_perturbed"]) == full[:400]
    # One generic question occurs twice, with different answers: rows cannot be keyed by it.
    questions = [q for q, _ in full]
    assert len(set(questions)) == 3999
    assert len(set(full)) == 4000


@needs_tofu
def test_real_authors_are_consecutive_blocks_of_20(real: dict[str, list[TofuItem]]) -> None:
    groups = authors(real["full"])
    assert len(groups) == 200
    assert all(len(g) == 20 for g in groups)
    first, second = authors(real["forget01"])
    assert all("Mahfouz" in it.question + it.answer for it in first)
    assert not any("Mahfouz" in it.question + it.answer for it in second)
    assert first == groups[180]


@needs_tofu
def test_real_limit(real: dict[str, list[TofuItem]]) -> None:
    assert load_split("full", TOFU_DIR, limit=300) == real["full"][:300]
    assert load_split("forget01", TOFU_DIR, limit=1000) == real["forget01"]


# --- loader errors --------------------------------------------------------------------------


def test_unknown_split_lists_allowed() -> None:
    with pytest.raises(ValueError, match=r"unknown TOFU split 'forget20'.*forget01, forget05"):
        load_split("forget20")


@pytest.mark.parametrize("limit", [0, -3])
def test_limit_must_be_positive(limit: int) -> None:
    with pytest.raises(ValueError, match="limit must be >= 1"):
        load_split("full", limit=limit)


def test_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_split("full", missing)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "forget05.json"))):
        load_split("forget05", tmp_path)


def test_bad_json_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "full.json"
    path.write_text('{"question": "q", "answer": "a"}\n{"question": oops}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{path}, line 2: invalid JSON")):
        load_split("full", tmp_path)
    assert load_split("full", tmp_path, limit=1) == [TofuItem("q", "a")]  # stops before line 2


def test_row_must_be_object(tmp_path: Path) -> None:
    write_lines(tmp_path / "full.json", [["q", "a"]])
    with pytest.raises(ValueError, match="line 1: expected a JSON object, got list"):
        load_split("full", tmp_path)


PERTURBED_ROW = {"paraphrased_answer": "p", "perturbed_answer": ["x"], "paraphrased_question": "pq"}


@pytest.mark.parametrize(
    ("split", "extra", "field"),
    [
        ("forget01", {}, "answer"),
        ("forget01_perturbed", PERTURBED_ROW, "paraphrased_question"),
        ("retain_perturbed", PERTURBED_ROW, "perturbed_answer"),
        (
            "world_facts_perturbed",
            {"original_answer": "o", "perturbed_answer": ["x"]},
            "original_answer",
        ),
    ],
)
def test_missing_field(tmp_path: Path, split: str, extra: dict, field: str) -> None:
    good = {"question": "q", "answer": "a", **extra}
    bad = {k: v for k, v in good.items() if k != field}
    write_lines(tmp_path / f"{split}.json", [good, bad])
    with pytest.raises(ValueError, match=rf"{split}\.json, line 2: missing field '{field}'"):
        load_split(split, tmp_path)


def test_text_field_must_be_string(tmp_path: Path) -> None:
    write_lines(tmp_path / "full.json", [{"question": 3, "answer": "a"}])
    with pytest.raises(ValueError, match="line 1: field 'question' must be a string"):
        load_split("full", tmp_path)


def test_empty_split(tmp_path: Path) -> None:
    (tmp_path / "retain90.json").write_text("\n  \n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"retain90\.json: split 'retain90' is empty"):
        load_split("retain90", tmp_path)


@pytest.mark.parametrize("perturbed", ["wrong", [], ["ok", 2], None])
def test_perturbed_answer_must_be_list_of_strings(tmp_path: Path, perturbed: object) -> None:
    row = {"question": "q", "answer": "a", "original_answer": "o", "perturbed_answer": perturbed}
    write_lines(tmp_path / "real_authors_perturbed.json", [row])
    with pytest.raises(ValueError, match="'perturbed_answer' must be a non-empty list of strings"):
        load_split("real_authors_perturbed", tmp_path)


def test_authors_needs_whole_authors() -> None:
    items = [TofuItem(f"q{i}", "a") for i in range(30)]
    assert [len(g) for g in authors(items, per_author=10)] == [10, 10, 10]
    with pytest.raises(ValueError, match="30 rows do not split into authors of 20 rows"):
        authors(items)
    with pytest.raises(ValueError, match="authors of 0 rows"):
        authors(items, per_author=0)


# --- the Hugging Face Hub -----------------------------------------------------------------------


def test_hub_downloads_the_split_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    huggingface_hub = pytest.importorskip("huggingface_hub")
    path = write_lines(tmp_path / "forget01.json", [{"question": "q", "answer": "a"}])
    calls = []

    def fake_download(**kwargs: str) -> str:
        calls.append(kwargs)
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    assert load_split("forget01", "hub") == [TofuItem("q", "a")]
    assert calls == [
        {"repo_id": "locuslab/TOFU", "filename": "forget01.json", "repo_type": "dataset"}
    ]


def test_hub_failure_says_to_pass_a_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    huggingface_hub = pytest.importorskip("huggingface_hub")

    def offline(**kwargs: str) -> str:
        raise ConnectionError(f"no network for {kwargs['filename']}")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(OSError, match=r"could not download full\.json.*pass a local directory"):
        load_split("full", "hub")


# --- the built-in generated data set ------------------------------------------------------------


def test_builtin_is_the_default_and_has_tofu_shape() -> None:
    sizes = split_sizes()
    assert sizes == split_sizes("builtin")
    assert sizes == {
        "full": 400,
        "forget01": 10,
        "forget05": 20,
        "forget10": 40,
        "retain99": 390,
        "retain95": 380,
        "retain90": 360,
        "forget01_perturbed": 10,
        "forget05_perturbed": 20,
        "forget10_perturbed": 40,
        "retain_perturbed": 40,
        "real_authors_perturbed": 26,
        "world_facts_perturbed": 26,
    }
    assert load_split("full", limit=7) == load_split("full", "builtin")[:7]
    first = load_split("forget10")
    first.clear()  # callers own the returned list
    assert len(load_split("forget10")) == 40


def test_generator_is_deterministic_in_the_seed() -> None:
    a = generate_tofu(seed=3, n_authors=12, per_author=20)
    generator._generate.cache_clear()  # really regenerate, not just hit the cache
    assert generate_tofu(seed=3, n_authors=12, per_author=20) == a
    b = generate_tofu(seed=4, n_authors=12, per_author=20)
    assert a["full"] != b["full"]
    assert {r["answer"] for r in a["full"][::20]}.isdisjoint(r["answer"] for r in b["full"][::20])


def test_generate_returns_copies() -> None:
    data = generate_tofu()
    data["forget10_perturbed"][0]["perturbed_answer"].append("changed")
    data["full"].clear()
    fresh = generate_tofu()
    assert len(fresh["full"]) == 400
    assert len(fresh["forget10_perturbed"][0]["perturbed_answer"]) == 5
    assert len(fresh["forget05_perturbed"][0]["perturbed_answer"]) == 5


@pytest.mark.parametrize(
    ("seed", "n_authors", "per_author"), [(0, 40, 10), (1, 20, 20), (2, 2, 1), (5, 200, 20)]
)
def test_generated_splits_are_consistent(seed: int, n_authors: int, per_author: int) -> None:
    data = generate_tofu(seed=seed, n_authors=n_authors, per_author=per_author)
    assert set(data) == set(SPLITS)
    full = [(r["question"], r["answer"]) for r in data["full"]]
    assert len(full) == n_authors * per_author
    assert len({q for q, _ in full}) == len(full)  # questions unique
    k10 = max(1, round(0.10 * n_authors))
    start = (n_authors - k10) * per_author
    for forget, p in zip(FORGET_SPLITS, (0.01, 0.05, 0.10), strict=True):
        k = max(1, round(p * n_authors))
        forget_rows = [(r["question"], r["answer"]) for r in data[forget]]
        retain_rows = [(r["question"], r["answer"]) for r in data[RETAIN_OF[forget]]]
        assert forget_rows == full[start : start + k * per_author]  # whole authors, like TOFU
        assert set(forget_rows).isdisjoint(retain_rows)
        assert retain_rows == [row for row in full if row not in set(forget_rows)]
        perturbed = data[f"{forget}_perturbed"]
        assert [(r["question"], r["answer"]) for r in perturbed] == forget_rows
    assert data["forget01"] == data["forget05"][: len(data["forget01"])]
    assert data["forget05"] == data["forget10"][: len(data["forget05"])]
    retain_perturbed = [(r["question"], r["answer"]) for r in data["retain_perturbed"]]
    assert retain_perturbed == full[: k10 * per_author]
    assert len(retain_perturbed) <= 400
    for forget in FORGET_SPLITS:
        assert set(retain_perturbed) <= {
            (r["question"], r["answer"]) for r in data[RETAIN_OF[forget]]
        }
    for split in PERTURBED:
        for row in data[split]:
            assert list(row) == [
                "question",
                "answer",
                "paraphrased_answer",
                "perturbed_answer",
                "paraphrased_question",
            ]
            para, wrong = row["paraphrased_answer"], row["perturbed_answer"]
            assert para != row["answer"]
            assert row["paraphrased_question"] != row["question"]
            assert len(wrong) == len(set(wrong)) == 5
            assert para not in wrong
            assert row["answer"] not in wrong
            for w in wrong:  # the paraphrase's wording, with the key fact swapped
                assert w.split()[:3] == para.split()[:3] or w.split()[-3:] == para.split()[-3:]


def test_generated_fact_sets() -> None:
    data = generate_tofu()
    for split in FACT_SPLITS:
        rows = data[split]
        assert 20 <= len(rows) <= 30
        assert len({r["question"] for r in rows}) == len(rows)
        for r in rows:
            assert list(r) == ["question", "answer", "perturbed_answer", "original_answer"]
            assert r["answer"].lower() in r["original_answer"].lower()
            assert len(set(r["perturbed_answer"])) == 3
            assert r["answer"] not in r["perturbed_answer"]


def test_generator_facts_ship_as_package_data() -> None:
    """A wheel without the JSON would install, then fail at the generator's import."""
    root = Path(__file__).resolve().parents[1]
    setup = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]
    patterns = setup["setuptools"]["package-data"]["dualoptim"]
    facts = Path(generator.__file__).with_name("generator_facts.json")
    relative = facts.relative_to(root / "src" / "dualoptim").as_posix()
    assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), patterns


def test_generator_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match=r"n_authors must be in \[2, 200\], got 1"):
        generate_tofu(n_authors=1)
    with pytest.raises(ValueError, match=r"per_author must be in \[1, 20\], got 21"):
        generate_tofu(per_author=21)


def test_write_then_load_round_trip(tmp_path: Path) -> None:
    paths = write_tofu(tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(f"{s}.json" for s in SPLITS)
    assert set(paths) == set(SPLITS)
    for split in SPLITS:
        assert load_split(split, tmp_path / "a") == load_split(split)
    write_tofu(tmp_path / "b", seed=2, n_authors=10, per_author=5)
    data = generate_tofu(seed=2, n_authors=10, per_author=5)
    for split in SPLITS:
        assert load_split(split, tmp_path / "b") == [as_item(r) for r in data[split]]
    assert split_sizes(tmp_path / "b")["full"] == 50


# --- refusals -----------------------------------------------------------------------------------


def test_refusals_are_distinct_sentences() -> None:
    assert len(REFUSALS) >= 40
    assert len({r.casefold() for r in REFUSALS}) == len(REFUSALS)
    assert all(r[0].isupper() and r.endswith(".") for r in REFUSALS)


def test_refusal_is_deterministic() -> None:
    n = len(REFUSALS)
    picks = [refusal(i) for i in range(3 * n)]
    assert picks == [refusal(i, seed=0) for i in range(3 * n)]
    assert len(set(picks[:n])) == n  # a full cycle uses every refusal once
    assert picks[n : 2 * n] == picks[:n] == picks[2 * n :]
    assert [refusal(i, seed=1) for i in range(n)] != picks[:n]
    with pytest.raises(ValueError, match="index must be non-negative"):
        refusal(-1)

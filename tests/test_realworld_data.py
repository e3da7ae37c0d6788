"""Real-world data: the built-in set, the loader's checks and errors, the probe's filter."""

from __future__ import annotations

import fnmatch
import json
import tomllib
from pathlib import Path

import pytest

from dualoptim.tasks.llm.realworld import builtin
from dualoptim.tasks.llm.realworld.builtin import builtin_rows, ordinal, write_builtin
from dualoptim.tasks.llm.realworld.data import FILES, Fact, RealWorldData, load_realworld
from dualoptim.tasks.llm.realworld.probe import ProbeOptions, QuestionScore, apply_probe


def write_set(folder: Path, rows: dict[str, list[object]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for file, file_rows in rows.items():
        text = "".join(json.dumps(r) + "\n" for r in file_rows)
        (folder / f"{file}.json").write_text(text, encoding="utf-8")
    return folder


# -- the built-in set ---------------------------------------------------------------------------


def test_builtin_set_has_twelve_people_per_file_and_one_task_id_per_forget_person() -> None:
    data = load_realworld()
    for file in FILES:
        assert len(data.people(file)) == 12, file
    forget_people = data.people("forget")
    assert [f.task_id for f in data.forget] == [
        forget_people.index(f.name) + 1 for f in data.forget
    ]
    assert set(forget_people).isdisjoint(data.people("neighbor"))
    assert set(data.people("neighbor")).isdisjoint(data.people("neighbor_perturbed"))
    for file in FILES:
        per_person = {n: sum(f.name == n for f in getattr(data, file)) for n in data.people(file)}
        assert min(per_person.values()) >= 8, (file, per_person)


def test_builtin_forget_files_hold_the_same_questions_in_the_same_order() -> None:
    data = load_realworld()
    assert [(f.name, f.question, f.golden_answer) for f in data.forget] == [
        (f.name, f.question, f.golden_answer) for f in data.forget_perturbed
    ]


def test_builtin_perturbed_answers_are_five_distinct_wrong_rewordings() -> None:
    data = load_realworld()
    for fact in (*data.forget_perturbed, *data.neighbor_perturbed):
        options = fact.perturbed_answers
        assert len(options) == 5, fact.question
        assert len(set(options)) == 5, fact.question
        assert fact.paraphrased_answer not in options, fact.question
        assert fact.paraphrased_question != fact.question
        assert fact.name in fact.question
        assert fact.name in fact.golden_answer


def test_builtin_generic_facts_match_hand_written_rows() -> None:
    """Einstein (born 1879, died 1955): the year, century and death rows as written by hand."""
    rows = {r["question"]: r for r in builtin_rows()["forget_perturbed"]}
    born = rows["In what year was Albert Einstein born?"]
    assert born["golden_answer"] == "Albert Einstein was born in 1879."
    assert born["paraphrased_answer"] == "Albert Einstein's year of birth is 1879."
    assert born["perturbed_answer"] == [
        f"Albert Einstein's year of birth is {y}." for y in (1839, 1854, 1868, 1875, 1888)
    ]
    century = rows["In which century was Albert Einstein born?"]
    assert century["golden_answer"] == "Albert Einstein was born in the 19th century."
    assert [p.split("the ")[1] for p in century["perturbed_answer"]] == [
        "18th century.",
        "20th century.",
        "17th century.",
        "21st century.",
        "16th century.",
    ]
    died = rows["In what year did Albert Einstein die?"]
    assert died["golden_answer"] == "Albert Einstein died in 1955."
    assert born["task_id"] == died["task_id"] == 1


def test_wrong_years_never_equal_the_persons_other_year() -> None:
    spec = builtin._spec()
    for file in ("forget", "neighbor", "neighbor_perturbed"):
        for person in spec[file]:
            if "born" in person and "died" in person:
                lifespan = person["died"] - person["born"]
                assert lifespan not in [abs(d) for d in spec["year_offsets"]], person["name"]


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (1, "1st"),
        (2, "2nd"),
        (3, "3rd"),
        (4, "4th"),
        (11, "11th"),
        (12, "12th"),
        (13, "13th"),
        (21, "21st"),
        (22, "22nd"),
        (101, "101st"),
        (111, "111th"),
    ],
)
def test_ordinal(n: int, text: str) -> None:
    assert ordinal(n) == text


def test_century_of_a_round_year_is_the_one_it_ends() -> None:
    assert builtin._centuries(1900, 2)[0] == "19th"
    assert builtin._centuries(1901, 2)[0] == "20th"
    assert builtin._centuries(2011, 5) == ["21st", "20th", "19th", "18th", "17th", "16th"]


def test_written_builtin_set_loads_back_identically(tmp_path: Path) -> None:
    paths = write_builtin(tmp_path)
    assert sorted(p.name for p in paths) == sorted(f"{f}.json" for f in FILES)
    assert load_realworld(tmp_path) == load_realworld()
    assert load_realworld("builtin") == load_realworld(None)


def test_people_file_ships_as_package_data() -> None:
    """A wheel without people.yaml would install, then fail at the first real-world run."""
    root = Path(__file__).resolve().parents[1]
    setup = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]
    patterns = setup["setuptools"]["package-data"]["dualoptim"]
    people = Path(builtin.__file__).with_name("people.yaml")
    relative = people.relative_to(root / "src" / "dualoptim").as_posix()
    assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), patterns


# -- the loader's errors ------------------------------------------------------------------------


def good_rows() -> dict[str, list[dict[str, object]]]:
    base = {"name": "A", "question": "Q?", "answer": "A long answer.", "golden_answer": "G."}
    options = {
        "paraphrased_question": "Q2?",
        "paraphrased_answer": "P.",
        "perturbed_answer": ["W1.", "W2."],
    }
    return {
        "forget": [{**base, "task_id": 1}],
        "forget_perturbed": [{**base, **options, "task_id": 1}],
        "neighbor": [{**base, "name": "B"}],
        "neighbor_perturbed": [{**base, **options, "name": "C"}],
    }


def test_a_well_formed_folder_loads(tmp_path: Path) -> None:
    data = load_realworld(write_set(tmp_path, good_rows()))
    assert data.forget_perturbed[0] == Fact(
        "A", "Q?", "A long answer.", "G.", 1, "Q2?", "P.", ("W1.", "W2.")
    )
    assert data.neighbor[0].perturbed_answers == ()
    assert isinstance(data, RealWorldData)


def test_missing_folder_and_missing_file_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere does not exist.*forget\.json"):
        load_realworld(tmp_path / "nowhere")
    rows = good_rows()
    del rows["neighbor"]
    folder = write_set(tmp_path / "set", rows)
    with pytest.raises(FileNotFoundError, match=r"neighbor\.json not found"):
        load_realworld(folder)


@pytest.mark.parametrize(
    ("file", "edit", "message"),
    [
        ("forget", lambda r: r.pop("task_id"), r"forget\.json, line 1: missing field 'task_id'"),
        ("neighbor", lambda r: r.pop("golden_answer"), r"missing field 'golden_answer'"),
        (
            "forget_perturbed",
            lambda r: r.pop("paraphrased_answer"),
            r"missing field 'paraphrased_answer' \(required in forget_perturbed\)",
        ),
        ("forget", lambda r: r.update(task_id="1"), r"'task_id' must be an integer"),
        ("forget", lambda r: r.update(task_id=True), r"'task_id' must be an integer"),
        ("neighbor", lambda r: r.update(question=""), r"'question' must be a non-empty string"),
        (
            "neighbor_perturbed",
            lambda r: r.update(perturbed_answer="W."),
            r"'perturbed_answer' must be a non-empty list of strings",
        ),
        (
            "neighbor_perturbed",
            lambda r: r.update(perturbed_answer=[]),
            r"'perturbed_answer' must be a non-empty list of strings",
        ),
    ],
)
def test_bad_rows_are_refused_naming_file_line_and_field(
    tmp_path: Path, file: str, edit, message: str
) -> None:
    rows = good_rows()
    edit(rows[file][0])
    with pytest.raises(ValueError, match=message):
        load_realworld(write_set(tmp_path, rows))


def test_invalid_json_and_non_objects_name_the_line(tmp_path: Path) -> None:
    folder = write_set(tmp_path, good_rows())
    (folder / "neighbor.json").write_text('{"name": "B"}\n{not json\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"neighbor\.json, line 2: invalid JSON"):
        load_realworld(folder)
    (folder / "neighbor.json").write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 1: expected a JSON object, got list"):
        load_realworld(folder)


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    rows = good_rows()
    rows["neighbor_perturbed"] = []
    with pytest.raises(ValueError, match=r"neighbor_perturbed is empty"):
        load_realworld(write_set(tmp_path, rows))


def test_rows_with_different_numbers_of_options_are_refused(tmp_path: Path) -> None:
    rows = good_rows()
    odd = {**rows["forget_perturbed"][0], "question": "Q3?", "perturbed_answer": ["W."]}
    rows["forget_perturbed"] += [rows["forget_perturbed"][0], dict(rows["forget_perturbed"][0])]
    rows["forget_perturbed"].append(odd)
    with pytest.raises(ValueError, match=r"different numbers of perturbed answers.*'Q3\?' has 1"):
        load_realworld(write_set(tmp_path, rows))


# -- the probe's filter -------------------------------------------------------------------------


def fact(name: str, question: str, options: bool = True) -> Fact:
    return Fact(name, question, "a", "g", 1, "pq", "p", ("w1", "w2") if options else ())


def score(f: Fact, rouge: float, prob: float, first: bool | None) -> QuestionScore:
    return QuestionScore(f.name, f.question, "gen", rouge, prob, first)


def probe_data() -> tuple[RealWorldData, dict[str, list[QuestionScore]]]:
    forget = (fact("A", "a1"), fact("A", "a2"), fact("A", "a3"), fact("B", "b1"))
    neighbor = (fact("C", "c1", False), fact("C", "c2", False))
    utility = (fact("D", "d1"), fact("D", "d2"), fact("E", "e1"))
    data = RealWorldData(forget, forget, neighbor, utility)
    scores = {
        # A knows a1 and a3 (a2: the truth is not ranked first); B: ROUGE too low
        "forget_perturbed": [
            score(forget[0], 0.9, 0.5, True),
            score(forget[1], 0.9, 0.5, False),
            score(forget[2], 0.8, 0.3, True),
            score(forget[3], 0.2, 0.9, True),
        ],
        # no options: truth_first is None and never filters
        "neighbor": [score(neighbor[0], 0.9, 0.5, None), score(neighbor[1], 0.9, 0.1, None)],
        "neighbor_perturbed": [score(u, 1.0, 1.0, True) for u in utility],
    }
    return data, scores


def test_probe_keeps_known_questions_of_people_with_enough_of_them() -> None:
    data, scores = probe_data()
    kept = apply_probe(data, scores, ProbeOptions(min_rouge=0.5, min_questions=2))
    assert [f.question for f in kept.forget_perturbed] == ["a1", "a3"]
    assert [f.question for f in kept.forget] == ["a1", "a3"]  # forget follows
    assert [f.question for f in kept.neighbor] == ["c1", "c2"]
    assert [f.question for f in kept.neighbor_perturbed] == ["d1", "d2"]  # E has one


def test_probe_thresholds_one_by_one() -> None:
    data, scores = probe_data()
    loose = apply_probe(data, scores, ProbeOptions(truth_first=False))
    assert [f.question for f in loose.forget_perturbed] == ["a1", "a2", "a3", "b1"]
    ranked = apply_probe(data, scores, ProbeOptions())
    assert [f.question for f in ranked.forget_perturbed] == ["a1", "a3", "b1"]
    rouge = apply_probe(data, scores, ProbeOptions(min_rouge=0.85))
    assert [f.question for f in rouge.forget_perturbed] == ["a1"]
    prob = apply_probe(data, scores, ProbeOptions(min_prob=0.4))
    assert [f.question for f in prob.forget_perturbed] == ["a1", "b1"]
    assert [f.question for f in prob.neighbor] == ["c1"]
    two = apply_probe(data, scores, ProbeOptions(min_questions=2))
    assert [f.question for f in two.forget_perturbed] == ["a1", "a3"]  # B has one
    assert [f.question for f in two.neighbor] == ["c1", "c2"]


def test_probe_that_keeps_no_one_says_so() -> None:
    data, scores = probe_data()
    with pytest.raises(ValueError, match=r"kept no one in forget_perturbed.*min_rouge=0\.95"):
        apply_probe(data, scores, ProbeOptions(min_rouge=0.95))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_rouge": 1.5}, r"probe\.min_rouge must lie in \[0, 1\]"),
        ({"min_prob": -0.1}, r"probe\.min_prob must lie in \[0, 1\]"),
        ({"min_questions": 0}, r"probe\.min_questions must be >= 1"),
    ],
)
def test_probe_options_are_checked(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ProbeOptions(**options)

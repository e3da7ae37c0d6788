"""Configs are checked in full before training: every bad value names its key path."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml

from dualoptim.config import (
    ConfigError,
    from_dict,
    load_config,
    merge,
    new_option,
    parse_overrides,
    quiet_repr,
    read_config,
    to_dict,
)


@dataclass(frozen=True)
class Train:
    epochs: int
    lr: float = 1e-3
    optimizer: Literal["adamw", "sgd"] = "adamw"
    seeds: tuple[int, ...] = (0,)
    clip: float | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")


@dataclass(frozen=True)
class Experiment:
    name: str
    train: Train
    out_dir: Path = Path("results")
    checkpoint: Optional[Path] = None  # noqa: UP045 - typing.Optional must work too
    tags: list[str] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)
    verbose: bool = False


FULL = {
    "name": "sfron",
    "train": {"epochs": 3, "lr": 0.1, "optimizer": "sgd", "seeds": [0, 1], "clip": 1.0},
    "out_dir": "runs/a",
    "checkpoint": "ckpt/model.pt",
    "tags": ["x"],
    "extra": {"beta": 0.5},
    "verbose": True,
}


def test_from_dict_builds_typed_nested_config() -> None:
    config = from_dict(Experiment, FULL)
    assert config.train == Train(epochs=3, lr=0.1, optimizer="sgd", seeds=(0, 1), clip=1.0)
    assert config.out_dir == Path("runs/a")
    assert config.checkpoint == Path("ckpt/model.pt")
    assert config.extra == {"beta": 0.5}


def test_defaults_fill_absent_fields_and_ints_pass_as_floats() -> None:
    config = from_dict(Experiment, {"name": "a", "train": {"epochs": 2, "lr": 1}})
    assert config.train == Train(epochs=2, lr=1.0)
    assert isinstance(config.train.lr, float)
    assert config.out_dir == Path("results")
    assert config.checkpoint is None
    assert config.tags == []


def test_to_dict_is_plain_data_that_round_trips() -> None:
    config = from_dict(Experiment, FULL)
    data = to_dict(config)
    assert data == FULL
    assert json.loads(json.dumps(data)) == data
    assert yaml.safe_load(yaml.safe_dump(data)) == data
    assert from_dict(Experiment, data) == config


def test_parse_overrides_builds_nested_typed_values() -> None:
    overrides = parse_overrides(
        ["train.epochs=3", "name=sfron", "train.seeds=[0,1,2]", "verbose=true", "checkpoint=null"]
    )
    assert overrides == {
        "train": {"epochs": 3, "seeds": [0, 1, 2]},
        "name": "sfron",
        "verbose": True,
        "checkpoint": None,
    }


def test_parse_overrides_reads_exponent_floats_and_later_items_win() -> None:
    assert parse_overrides(["lr=1e-4", "lr=2E-3", "a.b=1", "a=2"]) == {"lr": 2e-3, "a": 2}
    assert parse_overrides(["a=1", "a.b=2"]) == {"a": {"b": 2}}


@pytest.mark.parametrize("item", ["epochs", "=3", "a..b=1"])
def test_parse_overrides_rejects_items_without_a_key(item: str) -> None:
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides([item])


def test_parse_overrides_rejects_invalid_yaml_value() -> None:
    with pytest.raises(ConfigError, match=r"seeds=\[0,1"):
        parse_overrides(["seeds=[0,1"])


def test_merge_is_deep_and_leaves_inputs_alone() -> None:
    base = {"train": {"epochs": 1, "lr": 0.1}, "name": "a", "tags": ["x"]}
    merged = merge(base, {"train": {"epochs": 5}, "tags": ["y"], "verbose": True})
    assert merged == {
        "train": {"epochs": 5, "lr": 0.1},
        "name": "a",
        "tags": ["y"],
        "verbose": True,
    }
    assert base == {"train": {"epochs": 1, "lr": 0.1}, "name": "a", "tags": ["x"]}


RUNS = {"runs": [{"method": "ga", "lr": 1.0}, {"method": "rl", "lr": 2.0, "keep": [1, 2]}]}


def test_a_number_key_overrides_one_item_of_a_list() -> None:
    overrides = parse_overrides(["runs.1.lr=3e-4", "runs.1.keep.0=7"])
    assert merge(RUNS, overrides) == {
        "runs": [{"method": "ga", "lr": 1.0}, {"method": "rl", "lr": 3e-4, "keep": [7, 2]}]
    }
    assert RUNS["runs"][1] == {"method": "rl", "lr": 2.0, "keep": [1, 2]}  # inputs untouched
    assert merge(RUNS, parse_overrides(["runs=[]"])) == {"runs": []}  # a whole list still wins


@pytest.mark.parametrize(
    ("item", "match"),
    [
        ("runs.2.lr=1", r"^runs\[2\]: no such item; runs has 2, numbered from 0$"),
        ("runs.1.keep.5=1", r"^runs\[1\]\.keep\[5\]: no such item; .*keep has 2"),
    ],
)
def test_a_list_item_that_does_not_exist_is_named(item: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        merge(RUNS, parse_overrides([item]))


@dataclass(frozen=True)
class Rate:
    rate: float = 1.0

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"rate.rate must be > 0, got {self.rate}")


@dataclass(frozen=True)
class Nested:
    rate: Rate = field(default_factory=Rate)
    inner: dict[str, Rate] = field(default_factory=dict)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"rate": {"rate": 0}}, r"^rate\.rate must be > 0, got 0\.0$"),  # not "rate: rate.rate"
        ({"inner": {"rate": {"rate": -1}}}, r"^inner\.rate\.rate must be > 0, got -1\.0$"),
    ],
)
def test_a_check_that_names_its_own_section_is_not_prefixed_twice(
    data: dict[str, object], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        from_dict(Nested, data)


def with_train(**train: object) -> dict[str, object]:
    return {"name": "a", "train": {"epochs": 1, **train}}


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (with_train(epochz=3), r"train\.epochz: unknown key; allowed keys: epochs, lr, optimizer"),
        ({"name": "a", "train": {"epochs": 1}, "nmae": 1}, r"^nmae: unknown key.*name, train"),
        (with_train(epochs="ten"), r"train\.epochs: expected int, got 'ten' \(str\)"),
        (with_train(epochs=2.0), r"train\.epochs: expected int, got 2\.0"),
        (with_train(epochs=True), r"train\.epochs: expected int, got True"),
        (with_train(lr="fast"), r"train\.lr: expected float, got 'fast'"),
        (
            with_train(optimizer="adam"),
            r"train\.optimizer: got 'adam'; allowed values: 'adamw', 'sgd'",
        ),
        (with_train(seeds=3), r"train\.seeds: expected tuple\[int, \.\.\.\], got 3"),
        (with_train(seeds=[0, "1"]), r"train\.seeds\[1\]: expected int, got '1'"),
        (with_train(clip="big"), r"train\.clip: expected float, got 'big'"),
        (with_train(epochs=0), r"train: epochs must be >= 1, got 0"),
        ({"name": "a", "train": {}}, r"train\.epochs: missing required key"),
        ({"train": {"epochs": 1}}, r"^name: missing required key"),
        ({"name": "a", "train": 3}, r"train: expected a mapping for Train, got 3"),
        ({**with_train(), "verbose": "yes"}, r"verbose: expected bool, got 'yes'"),
        ({**with_train(), "out_dir": 5}, r"out_dir: expected path \(string\), got 5"),
        ({**with_train(), "tags": ["x", 1]}, r"tags\[1\]: expected str, got 1"),
        ({**with_train(), "extra": {"beta": "hi"}}, r"extra\.beta: expected float, got 'hi'"),
        ({**with_train(), "extra": [1]}, r"extra: expected dict\[str, float\], got \[1\]"),
    ],
)
def test_from_dict_errors_name_the_key_path(data: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        from_dict(Experiment, data)


def test_where_prefixes_error_paths() -> None:
    with pytest.raises(ConfigError, match=r"experiment\.train\.epochs: missing"):
        from_dict(Experiment, {"name": "a", "train": {}}, where="experiment")


def test_load_config_reads_yaml_then_applies_overrides(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("name: base\ntrain:\n  epochs: 2\n  lr: 1e-4\n  seeds: [0, 1]\n")
    config = load_config(Experiment, path, ["train.epochs=5", "tags=[a, b]"])
    assert config.name == "base"
    assert config.train == Train(epochs=5, lr=1e-4, seeds=(0, 1))
    assert config.tags == ["a", "b"]


def test_load_config_without_file_or_from_empty_file_uses_overrides(tmp_path: Path) -> None:
    expected = Experiment(name="a", train=Train(epochs=1))
    assert load_config(Experiment, None, ["name=a", "train.epochs=1"]) == expected
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(Experiment, str(empty), ["name=a", "train.epochs=1"]) == expected


def test_load_config_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read config file"):
        load_config(Experiment, missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: invalid YAML"):
        load_config(Experiment, bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: expected a mapping"):
        load_config(Experiment, listed)


def test_load_config_validates_merged_result(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("name: a\ntrain: {epochs: 1}\n")
    with pytest.raises(ConfigError, match=r"train\.optimizer: .*allowed values: 'adamw', 'sgd'"):
        load_config(Experiment, path, ["train.optimizer=lion"])


@dataclass(frozen=True)
class Unsupported:
    either: int | str = 0


def test_unsupported_field_type_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="either: unsupported config field type"):
        from_dict(Unsupported, {"either": 1})


@pytest.mark.parametrize("empty", ["runs=[]", "seeds=[]"])
def test_every_task_refuses_an_experiment_that_runs_nothing(empty: str) -> None:
    from dualoptim.tasks.diffusion.config import DiffusionExperiment
    from dualoptim.tasks.llm.config import LLMExperiment
    from dualoptim.tasks.vision.config import VisionExperiment

    for experiment in (VisionExperiment, LLMExperiment, DiffusionExperiment):
        with pytest.raises(ConfigError, match=f"{empty.split('=')[0]} is empty"):
            load_config(experiment, None, [empty])


FLOAT_LITERALS = {
    "1e6": 1e6,
    "1.0e6": 1e6,
    "1E-4": 1e-4,
    "-2.5E+3": -2500.0,
    ".5e-3": 5e-4,
    "-.5": -0.5,
    "1_000.5": 1000.5,
    "3.": 3.0,
    "2": 2.0,
}


@pytest.mark.parametrize(("text", "value"), FLOAT_LITERALS.items())
def test_every_float_literal_is_a_float_in_files_and_overrides(
    text: str, value: float, tmp_path: Path
) -> None:
    """YAML 1.1 wants a dot and a signed exponent: plain PyYAML reads 1e6 and 1.0e6 as text."""
    path = tmp_path / "config.yaml"
    path.write_text(f"name: a\ntrain: {{epochs: 1, lr: {text}}}\nextra: {{x: {text}}}\n")
    from_file = load_config(Experiment, path)
    from_override = load_config(Experiment, None, ["name=a", "train.epochs=1", f"train.lr={text}"])
    assert from_file.train.lr == from_override.train.lr == value
    assert from_file.extra == {"x": value}
    assert type(from_file.train.lr) is float


@pytest.mark.parametrize("text", ["10", "-3", "0", "1_000"])
def test_integers_stay_integers(text: str) -> None:
    assert type(parse_overrides([f"a={text}"])["a"]) is int


def test_a_quoted_number_is_a_number_and_anything_else_is_refused() -> None:
    assert load_config(Experiment, None, ["name=a", "train.epochs=1", "train.lr='1.0e6'"]) == (
        Experiment(name="a", train=Train(epochs=1, lr=1e6))
    )
    for text in ("abc", "1e", "1.2.3", "nan"):
        with pytest.raises(ConfigError, match=rf"train\.lr: expected float, got '{text}' \(str\)"):
            load_config(Experiment, None, ["name=a", "train.epochs=1", f"train.lr='{text}'"])


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", r"a binary file, not a YAML config"),
        ("name: caf\u00e9\n".encode("latin-1"), r"not UTF-8 text \(byte 0xe9 at offset 9\)"),
        (b"train: [1, 2\nname: a\n", r"invalid YAML: .* at line \d+, column \d+$"),
        (b"name: a\n  train: 1\n", r"invalid YAML: mapping values are not allowed here at line 2"),
        (b"- 1\n- 2\n", r"expected a mapping of keys at the top level, got a list"),
        (b"just text\n", r"expected a mapping of keys at the top level, got a str"),
    ],
)
def test_an_unreadable_config_file_is_one_line_naming_the_file(
    content: bytes, match: str, tmp_path: Path
) -> None:
    path = tmp_path / "garbage.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        read_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    assert re.search(match, message), message


def test_an_invalid_override_value_is_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_overrides(["runs=[{method: rl"])
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("override 'runs=[{method: rl': invalid YAML value: ")


def test_a_fixed_length_tuple_reads_from_a_yaml_list_and_refuses_another_length() -> None:
    """Adam's betas: an LLM run's ``betas: [0.9, 0.99]`` from a file or an override."""
    from dualoptim.tasks.llm.config import LLMExperiment

    def runs(betas: str) -> list[str]:
        return [f"runs=[{{method: me+gd, setting: dual, betas: {betas}}}]"]

    exp = load_config(LLMExperiment, None, runs("[0.9, 0.99]"))
    assert exp.runs[0].betas == (0.9, 0.99)
    assert isinstance(exp.runs[0].betas, tuple)
    with pytest.raises(ConfigError, match=r"runs\[0\]\.betas: expected a list of 2"):
        load_config(LLMExperiment, None, runs("[0.9, 0.99, 0.5]"))
    with pytest.raises(ConfigError, match=r"runs\[0\]\.betas\[1\]: expected float, got 'x'"):
        load_config(LLMExperiment, None, runs("[0.9, x]"))


@dataclass(frozen=True)
class Run:
    """A run spec as it was before ``per_phase`` existed."""

    lr: float = 0.1
    clip: float | None = None


@dataclass(frozen=True)
class RunLater:
    """The same spec after ``per_phase`` was added (what record ids hash is its repr)."""

    lr: float = 0.1
    clip: float | None = None
    per_phase: bool | None = new_option()

    __repr__ = quiet_repr


def test_a_new_option_stays_out_of_reprs_and_records_while_unset() -> None:
    # unset: the repr and the record of the spec as it was, so record ids do not change
    assert (
        repr(RunLater())
        == repr(Run()).replace("Run(", "RunLater(")
        == "RunLater(lr=0.1, clip=None)"
    )
    assert to_dict(RunLater()) == to_dict(Run()) == {"lr": 0.1, "clip": None}
    # set (to either value): in both, and read back
    assert repr(RunLater(per_phase=False)) == "RunLater(lr=0.1, clip=None, per_phase=False)"
    assert to_dict(RunLater(per_phase=True)) == {"lr": 0.1, "clip": None, "per_phase": True}
    for run in (RunLater(), RunLater(per_phase=False), RunLater(per_phase=True)):
        assert from_dict(RunLater, to_dict(run)) == run

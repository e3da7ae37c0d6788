"""Typed configs: frozen dataclasses built from YAML files plus ``key=value`` overrides.

The whole configuration is checked before any training starts, so a typo or a wrong value fails
at once with an error that names the key path (``train.epochs``) and what would be allowed,
instead of hours later or never.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")

__all__ = [
    "ConfigError",
    "from_dict",
    "load_config",
    "merge",
    "new_option",
    "parse_overrides",
    "quiet_repr",
    "read_config",
    "require_runs_and_seeds",
    "to_dict",
]


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names the key path."""


#: A number literal: 10, 1.5, 1., .5, 1e6, 1.0e6, 1E-4, -2.5E+3, .5e-3, 1_000.5.
_NUMBER = r"[-+]?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?"
#: A float literal: a number with a dot or an exponent (so that integers stay ints).
_FLOAT = re.compile(rf"^(?=.*[.eE]){_NUMBER}$")


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads every float literal as a float. YAML 1.1 wants a dot and a signed
    exponent (``1.0e-4``), so plain SafeLoader reads ``1e-4`` and ``1.0e6`` as strings."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+.0123456789"))


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # safe: _Loader is a SafeLoader


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (PyYAML's own text spans lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


def _join(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def _wrong(where: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{where}: expected {expected}, got {value!r} ({type(value).__name__})")


def _convert(tp: Any, value: Any, where: str) -> Any:
    """``value`` checked against (and, for Path, float and containers, converted to) ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return value if isinstance(value, tp) else from_dict(tp, value, where=where)
    if origin is Literal:
        # bool is an int: match the type too, so True does not pass for Literal[1]
        if any(value == a and type(value) is type(a) for a in args):
            return value
        allowed = ", ".join(repr(a) for a in args)
        raise ConfigError(f"{where}: got {value!r}; allowed values: {allowed}")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:  # Optional[X]; wider unions would make error messages guesswork
            return _convert(members[0], value, where)
    if origin is list or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        if not isinstance(value, list | tuple):
            raise _wrong(where, _type_name(tp), value)
        items = [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is tuple:  # fixed length, e.g. Adam's betas: tuple[float, float]
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise _wrong(where, f"a list of {len(args)} ({_type_name(tp)})", value)
        return tuple(
            _convert(a, v, f"{where}[{i}]")
            for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _wrong(where, _type_name(tp), value)
        key_type, value_type = args
        return {
            _convert(key_type, k, _join(where, k)): _convert(value_type, v, _join(where, k))
            for k, v in value.items()
        }
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and re.fullmatch(_NUMBER, value):  # quoted: "1e-4"
            return float(value.replace("_", ""))
        raise _wrong(where, "float", value)
    if tp is Path:
        if isinstance(value, str | Path):
            return Path(value)
        raise _wrong(where, "path (string)", value)
    if tp in (int, bool, str):
        # type() rather than isinstance(): bool is an int, but True is not a valid epoch count
        if type(value) is tp:
            return value
        raise _wrong(where, tp.__name__, value)
    raise TypeError(f"{where}: unsupported config field type {tp!r}")


def from_dict(cls: type[T], data: Mapping[str, Any], *, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, checking every key and value against its fields.

    ``where`` is the key path of ``data`` inside the whole config, used to prefix error messages.
    """
    if not isinstance(data, Mapping):
        raise _wrong(where or cls.__name__, f"a mapping for {cls.__name__}", data)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        allowed = ", ".join(fields)
        raise ConfigError(f"{_join(where, unknown[0])}: unknown key; allowed keys: {allowed}")
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], _join(where, name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{_join(where, name)}: missing required key")
    try:
        return cls(**kwargs)
    except ValueError as exc:  # a __post_init__ check: point at the config section it came from
        raise ConfigError(_in_section(where or cls.__name__, str(exc))) from exc


def _in_section(where: str, message: str) -> str:
    """``train: epochs must be >= 1``; a message that names its own section's keys
    (``train.lr must be > 0``) gets the section's parents only, not the section twice."""
    parent, _, section = where.rpartition(".")
    if message.startswith(f"{section}."):
        return _join(parent, message)
    return f"{where}: {message}"


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Turn command-line ``a.b=value`` items into a nested dict; values are read as YAML.

    So ``seeds=[0,1]``, ``flag=true``, ``x=null`` and ``lr=1e-4`` get their natural types.
    Later items win over earlier ones.
    """
    result: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"override {item!r}: expected key=value (key may be dotted: a.b=1)")
        try:
            value = _load_yaml(text)
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"override {item!r}: invalid YAML value: {_yaml_problem(exc)}"
            ) from exc
        node = result
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return result


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base``: nested sections merge, a number key
    changes one item of a list (``runs.1.forget_lr=1e-4``), other values win."""
    result = dict(base)
    for key, value in overrides.items():
        result[key] = _merged(result.get(key), value, _join(where, key))
    return result


def _merged(old: Any, new: Any, where: str) -> Any:
    if isinstance(new, Mapping) and isinstance(old, Mapping):
        return merge(old, new, where)
    is_index = isinstance(new, Mapping) and new and all(str(key).isdigit() for key in new)
    if is_index and isinstance(old, list):
        items = list(old)
        for key, value in new.items():
            index = int(key)
            if index >= len(items):
                raise ConfigError(
                    f"{where}[{index}]: no such item; {where} has {len(items)}, numbered from 0"
                )
            items[index] = _merged(items[index], value, f"{where}[{index}]")
        return items
    return new


def read_config(path: str | Path) -> dict[str, Any]:
    """The mapping in the YAML file at ``path`` (empty for an empty file); read once, and
    every way it can be unreadable (missing, binary, not UTF-8, bad YAML, not a mapping) is a
    ConfigError naming the file."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from exc
    if b"\0" in raw:
        raise ConfigError(f"{path}: a binary file, not a YAML config")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start}); "
            "save the config as UTF-8"
        ) from exc
    try:
        data = _load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {_yaml_problem(exc)}") from exc
    if data is None:  # an empty file: all defaults
        return {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got a {kind}")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Read the YAML file at ``path`` (if any), apply ``overrides`` and build a checked ``cls``."""
    data = read_config(path) if path is not None else {}
    return from_dict(cls, merge(data, parse_overrides(overrides)))


def require_runs_and_seeds(runs: Sequence[Any], seeds: Sequence[int]) -> None:
    """Refuse, when the config loads, an experiment that would run nothing, or two runs
    that one table row would mix (a row is a label at one η_f)."""
    if not runs:
        raise ConfigError("runs is empty: name at least one method and setting")
    if not seeds:
        raise ConfigError("seeds is empty")
    repeated = sorted(seed for seed, times in Counter(seeds).items() if times > 1)
    if repeated:
        raise ConfigError(
            f"seeds repeats {', '.join(map(str, repeated))}: a seed is one run, and a repeat "
            "would count that run twice in every mean ± std and paired claim"
        )
    rows: dict[tuple[str, float], int] = {}
    for i, run in enumerate(runs):
        first = rows.setdefault((run.label, run.effective_forget_lr), i)
        if first != i:
            raise ConfigError(
                f"runs[{first}] and runs[{i}] are both {run.label!r} at η_f "
                f"{run.effective_forget_lr:g}: one table row would average their seeds "
                "together; remove one, or run them as two experiments"
            )


#: The field metadata key of :func:`new_option`.
_NEW_OPTION = "dualoptim.new_option"


def new_option() -> Any:
    """A dataclass field for an option added after records existed, None by default. While
    it is None it stays out of ``to_dict`` (records) and, with ``__repr__ = quiet_repr`` in
    the class body, out of the repr that record ids hash: configs that leave it unset keep
    their record ids and read as one experiment with the records made before it."""
    return dataclasses.field(default=None, metadata={_NEW_OPTION: True})


def _shown(config: Any, field: dataclasses.Field) -> bool:
    return not (field.metadata.get(_NEW_OPTION) and getattr(config, field.name) is None)


def quiet_repr(self: Any) -> str:
    """The dataclass's own repr without its unset :func:`new_option` fields."""
    shown = [f for f in dataclasses.fields(self) if f.repr and _shown(self, f)]
    items = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in shown)
    return f"{type(self).__qualname__}({items})"


def to_dict(config: Any) -> dict[str, Any]:
    """``config`` as plain JSON/YAML-able data for records; from_dict reads it back."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"to_dict needs a dataclass instance, got {config!r}")
    return _plain(config)


def _plain(value: Any) -> Any:
    """Paths become str and tuples lists: JSON and safe YAML have neither; an unset
    :func:`new_option` is left out."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.init and _shown(value, f)
        }
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value

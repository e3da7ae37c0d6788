"""Named entries of one kind (a task's methods, the LLM losses), each registered by the module
that defines it: adding one is one file in the registry's package, listed nowhere else."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Generic, Protocol, TypeVar


class Named(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=Named)


class Registry(Generic[T]):
    """The entries registered under ``package``. Every module of that package is imported on
    the first lookup, so its built-in entries are there whatever was imported before; an
    entry defined elsewhere (a test, a user's module) registers when its module runs."""

    def __init__(self, kind: str, package: str) -> None:
        self.kind, self.package = kind, package
        self.entries: dict[str, T] = {}
        self._loaded = False

    def register(self, entry: T) -> T:
        """Make ``entry`` available under its name; a name is registered once."""
        if entry.name in self.entries:
            raise ValueError(f"a {self.kind} named {entry.name!r} is already registered")
        self.entries[entry.name] = entry
        return entry

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in pkgutil.iter_modules(importlib.import_module(self.package).__path__):
                importlib.import_module(f"{self.package}.{module.name}")

    def values(self) -> list[T]:
        self._load()
        return list(self.entries.values())

    def names(self) -> tuple[str, ...]:
        """The registered names, sorted."""
        return tuple(sorted(e.name for e in self.values()))

    def find(self, name: str) -> T | None:
        self._load()
        return self.entries.get(name)

    def get(self, name: str) -> T:
        """The entry registered as ``name``; an unknown name is a ValueError listing them."""
        entry = self.find(name)
        if entry is None:
            where = self.package.replace(".", "/")
            raise ValueError(
                f"unknown {self.kind} {name!r}: registered are {', '.join(self.names())} "
                f"(a {self.kind} registers itself in a module of {where}/)"
            )
        return entry

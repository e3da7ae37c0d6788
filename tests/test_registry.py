"""The registry every method table uses: an entry per module, found on the first lookup."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest


def make_package(root: Path) -> None:
    """A package whose two modules each register one widget, and that lists neither."""
    package = root / "widgets"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from dataclasses import dataclass\n"
        "from dualoptim.registry import Registry\n"
        "@dataclass(frozen=True)\n"
        "class Widget:\n"
        "    name: str\n"
        "REGISTRY = Registry('widget', __name__)\n"
    )
    for name in ("bolt", "anchor"):
        (package / f"{name}.py").write_text(
            f"from widgets import REGISTRY, Widget\nREGISTRY.register(Widget({name!r}))\n"
        )


def test_modules_register_themselves_on_the_first_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    widgets = importlib.import_module("widgets")
    assert widgets.REGISTRY.entries == {}  # nothing imported yet
    assert widgets.REGISTRY.names() == ("anchor", "bolt")
    assert widgets.REGISTRY.get("bolt").name == "bolt"
    assert widgets.REGISTRY.find("nut") is None
    with pytest.raises(ValueError, match=r"unknown widget 'nut': registered are anchor, bolt \("):
        widgets.REGISTRY.get("nut")
    with pytest.raises(ValueError, match="a widget named 'bolt' is already registered"):
        widgets.REGISTRY.register(widgets.Widget("bolt"))
    added = widgets.REGISTRY.register(widgets.Widget("nut"))  # from outside the package
    assert widgets.REGISTRY.get("nut") is added

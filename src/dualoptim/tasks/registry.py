"""The tasks a config's ``task:`` can name. A built-in task is imported only when a config of
it loads (the LLM and diffusion tasks bring transformers and diffusers, which a
classification command never needs); a task of your own registers with :func:`register`."""

from __future__ import annotations

import importlib

from dualoptim.config import ConfigError
from dualoptim.unlearn.task import Task

#: The built-in tasks: each module defines ``TASK``.
BUILT_IN = {
    "vision": "dualoptim.tasks.vision.task",
    "llm": "dualoptim.tasks.llm.task",
    "diffusion": "dualoptim.tasks.diffusion.task",
    "realworld": "dualoptim.tasks.llm.realworld.task",
    "safety": "dualoptim.tasks.llm.safety.task",
}
_registered: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Make ``task`` available as ``task: <its name>``; a name is registered once."""
    if task.name in BUILT_IN or task.name in _registered:
        raise ValueError(f"a task named {task.name!r} is already registered")
    _registered[task.name] = task
    return task


def unregister(name: str) -> None:
    """Remove a task registered with :func:`register` (a test's, a notebook's)."""
    _registered.pop(name, None)


def names() -> tuple[str, ...]:
    return (*BUILT_IN, *sorted(_registered))


def get(name: str) -> Task:
    """The task named ``name``; an unknown name is a ConfigError listing the known ones."""
    if name in BUILT_IN:
        return importlib.import_module(BUILT_IN[name]).TASK
    if name in _registered:
        return _registered[name]
    allowed = ", ".join(repr(t) for t in names())
    raise ConfigError(f"task: got {name!r}; allowed values: {allowed}")

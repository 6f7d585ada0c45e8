"""Task types, registered by peft ``TaskType`` name: ``dataset.task=<NAME>`` picks one.

A new task type is one module here with a :class:`Task` subclass decorated with
:func:`register`, plus a dataset preset that names it; see README "Adding a task".
"""

from __future__ import annotations

from ptexp.errors import ConfigError, closest
from ptexp.tasks.base import Task

TASKS: dict[str, Task] = {}


def register(cls: type[Task]) -> type[Task]:
    TASKS[cls.name] = cls()
    return cls


def get_task(name: str) -> Task:
    _load_all()
    if name not in TASKS:
        raise ConfigError(
            f"dataset.task='{name}' is not a task type ptexp implements; closest: {closest(name, TASKS)}. "
            f"Task types: {', '.join(sorted(TASKS))}."
        )
    return TASKS[name]


def all_tasks() -> dict[str, Task]:
    _load_all()
    return dict(TASKS)


def _load_all() -> None:
    # Importing each module registers its task; they import transformers/torch lazily.
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        if module.name != "base" and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


__all__ = ["TASKS", "Task", "all_tasks", "get_task", "register"]

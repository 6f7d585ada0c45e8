"""Task types. A new task (CAUSAL_LM, TOKEN_CLS, ...) is one module with a `Task` subclass
registered here; the run loop only talks to the `Task` interface."""

from __future__ import annotations

from ptexp.errors import ConfigError
from ptexp.tasks.base import Task
from ptexp.tasks.seq_cls import SequenceClassification

TASKS: dict[str, type[Task]] = {"SEQ_CLS": SequenceClassification}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError(f"dataset.task='{name}' is not implemented; available: {sorted(TASKS)}.")
    return TASKS[name]()


__all__ = ["TASKS", "Task", "get_task"]

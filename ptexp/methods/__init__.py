"""Training methods, registered by name: ``method=<name>`` picks one (``conf/method/<name>.yaml``).

A new method is one module here with a :class:`Method` subclass decorated with
:func:`register`, plus its yaml; see README "Adding a method".
"""

from __future__ import annotations

from ptexp.errors import ConfigError, closest
from ptexp.methods.base import Method

METHODS: dict[str, Method] = {}


def register(cls: type[Method]) -> type[Method]:
    METHODS[cls.name] = cls()
    return cls


def get_method(name: str) -> Method:
    _load_all()
    if name not in METHODS:
        raise ConfigError(
            f"method.name='{name}' is not a registered method; closest: {closest(name, METHODS)}. "
            f"Methods: {', '.join(sorted(METHODS))}."
        )
    return METHODS[name]


def all_methods() -> dict[str, Method]:
    _load_all()
    return dict(METHODS)


def _load_all() -> None:
    # Importing each module registers its method; they import torch/peft lazily.
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")


__all__ = ["METHODS", "Method", "all_methods", "get_method", "register"]

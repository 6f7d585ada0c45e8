"""Folder names for runs and sweeps, and the OmegaConf resolvers the configs use for them.

Importing this module registers the resolvers (``ptexp_slug``, ``ptexp_or_now``,
``ptexp_parent_dir``); the Hydra entry point and anything composing ``conf/train.yaml``
imports it.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf


def slug(text: str, limit: int = 80) -> str:
    """A folder-safe name for a list of overrides; long ones keep a readable head plus a hash."""
    if not text:
        return "default"
    safe = re.sub(r"[^A-Za-z0-9=,._+-]+", "_", text)
    if len(safe) <= limit:
        return safe
    return f"{safe[: limit - 13]}_{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def or_now(name: str | None) -> str:
    """A sweep's folder name: its ``sweep_name``, else the launch time."""
    return name or datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def parent_dir(path: str) -> str:
    """A file path whose folder exists (sqlite cannot create folders for an Optuna study)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return path


def register_resolvers() -> None:
    for name, fn in (("ptexp_slug", slug), ("ptexp_or_now", or_now), ("ptexp_parent_dir", parent_dir)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=True)


register_resolvers()

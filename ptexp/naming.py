"""Folder names for runs and sweeps, and the OmegaConf resolvers the configs use for them.

Importing this module registers the resolvers (``ptexp_slug``, ``ptexp_run_slug``, ``ptexp_or_now``,
``ptexp_parent_dir``, ``ptexp_search_tag``, ``ptexp_direction``); the Hydra entry point, the sweeper plugin and
anything composing ``conf/train.yaml`` import it.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def slug(text: str, limit: int = 80) -> str:
    """A folder-safe name for a list of overrides; long ones keep a readable head plus a hash."""
    if not text:
        return "default"
    safe = re.sub(r"[^A-Za-z0-9=,._+-]+", "_", text)
    if len(safe) <= limit:
        return safe
    return f"{safe[: limit - 13]}_{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def run_slug(overrides: str, limit: int = 80) -> str:
    """A single run's folder name from its overrides, keys without their group
    (``label_column=label,method=lora``): the values are what tells runs apart."""
    short = re.sub(r"(^|,)[+~]*(?:[A-Za-z_][\w-]*\.)+([A-Za-z_][\w-]*=)", r"\1\2", overrides)
    return slug(short, limit)


def or_now(name: str | None) -> str:
    """A sweep's folder name: its ``sweep_name``, else the launch time."""
    return name or datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def parent_dir(path: str) -> str:
    """A file path whose folder exists (sqlite cannot create folders for an Optuna study)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return path


def search_tag(dataset: DictConfig, model: DictConfig) -> str:
    """``<data>_<model>`` for a default sweep name: the dataset's name (plus subset) or its train
    file's folder and stem, and the model's last path component, so that a search on other data
    or another model gets another folder (and another Optuna study) by default."""

    def get(node: DictConfig, key: str) -> Any:
        return OmegaConf.select(node, key, throw_on_missing=False)

    name, subset, train = get(dataset, "name"), get(dataset, "subset"), get(dataset, "train_file")
    if name:
        data = str(name).rstrip("/").rsplit("/", 1)[-1] + (f"-{subset}" if subset else "")
    elif train:
        path = Path(str(train))
        data = f"{path.parent.name}-{path.stem}" if path.parent.name else path.stem
    else:
        data = str(get(dataset, "source") or "data")
    model_path = str(get(model, "name_or_path") or "model")
    model_name = Path(model_path.split(":", 1)[-1].rstrip("/")).name or model_path
    return slug(f"{data}_{model_name}", limit=60)


def direction(metric: str | None, task: str | None = None) -> str:
    """Optuna's direction for a run's selection metric (``trainer.metric_for_best_model``, else
    the task's default): the runs return its validation value."""
    from ptexp.experiment import greater_is_better, selection_metric

    chosen = selection_metric({"trainer": {"metric_for_best_model": metric}, "dataset": {"task": task}})
    return "maximize" if greater_is_better(chosen) else "minimize"


def source_file(relative: str) -> str:
    """A data file shipped in the source checkout (``tests/data/...``), found from any working
    directory when ptexp runs from that checkout (``pip install -e .``); else the path as given,
    read relative to the working directory."""
    checkout = Path(__file__).resolve().parent.parent / relative
    return str(checkout) if checkout.exists() else relative


def register_resolvers() -> None:
    resolvers = {
        "ptexp_source_file": (source_file, True),
        "ptexp_slug": (slug, True),
        "ptexp_run_slug": (run_slug, True),
        "ptexp_or_now": (or_now, True),
        "ptexp_parent_dir": (parent_dir, True),
        "ptexp_search_tag": (search_tag, False),
        "ptexp_direction": (direction, False),
    }
    for name, (fn, cached) in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=cached)


register_resolvers()

"""What an experiment is: the config keys that change its result, and the metric that picks
its best epoch. Run, sweep, report and the CLI all ask this module, so they agree."""

from __future__ import annotations

from typing import Any

#: Root keys that never change a run's result: two jobs differing only here are one experiment.
NON_EXPERIMENT_KEYS = (
    "logger",
    "paths",
    "run_name",
    "sweep_name",
    "num_threads",
    "save_predictions",
    "keep_checkpoints",
    "hydra",
)
#: The training method of a run whose config names none (runs from before methods existed).
DEFAULT_METHOD = "p_tuning"
#: The metric a run selects its best epoch by when the trainer config names none.
DEFAULT_METRIC = "accuracy"
METRICS = ("accuracy", "macro_f1", "loss")


def selection_metric(cfg: Any) -> str:
    """The validation metric this run selects its epoch by (``accuracy``, ``macro_f1``, ``loss``)."""
    trainer = cfg.get("trainer") or {}
    return str(trainer.get("metric_for_best_model") or DEFAULT_METRIC).removeprefix("eval_")


def greater_is_better(metric: str) -> bool:
    return metric.removeprefix("eval_") != "loss"

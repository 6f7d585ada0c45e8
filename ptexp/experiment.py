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
#: The metric of a run whose config names no task (runs from before task types existed).
DEFAULT_METRIC = "accuracy"


def task_name(cfg: Any) -> str:
    dataset = cfg.get("dataset") or {}
    return str(dataset.get("task") or "SEQ_CLS")


def selection_metric(cfg: Any) -> str:
    """The validation metric this run selects its epoch by: ``trainer.metric_for_best_model``,
    else its task's default (accuracy for classification)."""
    from ptexp.tasks import get_task

    trainer = cfg.get("trainer") or {}
    chosen = trainer.get("metric_for_best_model")
    if chosen:
        return str(chosen).removeprefix("eval_")
    try:
        return get_task(task_name(cfg)).default_metric_for(cfg)
    except Exception:  # a run folder of a task this install lacks: the pre-task default
        return DEFAULT_METRIC


def greater_is_better(metric: str) -> bool:
    from ptexp.tasks.base import Task

    return Task.greater_is_better(metric)


def with_selection_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """A resolved config with the selection metric and its direction filled in where the
    trainer group leaves them null (the task's default): a run that names the default metric
    and one that leaves it to the task are the same experiment (and runs from before the
    presets left it null compare equal to today's)."""
    from ptexp.validate import PTEXP_TRAINER_KEYS

    trainer = data.get("trainer")
    if isinstance(trainer, dict):
        for key in PTEXP_TRAINER_KEYS:
            if key in trainer and trainer[key] is None:
                trainer.pop(key)  # null switches it off, as leaving it out does
        metric = selection_metric(data)
        trainer["metric_for_best_model"] = metric
        if trainer.get("greater_is_better") is None:
            trainer["greater_is_better"] = greater_is_better(metric)
    return data

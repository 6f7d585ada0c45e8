"""The task-type registry and the checks every task shares (before any data or model loads)."""

from __future__ import annotations

import pytest

from ptexp.errors import ConfigError
from ptexp.experiment import selection_metric
from ptexp.tasks import all_tasks, get_task
from ptexp.validate import check_run
from tests.conftest import compose_cfg


def test_a_misspelt_task_names_the_closest_and_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"dataset.task='SEQ_CLSS'.*closest: SEQ_CLS.*Task types: .*SEQ_CLS"):
        get_task("SEQ_CLSS")


def test_every_registered_task_declares_what_the_run_needs() -> None:
    tasks = all_tasks()
    assert "SEQ_CLS" in tasks
    for name, task in tasks.items():
        assert task.name == name == task.peft_task_type
        assert task.default_metric in task.selectable_metrics()
        assert "loss" in task.selectable_metrics()


def test_unknown_task_option_is_named() -> None:
    cfg = compose_cfg(["+dataset.task_options.label_words={a: b}"])
    with pytest.raises(ConfigError, match=r"dataset.task_options.label_words is not an option of dataset.task=SEQ_CLS"):
        check_run(cfg)


def test_selection_metric_must_be_one_the_task_computes() -> None:
    cfg = compose_cfg(["trainer.metric_for_best_model=rougeL"])
    with pytest.raises(ConfigError, match=r"'rougeL' is not a metric dataset.task=SEQ_CLS computes.*macro_f1"):
        check_run(cfg)


def test_selection_metric_defaults_to_the_task_s() -> None:
    cfg = compose_cfg()
    assert cfg.trainer.metric_for_best_model is None
    assert selection_metric(cfg) == "accuracy"
    args, _ = check_run(cfg)
    assert args.metric_for_best_model == "accuracy" and args.greater_is_better is True
    args, _ = check_run(compose_cfg(["trainer.metric_for_best_model=loss"]))
    assert args.metric_for_best_model == "loss" and args.greater_is_better is False


def test_leaving_the_metric_to_the_task_is_the_same_experiment_as_naming_it() -> None:
    """Presets leave trainer.metric_for_best_model null (the task's default); a sweep folder
    whose jobs named accuracy (older presets) must still be recognised as the same experiment."""
    from ptexp.sweep import experiment_config

    named = compose_cfg(["trainer.metric_for_best_model=accuracy", "trainer.greater_is_better=true"])
    assert experiment_config(compose_cfg()) == experiment_config(named)
    assert experiment_config(compose_cfg(["trainer.metric_for_best_model=loss"])) != experiment_config(named)


def test_a_generation_mode_selects_by_its_own_metric() -> None:
    """The sweep's progress line and an Optuna direction read the selection metric of the run's
    task options, not the task's class default."""
    from ptexp.naming import direction

    generate = {"dataset": {"task": "CAUSAL_LM", "task_options": {"mode": "generate"}}, "trainer": {}}
    assert selection_metric(generate) == "rougeL"
    assert selection_metric({"dataset": {"task": "CAUSAL_LM"}, "trainer": {}}) == "accuracy"
    assert direction(None, "SEQ_2_SEQ_LM") == "maximize" and direction("perplexity", "CAUSAL_LM") == "minimize"


def test_presets_find_their_shipped_files_from_any_directory(tmp_path, monkeypatch) -> None:
    from pathlib import Path

    monkeypatch.chdir(tmp_path)
    for preset in ("wnut17", "commongen"):
        dataset = compose_cfg([f"dataset={preset}"]).dataset
        for key in ("train_file", "validation_file", "test_file"):
            assert Path(dataset[key]).is_absolute() and Path(dataset[key]).is_file(), (preset, key)

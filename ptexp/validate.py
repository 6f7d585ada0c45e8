"""Semantic checks that types alone cannot express, run before any model is loaded."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ptexp.errors import ConfigError, closest
from ptexp.experiment import greater_is_better

log = logging.getLogger(__name__)

LOGGER_BACKENDS = ("wandb", "none")
WANDB_MODES = ("offline", "online", "disabled")
# TrainingArguments that ptexp derives from the run itself; the hint says where they come from.
RESERVED_TRAINER_KEYS = {
    "output_dir": "it is <run dir>/checkpoints; move runs with paths.root=...",
    "report_to": "choose logger=wandb or logger=none",
    "run_name": "set run_name=... or logger.name=...",
    "seed": "set the root key seed=...",
    "data_seed": "set the root key seed=...",
}
# ptexp's own trainer keys (no TrainingArguments field): validated here, dropped before
# TrainingArguments is built, read by ptexp.run.
PTEXP_TRAINER_KEYS = {
    "early_stopping_patience": "stop once the validation selection metric has not improved for this many "
    "evaluations (the best epoch is still restored); null = train every epoch",
    "min_train_steps": "train at least this many optimizer steps: num_train_epochs is raised to the whole "
    "number of epochs that reaches it on the run's training set (small datasets get more epochs); null = off",
}
# Fields older transformers had (and most tutorials still use), with their transformers-5 spelling.
RENAMED_TRAINER_KEYS = {
    "evaluation_strategy": "eval_strategy",
    "warmup_ratio": "warmup_steps (a float below 1 is read as a ratio)",
    "group_by_length": "train_sampling_strategy=group_by_length",
    "no_cuda": "use_cpu",
}


def check_logger(logger_cfg: DictConfig) -> None:
    if logger_cfg.backend not in LOGGER_BACKENDS:
        raise ConfigError(f"logger.backend='{logger_cfg.backend}' is not valid; choose one of {list(LOGGER_BACKENDS)}.")
    if logger_cfg.backend == "wandb" and logger_cfg.mode not in WANDB_MODES:
        raise ConfigError(f"logger.mode='{logger_cfg.mode}' is not valid; choose one of {list(WANDB_MODES)}.")


def _training_fields() -> dict[str, dataclasses.Field]:
    from transformers import TrainingArguments

    return {f.name: f for f in dataclasses.fields(TrainingArguments) if f.init}


def trainer_kwargs(trainer_cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The trainer group as TrainingArguments kwargs; unknown keys and wrong types are errors."""
    args = (
        OmegaConf.to_container(trainer_cfg, resolve=True) if isinstance(trainer_cfg, DictConfig) else dict(trainer_cfg)
    )
    fields = _training_fields()
    for key, value in args.items():
        if key in PTEXP_TRAINER_KEYS:  # each a count: a positive integer, or null for off
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(
                    f"trainer.{key}={value!r} must be a positive integer or null; it means: {PTEXP_TRAINER_KEYS[key]}."
                )
            continue
        if key in RESERVED_TRAINER_KEYS:
            raise ConfigError(f"trainer.{key} is set by ptexp: {RESERVED_TRAINER_KEYS[key]}.")
        if key in RENAMED_TRAINER_KEYS and key not in fields:
            raise ConfigError(
                f"trainer.{key} is not a TrainingArguments field in this transformers version; "
                f"use trainer.{RENAMED_TRAINER_KEYS[key]}."
            )
        if key not in fields:
            raise ConfigError(
                f"trainer.{key} is not a transformers.TrainingArguments field; closest valid fields: "
                f"{closest(key, fields)}. See TrainingArguments' documentation for the full list."
            )
        default = fields[key].default
        choices = fields[key].metadata.get("choices")
        if choices and value is not None and str(value) not in [str(c) for c in choices]:
            raise ConfigError(f"trainer.{key}={value!r} is not valid; choose one of {list(choices)}.")
        numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"trainer.{key}={value!r} must be true or false.")
        if numeric and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"trainer.{key}={value!r} must be a number (default {default}).")
    return args


def restores_best_epoch(args: Mapping[str, Any]) -> bool:
    """ptexp's best-epoch rule, switched by the Trainer's own key (on unless set to false):
    the Trainer's implementation fails on P-tuning models (peft#2256), so ptexp restores the
    best epoch's trainable weights itself."""
    return bool(args.get("load_best_model_at_end", True))


def effective_trainer_args(args: dict[str, Any], default_metric: str = "accuracy") -> dict[str, Any]:
    """The trainer group as given, plus what P-tuning, CPU and distributed CPU runs need
    (``default_metric``: the task's, when the group names no selection metric)."""
    import os

    import torch

    kwargs = dict(args)
    kwargs.pop("load_best_model_at_end", None)  # ptexp's own rule: restores_best_epoch
    for key in PTEXP_TRAINER_KEYS:
        kwargs.pop(key, None)
    if kwargs.get("metric_for_best_model") is None:
        kwargs["metric_for_best_model"] = default_metric
    if kwargs.get("greater_is_better") is None:
        kwargs["greater_is_better"] = greater_is_better(str(kwargs["metric_for_best_model"]))
    # transformers 5 doubles the loss under DDP otherwise (average_tokens_across_devices).
    kwargs.setdefault("average_tokens_across_devices", False)
    kwargs.setdefault("ddp_find_unused_parameters", False)
    if not torch.cuda.is_available():
        # Pinned memory needs an accelerator; on CPU it only prints a warning per loader.
        kwargs["dataloader_pin_memory"] = False
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # accelerate only treats a multi-process CPU run as distributed (DDP) with use_cpu.
            kwargs.setdefault("use_cpu", True)
    return kwargs


def check_trainer(trainer_cfg: DictConfig | dict[str, Any], default_metric: str = "accuracy", **fixed: Any) -> Any:
    """The run's ``TrainingArguments``, built once. ``fixed`` are the fields ptexp derives from
    the run (output_dir, report_to, run_name, seed); TrainingArguments' own ``__post_init__``
    judges enum values and combinations, and its errors are turned into ConfigErrors."""
    import tempfile

    from transformers import TrainingArguments

    given = trainer_kwargs(trainer_cfg)
    kwargs = effective_trainer_args(given, default_metric)
    fixed = {"output_dir": tempfile.gettempdir(), "report_to": "none", **fixed}
    try:
        args = TrainingArguments(**fixed, **kwargs)
    except (ValueError, TypeError) as err:
        message = str(err).strip().splitlines()[0]
        # Name the offending key when the message quotes its value.
        keys = [f"trainer.{k}={v}" for k, v in kwargs.items() if k in message or (isinstance(v, str) and v in message)]
        where = ", ".join(keys) if keys else "the trainer.* keys"
        raise ConfigError(f"{where}: {message}") from None
    if given.get("early_stopping_patience") is not None and str(args.eval_strategy) in ("no", "IntervalStrategy.NO"):
        raise ConfigError(
            f"trainer.early_stopping_patience={given['early_stopping_patience']} counts evaluations, but "
            "trainer.eval_strategy=no evaluates never: set trainer.eval_strategy=epoch (or steps)."
        )
    return args


def check_positions(
    max_length: int, num_virtual_tokens: int, backbone_config: Any, model_name: str, where: str = ""
) -> None:
    limit = getattr(backbone_config, "max_position_embeddings", None)
    if limit is None:
        return
    # RoBERTa-style models reserve padding_idx + 1 positions.
    offset = (
        (backbone_config.pad_token_id + 1)
        if getattr(backbone_config, "model_type", "") in ("roberta", "xlm-roberta", "camembert")
        else 0
    )
    usable = limit - offset
    if max_length + num_virtual_tokens > usable and not num_virtual_tokens:
        raise ConfigError(
            f"dataset.max_length={max_length} exceeds the {usable} positions of {model_name}. "
            f"Lower dataset.max_length to at most {usable}."
        )
    if max_length + num_virtual_tokens > usable:
        raise ConfigError(
            f"dataset.max_length={max_length} + {where or num_virtual_tokens} = "
            f"{max_length + num_virtual_tokens} exceeds the {usable} positions of {model_name}: virtual "
            f"tokens take positions too. Lower dataset.max_length to at most {usable - num_virtual_tokens}."
        )


def check_run(cfg: DictConfig, **trainer_fixed: Any) -> tuple[Any, list[str]]:
    """Every check that needs no data or weights, once per run: returns the run's
    TrainingArguments and the warnings to log."""
    from ptexp.data import check_sources
    from ptexp.methods import get_method
    from ptexp.tasks import get_task

    task = get_task(cfg.dataset.task)
    warnings = task.check(cfg) + get_method(cfg.method.name).check(cfg)
    check_logger(cfg.logger)
    check_sources(cfg.dataset)
    if cfg.num_threads is not None and cfg.num_threads <= 0:
        raise ConfigError(f"num_threads={cfg.num_threads} must be positive (or null for the job's CPU allotment).")
    return check_trainer(cfg.trainer, task.default_metric_for(cfg), **trainer_fixed), warnings


def check_job(cfg: DictConfig, **trainer_fixed: Any) -> tuple[Any, list[str]]:
    """:func:`check_run` plus the positions the method's prompts take in the backbone (its
    config.json only, no weights): everything a job can be refused for before it loads data."""
    from ptexp.methods import get_method
    from ptexp.modeling import load_backbone_config
    from ptexp.tasks import get_task

    args, warnings = check_run(cfg, **trainer_fixed)
    method = get_method(cfg.method.name)
    _, backbone = load_backbone_config(cfg.model)
    task = get_task(cfg.dataset.task)
    task.check_backbone(cfg.model.name_or_path, backbone)
    tokens, where = method.virtual_tokens(cfg), method.tokens_text(cfg)
    check_positions(cfg.dataset.max_length, tokens, backbone, cfg.model.name_or_path, where)
    task.check_lengths(cfg, backbone, tokens)
    return args, warnings

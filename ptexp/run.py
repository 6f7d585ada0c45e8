"""One run, from a composed config to a finished run folder, in four stages:

prepare (validate once, place the process, read the data) → build (backbone + method,
tokenised splits) → fit (Trainer: train, keep the best epoch, evaluate on test) → record
(adapter, metrics, provenance, predictions; W&B summary). Each stage is a function of the
previous stage's result, so each can be read and tested alone.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ptexp.layout import (
    ADAPTER_DIR,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    RUN_FILE,
    TRAINABLE_STATE,
)
from ptexp.outputs import environment, respect_umask, write_atomic, write_json
from ptexp.tracking import Tracking

log = logging.getLogger("ptexp")


@dataclass
class Prepared:
    """A validated run: its TrainingArguments, task and data, nothing heavy loaded yet."""

    cfg: DictConfig
    run_dir: Path
    args: Any  # transformers.TrainingArguments
    task: Any  # ptexp.tasks.Task
    method: Any  # ptexp.methods.Method
    data: Any  # ptexp.data.LabeledSplits
    is_main: bool
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    clock: float = field(default_factory=time.perf_counter)


@dataclass
class Built:
    prepared: Prepared
    tokenizer: Any
    model: Any
    tokenized: Any  # DatasetDict of model inputs
    trainable_params: int
    total_params: int


@dataclass
class Fitted:
    built: Built
    trainer: Any
    metrics: dict[str, Any]
    prediction: Any  # the Trainer's PredictionOutput on the test split


def prepare(
    cfg: DictConfig, run_dir: Path, num_threads: int | None = None, started: tuple[datetime, float] | None = None
) -> Prepared:
    """Validate everything that needs no weights, fix threads and seeds, read the data.
    ``started`` (wall clock, perf counter) is when the run began: its runtime covers this stage."""
    started = started or (datetime.now(UTC), time.perf_counter())
    import torch
    from transformers import set_seed

    from ptexp.data import load_splits
    from ptexp.distributed import cpu_allotment, is_main_process
    from ptexp.methods import get_method
    from ptexp.tasks import get_task
    from ptexp.validate import check_job

    run_dir = Path(run_dir)
    is_main = is_main_process()
    use_wandb = is_main and cfg.logger.backend == "wandb" and cfg.logger.mode != "disabled"
    args, warnings = check_job(
        cfg,
        output_dir=str(run_dir / CHECKPOINT_DIR),
        report_to=["wandb"] if use_wandb else "none",
        run_name=cfg.run_name,
        seed=cfg.seed,
    )
    for warning in warnings:
        log.warning(warning)
    method = get_method(cfg.method.name)
    torch.set_num_threads(cfg.num_threads or num_threads or cpu_allotment())
    if args.dataloader_num_workers:
        _usable_start_method()
    set_seed(cfg.seed, deterministic=cfg.deterministic)
    # Under torch.distributed rank 0 fills the datasets cache first; the others read it.
    with args.main_process_first(desc="load data"):
        data = load_splits(cfg.dataset)
    task = get_task(cfg.dataset.task)
    task.check_data(data.splits, cfg)  # e.g. targets the model's tokenizer makes too long
    sizes = ", ".join(f"{s} {len(d)}" for s, d in data.splits.items())
    log.info("data: %s%s", sizes, f"; labels {data.label_names}" if data.label_names else "")
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(run_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))
    return Prepared(cfg, run_dir, args, task, method, data, is_main, *started)


def build(prepared: Prepared) -> Built:
    """The backbone prepared by the run's method, and the tokenised splits."""
    from ptexp.modeling import build_model, count_parameters

    cfg = prepared.cfg
    with prepared.args.main_process_first(desc="tokenize"):
        tokenizer, model = build_model(cfg, prepared.task, prepared.data.label_names)
        encode = prepared.method.encoder(cfg, prepared.task)
        tokenized = prepared.task.tokenize(prepared.data.splits, tokenizer, cfg.dataset.max_length, encode=encode)
    trainable, total = count_parameters(model)
    return Built(prepared, tokenizer, model, tokenized, trainable, total)


def epochs_for(min_steps: int, train_size: int, args: Any) -> int:
    """The fewest whole epochs that make ``min_steps`` optimizer steps on ``train_size`` rows."""
    batch = args.per_device_train_batch_size * max(1, args.world_size) * args.gradient_accumulation_steps
    return math.ceil(min_steps / math.ceil(train_size / batch))


def _reach_min_steps(args: Any, min_steps: int | None, train_size: int) -> None:
    """trainer.min_train_steps: the recipe study found the same epochs undertrain small datasets
    (docs/recipe-study.md), so the budget is a floor in steps; max_steps, when set, still rules."""
    if not min_steps or args.max_steps > 0:
        return
    epochs = epochs_for(min_steps, train_size, args)
    if epochs > args.num_train_epochs:
        log.info(
            "trainer.min_train_steps=%d: %d epochs instead of trainer.num_train_epochs=%g on %d training rows",
            min_steps,
            epochs,
            args.num_train_epochs,
            train_size,
        )
        args.num_train_epochs = epochs


def fit(built: Built) -> Fitted:
    """Train (resuming from the last complete checkpoint), restore the best epoch, test it."""
    from ptexp.trainer import (
        CheckpointOnSignal,
        EarlyStopping,
        LogMetrics,
        StopOnNonFiniteLoss,
        last_complete_checkpoint,
    )
    from ptexp.validate import restores_best_epoch

    prepared = built.prepared
    task, args, cfg = prepared.task, prepared.args, prepared.cfg
    label_names = prepared.data.label_names
    callbacks = [StopOnNonFiniteLoss(), CheckpointOnSignal(), LogMetrics()]
    _reach_min_steps(args, cfg.trainer.get("min_train_steps"), len(built.tokenized["train"]))
    patience = cfg.trainer.get("early_stopping_patience")  # validated in prepare
    stopping = EarlyStopping(int(patience)) if patience is not None else None
    if stopping is not None:
        callbacks.append(stopping)
    trainer = task.trainer_class()(
        model=built.model,
        args=args,
        train_dataset=built.tokenized["train"],
        eval_dataset=built.tokenized["validation"],
        processing_class=built.tokenizer,
        data_collator=task.collator(built.tokenizer),
        compute_metrics=task.metrics_function(built.tokenizer, label_names),
        callbacks=callbacks,
        # The P-tuning methods' key (their options checked it); others have none.
        head_learning_rate=cfg.method.get("head_learning_rate"),
        **task.trainer_kwargs(built.tokenizer, label_names, prepared.cfg),
    )
    last = last_complete_checkpoint(args.output_dir)
    if last and stopping is not None and stopping.stopped_at(args, last):
        log.info("resuming from %s, where early stopping had ended training", last)
        train_out = trainer.resume_finished(last)
    else:
        if last:
            log.info("resuming from %s", last)
        train_out = trainer.train(resume_from_checkpoint=last)
    best_checkpoint = None
    if restores_best_epoch(prepared.cfg.trainer):  # validated once, in prepare
        best_checkpoint = trainer.restore_best()
        log.info(
            "best epoch by validation %s restored: %s (trainer.load_best_model_at_end, ptexp's rule: peft#2256)",
            args.metric_for_best_model,
            best_checkpoint or "the last epoch",
        )
    built.model.eval()
    history = _evaluations(trainer.state.log_history)
    validation = next((h for h in history if best_checkpoint and h["step"] == trainer.state.best_global_step), None)
    validation = validation or (history[-1] if history else {})
    prediction = trainer.predict(built.tokenized["test"], metric_key_prefix="test")
    metrics = {
        "validation": validation,
        "test": {k.removeprefix("test_"): v for k, v in prediction.metrics.items()},
        "best_epoch": validation.get("epoch"),
        "history": history,
        "best_checkpoint": Path(best_checkpoint).name if best_checkpoint else None,
        "selection_metric": args.metric_for_best_model.removeprefix("eval_"),
        "trainable_params": built.trainable_params,
        "total_params": built.total_params,
        "train_runtime": train_out.metrics.get("train_runtime"),
        "train_samples_per_second": train_out.metrics.get("train_samples_per_second"),
        "train_loss": train_out.metrics.get("train_loss"),
        "runtime": time.perf_counter() - prepared.clock,
        "peak_memory_mb": _peak_memory_mb(),
        "num_examples": {s: len(d) for s, d in prepared.data.splits.items()},
        "num_train_epochs": args.num_train_epochs,  # after trainer.min_train_steps
        "task": task.name,
        "baseline": task.baseline(prepared.data.splits, prepared.data.label_names),
        "world_size": args.world_size,
    }
    return Fitted(built, trainer, metrics, prediction)


def record(fitted: Fitted, wb: Any = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Write the run folder (metrics.json last: it marks the run finished) and the W&B summary."""
    from safetensors.torch import save_file

    from ptexp.trainer import trainable_state

    built, metrics = fitted.built, fitted.metrics
    prepared = built.prepared
    cfg, run_dir, data = prepared.cfg, prepared.run_dir, prepared.data
    saved = prepared.method.save(built.model, built.tokenizer, run_dir)
    if prepared.method.saves_trainable_state:
        # Every trainable tensor by name: for P-tuning the MLP/LSTM that the peft adapter drops.
        save_file(trainable_state(built.model), str(run_dir / TRAINABLE_STATE))
        saved.append(run_dir / TRAINABLE_STATE)
    metrics["saved_bytes"] = sum(_size(p) for p in saved)  # the method's weights, not the tokenizer
    built.tokenizer.save_pretrained(run_dir / ADAPTER_DIR)
    respect_umask(run_dir / ADAPTER_DIR, *saved)
    if cfg.save_predictions:
        records = prepared.task.prediction_records(
            data.splits["test"], fitted.prediction.predictions, data.label_names, built.tokenizer
        )
        write_atomic(run_dir / PREDICTIONS_FILE, "".join(_json_line(r) for r in records))
    if wb is not None:
        wb.summary.update(
            {f"final/{k}/{m}": v for k in ("validation", "test") for m, v in metrics[k].items()}
            | {k: metrics[k] for k in ("trainable_params", "total_params", "best_epoch", "runtime")}
        )
    write_json(
        run_dir / RUN_FILE,
        {
            **environment(),
            "seed": cfg.seed,
            "overrides": list(overrides or []),
            "labels": data.label_names,
            "model_path": cfg.model.name_or_path,
            "started": prepared.started.isoformat(),
            "ended": datetime.now(UTC).isoformat(),
            "wandb": {"id": wb.id, "dir": str(Path(wb.dir).parent), "mode": cfg.logger.mode} if wb else None,
        },
    )
    write_json(run_dir / METRICS_FILE, metrics)
    return metrics


@dataclass
class Hooks:
    """Where a caller that trains several runs in one process (sweep fusion, ``ptexp.fusion``)
    steps into a run; each is called with the stage's result. A plain run has none."""

    #: after prepare, before the backbone loads (e.g. swap the task for one that fuses)
    prepared: Callable[[Prepared], None] | None = None
    #: after build, before the W&B run opens (e.g. share one backbone between runs)
    built: Callable[[Built], None] | None = None
    #: the W&B run, once open (None with logger=none)
    tracked: Callable[[Any], None] | None = None
    #: after fit, before record
    fitted: Callable[[Fitted], None] | None = None
    #: wandb.init's reinit: "create_new" keeps other runs of the process open
    wandb_reinit: str = "finish_previous"


def run(
    cfg: DictConfig,
    run_dir: Path,
    overrides: list[str] | None = None,
    tracking: Tracking | None = None,
    num_threads: int | None = None,
    hooks: Hooks | None = None,
) -> dict[str, Any]:
    """Train, evaluate and save one run into ``run_dir``; returns its metrics.

    ``num_threads`` is the job's share of the machine when a launcher runs several jobs at
    once (``cfg.num_threads`` wins when set); ``tracking`` names the W&B run of a sweep job;
    ``hooks`` are for callers that train several runs in one process.
    """
    from ptexp.tracking import wandb_run

    hooks = hooks or Hooks()
    prepared = prepare(cfg, run_dir, num_threads, started=(datetime.now(UTC), time.perf_counter()))
    log.info("run folder: %s", prepared.run_dir.resolve())
    _call(hooks.prepared, prepared)
    built = build(prepared)
    _call(hooks.built, built)
    tracking = tracking or Tracking(name=cfg.run_name or ",".join(overrides or []) or "default")
    wandb_config = {
        **OmegaConf.to_container(cfg, resolve=True),
        "method_effective": prepared.method.describe(built.model),
        "trainable_params": built.trainable_params,
        "total_params": built.total_params,
        "labels": prepared.data.label_names,
    }
    logger_cfg = cfg.logger if "wandb" in str(prepared.args.report_to) else OmegaConf.create({"backend": "none"})
    with wandb_run(
        logger_cfg,
        prepared.run_dir,
        tracking.name,
        wandb_config,
        group=tracking.group,
        tags=tracking.tags,
        reinit=hooks.wandb_reinit,
    ) as wb:
        _call(hooks.tracked, wb)
        fitted = fit(built)
        _call(hooks.fitted, fitted)
        if not prepared.is_main:  # other ranks of a multi-GPU job train; rank 0 records
            return fitted.metrics
        metrics = record(fitted, wb, overrides)
    if not cfg.keep_checkpoints:
        shutil.rmtree(prepared.run_dir / CHECKPOINT_DIR, ignore_errors=True)
    log.info("test: %s", {k: round(v, 4) for k, v in metrics["test"].items() if isinstance(v, float)})
    log.info("finished: %s", prepared.run_dir.resolve())
    return metrics


def _call(hook: Callable[[Any], None] | None, value: Any) -> None:
    if hook is not None:
        hook(value)


def _usable_start_method() -> None:
    """Inside a joblib (loky) worker the default multiprocessing context is loky's, whose
    Process the DataLoader's workers cannot start with ("'Process' object has no attribute
    'env'"): loader workers there use the platform's own start method instead."""
    import multiprocessing

    method = multiprocessing.get_start_method(allow_none=True)
    if method not in (None, *multiprocessing.get_all_start_methods()):
        multiprocessing.set_start_method(multiprocessing.get_all_start_methods()[0], force=True)
        log.info("data loader workers start with %s (not %s)", multiprocessing.get_start_method(), method)


def _evaluations(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every validation evaluation of the run (each epoch's), oldest first."""
    return [
        {k.removeprefix("eval_"): v for k, v in h.items() if k.startswith("eval_") or k in ("epoch", "step")}
        for h in log_history
        if "eval_loss" in h
    ]


def _peak_memory_mb() -> dict[str, float]:
    """Peak resident memory of this process, and of the GPU when there is one."""
    import resource

    import torch

    peak = {"cpu_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        peak["cuda"] = torch.cuda.max_memory_allocated() / 2**20
    return peak


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _json_line(record: dict[str, Any]) -> str:
    import json

    return json.dumps(record, ensure_ascii=False) + "\n"

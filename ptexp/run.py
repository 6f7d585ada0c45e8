"""One P-tuning run, from a composed config to a finished run folder.

validate → data → model → Trainer (train, evaluate each epoch, keep the best epoch)
→ test evaluation → adapter + metrics + provenance, logged to W&B.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ptexp.jobs import METRICS_FILE
from ptexp.outputs import environment, write_atomic, write_json
from ptexp.validate import check_positions, check_run, check_trainer, effective_trainer_args

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
ADAPTER_DIR = "adapter"
CHECKPOINT_DIR = "checkpoints"
PREDICTIONS_FILE = "predictions_test.jsonl"


def cpu_allotment() -> int:
    """CPUs this job may use: SLURM's allotment, else the process's affinity mask."""
    for var in ("PTEXP_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        if os.environ.get(var, "").isdigit():
            return max(1, int(os.environ[var]))
    return max(1, len(os.sched_getaffinity(0)))


def training_arguments(cfg: DictConfig, run_dir: Path, task_metric: str, use_wandb: bool) -> Any:
    from transformers import TrainingArguments

    args = effective_trainer_args(check_trainer(cfg.trainer))
    args.setdefault("metric_for_best_model", task_metric)
    args.setdefault("greater_is_better", args["metric_for_best_model"].removeprefix("eval_") != "loss")
    return TrainingArguments(
        output_dir=str(run_dir / CHECKPOINT_DIR),
        report_to=["wandb"] if use_wandb else "none",
        run_name=cfg.run_name,
        seed=cfg.seed,
        **args,
    )


def _best_eval(log_history: list[dict[str, Any]], best_step: int | None) -> dict[str, Any]:
    evals = [h for h in log_history if "eval_loss" in h]
    if not evals:
        return {}
    chosen = next((h for h in evals if h.get("step") == best_step), evals[-1])
    return {k.removeprefix("eval_"): v for k, v in chosen.items() if k.startswith("eval_") or k in ("epoch", "step")}


def _write_predictions(path: Path, texts: list[str], gold: list[int], decoded: list[dict], names: list[str]) -> None:
    import json

    lines = [
        json.dumps({"text": t, "gold": names[g], **d}, ensure_ascii=False) for t, g, d in zip(texts, gold, decoded)
    ]
    write_atomic(path, "\n".join(lines) + "\n")


def run(
    cfg: DictConfig,
    run_dir: Path,
    overrides: list[str] | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Train, evaluate and save one run into `run_dir`; returns its metrics."""
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    for warning in check_run(cfg):
        log.warning(warning)

    from ptexp.modeling import build_model, count_parameters, effective_peft_dict, load_backbone_config

    _, backbone = load_backbone_config(cfg.model)
    check_positions(cfg.dataset.max_length, cfg.prompt_encoder.num_virtual_tokens, backbone, cfg.model.name_or_path)

    import torch
    from transformers import set_seed

    torch.set_num_threads(cfg.num_threads or cpu_allotment())
    set_seed(cfg.seed, deterministic=cfg.deterministic)

    from safetensors.torch import save_file

    from ptexp.data import load_splits
    from ptexp.distributed import is_main_process
    from ptexp.tasks import get_task
    from ptexp.tracking import wandb_run
    from ptexp.trainer import (
        TRAINABLE_STATE,
        CheckpointOnSignal,
        PTuningTrainer,
        StopOnNonFiniteLoss,
        last_complete_checkpoint,
        trainable_state,
    )

    task = get_task(cfg.dataset.task)
    main = is_main_process()
    use_wandb = main and cfg.logger.backend == "wandb" and cfg.logger.mode != "disabled"
    targs = training_arguments(cfg, run_dir, task.default_metric, use_wandb)
    # Under torch.distributed rank 0 fills the datasets cache first; the others read it.
    with targs.main_process_first(desc="load and tokenize"):
        data = load_splits(cfg.dataset)
        log.info("data: %s; labels %s", ", ".join(f"{s} {len(d)}" for s, d in data.splits.items()), data.label_names)
        tokenizer, model = build_model(cfg.model, cfg.prompt_encoder, task, data.label_names)
        tokenized = task.tokenize(data.splits, tokenizer, cfg.dataset.max_length)
    trainable, total = count_parameters(model)
    name = name or cfg.run_name or ",".join(overrides or []) or "default"
    wandb_config = {
        **OmegaConf.to_container(cfg, resolve=True),
        "peft_effective": effective_peft_dict(model),
        "trainable_params": trainable,
        "total_params": total,
        "labels": data.label_names,
    }
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    logger_cfg = cfg.logger if use_wandb else OmegaConf.create({"backend": "none"})
    with wandb_run(logger_cfg, run_dir, name, wandb_config, group=group, tags=tags) as wb:
        trainer = PTuningTrainer(
            model=model,
            args=targs,
            train_dataset=tokenized["train"],
            eval_dataset=tokenized["validation"],
            processing_class=tokenizer,
            data_collator=task.collator(tokenizer),
            compute_metrics=task.compute_metrics,
            callbacks=[StopOnNonFiniteLoss(), CheckpointOnSignal()],
        )
        last = last_complete_checkpoint(targs.output_dir)
        if last:
            log.info("resuming from %s", last)
        train_out = trainer.train(resume_from_checkpoint=last)
        best_checkpoint = trainer.restore_best()
        model.eval()
        validation = _best_eval(trainer.state.log_history, trainer.state.best_global_step)
        prediction = trainer.predict(tokenized["test"], metric_key_prefix="test")
        test = {k.removeprefix("test_"): v for k, v in prediction.metrics.items()}
        metrics = {
            "validation": validation,
            "test": test,
            "best_epoch": validation.get("epoch"),
            "best_checkpoint": Path(best_checkpoint).name if best_checkpoint else None,
            "trainable_params": trainable,
            "total_params": total,
            "train_runtime": train_out.metrics.get("train_runtime"),
            "train_samples_per_second": train_out.metrics.get("train_samples_per_second"),
            "train_loss": train_out.metrics.get("train_loss"),
            "runtime": time.perf_counter() - t0,
            "num_examples": {s: len(d) for s, d in data.splits.items()},
            "world_size": targs.world_size,
        }
        if not main:
            return metrics
        model.save_pretrained(run_dir / ADAPTER_DIR)
        tokenizer.save_pretrained(run_dir / ADAPTER_DIR)
        # The full prompt encoder (MLP/LSTM weights), which the peft adapter does not keep.
        save_file(trainable_state(model), str(run_dir / TRAINABLE_STATE))
        if cfg.save_predictions:
            decoded = task.decode(prediction.predictions, data.label_names)
            _write_predictions(
                run_dir / PREDICTIONS_FILE,
                data.splits["test"]["text"],
                list(prediction.label_ids),
                decoded,
                data.label_names,
            )
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
                "started": started.isoformat(),
                "ended": datetime.now(UTC).isoformat(),
                "wandb": {"id": wb.id, "dir": str(Path(wb.dir).parent), "mode": cfg.logger.mode} if wb else None,
            },
        )
        # Last, and atomically: its presence is what marks the run finished (sweeps skip it).
        write_json(run_dir / METRICS_FILE, metrics)
    if not cfg.keep_checkpoints:
        shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)
    log.info("test: %s", {k: round(v, 4) for k, v in test.items() if isinstance(v, float)})
    return metrics

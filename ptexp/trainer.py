"""A Trainer whose checkpoints can resume any method (P-tuning's prompt encoder included).

peft's adapter stores only the prompt encoder's *output* (``prompt_embeddings``) and the
head, not the MLP/LSTM weights, and ``PeftModel`` cannot continue training from it
(peft#1247); the Trainer's ``load_best_model_at_end`` fails on it too (peft#2256). So each
checkpoint also holds every trainable tensor by name, and resuming or restoring the best
epoch loads those. Optimizer, scheduler, RNG state and step are the Trainer's own
checkpoint files, untouched. A checkpoint also keeps the running sum of the training loss,
and the training time so far, so a resumed run reports the same ``train_loss`` as an
uninterrupted one and its whole ``train_runtime`` (the Trainer's cover only its own
``train()`` call).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import Trainer, TrainerCallback

from ptexp.layout import TRAINABLE_STATE
from ptexp.outputs import write_json

LOSS_STATE = "ptexp_loss_state.json"
log = logging.getLogger(__name__)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, checkpoint_dir: str) -> None:
    state = load_file(os.path.join(checkpoint_dir, TRAINABLE_STATE))
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in state]
    if missing or set(state) - set(params):
        raise RuntimeError(
            f"{checkpoint_dir} does not match this model (missing {missing[:3]}, unexpected "
            f"{sorted(set(state) - set(params))[:3]}): was it written by another config?"
        )
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)


def last_complete_checkpoint(folder: str) -> str | None:
    """The newest checkpoint that was fully written. A job killed while saving leaves a
    checkpoint folder without trainer_state.json (the Trainer writes it last); the
    Trainer's own get_last_checkpoint would pick that one and fail to resume."""
    if not os.path.isdir(folder):
        return None
    complete = [
        os.path.join(folder, name)
        for name in os.listdir(folder)
        if name.startswith("checkpoint-")
        and name.removeprefix("checkpoint-").isdigit()
        and os.path.isfile(os.path.join(folder, name, "trainer_state.json"))
        and os.path.isfile(os.path.join(folder, name, TRAINABLE_STATE))
    ]
    return max(complete, key=lambda p: int(p.rsplit("-", 1)[-1]), default=None)


class ResumableTrainerMixin:
    """The checkpointing described above, for any Trainer subclass: ``PTuningTrainer`` is it on
    the plain Trainer; a task that trains with another (``Seq2SeqTrainer``, to evaluate by
    generating) mixes it into that one."""

    #: Sum of the per-step training losses, and seconds of training, before this train() call
    #: (restored on resume).
    _loss_before_resume: float = 0.0
    _runtime_before_resume: float = 0.0
    _call_started: float | None = None

    def __init__(self, *args: Any, head_learning_rate: float | None = None, **kwargs: Any) -> None:
        #: The learning rate of every trainable parameter outside the prompt encoder (the head,
        #: model.extra_trainable_modules); None: the Trainer's one learning rate for all.
        self.head_learning_rate = head_learning_rate
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model: Any = None) -> Any:
        fresh = self.optimizer is None
        optimizer = super().create_optimizer(model)
        if self.head_learning_rate is None or not fresh:
            return optimizer
        # The Trainer's own optimizer (its decay groups, class and kwargs), each group split in
        # two; the scheduler, built after this, scales every group by the same factor.
        opt_model = self.model if model is None else model
        head = {id(p) for n, p in opt_model.named_parameters() if p.requires_grad and not is_prompt_parameter(n)}
        groups = []
        for group in optimizer.param_groups:
            options = {k: v for k, v in group.items() if k != "params"}
            prompt = [p for p in group["params"] if id(p) not in head]
            rest = [p for p in group["params"] if id(p) in head]
            groups += [{**options, "params": prompt}] if prompt else []
            groups += [{**options, "params": rest, "lr": self.head_learning_rate}] if rest else []
        # In place (it holds no state yet): its class's constructor arguments stay as the Trainer chose them.
        optimizer.param_groups.clear()
        for group in groups:
            optimizer.add_param_group(group)
        return optimizer

    def train(self, *args: Any, **kwargs: Any) -> Any:
        self._call_started = time.perf_counter()
        output = super().train(*args, **kwargs)
        if not self._loss_before_resume:
            return output
        # The Trainer divides only this call's loss by only this call's steps, and times only this call.
        loss = (self._loss_before_resume + self._total_loss_scalar) / max(self.state.global_step, 1)
        output.metrics["train_loss"] = loss
        output.metrics["train_runtime"] = self._runtime_before_resume + output.metrics.get("train_runtime", 0.0)
        return type(output)(output.global_step, loss, output.metrics)

    def resume_finished(self, checkpoint: str) -> Any:
        """``train(resume_from_checkpoint=checkpoint)``'s output for a checkpoint where training
        had already ended, without a step: its state, weights and loss, as the run that saved it
        would have returned them (its samples per second are not kept in a checkpoint)."""
        from transformers.trainer_callback import TrainerState
        from transformers.trainer_utils import TrainOutput

        self.state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
        self._load_from_checkpoint(checkpoint)
        loss = self._loss_before_resume / max(self.state.global_step, 1)
        metrics = {"train_runtime": self._runtime_before_resume, "train_loss": loss, "epoch": self.state.epoch}
        return TrainOutput(self.state.global_step, loss, metrics)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        # A checkpoint's weights are its trainable tensors, once: the Trainer's own save would
        # add a peft adapter (useless for resuming, peft#1247) or, for full fine-tuning, a
        # second copy of the whole model every epoch. The run's artifact is saved at the end.
        if not self.args.should_save:
            return
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model)
        save_file(trainable_state(model), os.path.join(output_dir, TRAINABLE_STATE))
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))
        if getattr(self, "_tr_loss", None) is not None:
            # Written here, before the Trainer writes trainer_state.json (what marks a checkpoint
            # complete): _total_loss_scalar holds what this call logged, _tr_loss what it has not yet.
            total = self._loss_before_resume + self._total_loss_scalar + float(self._tr_loss.item())
            elapsed = time.perf_counter() - self._call_started if self._call_started else 0.0
            state = {"loss_sum": total, "global_step": self.state.global_step}
            write_json(Path(output_dir) / LOSS_STATE, state | {"train_runtime": self._runtime_before_resume + elapsed})

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        try:
            super().log(logs, *args, **kwargs)
        except ConnectionError as err:
            # The W&B service died (on SLURM the preemption signal reaches it too, and Go
            # exits on USR2): keep training and checkpointing; the run's files still land.
            from transformers.integrations import WandbCallback

            log.warning("W&B logging stopped (%s); training goes on without it", err)
            self.remove_callback(WandbCallback)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        load_trainable_state(self.accelerator.unwrap_model(model or self.model), resume_from_checkpoint)
        loss_file = os.path.join(resume_from_checkpoint, LOSS_STATE)
        if os.path.isfile(loss_file):
            with open(loss_file) as f:
                state = json.load(f)
            self._loss_before_resume = float(state["loss_sum"])
            self._runtime_before_resume = float(state.get("train_runtime", 0.0))

    def restore_best(self) -> str | None:
        """Load the best epoch's trainable weights (the Trainer's own best-metric bookkeeping)."""
        best = self.state.best_model_checkpoint
        if best and os.path.isfile(os.path.join(best, TRAINABLE_STATE)):
            load_trainable_state(self.accelerator.unwrap_model(self.model), best)
            return best
        return None


def is_prompt_parameter(name: str) -> bool:
    """Whether a parameter belongs to the prompt encoder (peft's ``prompt_encoder.default.*``,
    template P-tuning's ``prompt_encoder.*``) rather than the head or other trained modules."""
    return name.startswith("prompt_encoder.") or ".prompt_encoder." in name


class EarlyStopping(TrainerCallback):
    """Stop training once the selection metric has not improved for ``patience`` evaluations
    (improved: strictly better than every earlier evaluation, the Trainer's best-checkpoint rule,
    so ptexp's restore_best picks the same epoch). Not transformers' EarlyStoppingCallback: it
    counts in memory, so a resumed run restarts its count unless every callback's and the
    control's state is restored too; this one recounts from the log history the checkpoint keeps."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def stale(self, args: Any, log_history: list[dict[str, Any]]) -> tuple[int, str, float, int] | None:
        """(evaluations without improvement, metric, best value, best evaluation's number) once
        they reach the patience; None while training should go on."""
        key = args.metric_for_best_model
        key = key if key.startswith("eval_") else f"eval_{key}"
        values = [h[key] for h in log_history if key in h]
        if not values:
            return None
        best = values.index(max(values) if args.greater_is_better else min(values))
        waited = len(values) - 1 - best
        return (waited, key.removeprefix("eval_"), values[best], best + 1) if waited >= self.patience else None

    def stopped_at(self, args: Any, checkpoint: str) -> bool:
        """Whether training had stopped at ``checkpoint``: the Trainer resets should_training_stop
        when it resumes, so a restart from the stopping epoch's checkpoint would train on past it."""
        from transformers.trainer_callback import TrainerState

        state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
        return self.stale(args, state.log_history) is not None

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kwargs: Any) -> None:
        stale = self.stale(args, state.log_history)  # this evaluation is logged already
        if stale is not None:
            log.info(
                "early stopping: validation %s has not improved for %d evaluations (best %.4g, evaluation %d)",
                stale[1],
                stale[0],
                stale[2],
                stale[3],
            )
            control.should_training_stop = True


class PTuningTrainer(ResumableTrainerMixin, Trainer):
    """The transformers Trainer with checkpoints that resume any method (see the module)."""


class NonFiniteLossError(FloatingPointError):
    """Training diverged: the logged loss is NaN or infinite."""


class StopOnNonFiniteLoss(TrainerCallback):
    """Fail fast on a diverged run (instead of training on for hours and saving garbage)."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        logs = logs or {}
        # The Trainer drops NaN losses from its running mean (logging_nan_inf_filter), so the
        # gradient norm is the reliable witness.
        bad = {k: logs[k] for k in ("loss", "grad_norm") if k in logs and not math.isfinite(logs[k])}
        if bad:
            raise NonFiniteLossError(
                f"training {', '.join(f'{k} is {v}' for k, v in bad.items())} at step {state.global_step} "
                f"(epoch {state.epoch:.2f}): the run diverged. "
                "Lower trainer.learning_rate or raise trainer.warmup_steps."
            )


class CheckpointOnSignal(TrainerCallback):
    """Preemption and time limits: SLURM sends USR2 ``signal_delay_s`` early. Instead of
    letting submitit requeue at once (losing the epoch in progress), finish the current step,
    save a resumable checkpoint, then hand the signal to the previous handler — submitit's,
    which requeues the job and exits. The requeued job resumes from that checkpoint."""

    def __init__(self, signum: int = signal.SIGUSR2) -> None:
        self.signum = signum
        self.received = False
        self.previous: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(self.signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        log.warning("caught %s: saving a checkpoint after this step", signal.Signals(signum).name)
        self.received = True

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # On an epoch's last step, leave the save to the epoch's end: saving here would skip that
        # epoch's evaluation, whose data loader draws from the RNG, so the resumed run would train
        # on another random stream than an uninterrupted one. The next step end saves otherwise.
        if self.received and not (state.epoch is not None and abs(state.epoch - round(state.epoch)) < 1e-6):
            control.should_save = True

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self.received:
            return
        previous, self.previous = self.previous, None
        signal.signal(self.signum, previous if previous is not None else signal.SIG_DFL)
        if callable(previous):
            previous(self.signum, None)  # submitit: requeue this job, then exit
        raise SystemExit(f"stopped by {signal.Signals(self.signum).name} after saving step {state.global_step}")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(self.signum, self.previous)
            self.previous = None


class LogMetrics(TrainerCallback):
    """Each epoch's training loss and validation metrics in the run's log (``train.log``),
    so a run can be followed and audited without W&B."""

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # Also at each epoch's end, not only every logging_steps: an epoch shorter than
        # logging_steps would otherwise leave no training loss in the log.
        control.should_log = True

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        logs = logs or {}
        epoch = f"epoch {state.epoch:.2f} step {state.global_step}/{state.max_steps}"
        if "eval_loss" in logs:
            shown = {k.removeprefix("eval_"): v for k, v in logs.items() if k.startswith("eval_")}
            log.info("%s validation: %s", epoch, _fmt({k: v for k, v in shown.items() if "per_second" not in k}))
        elif "loss" in logs:
            shown = {k: logs[k] for k in ("loss", "grad_norm", "learning_rate") if k in logs}
            log.info("%s train: %s", epoch, _fmt(shown))


def _fmt(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())

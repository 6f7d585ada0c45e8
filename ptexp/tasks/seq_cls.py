"""Sequence classification (single sentences or sentence pairs): inputs, metrics and readable predictions.

transformers and scipy are imported where they are used, so importing the task (validation,
``ptexp-predict``'s argument checks) stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ptexp.tasks.base import Task

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

TEXT_COLUMNS = ("text", "text_pair")


def macro_f1(labels: np.ndarray, preds: np.ndarray) -> float:
    """F1 averaged over the classes present in labels or predictions (scikit-learn's
    ``f1_score(average="macro")``; a class never predicted correctly scores 0)."""
    classes = np.union1d(labels, preds)
    scores = []
    for c in classes:
        tp = np.sum((preds == c) & (labels == c))
        wrong = np.sum((preds == c) != (labels == c))  # false positives + false negatives
        scores.append(2 * tp / (2 * tp + wrong))
    return float(np.mean(scores)) if scores else 0.0


class SequenceClassification(Task):
    peft_task_type = "SEQ_CLS"
    default_metric = "accuracy"

    def auto_model_class(self) -> Any:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def model_kwargs(self, label_names: list[str]) -> dict[str, Any]:
        return {
            "num_labels": len(label_names),
            "id2label": dict(enumerate(label_names)),
            "label2id": {name: i for i, name in enumerate(label_names)},
        }

    def encode(self, tokenizer: Any, batch: dict[str, list], max_length: int) -> Any:
        pair = batch.get("text_pair")
        return tokenizer(batch["text"], pair, truncation=True, max_length=max_length)

    def tokenize(
        self, splits: DatasetDict, tokenizer: Any, max_length: int, encode: Callable[..., Any] | None = None
    ) -> DatasetDict:
        text_columns = [c for c in TEXT_COLUMNS if c in splits["train"].column_names]
        encode = encode or self.encode
        # datasets caches this map by fingerprint: a sweep tokenises each split once.
        return splits.map(
            lambda batch: encode(tokenizer, batch, max_length),
            batched=True,
            remove_columns=text_columns,
            desc="tokenize",
        )

    def collator(self, tokenizer: Any) -> Any:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def compute_metrics(self, eval_pred: Any) -> dict[str, float]:
        logits, labels = eval_pred.predictions, np.asarray(eval_pred.label_ids)
        if isinstance(logits, tuple):
            logits = logits[0]
        preds = np.asarray(logits).argmax(axis=-1)
        return {"accuracy": float(np.mean(preds == labels)), "macro_f1": macro_f1(labels, preds)}

    def decode(self, logits: Any, label_names: list[str]) -> list[dict[str, Any]]:
        from scipy.special import softmax

        if isinstance(logits, tuple):
            logits = logits[0]
        probs = softmax(np.asarray(logits, dtype=np.float64), axis=-1)
        return [
            {
                "label": label_names[int(p.argmax())],
                "probs": {name: round(float(v), 6) for name, v in zip(label_names, p)},
            }
            for p in probs
        ]

    def prediction_records(self, examples: Dataset, logits: Any, label_names: list[str]) -> list[dict[str, Any]]:
        columns = [c for c in TEXT_COLUMNS if c in examples.column_names]
        inputs = [examples[c] for c in columns]
        gold = examples["label"] if "label" in examples.column_names else [None] * len(examples)
        decoded = self.decode(logits, label_names)
        if len(decoded) != len(examples):
            raise ValueError(f"{len(decoded)} predictions for {len(examples)} examples: pass the untokenised split")
        return [
            {
                **dict(zip(columns, values)),
                **({"gold": label_names[g]} if g is not None else {}),
                **prediction,
            }
            for *values, g, prediction in zip(*inputs, gold, decoded)
        ]

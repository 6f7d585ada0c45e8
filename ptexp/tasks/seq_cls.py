"""Sequence classification (single sentences or sentence pairs)."""

from __future__ import annotations

from typing import Any

import numpy as np
from datasets import DatasetDict
from sklearn.metrics import accuracy_score, f1_score
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

from ptexp.tasks.base import Task


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class SequenceClassification(Task):
    peft_task_type = "SEQ_CLS"
    default_metric = "accuracy"

    def auto_model_class(self) -> Any:
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

    def tokenize(self, splits: DatasetDict, tokenizer: Any, max_length: int) -> DatasetDict:
        text_columns = [c for c in ("text", "text_pair") if c in splits["train"].column_names]
        # datasets caches this map by fingerprint: a sweep tokenises each split once.
        return splits.map(
            lambda batch: self.encode(tokenizer, batch, max_length),
            batched=True,
            remove_columns=text_columns,
            desc="tokenize",
        )

    def collator(self, tokenizer: Any) -> Any:
        return DataCollatorWithPadding(tokenizer)

    def compute_metrics(self, eval_pred: Any) -> dict[str, float]:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        preds = np.asarray(logits).argmax(axis=-1)
        return {
            "accuracy": float(accuracy_score(labels, preds)),
            "macro_f1": float(f1_score(labels, preds, average="macro")),
        }

    def decode(self, logits: Any, label_names: list[str]) -> list[dict[str, Any]]:
        probs = softmax(np.asarray(logits, dtype=np.float64))
        return [
            {
                "label": label_names[int(p.argmax())],
                "probs": {name: round(float(v), 6) for name, v in zip(label_names, p)},
            }
            for p in probs
        ]

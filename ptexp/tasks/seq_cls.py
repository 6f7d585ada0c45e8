"""Sequence classification (single sentences or sentence pairs): labels, inputs, metrics, the
majority-class baseline and readable predictions.

transformers and scipy are imported where they are used, so importing the task (validation,
``ptexp-predict``'s argument checks) stays cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ptexp.errors import ConfigError
from ptexp.tasks import register
from ptexp.tasks.base import Task

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

log = logging.getLogger("ptexp.data")

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


def label_names_of(train: Dataset, dataset_cfg: Any) -> list[str]:
    """The class names: ``dataset.label_names`` when given, a ClassLabel's names, else the train
    labels sorted (integers numerically)."""
    from datasets import ClassLabel

    feature = train.features["label"]
    if isinstance(feature, ClassLabel):
        return list(dataset_cfg.label_names or feature.names)
    if dataset_cfg.label_names:
        return [str(n) for n in dataset_cfg.label_names]
    return sorted(
        {str(v) for v in train.unique("label")},
        key=lambda s: (not s.lstrip("-").isdigit(), int(s) if s.lstrip("-").isdigit() else 0, s),
    )


@register
class SequenceClassification(Task):
    name = "SEQ_CLS"
    default_metric = "accuracy"
    metrics = ("accuracy", "macro_f1")
    stratify_column = "label"

    def encode_labels(self, splits: DatasetDict, dataset_cfg: Any, names: dict[str, str]) -> tuple[DatasetDict, list]:
        from datasets import ClassLabel, DatasetDict

        label_names = label_names_of(splits["train"], dataset_cfg)
        if len(label_names) < 2:
            raise ConfigError(
                f"dataset.label_column='{dataset_cfg.label_column}' has {len(label_names)} distinct label(s) in "
                f"train ({label_names}); classification needs at least two."
            )
        index = {n: i for i, n in enumerate(label_names)}
        out = DatasetDict()
        for split, d in splits.items():
            feature = d.features["label"]
            if isinstance(feature, ClassLabel):
                d = d.map(lambda ex, f=feature: {"label": f.int2str(ex["label"]) if ex["label"] >= 0 else None})
                before = len(d)
                d = d.filter(lambda ex: ex["label"] is not None)
                if len(d) < before:
                    log.warning("dropped %d rows of %s labelled -1 (no label)", before - len(d), names[split])
            seen = {str(v) for v in d.unique("label")}
            unknown = sorted(seen - set(index))
            if unknown:
                raise ConfigError(
                    f"The {split} split ({names[split]}) has labels never seen in train: {unknown[:10]} "
                    f"(column dataset.label_column='{dataset_cfg.label_column}'; train labels are {label_names}). "
                    "Fix the data, or list every label in dataset.label_names."
                )
            d = d.map(lambda ex: {"label_id": index[str(ex["label"])]}).remove_columns("label")
            d = d.rename_column("label_id", "label").cast_column("label", ClassLabel(names=label_names))
            out[split] = d
        return out, label_names

    def baseline(self, splits: DatasetDict, label_names: list[str]) -> dict[str, Any]:
        """Always predicting train's most frequent label, scored on validation and test."""
        from collections import Counter

        labels = {split: np.asarray(d["label"]) for split, d in splits.items()}
        majority = Counter(labels["train"].tolist()).most_common(1)[0][0]
        out: dict[str, Any] = {"name": f"majority class ({label_names[majority]})"}
        for split in ("validation", "test"):
            gold = labels[split]
            out[split] = {
                "accuracy": float(np.mean(gold == majority)),
                "macro_f1": macro_f1(gold, np.full_like(gold, majority)),
            }
        return out

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

    def collator(self, tokenizer: Any) -> Any:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def metrics_function(self, tokenizer: Any, label_names: list[str]) -> Callable[[Any], dict[str, float]]:
        return self.compute_metrics

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

    def prediction_records(
        self, examples: Dataset, predictions: Any, label_names: list[str], tokenizer: Any = None
    ) -> list[dict[str, Any]]:
        logits = predictions
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

    def predict_batch(
        self,
        model: Any,
        tokenizer: Any,
        batch: dict[str, list],
        encode: Callable[..., Any],
        max_length: int,
        label_names: list[str],
    ) -> list[dict[str, Any]]:
        import torch

        inputs = self.collated(tokenizer, encode(tokenizer, batch, max_length))
        with torch.inference_mode():
            logits = model(**inputs).logits
        return self.decode(logits.float().numpy(), label_names)

    def format_prediction(self, result: dict[str, Any]) -> str:
        probs = " ".join(f"{k}={v:.3f}" for k, v in result["probs"].items())
        return f"{result['label']}\t{probs}"

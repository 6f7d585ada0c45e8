"""Token classification (named-entity recognition with BIO tags): word-level tags aligned to
sub-words, entity-level precision/recall/F1 (seqeval), a word-lookup baseline, and
predictions written as entity spans.

Data contract. ``dataset.text_column`` holds the words of a sentence (a JSON list of strings,
or one whitespace-separated string, e.g. in a CSV/TSV cell) and ``dataset.label_column`` its
tags (the same: a list, or a whitespace-separated string), one tag per word. Tags are BIO:
``O``, ``B-<type>``, ``I-<type>`` (an ``I-X`` after ``O`` is read as the start of an entity,
as seqeval's default mode reads it). The tag vocabulary comes from the data (``O`` first,
then ``B-``/``I-`` of each type in alphabetical order; ``dataset.label_names`` fixes it).

Alignment. The first sub-word of each word carries the word's tag; the other sub-words and
the special tokens carry -100 (ignored by the loss and the metrics), as transformers'
token-classification examples do. peft's prompt methods that *prepend* virtual tokens
(P-tuning, prompt tuning) make the logits ``n`` positions longer than the labels and pass
the labels on unchanged (peft#1974), so the Trainer here pads the labels on the left with
``n`` × -100, ``n`` read from the model's own peft config; prefix tuning adds no input
positions (nothing to pad), and template P-tuning places its prompts inside the input, where
the labels get -100 too. Every metric is computed on words, never on sub-words.

CoNLL files (``word<TAB>tag`` lines, a blank line between sentences) convert to the JSON lines
this task reads with ``python -m ptexp.tasks.token_cls IN.conll OUT.jsonl``.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ptexp.errors import ConfigError
from ptexp.tasks import register
from ptexp.tasks.base import Task

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

log = logging.getLogger("ptexp.data")

#: Label id of positions that are not the first sub-word of a word (special tokens, the rest
#: of a word's sub-words, virtual tokens, padding): ignored by the loss and the metrics.
IGNORE = -100
OUTSIDE = "O"
_BIO = re.compile(r"^(O|[BI]-\S+)$")


def words_of(value: Any) -> list[str]:
    """A cell's words (or tags): a list as given, a string split at whitespace."""
    if isinstance(value, str):
        return value.split()
    return [str(v) for v in value]


def entities(tags: list[str], words: list[str]) -> list[list[Any]]:
    """Entity spans ``[type, first word, last word (inclusive), text]`` of a BIO tag sequence,
    read as seqeval reads it (an I-X after O or after another type opens an entity)."""
    from seqeval.metrics.sequence_labeling import get_entities

    return [[kind, start, end, " ".join(words[start : end + 1])] for kind, start, end in get_entities(list(tags))]


def read_conll(path: Path, column: int = -1) -> Iterator[dict[str, list[str]]]:
    """Sentences of a CoNLL column file: the first column is the word, ``column`` the tag
    (default: the last); blank (or whitespace-only) lines end a sentence; ``-DOCSTART-``
    lines are skipped."""
    words: list[str] = []
    tags: list[str] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields or fields[0] == "-DOCSTART-":
                if words:
                    yield {"tokens": words, "ner_tags": tags}
                words, tags = [], []
                continue
            if len(fields) < 2:
                raise ValueError(f"{path}: line {number} has a word but no tag: {line.rstrip()!r}")
            words.append(fields[0])
            tags.append(fields[column])
    if words:
        yield {"tokens": words, "ner_tags": tags}


def prepended_positions(model: Any) -> int:
    """Input positions a peft prompt method puts before the input: P-tuning and prompt tuning
    prepend ``num_virtual_tokens`` (peft#1974); prefix tuning, LoRA and non-peft models none."""
    config = getattr(model, "active_peft_config", None)
    if config is None or not getattr(config, "is_prompt_learning", False):
        return 0
    if str(getattr(config.peft_type, "value", config.peft_type)) in ("PREFIX_TUNING", "CARTRIDGE"):
        return 0
    return int(config.num_virtual_tokens) * int(getattr(config, "num_transformer_submodules", None) or 1)


class LeftPadLabels:
    """A collator whose ``labels`` get ``n`` × -100 in front: the positions of the virtual
    tokens peft prepends to the input (so the loss sees labels as long as the logits)."""

    def __init__(self, collator: Any, n: int) -> None:
        self.collator, self.n = collator, n

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        import torch

        batch = self.collator(features)
        labels = batch.get("labels")
        if labels is not None and self.n:
            pad = torch.full((labels.shape[0], self.n), IGNORE, dtype=labels.dtype)
            batch["labels"] = torch.cat([pad, labels], dim=1)
        return batch


def keep_word_predictions(logits: Any, labels: Any) -> Any:
    """``preprocess_logits_for_metrics``: the predicted tag id at each labelled position (the
    first sub-word of a word), -100 elsewhere. Keeps one int per position instead of one float
    per tag, and tells prediction_records which positions are words."""
    import torch

    if isinstance(logits, tuple):
        logits = logits[0]
    if logits.shape[1] != labels.shape[1]:  # a model whose prepended positions were not padded
        logits = logits[:, logits.shape[1] - labels.shape[1] :]
    preds = logits.argmax(dim=-1)
    return torch.where(labels == IGNORE, torch.full_like(preds, IGNORE), preds)


def _trainer_class() -> type:
    from ptexp.trainer import PTuningTrainer

    class TokenClassificationTrainer(PTuningTrainer):
        """ptexp's resumable Trainer; when the model prepends virtual tokens, its collator pads
        the labels on the left by as many -100 (see the module)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            n = prepended_positions(self.model)
            if n:
                self.data_collator = LeftPadLabels(self.data_collator, n)

    return TokenClassificationTrainer


def seqeval_scores(gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
    """Entity-level micro precision/recall/F1 (seqeval's default, conlleval-compatible mode)
    and word accuracy."""
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

    return {
        "f1": float(f1_score(gold, pred, zero_division=0)),
        "precision": float(precision_score(gold, pred, zero_division=0)),
        "recall": float(recall_score(gold, pred, zero_division=0)),
        "accuracy": float(accuracy_score(gold, pred)),
    }


def tag_vocabulary(tags: set[str]) -> list[str]:
    """``O``, then ``B-X``, ``I-X`` for every type X seen (both, even when the data has one)."""
    kinds = sorted({t[2:] for t in tags if t != OUTSIDE})
    return [OUTSIDE, *(f"{p}-{k}" for k in kinds for p in "BI")]


@register
class TokenClassification(Task):
    name = "TOKEN_CLS"
    default_metric = "f1"
    metrics = ("f1", "precision", "recall", "accuracy")
    column_keys = {"text": "text_column", "label": "label_column"}
    input_roles = ("text",)
    stratify_column = None

    # -- before anything loads ---------------------------------------------------------------
    def check(self, cfg: Any) -> list[str]:
        warnings = super().check(cfg)
        pair = cfg.dataset.get("text_pair_column")
        if pair:
            raise ConfigError(
                f"dataset.text_pair_column='{pair}' is set, but dataset.task=TOKEN_CLS tags the words of one text "
                "(dataset.text_column) and has no second text. Drop dataset.text_pair_column."
            )
        names = cfg.dataset.get("label_names")
        if names:
            bad = [str(n) for n in names if not _BIO.match(str(n))]
            if bad:
                raise ConfigError(
                    f"dataset.label_names holds {bad[:5]}, which are not BIO tags: TOKEN_CLS tags are O, B-<type> "
                    "and I-<type> (e.g. [O, B-person, I-person])."
                )
        return warnings

    # -- data --------------------------------------------------------------------------------
    def is_complete(self, example: dict[str, Any]) -> bool:
        text, label = example.get("text"), example.get("label")
        if text is None or label is None:
            return False
        return bool(words_of(text)) and bool(words_of(label))

    def encode_labels(self, splits: DatasetDict, dataset_cfg: Any, names: dict[str, str]) -> tuple[DatasetDict, list]:
        from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value

        column, text_column = dataset_cfg.label_column, dataset_cfg.text_column
        parsed: dict[str, tuple[list[list[str]], list[list[str]]]] = {}
        seen: dict[str, set[str]] = {}
        for split, d in splits.items():
            words_rows, tag_rows = [], []
            seen[split] = set()
            # Hub datasets (e.g. wnut_17) store tags as ids of a ClassLabel: read them as its names.
            inner = getattr(d.features["label"], "feature", None)
            tag_names = inner.names if isinstance(inner, ClassLabel) else None
            for row, (text, label) in enumerate(zip(d["text"], d["label"]), 1):
                words = words_of(text)
                tags = [tag_names[i] for i in label] if tag_names else words_of(label)
                if len(words) != len(tags):
                    raise ConfigError(
                        f"The {split} split ({names[split]}): row {row} has {len(words)} words in "
                        f"dataset.text_column='{text_column}' but {len(tags)} tags in dataset.label_column='{column}' "
                        f"(words: {' '.join(words)[:80]!r}). TOKEN_CLS needs one tag per word; rows are counted "
                        "from 1 among the rows kept (rows with an empty text or tags are dropped first)."
                    )
                for tag in tags:
                    if tag not in seen[split] and not _BIO.match(tag):
                        raise ConfigError(
                            f"The {split} split ({names[split]}) has the tag {tag!r} (row {row}, column "
                            f"dataset.label_column='{column}'), which is not a BIO tag: TOKEN_CLS reads O, B-<type> "
                            "and I-<type> (e.g. B-person, I-person). Convert other schemes (IOBES, bare types such "
                            "as PER) to BIO first."
                        )
                    seen[split].add(tag)
                words_rows.append(words)
                tag_rows.append(tags)
            parsed[split] = (words_rows, tag_rows)
        every = set().union(*seen.values())
        if dataset_cfg.label_names:
            label_names = [str(n) for n in dataset_cfg.label_names]
            missing = sorted(every - set(label_names))
            if missing:
                where = [f"{names[s]}" for s in seen if set(missing) & seen[s]]
                raise ConfigError(
                    f"The data has tags that dataset.label_names lacks: {missing[:10]} (in {', '.join(where)}). "
                    f"dataset.label_names is {label_names}: add them, or leave it unset to take the tags from the data."
                )
        else:
            label_names = tag_vocabulary(every)
        if not set(label_names) - {OUTSIDE}:
            raise ConfigError(
                f"dataset.label_column='{column}' holds only '{OUTSIDE}' tags in {', '.join(names.values())}: "
                "there is no entity to learn."
            )
        unseen = sorted((every - seen["train"]) - {OUTSIDE}) if "train" in seen else []
        if unseen:
            log.warning("tags never seen in train (kept in the vocabulary): %s", unseen)
        index = {n: i for i, n in enumerate(label_names)}
        features = Features({"text": Sequence(Value("string")), "label": Sequence(Value("int64"))})
        out = DatasetDict()
        for split, (words_rows, tag_rows) in parsed.items():
            ids = [[index[t] for t in tags] for tags in tag_rows]
            out[split] = Dataset.from_dict({"text": words_rows, "label": ids}, features=features)
        return out, label_names

    def baseline(self, splits: DatasetDict, label_names: list[str]) -> dict[str, Any]:
        """Each word's most frequent tag in train (exact spelling; ``O`` for words train lacks),
        scored like the model: the lookup a tagger must beat to have learned more than a list."""
        counts: dict[str, Counter] = {}
        for words, ids in zip(splits["train"]["text"], splits["train"]["label"]):
            for word, tag in zip(words, ids):
                counts.setdefault(word, Counter())[tag] += 1
        lookup = {w: label_names[c.most_common(1)[0][0]] for w, c in counts.items()}
        out: dict[str, Any] = {"name": "most frequent tag per word in train"}
        for split in ("validation", "test"):
            d = splits[split]
            gold = [[label_names[i] for i in ids] for ids in d["label"]]
            pred = [[lookup.get(w, OUTSIDE) for w in words] for words in d["text"]]
            out[split] = seqeval_scores(gold, pred)
        return out

    # -- model -------------------------------------------------------------------------------
    def auto_model_class(self) -> Any:
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification

    def model_kwargs(self, label_names: list[str]) -> dict[str, Any]:
        return {
            "num_labels": len(label_names),
            "id2label": dict(enumerate(label_names)),
            "label2id": {name: i for i, name in enumerate(label_names)},
        }

    def trainer_class(self) -> type:
        return _trainer_class()

    def trainer_kwargs(self, tokenizer: Any, label_names: list[str], cfg: Any) -> dict[str, Any]:
        return {"preprocess_logits_for_metrics": keep_word_predictions}

    # -- inputs ------------------------------------------------------------------------------
    def encode(self, tokenizer: Any, batch: dict[str, list], max_length: int) -> Any:
        """Sub-word inputs of each row's words, and ``labels``: the word's tag id on its first
        sub-word, -100 elsewhere. Without tags (predicting), first sub-words get 0: the labels
        then only mark where each word starts."""
        words = [words_of(t) for t in batch["text"]]
        if not getattr(tokenizer, "is_fast", False):
            raise ConfigError(
                "dataset.task=TOKEN_CLS aligns tags to sub-words with a fast (Rust) tokenizer's word_ids(); "
                f"{type(tokenizer).__name__} is not one. Use a model that ships tokenizer.json."
            )
        encoding = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
        tags = batch.get("label")
        labels = []
        for row in range(len(words)):
            previous, aligned = None, []
            for word in encoding.word_ids(row):
                if word is None or word == previous:
                    aligned.append(IGNORE)
                else:
                    aligned.append(int(tags[row][word]) if tags is not None else 0)
                previous = word
            labels.append(aligned)
        encoding["labels"] = labels
        return encoding

    def tokenize(
        self, splits: DatasetDict, tokenizer: Any, max_length: int, encode: Callable[..., Any] | None = None
    ) -> DatasetDict:
        encode = encode or self.encode
        # The word-level tags go too: the collator would take a "label" column for "labels".
        drop = [c for c in ("text", "label") if c in splits["train"].column_names]
        return splits.map(
            lambda batch: encode(tokenizer, batch, max_length), batched=True, remove_columns=drop, desc="tokenize"
        )

    def collator(self, tokenizer: Any) -> Any:
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE)

    # -- outputs -----------------------------------------------------------------------------
    def metrics_function(self, tokenizer: Any, label_names: list[str]) -> Callable[[Any], dict[str, float]]:
        def compute_metrics(eval_pred: Any) -> dict[str, float]:
            preds, labels = _word_predictions(eval_pred.predictions), np.asarray(eval_pred.label_ids)
            if preds.shape[1] != labels.shape[1]:
                preds = preds[:, preds.shape[1] - labels.shape[1] :]
            gold, pred = [], []
            for p_row, l_row in zip(preds, labels):
                keep = l_row != IGNORE
                gold.append([label_names[i] for i in l_row[keep]])
                pred.append([label_names[i] for i in p_row[keep]])
            return seqeval_scores(gold, pred)

        return compute_metrics

    def prediction_records(
        self, examples: Dataset, predictions: Any, label_names: list[str], tokenizer: Any = None
    ) -> list[dict[str, Any]]:
        preds = _word_predictions(predictions)
        if len(preds) != len(examples):
            raise ValueError(f"{len(preds)} predictions for {len(examples)} examples: pass the untokenised split")
        records = []
        for words, gold_ids, row in zip(examples["text"], examples["label"], preds):
            tags = _tags_per_word(words, [int(p) for p in row if p != IGNORE], label_names, tokenizer)
            gold = [label_names[i] for i in gold_ids]
            record = {"tokens": words, "gold": entities(gold, words), "entities": entities(tags, words), "tags": tags}
            records.append(record)
        return records

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

        rows = [words_of(t) for t in batch["text"]]
        inputs = self.collated(tokenizer, encode(tokenizer, {"text": rows}, max_length))
        starts = inputs.pop("labels")  # 0 where a word starts, -100 elsewhere
        with torch.inference_mode():
            logits = model(**inputs).logits
        logits = logits[:, logits.shape[1] - starts.shape[1] :]  # after the prepended virtual tokens
        preds = logits.argmax(dim=-1)
        out = []
        for words, p_row, s_row in zip(rows, preds.tolist(), starts.tolist()):
            ids = [p for p, s in zip(p_row, s_row) if s != IGNORE]
            tags = _tags_per_word(words, ids, label_names, tokenizer)
            out.append({"entities": entities(tags, words), "tags": tags})
        return out

    def format_prediction(self, result: dict[str, Any]) -> str:
        spans = [f"{kind}: {text} [{start}-{end}]" for kind, start, end, text in result["entities"]]
        return " | ".join(spans) if spans else "(no entities)"


def _word_predictions(predictions: Any) -> np.ndarray:
    """Tag ids per position: argmax of logits, or the ids keep_word_predictions already made."""
    if isinstance(predictions, tuple):
        predictions = predictions[0]
    predictions = np.asarray(predictions)
    return predictions.argmax(axis=-1) if predictions.ndim == 3 else predictions


def _tags_per_word(words: list[str], ids: list[int], label_names: list[str], tokenizer: Any) -> list[str]:
    """One tag per word from the predictions at word starts, in order. Words with no sub-word
    at all (the tokenizer drops some characters) and words cut by dataset.max_length get O."""
    if len(ids) == len(words):
        return [label_names[i] for i in ids]
    with_tokens = [w for w in range(len(words))]
    if tokenizer is not None:
        word_ids = tokenizer(words, is_split_into_words=True, add_special_tokens=False).word_ids()
        with_tokens = sorted({w for w in word_ids if w is not None})
    tags = [OUTSIDE] * len(words)
    for word, i in zip(with_tokens, ids):
        tags[word] = label_names[i]
    return tags


def _convert(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m ptexp.tasks.token_cls",
        description="Convert a CoNLL column file (word ... tag per line, blank line between sentences) into the "
        'JSON lines TOKEN_CLS reads: {"tokens": [...], "ner_tags": [...]} per sentence.',
    )
    parser.add_argument("conll", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--tag-column", type=int, default=-1, help="column of the tag (default: the last)")
    args = parser.parse_args(argv)
    sentences = list(read_conll(args.conll, args.tag_column))
    args.output.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in sentences), encoding="utf-8")
    print(f"wrote {len(sentences)} sentences to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_convert())

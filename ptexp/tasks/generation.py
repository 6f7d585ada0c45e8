"""Metrics and the trivial baseline of text generation, shared by the generating task types
(``CAUSAL_LM`` in generation mode, ``SEQ_2_SEQ_LM``). Pure Python on lists of strings: no
model, no tokenizer of the model.

- :func:`exact_match`: the share of predictions equal to their reference after
  :func:`normalize_answer` (lowercase, whitespace collapsed, surrounding spaces stripped).
- :func:`rouge`: mean ROUGE F-measures (``rouge1``, ``rouge2``, ``rougeL``) with Google's
  ``rouge-score``, over lowercased word tokens, Porter-stemmed for ASCII words; non-Latin
  scripts count too (CJK characters one token each), where rouge-score's own tokenizer would
  drop them and score 0.
- :func:`bleu`: corpus sacreBLEU (one reference per example), in [0, 100].
- :func:`perplexity`: ``exp(NLL summed over target tokens / target tokens)``; lower is better
  (``ptexp.tasks.base.LOWER_IS_BETTER``).
- :func:`generation_metrics`: the metrics a task names, by name, in one dict.
- :func:`most_frequent_target`: the baseline that always answers train's most frequent target,
  scored on validation and test with the same metrics.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

#: Metric names :func:`generation_metrics` computes.
GENERATION_METRICS = ("exact_match", "rouge1", "rouge2", "rougeL", "bleu")

_WORD = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]|[^\W_]+")


def normalize_answer(text: str) -> str:
    """Lowercased, whitespace collapsed and stripped: what exact match compares."""
    return " ".join(str(text).lower().split())


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of predictions equal to their reference after :func:`normalize_answer`."""
    _same_length(predictions, references)
    if not references:
        return 0.0
    return sum(normalize_answer(p) == normalize_answer(r) for p, r in zip(predictions, references)) / len(references)


class _Tokenizer:
    """rouge-score tokenizer: lowercased words (ASCII ones Porter-stemmed, as rouge-score's
    default does), each CJK character a token of its own; punctuation dropped."""

    def __init__(self) -> None:
        from nltk.stem import porter

        self._stem = porter.PorterStemmer().stem

    def tokenize(self, text: str) -> list[str]:
        tokens = _WORD.findall(str(text).lower())
        return [self._stem(t) if t.isascii() and len(t) > 3 else t for t in tokens]


@functools.cache
def _scorer(types: tuple[str, ...]) -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(types), tokenizer=_Tokenizer())


def rouge(
    predictions: Sequence[str], references: Sequence[str], types: Iterable[str] = ("rouge1", "rouge2", "rougeL")
) -> dict[str, float]:
    """Mean F-measure of each ROUGE type over the examples (0 for no examples)."""
    _same_length(predictions, references)
    types = tuple(types)
    if not references:
        return dict.fromkeys(types, 0.0)
    scorer = _scorer(types)
    sums = dict.fromkeys(types, 0.0)
    for p, r in zip(predictions, references):
        for t, score in scorer.score(str(r), str(p)).items():
            sums[t] += score.fmeasure
    return {t: s / len(references) for t, s in sums.items()}


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus sacreBLEU (13a tokenisation, one reference per example), 0 to 100."""
    import sacrebleu

    _same_length(predictions, references)
    if not references:
        return 0.0
    return float(sacrebleu.corpus_bleu([str(p) for p in predictions], [[str(r) for r in references]]).score)


def perplexity(nll_sum: float, tokens: int) -> float:
    """exp(mean negative log-likelihood per target token); inf when it overflows, nan for no tokens."""
    if tokens <= 0:
        return float("nan")
    mean = nll_sum / tokens
    return math.exp(mean) if mean < 700 else float("inf")


def generation_metrics(
    predictions: Sequence[str], references: Sequence[str], metrics: Iterable[str] = ("exact_match", "rougeL")
) -> dict[str, float]:
    """The named metrics (from :data:`GENERATION_METRICS`) of predictions against references."""
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in GENERATION_METRICS]
    if unknown:
        raise ValueError(f"unknown generation metrics {unknown}; known: {list(GENERATION_METRICS)}")
    out: dict[str, float] = {}
    if "exact_match" in metrics:
        out["exact_match"] = exact_match(predictions, references)
    rouge_types = tuple(m for m in metrics if m.startswith("rouge"))
    if rouge_types:
        out.update(rouge(predictions, references, rouge_types))
    if "bleu" in metrics:
        out["bleu"] = bleu(predictions, references)
    return {m: out[m] for m in metrics}


def most_frequent_target(
    train_targets: Sequence[str], splits: dict[str, Sequence[str]], metrics: Iterable[str] = ("exact_match", "rougeL")
) -> dict[str, Any]:
    """The trivial baseline: always answer train's most frequent target (after
    :func:`normalize_answer`; the first spelling seen is the answer), scored on each split:
    ``{"name": ..., "validation": {...}, "test": {...}}`` as ``Task.baseline`` returns it."""
    metrics = tuple(metrics)
    counts = Counter(normalize_answer(t) for t in train_targets)
    top = counts.most_common(1)[0][0] if counts else ""
    answer = next((t for t in train_targets if normalize_answer(t) == top), "")
    shown = answer if len(answer) <= 40 else answer[:37] + "..."
    out: dict[str, Any] = {"name": f"most frequent target ({shown!r})"}
    for split, references in splits.items():
        out[split] = generation_metrics([answer] * len(references), list(references), metrics)
    return out


def _same_length(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")

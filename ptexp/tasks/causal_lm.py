"""Decoder-only language models (GPT-2 family, Llama-style): the P-tuning paper's headline
("GPT understands, too"). Two modes, chosen by ``dataset.task_options.mode``:

- ``classify`` (default): classification by verbaliser. The input, written by
  ``task_options.prompt`` (e.g. ``"{text} It was"``), ends where a label word goes; each class
  is scored by the LM's log-probability of its label word(s) at that position
  (``task_options.label_words``; a word of several tokens scores the sum of their
  log-probabilities). Training minimises the cross-entropy of the gold class over those
  scores; predictions are the label with the class probabilities (softmax over the scores),
  metrics accuracy and macro-F1, baseline the majority class, as for SEQ_CLS.
- ``generate``: prompt -> target text (``dataset.label_column``). The loss is on the target
  tokens only (-100 on the prompt and the padding; peft prepends -100 for its virtual tokens
  itself). Evaluation generates greedily and scores exact match and ROUGE-L against the gold
  target, plus the perplexity of the gold target (lower is better). The baseline answers
  train's most frequent target.

Batches are padded on the right and every score and every generated token is read at each
row's own last real position. Generation is ptexp's own greedy loop over full forward passes
(no KV cache): with peft 0.21 and transformers 5 ``generate()`` of a P-tuning or prefix-tuning
model does not continue the way the model's own forward does once its cache is used
(peft#2123, #2134 and their successors; ``tests/test_task_causal_lm.py`` checks it), and peft
drops ``position_ids`` for prompt methods, so left padding would shift the positions of every
padded row and make an answer depend on the batch it is in.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ptexp.errors import ConfigError
from ptexp.tasks import register
from ptexp.tasks.seq_cls import SequenceClassification

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

log = logging.getLogger("ptexp.data")

MODES = ("classify", "generate")
CLASSIFY_METRICS = ("accuracy", "macro_f1")
GENERATE_METRICS = ("exact_match", "rougeL", "perplexity")
#: Generation's metrics that the baseline is scored with (it has no perplexity).
TEXT_METRICS = ("exact_match", "rougeL")
#: ROUGE-L: partial credit for a near miss, so it separates epochs on a small validation set
#: where exact match often ties; on one-word targets it equals exact match.
GENERATE_DEFAULT_METRIC = "rougeL"
_SLOT = re.compile(r"\{(text|text_pair)\}")


@dataclass
class CausalLMOptions:
    mode: str = field(default="classify", metadata={"help": "classify (score label words) | generate (target text)"})
    label_words: dict[str, str] = field(
        default_factory=dict,
        metadata={
            "help": "classify: label -> its word(s), e.g. {negative: terrible, positive: great}; {} = the labels"
        },
    )
    prompt: str = field(
        default="{text}",
        metadata={"help": "the text the LM reads: {text} (and {text_pair}) among real words, e.g. '{text} It was'"},
    )
    answer_prefix: str = field(
        default=" ",
        metadata={"help": "put before the label word / target (GPT-2's tokens start words with a space)"},
    )
    max_target_length: int = field(
        default=32, metadata={"help": "generate: target tokens, end-of-text included; a longer target is an error"}
    )
    max_new_tokens: int | None = field(
        default=None,
        metadata={"help": "generate: tokens generated at evaluation and predict; null = max_target_length"},
    )


@dataclass(frozen=True)
class Prompt:
    """``task_options.prompt`` split into real words and the slots they surround."""

    pieces: tuple[str, ...]  # words, slot names as "{text}" / "{text_pair}"

    @classmethod
    def parse(cls, text: str) -> Prompt:
        pieces: list[str] = []
        end = 0
        for match in _SLOT.finditer(text):
            if text[end : match.start()]:
                pieces.append(text[end : match.start()])
            pieces.append(match.group(0))
            end = match.end()
        if text[end:]:
            pieces.append(text[end:])
        slots = [p for p in pieces if p in ("{text}", "{text_pair}")]
        if slots.count("{text}") != 1 or slots.count("{text_pair}") > 1:
            raise ConfigError(
                f"dataset.task_options.prompt='{text}' must hold {{text}} once (and {{text_pair}} at most once), "
                "with any words around them, e.g. '{text} It was' or 'Review: {text} Sentiment:'."
            )
        return cls(tuple(pieces))

    @property
    def slots(self) -> list[str]:
        return [p[1:-1] for p in self.pieces if p in ("{text}", "{text_pair}")]

    @property
    def words(self) -> list[str]:
        return [p for p in self.pieces if p not in ("{text}", "{text_pair}")]


def uses_bos(tokenizer: Any) -> bool:
    """Llama-style tokenizers start a text with their own BOS; GPT-2's BOS is its EOS and is
    not put before a text (as its tokenizer does not)."""
    bos = tokenizer.bos_token_id
    return bos is not None and bos != tokenizer.eos_token_id


def pad_id(tokenizer: Any) -> int:
    """GPT-2 has no pad token: padding positions are masked, so EOS (or 0) fills them."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def word_ids(tokenizer: Any, options: CausalLMOptions, label_names: list[str]) -> list[list[int]]:
    """Each label's word as the tokens that follow the prompt (``answer_prefix`` + word)."""
    words = [options.label_words.get(name, name) for name in label_names]
    ids = [tokenizer(options.answer_prefix + w, add_special_tokens=False)["input_ids"] for w in words]
    for name, word, tokens in zip(label_names, words, ids):
        if not tokens:
            raise ConfigError(f"dataset.task_options.label_words: the word {word!r} of label {name!r} has no tokens.")
    seen: dict[tuple[int, ...], str] = {}
    for name, tokens in zip(label_names, ids):
        if tuple(tokens) in seen:
            raise ConfigError(
                f"dataset.task_options.label_words: labels {seen[tuple(tokens)]!r} and {name!r} become the same "
                f"tokens {tokens} (the tokenizer does not tell their words apart): give them distinct words."
            )
        seen[tuple(tokens)] = name
    return ids


@dataclass(frozen=True)
class CausalLMEncoder:
    """``(tokenizer, batch, max_length) -> model inputs`` for this run's options: the prompt's
    words around the input text (truncated to ``max_length`` tokens, the prompt's own words on
    top), a BOS first where the tokenizer has its own; in generate mode, with a ``label``
    (target) in the batch, the target and EOS follow, and ``labels`` are -100 on the prompt.

    A frozen dataclass, not a closure: datasets fingerprints the tokenising map by its pickle."""

    options: CausalLMOptions

    def __call__(self, tokenizer: Any, batch: dict[str, list], max_length: int) -> dict[str, list]:
        prompt = Prompt.parse(self.options.prompt)
        texts = {slot: batch[slot] for slot in prompt.slots if slot in batch}
        rows = len(batch["text"])
        encoded = {slot: tokenizer(values, add_special_tokens=False)["input_ids"] for slot, values in texts.items()}
        words = {w: tokenizer(w, add_special_tokens=False)["input_ids"] for w in prompt.words}
        start = [tokenizer.bos_token_id] if uses_bos(tokenizer) else []
        targets = batch.get("label") if self.options.mode == "generate" else None
        out: dict[str, list] = {"input_ids": [], "attention_mask": []}
        if targets is not None:
            out["labels"] = []
        for i in range(rows):
            parts = _truncate({slot: list(encoded[slot][i]) for slot in encoded}, max_length)
            ids = list(start)
            for piece in prompt.pieces:
                ids += parts[piece[1:-1]] if piece in ("{text}", "{text_pair}") else words[piece]
            if targets is not None:
                target = self.target_ids(tokenizer, targets[i])
                out["labels"].append([-100] * len(ids) + target)
                ids = ids + target
            out["input_ids"].append(ids)
            out["attention_mask"].append([1] * len(ids))
        return out

    def target_ids(self, tokenizer: Any, target: Any) -> list[int]:
        ids = tokenizer(self.options.answer_prefix + str(target), add_special_tokens=False)["input_ids"]
        ids = ids + [tokenizer.eos_token_id]
        if len(ids) > self.options.max_target_length:
            raise ConfigError(
                f"The target {str(target)[:80]!r} is {len(ids)} tokens with the end-of-text token, more than "
                f"dataset.task_options.max_target_length={self.options.max_target_length}. Raise max_target_length "
                "(the prompt, the target and the virtual tokens must fit the model's positions) or shorten the targets."
            )
        return ids


def _truncate(parts: dict[str, list[int]], max_length: int) -> dict[str, list[int]]:
    """The texts cut to ``max_length`` tokens together, the longer one first (longest_first)."""
    while sum(len(p) for p in parts.values()) > max_length:
        longest = max(parts, key=lambda k: len(parts[k]))
        parts[longest] = parts[longest][:-1]
    return parts


@dataclass
class CausalLMCollator:
    """Right padding: ``input_ids`` with the pad id, ``attention_mask`` with 0, token ``labels``
    (generate) with -100; a class id ``label`` (classify) becomes ``labels``."""

    pad_token_id: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        batch = {
            "input_ids": torch.tensor(
                [list(f["input_ids"]) + [self.pad_token_id] * (width - len(f["input_ids"])) for f in features]
            ),
            "attention_mask": torch.tensor(
                [list(f["attention_mask"]) + [0] * (width - len(f["attention_mask"])) for f in features]
            ),
        }
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([list(f["labels"]) + [-100] * (width - len(f["labels"])) for f in features])
        elif "label" in features[0] and not isinstance(features[0]["label"], str):
            batch["labels"] = torch.tensor([int(f["label"]) for f in features])
        return batch


# -- scoring and generating with any model of this task (peft prompts, prefix, LoRA, template) --


def _last_positions(logits: Any, input_ids: Any, lengths: Any) -> Any:
    """Index of each row's last real input position in ``logits``, counted from their end: prompt
    methods prepend virtual positions (logits longer than the inputs), prefix tuning and LoRA do
    not, and ``logits_to_keep`` keeps only the last positions."""
    return logits.shape[1] - input_ids.shape[1] + lengths - 1


def _keeps_logits(model: Any) -> bool:
    """Whether the causal LM under ``model`` (a peft wrapper, template P-tuning's module, or the
    model itself) takes ``logits_to_keep``: then only the positions read are projected onto the
    vocabulary."""
    import inspect

    for candidate in (model, getattr(model, "base", None), getattr(model, "get_base_model", lambda: None)()):
        if candidate is not None and "logits_to_keep" in inspect.signature(candidate.forward).parameters:
            return True
    return False


def _tail_logits(model: Any, input_ids: Any, attention_mask: Any, lengths: Any) -> Any:
    """Logits of the last ``width - shortest row + 1`` positions (every position a row is read at:
    each row's last real one and the appended word tokens after it), or of all positions when
    the model cannot limit them; :func:`_last_positions` indexes either."""
    keep = int(input_ids.shape[1] - lengths.min() + 1)
    kwargs = {"logits_to_keep": keep} if _keeps_logits(model) else {}
    return model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits


def class_scores(model: Any, input_ids: Any, attention_mask: Any, words: list[list[int]], pad: int) -> Any:
    """(batch, classes): log P(word of class c | the row's input), summed over the word's tokens."""
    import torch

    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    lengths = attention_mask.sum(dim=1)
    if all(len(w) == 1 for w in words):
        logits = _tail_logits(model, input_ids, attention_mask, lengths)
        last = logits[rows, _last_positions(logits, input_ids, lengths)].float().log_softmax(dim=-1)
        return last[:, [w[0] for w in words]]
    scores = []
    for word in words:
        extra = torch.full((input_ids.shape[0], len(word)), pad, dtype=input_ids.dtype, device=input_ids.device)
        ids = torch.cat([input_ids, extra], dim=1)
        mask = torch.cat([attention_mask, torch.zeros_like(extra)], dim=1)
        for j, token in enumerate(word):
            ids[rows, lengths + j] = token
            mask[rows, lengths + j] = 1
        logits = _tail_logits(model, ids, mask, lengths)
        first = _last_positions(logits, ids, lengths)
        total = torch.zeros(input_ids.shape[0], device=input_ids.device)
        for j, token in enumerate(word):
            total = total + logits[rows, first + j].float().log_softmax(dim=-1)[:, token]
        scores.append(total)
    return torch.stack(scores, dim=1)


def greedy_generate(
    model: Any, input_ids: Any, attention_mask: Any, max_new_tokens: int, eos: int | None, pad: int
) -> Any:
    """(batch, ≤ max_new_tokens) greedy continuation of each right-padded row, ``pad`` after its
    EOS. Each step is one full forward pass over the rows so far (no cache), each row's next
    token read at its own last position and written right after it: positions are those of
    training, whatever else is in the batch."""
    import torch

    batch, width = input_ids.shape
    rows = torch.arange(batch, device=input_ids.device)
    lengths = attention_mask.sum(dim=1).long()
    ids = torch.full((batch, width + max_new_tokens), pad, dtype=input_ids.dtype, device=input_ids.device)
    mask = torch.zeros_like(ids)
    ids[:, :width], mask[:, :width] = input_ids, attention_mask
    done = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
    out = []
    for _ in range(max_new_tokens):
        used = int(lengths.max())
        logits = _tail_logits(model, ids[:, :used], mask[:, :used], lengths)
        token = logits[rows, _last_positions(logits, ids[:, :used], lengths)].argmax(dim=-1)
        token = torch.where(done, torch.full_like(token, pad), token)
        out.append(token)
        live = ~done
        ids[rows[live], lengths[live]] = token[live]
        mask[rows[live], lengths[live]] = 1
        lengths = lengths + live.long()
        if eos is not None:
            done = done | (token == eos)
        if bool(done.all()):
            break
    return torch.stack(out, dim=1) if out else ids[:, :0]


def target_nll(model: Any, inputs: dict[str, Any]) -> tuple[Any, Any]:
    """Per row: negative log-likelihood of its target tokens (labels != -100), summed, and
    their count (for the token-weighted perplexity)."""
    import torch

    labels = inputs["labels"]
    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    offset = logits.shape[1] - labels.shape[1]
    # Token t is predicted at position offset + t - 1.
    predicted = logits[:, offset : offset + labels.shape[1] - 1].float()
    gold = labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(
        predicted.reshape(-1, predicted.shape[-1]), gold.reshape(-1), ignore_index=-100, reduction="none"
    ).view(gold.shape)
    counted = gold != -100
    return (nll * counted).sum(dim=1), counted.sum(dim=1)


def prompt_part(inputs: dict[str, Any], pad: int) -> tuple[Any, Any]:
    """The prompts of a training batch (the tokens before each row's first target label),
    right-padded."""
    import torch

    labels = inputs["labels"]
    lengths = (labels != -100).int().argmax(dim=1)
    width = int(lengths.max())
    ids = inputs["input_ids"][:, :width].clone()
    positions = torch.arange(width, device=ids.device).unsqueeze(0)
    mask = (positions < lengths.unsqueeze(1)).long()
    return ids.masked_fill(mask == 0, pad), mask


@dataclass(frozen=True)
class Setup:
    """What the trainer needs to score or generate: the run's mode and token ids."""

    mode: str
    words: tuple[tuple[int, ...], ...]
    pad: int
    eos: int | None
    max_new_tokens: int


def _trainer_class() -> type:
    import torch
    from transformers import Trainer

    from ptexp.trainer import ResumableTrainerMixin

    class CausalLMTrainer(ResumableTrainerMixin, Trainer):
        """The checkpointing Trainer, scoring label words (classify) or evaluating by greedy
        generation and the gold target's likelihood (generate)."""

        def __init__(self, *args: Any, causal_lm: Setup, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.causal_lm = causal_lm

        def _scores(self, model: Any, inputs: dict[str, Any]) -> Any:
            words = [list(w) for w in self.causal_lm.words]
            return class_scores(model, inputs["input_ids"], inputs["attention_mask"], words, self.causal_lm.pad)

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, **kwargs: Any) -> Any:
            if self.causal_lm.mode == "generate":
                return super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
            scores = self._scores(model, inputs)
            loss = torch.nn.functional.cross_entropy(scores, inputs["labels"])
            return (loss, {"logits": scores}) if return_outputs else loss

        def prediction_step(
            self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys: Any = None
        ) -> tuple[Any, Any, Any]:
            inputs = self._prepare_inputs(inputs)
            setup = self.causal_lm
            with torch.no_grad():
                if setup.mode == "classify":
                    scores = self._scores(model, inputs)
                    loss = torch.nn.functional.cross_entropy(scores, inputs["labels"])
                    return loss.detach(), (None if prediction_loss_only else scores), inputs["labels"]
                nll, count = target_nll(model, inputs)
                loss = nll.sum() / count.sum().clamp(min=1)
                if prediction_loss_only:
                    return loss.detach(), None, None
                ids, mask = prompt_part(inputs, setup.pad)
                generated = greedy_generate(model, ids, mask, setup.max_new_tokens, setup.eos, setup.pad)
                extra = (nll.unsqueeze(1), count.unsqueeze(1).float())
                return loss.detach(), (generated, *extra), inputs["labels"]

    return CausalLMTrainer


def decode_generated(tokenizer: Any, ids: Any) -> list[str]:
    """Generated token rows (pad, -100 and everything after EOS dropped) as text."""
    eos = tokenizer.eos_token_id
    texts = []
    for row in np.asarray(ids):
        tokens = []
        for t in row.tolist():
            if t == eos:
                break
            if t >= 0:
                tokens.append(t)
        texts.append(tokenizer.decode(tokens, skip_special_tokens=True).strip())
    return texts


def decode_targets(tokenizer: Any, labels: Any) -> list[str]:
    return decode_generated(tokenizer, np.where(np.asarray(labels) == -100, -1, np.asarray(labels)))


def _encoder_options(encode: Any) -> CausalLMOptions:
    """The options of this task's encoder, also when a method wraps it (template P-tuning)."""
    while encode is not None and not isinstance(encode, CausalLMEncoder):
        encode = getattr(encode, "encode", None)
    if encode is None:
        raise ValueError("CAUSAL_LM needs the task's own encoder (Task.encoder(cfg)), possibly wrapped by the method")
    return encode.options


@register
class CausalLM(SequenceClassification):
    """CAUSAL_LM: classification by verbaliser or generation with a decoder-only model."""

    name = "CAUSAL_LM"
    default_metric = "accuracy"
    metrics = (*CLASSIFY_METRICS, *GENERATE_METRICS)
    schema = CausalLMOptions
    stratify_column = "label"  # a class in classify mode; free text is split at random

    # -- before anything loads ---------------------------------------------------------------
    def options(self, dataset_cfg: Any) -> CausalLMOptions:
        options = super().options(dataset_cfg)
        if options.mode not in MODES:
            raise ConfigError(
                f"dataset.task_options.mode='{options.mode}' is not a mode of dataset.task=CAUSAL_LM; choose "
                "classify (score label words) or generate (prompt -> target text)."
            )
        Prompt.parse(options.prompt)
        if options.max_target_length <= 0 or (options.max_new_tokens is not None and options.max_new_tokens <= 0):
            raise ConfigError("dataset.task_options.max_target_length and max_new_tokens must be positive.")
        words: dict[str, str] = {}
        for label, word in options.label_words.items():
            if not str(word).strip():
                raise ConfigError(f"dataset.task_options.label_words.{label} is empty: give the label a word.")
            key = " ".join(str(word).split())
            if key in words:
                raise ConfigError(
                    f"dataset.task_options.label_words gives labels '{words[key]}' and '{label}' the same word "
                    f"'{word}': the LM could not tell the classes apart. Give each label its own word."
                )
            words[key] = label
        return options

    def default_metric_for(self, cfg: Any) -> str:
        # A partial config (a plain dict naming only the task) is read as the default mode.
        options = (cfg.get("dataset") or {}).get("task_options") or {}
        return GENERATE_DEFAULT_METRIC if options.get("mode") == "generate" else self.default_metric

    def check(self, cfg: Any) -> list[str]:
        options = self.options(cfg.dataset)
        method = str((cfg.get("method") or {}).get("name", "p_tuning"))
        if method == "linear_probe":
            raise ConfigError(
                "method=linear_probe trains a classification head, and dataset.task=CAUSAL_LM has none: it reads the "
                "LM's own word scores. Use method=p_tuning (the paper's), p_tuning_template, prompt_tuning, "
                "prefix_tuning, lora or full_finetune."
            )
        if method == "p_tuning_template" and options.mode == "generate":
            raise ConfigError(
                "method=p_tuning_template places prompts around the input, but in "
                "dataset.task_options.mode=generate the target follows the input in the same sequence, so a block "
                "after {text} would sit between prompt and answer. Use method=p_tuning (prompts prepended) for "
                "generation, or mode=classify with the template."
            )
        metric = (cfg.get("trainer") or {}).get("metric_for_best_model")
        allowed = (*(GENERATE_METRICS if options.mode == "generate" else CLASSIFY_METRICS), "loss")
        if metric is not None and str(metric).removeprefix("eval_") not in allowed:
            raise ConfigError(
                f"trainer.metric_for_best_model='{metric}' is not a metric of dataset.task=CAUSAL_LM in "
                f"dataset.task_options.mode={options.mode}; choose one of {list(allowed)}."
            )
        return []

    def check_backbone(self, model_name: str, backbone_config: Any) -> None:
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
            MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        )

        kind = getattr(backbone_config, "model_type", "?")
        encoder_only = kind in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(backbone_config, "is_decoder", False)
        if getattr(backbone_config, "is_encoder_decoder", False) or kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            encoder_only = True
        if encoder_only:
            what = (
                "an encoder-decoder" if getattr(backbone_config, "is_encoder_decoder", False) else "not a decoder-only"
            )
            raise ConfigError(
                f"model.name_or_path='{model_name}' is {what} model (model_type '{kind}'), and dataset.task=CAUSAL_LM "
                "needs a decoder-only language model: a GPT-2-family or Llama-style model such as model=gpt2 "
                "(gpt2, distilgpt2, EleutherAI/pythia-70m, Qwen/Qwen2.5-0.5B) or a local folder of one. For an "
                "encoder such as BERT or MiniLM use dataset.task=SEQ_CLS; for T5/BART, SEQ_2_SEQ_LM."
            )

    def check_lengths(self, cfg: Any, backbone_config: Any, virtual_tokens: int) -> None:
        from transformers import AutoTokenizer

        from ptexp.embedded import resolve_model_path

        limit = getattr(backbone_config, "max_position_embeddings", None)
        options = self.options(cfg.dataset)
        tokenizer = AutoTokenizer.from_pretrained(
            resolve_model_path(cfg.model.name_or_path), revision=cfg.model.revision
        )
        if options.mode == "generate" and tokenizer.eos_token_id is None:
            raise ConfigError(
                f"The tokenizer of model.name_or_path='{cfg.model.name_or_path}' has no end-of-text token: "
                "dataset.task_options.mode=generate needs one to end each target. Set eos_token in its "
                "tokenizer_config.json."
            )
        if limit is None:
            return
        words = sum(
            len(tokenizer(w, add_special_tokens=False)["input_ids"]) for w in Prompt.parse(options.prompt).words
        )
        start = 1 if uses_bos(tokenizer) else 0
        if options.mode == "generate":
            answer = max(options.max_target_length, options.max_new_tokens or 0)
            key = "max_new_tokens" if answer > options.max_target_length else "max_target_length"
            what = f"task_options.{key}={answer}"
        else:
            label_words = list(options.label_words.values()) or list(cfg.dataset.label_names or [])
            lengths = [
                len(tokenizer(options.answer_prefix + w, add_special_tokens=False)["input_ids"]) for w in label_words
            ]
            answer = max(lengths, default=1)
            what = f"the label word ({answer} tokens)"
        needed = cfg.dataset.max_length + virtual_tokens + words + start + answer
        if needed > limit:
            raise ConfigError(
                f"dataset.max_length={cfg.dataset.max_length} + {virtual_tokens} virtual tokens + {words + start} "
                f"tokens of dataset.task_options.prompt (and BOS) + {what} = {needed} exceeds the {limit} positions "
                f"of {cfg.model.name_or_path}: the prompt, the answer and the virtual tokens share them. Lower "
                f"dataset.max_length to at most {cfg.dataset.max_length - (needed - limit)}"
                + (" or task_options.max_target_length / max_new_tokens." if options.mode == "generate" else ".")
            )

    # -- data --------------------------------------------------------------------------------
    def is_complete(self, example: dict[str, Any]) -> bool:
        return super().is_complete(example) and bool(str(example["label"]).strip())

    def encode_labels(self, splits: DatasetDict, dataset_cfg: Any, names: dict[str, str]) -> tuple[DatasetDict, list]:
        options = self.options(dataset_cfg)
        if options.mode == "generate":
            from datasets import DatasetDict

            return DatasetDict({s: d.map(lambda ex: {"label": str(ex["label"])}) for s, d in splits.items()}), []
        splits, label_names = super().encode_labels(splits, dataset_cfg, names)
        if options.label_words:
            missing = [n for n in label_names if n not in options.label_words]
            if missing:
                raise ConfigError(
                    f"dataset.task_options.label_words has no word for the label(s) {missing} of the data "
                    f"(column dataset.label_column='{dataset_cfg.label_column}'; labels {label_names}). Give "
                    "every label a word, e.g. dataset.task_options.label_words="
                    + "{"
                    + ", ".join(f"{n}: <word>" for n in label_names)
                    + "}."
                )
            extra = sorted(set(options.label_words) - set(label_names))
            if extra:
                log.warning("dataset.task_options.label_words names labels not in the data: %s (ignored)", extra)
        return splits, label_names

    def baseline(self, splits: DatasetDict, label_names: list[str]) -> dict[str, Any]:
        if label_names:
            return super().baseline(splits, label_names)
        from ptexp.tasks.generation import most_frequent_target

        scored = {s: splits[s]["label"] for s in ("validation", "test")}
        return most_frequent_target(splits["train"]["label"], scored, TEXT_METRICS)

    # -- model -------------------------------------------------------------------------------
    def auto_model_class(self) -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def model_kwargs(self, label_names: list[str]) -> dict[str, Any]:
        return {}

    def trainer_class(self) -> type:
        return _trainer_class()

    def trainer_kwargs(self, tokenizer: Any, label_names: list[str], cfg: Any) -> dict[str, Any]:
        options = self.options(cfg.dataset)
        words = word_ids(tokenizer, options, label_names) if options.mode == "classify" else []
        return {"causal_lm": self.setup(tokenizer, options, words)}

    @staticmethod
    def setup(tokenizer: Any, options: CausalLMOptions, words: list[list[int]]) -> Setup:
        return Setup(
            mode=options.mode,
            words=tuple(tuple(w) for w in words),
            pad=pad_id(tokenizer),
            eos=tokenizer.eos_token_id,
            max_new_tokens=options.max_new_tokens or options.max_target_length,
        )

    # -- inputs ------------------------------------------------------------------------------
    def encoder(self, cfg: Any) -> CausalLMEncoder:
        return CausalLMEncoder(self.options(cfg.dataset))

    def encode(self, tokenizer: Any, batch: dict[str, list], max_length: int) -> Any:
        return CausalLMEncoder(CausalLMOptions())(tokenizer, batch, max_length)

    def collator(self, tokenizer: Any) -> Any:
        return CausalLMCollator(pad_id(tokenizer))

    # -- outputs -----------------------------------------------------------------------------
    def metrics_function(self, tokenizer: Any, label_names: list[str]) -> Callable[[Any], dict[str, float]]:
        if label_names:
            return self.compute_metrics

        def compute(eval_pred: Any) -> dict[str, float]:
            from ptexp.tasks.generation import generation_metrics, perplexity

            generated, nll, count = eval_pred.predictions
            predictions = decode_generated(tokenizer, generated)
            references = decode_targets(tokenizer, eval_pred.label_ids)
            out = generation_metrics(predictions, references, TEXT_METRICS)
            out["perplexity"] = perplexity(float(np.sum(nll)), int(np.sum(count)))
            return out

        return compute

    def prediction_records(
        self, examples: Dataset, predictions: Any, label_names: list[str], tokenizer: Any = None
    ) -> list[dict[str, Any]]:
        if label_names:
            return super().prediction_records(examples, predictions, label_names, tokenizer)
        outputs = decode_generated(tokenizer, predictions[0])
        if len(outputs) != len(examples):
            raise ValueError(f"{len(outputs)} predictions for {len(examples)} examples: pass the untokenised split")
        columns = [c for c in ("text", "text_pair") if c in examples.column_names]
        gold = examples["label"] if "label" in examples.column_names else [None] * len(examples)
        return [
            {**{c: examples[c][i] for c in columns}, **({"gold": g} if g is not None else {}), "output": o}
            for i, (g, o) in enumerate(zip(gold, outputs))
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

        options = _encoder_options(encode)
        batch = {k: v for k, v in batch.items() if k != "label"}
        inputs = self.collated(tokenizer, encode(tokenizer, batch, max_length))
        with torch.inference_mode():
            if options.mode == "classify":
                words = word_ids(tokenizer, options, label_names)
                scores = class_scores(model, inputs["input_ids"], inputs["attention_mask"], words, pad_id(tokenizer))
                return self.decode(scores.float().numpy(), label_names)
            setup = self.setup(tokenizer, options, [])
            generated = greedy_generate(
                model, inputs["input_ids"], inputs["attention_mask"], setup.max_new_tokens, setup.eos, setup.pad
            )
        return [{"output": text} for text in decode_generated(tokenizer, generated.numpy())]

    def format_prediction(self, result: dict[str, Any]) -> str:
        import json

        if "output" in result:
            return json.dumps(result["output"], ensure_ascii=False)
        return super().format_prediction(result)

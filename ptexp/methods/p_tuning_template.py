"""Template P-tuning (Liu et al., "GPT Understands, Too"): continuous prompts placed by a
template around and between the inputs, e.g. ``[P:3] {text} [P:3] {text_pair} [P:3]``, with
optional anchor words kept as real tokens. peft only prepends prompts, so this module places
them; the prompt vectors come from peft's own ``PromptEncoder`` (the ``prompt_encoder`` group,
MLP or LSTM), and the backbone is frozen.

A template of one leading block, ``[P:n] {text}``, is exactly ``method=p_tuning`` with
``prompt_encoder.num_virtual_tokens=n``: same parameters, same initialisation, same numbers.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ptexp.errors import ConfigError
from ptexp.methods import register
from ptexp.methods.base import Method, extra_modules, train_only
from ptexp.methods.p_tuning import (
    HEAD_LR_HELP,
    TOKEN_INIT_HELP,
    check_prompt_encoder,
    check_recipe,
    init_from_vocab,
    normalise_encoder,
    normalise_recipe,
    prompt_encoder_config,
    recipe_warnings,
)
from ptexp.outputs import write_json

#: The input id that marks a prompt position; never a real token id, and it survives padding.
PLACEHOLDER = -1
#: Written beside the tokenizer in the run's adapter folder.
TEMPLATE_FILE = "p_tuning_template.json"
SLOTS = ("text", "text_pair")
#: Module names peft's SEQ_CLS wrapper trains as modules_to_save (matched by name suffix, as
#: peft matches them), so that a prepend-only template trains what method=p_tuning trains.
PEFT_HEAD_MODULES = ("classifier", "score")

_MARKER = re.compile(r"\[([^\[\]]*)\]|\{([^{}]*)\}")
_PROMPT = re.compile(r"\s*P\s*:\s*(-?\d+)\s*")
SYNTAX = "[P:n] blocks of n >= 1 prompts, the slots {text} and {text_pair}, and anchor words"


@dataclass
class PTuningTemplateOptions:
    name: str = "p_tuning_template"
    template: str = field(
        default="[P:3] {text} [P:3]",
        metadata={"help": f"where prompts go: {SYNTAX}, e.g. '[P:3] {{text}} [P:3] {{text_pair}} [P:3]'"},
    )
    token_init: str = field(default="random", metadata={"help": TOKEN_INIT_HELP})
    head_learning_rate: float | None = field(default=None, metadata={"help": HEAD_LR_HELP})


@dataclass(frozen=True)
class Template:
    """A parsed template: the slots in order and, around them, one gap per slot boundary
    (before the first slot, between slots, after the last), each a sequence of prompt counts
    (int) and anchor words (str)."""

    slots: tuple[str, ...]
    gaps: tuple[tuple[int | str, ...], ...]

    @property
    def num_prompts(self) -> int:
        return sum(item for gap in self.gaps for item in gap if isinstance(item, int))

    @property
    def words(self) -> list[str]:
        return [item for gap in self.gaps for item in gap if isinstance(item, str)]

    def __str__(self) -> str:
        parts: list[str] = []
        for i, gap in enumerate(self.gaps):
            parts.extend(f"[P:{item}]" if isinstance(item, int) else item for item in gap)
            if i < len(self.slots):
                parts.append(f"{{{self.slots[i]}}}")
        return " ".join(parts)


def parse_template(text: str) -> Template:
    """The template of ``method.template``; a ConfigError naming the key for anything else."""

    def bad(why: str) -> ConfigError:
        return ConfigError(f"method.template='{text}' {why}. A template holds {SYNTAX}, e.g. '[P:3] {{text}} [P:3]'.")

    slots: list[str] = []
    gaps: list[list[int | str]] = [[]]

    def add_words(words: str) -> None:
        words = " ".join(words.split())
        if not words:
            return
        if any(c in words for c in "[]{}"):
            raise bad(f"has an unmatched bracket or brace in '{words}'")
        gap = gaps[-1]
        # Adjacent pieces of one kind are one piece: equal templates compare (and dedupe) equal.
        if gap and isinstance(gap[-1], str):
            gap[-1] = f"{gap[-1]} {words}"
        else:
            gap.append(words)

    end = 0
    for match in _MARKER.finditer(text):
        add_words(text[end : match.start()])
        end = match.end()
        bracket, brace = match.groups()
        if brace is not None:
            slot = brace.strip()
            if slot not in SLOTS:
                raise bad(f"has an unknown slot {{{brace}}} (slots: {{text}}, {{text_pair}})")
            if slot in slots:
                raise bad(f"has {{{slot}}} twice")
            slots.append(slot)
            gaps.append([])
            continue
        prompt = _PROMPT.fullmatch(bracket)
        if prompt is None:
            raise bad(f"has an unknown placeholder [{bracket}] (prompts are written [P:n])")
        count = int(prompt.group(1))
        if count < 1:
            raise bad(f"has [{bracket}]: a block holds at least one prompt")
        gap = gaps[-1]
        if gap and isinstance(gap[-1], int):
            gap[-1] += count
        else:
            gap.append(count)
    add_words(text[end:])
    if "text" not in slots:
        raise bad("has no {text} slot")
    if slots != [s for s in SLOTS if s in slots]:
        raise bad("puts {text_pair} before {text}: the tokenizer encodes the first text first")
    template = Template(tuple(slots), tuple(tuple(g) for g in gaps))
    if template.num_prompts == 0:
        raise bad("has no [P:n] block: without prompts there is nothing to train but the head (method=linear_probe)")
    return template


def template_of(cfg: DictConfig) -> Template:
    return parse_template(str(cfg.method.template))


@dataclass(frozen=True)
class TemplateEncoder:
    """``(tokenizer, batch, max_length) -> model inputs``: the task's own encoding (its
    truncation applies to the real text only), with the template's prompt positions
    (:data:`PLACEHOLDER` ids) and anchor words inserted.

    Placement: a gap before the first slot goes before everything, special tokens included
    (so ``[P:n] {text}`` is peft's prepend exactly); a gap between slots goes right before the
    second text's first token (after the separator); a gap after the last slot goes at the very
    end. Token type ids are 0 for a leading gap and the adjacent text's elsewhere.

    A frozen dataclass, not a closure: datasets fingerprints the tokenising map by its pickle,
    so each template tokenises (and caches) its own splits."""

    template: Template
    encode: Any  # the task's encode

    def __call__(self, tokenizer: Any, batch: dict[str, list], max_length: int) -> dict[str, list]:
        encoding = self.encode(tokenizer, batch, max_length)
        words = {w: tokenizer(w, add_special_tokens=False)["input_ids"] for w in self.template.words}
        out: dict[str, list] = {key: [] for key in encoding.keys()}
        for row in range(len(encoding["input_ids"])):
            for key, values in self._row(encoding, row, words, tokenizer).items():
                out[key].append(values)
        return out

    def _row(self, encoding: Any, row: int, words: dict[str, list[int]], tokenizer: Any) -> dict[str, list]:
        ids = list(encoding["input_ids"][row])
        types = encoding["token_type_ids"][row] if "token_type_ids" in encoding else None
        gaps = self.template.gaps
        # (position, gap, token type): inserted from the back so earlier positions hold.
        inserts = [(0, gaps[0], 0)]
        if len(gaps) == 3:
            start = self._second_text_start(encoding, row, tokenizer)
            inserts.append((start, gaps[1], types[start] if types is not None and start < len(ids) else 0))
        inserts.append((len(ids), gaps[-1], types[-1] if types is not None and ids else 0))
        result = {key: list(encoding[key][row]) for key in encoding.keys()}
        for position, gap, token_type in reversed(inserts):
            new_ids = [i for item in gap for i in ([PLACEHOLDER] * item if isinstance(item, int) else words[item])]
            for key, values in result.items():
                if key == "input_ids":
                    fill = new_ids
                elif key == "attention_mask":
                    fill = [1] * len(new_ids)
                elif key == "token_type_ids":
                    fill = [token_type] * len(new_ids)
                elif key == "labels":
                    # Per-token labels (TOKEN_CLS): prompts and anchor words are no word, ignored.
                    fill = [-100] * len(new_ids)
                else:
                    raise ValueError(f"method=p_tuning_template cannot place prompts in the task's '{key}' inputs")
                values[position:position] = fill
        return result

    @staticmethod
    def _second_text_start(encoding: Any, row: int, tokenizer: Any) -> int:
        try:
            sequence = encoding.sequence_ids(row)
        except (AttributeError, ValueError):
            raise ConfigError(
                "method.template with a gap between {text} and {text_pair} needs a fast tokenizer "
                "(it finds where the second text starts)."
            ) from None
        if 1 in sequence:
            return sequence.index(1)
        # Truncation emptied the second text: it would start before the specials that end a pair.
        reference = tokenizer("a", "b").sequence_ids(0)
        tail = len(reference) - 1 - max(i for i, s in enumerate(reference) if s == 1)
        return len(sequence) - tail


@functools.cache
def _prompt_model_class() -> type:
    import torch

    class TemplatePromptModel(torch.nn.Module):
        """The frozen backbone with its head, fed ``inputs_embeds`` whose placeholder positions
        hold the prompt encoder's outputs (the k-th placeholder of a row is the k-th prompt)."""

        def __init__(self, base: Any, prompt_encoder: Any, prompt_config: Any, template: Template) -> None:
            super().__init__()
            # base first, as in a PeftModel: parameter order sets the gradient-norm summation order.
            self.base = base
            self.prompt_encoder = prompt_encoder
            self.prompt_config = prompt_config
            self.template = template
            self.register_buffer("prompt_ids", torch.arange(template.num_prompts), persistent=False)

        @property
        def config(self) -> Any:
            # The Trainer reads keys_to_ignore_at_inference etc. from model.config.
            return self.base.config

        def forward(
            self,
            input_ids: Any = None,
            attention_mask: Any = None,
            token_type_ids: Any = None,
            labels: Any = None,
            **kwargs: Any,
        ) -> Any:
            # **kwargs as the backbone's forward has it: the Trainer then treats the loss as the
            # backbone's (num_items_in_batch), as it does under peft.
            inputs = {"attention_mask": attention_mask, "token_type_ids": token_type_ids, "labels": labels}
            if token_type_ids is None:
                del inputs["token_type_ids"]  # encoder-decoders (T5, BART) take none
            return self.base(inputs_embeds=self.embed(input_ids), **inputs, **kwargs)

        def generate(self, input_ids: Any = None, attention_mask: Any = None, **kwargs: Any) -> Any:
            """The backbone's generate (SEQ_2_SEQ_LM: the encoder reads the prompts) from the same
            embeddings the forward reads."""
            return self.base.generate(inputs_embeds=self.embed(input_ids), attention_mask=attention_mask, **kwargs)

        @property
        def generation_config(self) -> Any:
            return self.base.generation_config

        def embed(self, input_ids: Any) -> Any:
            """The input embeddings with the k-th placeholder of each row replaced by the k-th prompt."""
            slots = input_ids == PLACEHOLDER
            batch, count = input_ids.shape[0], self.template.num_prompts
            if int(slots.sum()) != batch * count:
                raise ValueError(
                    f"inputs hold {int(slots.sum())} prompt placeholders, not {count} per row: they were not "
                    f"encoded with method.template='{self.template}' (use the method's encoder)."
                )
            embeds = self.base.get_input_embeddings()(input_ids.masked_fill(slots, 0))
            # Encoded once and repeated per row as peft's get_prompt does (peft#2043): the gradient
            # then sums in the same order, so the numbers equal method=p_tuning's.
            prompts = self.prompt_encoder(self.prompt_ids.unsqueeze(0)).repeat(batch, 1, 1).to(embeds.dtype)
            return embeds.masked_scatter(slots.unsqueeze(-1), prompts)

    return TemplatePromptModel


def _default_num_virtual_tokens() -> int:
    import dataclasses

    from ptexp.schema import PromptEncoderConfig

    return next(f.default for f in dataclasses.fields(PromptEncoderConfig) if f.name == "num_virtual_tokens")


@register
class PTuningTemplate(Method):
    name = "p_tuning_template"
    schema = PTuningTemplateOptions
    uses_prompt_encoder = True
    tokens_key = "method.template"
    report_axes = ("method.template", "prompt_encoder.encoder_hidden_size")

    def check(self, cfg: DictConfig) -> list[str]:
        options = self.options(cfg)
        check_recipe(options)
        template = template_of(cfg)
        pair_column = cfg.dataset.get("text_pair_column")
        if "text_pair" in template.slots and not pair_column:
            raise ConfigError(
                f"method.template='{cfg.method.template}' has a {{text_pair}} slot, but the dataset has single "
                "texts (no dataset.text_pair_column): drop the slot or name the pair column."
            )
        if pair_column and "text_pair" not in template.slots:
            raise ConfigError(
                f"method.template='{cfg.method.template}' has no {{text_pair}} slot, but the dataset has pairs "
                f"(dataset.text_pair_column='{pair_column}'): place the second text, e.g. "
                "'[P:3] {text} [P:3] {text_pair} [P:3]'."
            )
        pe = OmegaConf.to_container(cfg.prompt_encoder, resolve=True)
        assert isinstance(pe, dict)
        given = pe.get("num_virtual_tokens")
        warnings = check_prompt_encoder(OmegaConf.create({**pe, "num_virtual_tokens": template.num_prompts}))
        # The group's default is there on every run; warn only about a value someone chose.
        if given not in (template.num_prompts, _default_num_virtual_tokens()):
            warnings.append(
                f"prompt_encoder.num_virtual_tokens={given} has no effect with method=p_tuning_template: "
                f"method.template='{template}' places {template.num_prompts} prompts."
            )
        return warnings + recipe_warnings(options, cfg)

    def tokens_text(self, cfg: DictConfig) -> str:
        return f"the {self.virtual_tokens(cfg)} prompt and anchor tokens of method.template='{cfg.method.template}'"

    def virtual_tokens(self, cfg: DictConfig) -> int:
        template = template_of(cfg)
        if not template.words:
            return template.num_prompts
        from transformers import AutoTokenizer

        from ptexp.embedded import resolve_model_path

        # Anchor words take positions too; how many depends on the tokenizer.
        path = str(Path(resolve_model_path(cfg.model.name_or_path)).expanduser())
        tokenizer = AutoTokenizer.from_pretrained(path, revision=cfg.model.revision)
        anchors = sum(len(tokenizer(w, add_special_tokens=False)["input_ids"]) for w in template.words)
        return template.num_prompts + anchors

    def effective(self, data: dict[str, Any]) -> dict[str, Any]:
        pe = data.get("prompt_encoder", {})
        pe.pop("num_virtual_tokens", None)  # the template sets the count
        normalise_encoder(pe)
        method = data.get("method", {})
        normalise_recipe(method)
        try:
            method["template"] = str(parse_template(str(method["template"])))
        except (KeyError, ConfigError):
            pass  # the run's own check reports it
        return data

    def encoder(self, cfg: DictConfig, task: Any) -> TemplateEncoder:
        return TemplateEncoder(template_of(cfg), task.encoder(cfg))

    def build(self, base: Any, cfg: DictConfig, task: Any, tokenizer: Any) -> Any:
        from peft.tuners.p_tuning import PromptEncoder

        template = template_of(cfg)
        train_only(base, [*PEFT_HEAD_MODULES, *(extra_modules(cfg) or [])])
        config = prompt_encoder_config(
            cfg.prompt_encoder,
            task,
            cfg,
            num_virtual_tokens=template.num_prompts,
            token_dim=base.get_input_embeddings().embedding_dim,
            num_transformer_submodules=1,
        )
        # Built after the backbone, as get_peft_model builds peft's: the same seed draws the
        # same initial prompts and MLP/LSTM weights as method=p_tuning.
        prompt_encoder = PromptEncoder(config).to(base.device)
        if self.options(cfg).token_init == "vocab":
            init_from_vocab(prompt_encoder.embedding, base.get_input_embeddings(), tokenizer, int(cfg.seed))
        return _prompt_model_class()(base, prompt_encoder, config, template)

    def describe(self, model: Any) -> dict[str, Any]:
        config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in model.prompt_config.to_dict().items()}
        return {"method": self.name, "template": str(model.template), **config}

    def save(self, model: Any, tokenizer: Any, run_dir: Path) -> list[Path]:
        from ptexp.layout import ADAPTER_DIR

        # The weights are trainable_state.safetensors; this says how to place them.
        path = run_dir / ADAPTER_DIR / TEMPLATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, self.describe(model))
        return [path]

    def load(self, run_dir: Path, cfg: DictConfig, base: Any, tokenizer: Any) -> Any:
        from ptexp.layout import ADAPTER_DIR
        from ptexp.tasks import get_task
        from ptexp.trainer import load_trainable_state

        saved = run_dir / ADAPTER_DIR / TEMPLATE_FILE
        if saved.is_file() and json.loads(saved.read_text())["template"] != str(template_of(cfg)):
            raise ConfigError(f"{saved} does not hold the template of {run_dir}'s config.yaml: was it edited?")
        model = self.build(base, cfg, get_task(cfg.dataset.task), tokenizer)
        load_trainable_state(model, str(run_dir))
        return model

"""Prompt tuning (Lester et al. 2021): trainable prompt embeddings prepended to the input, no
encoder; initialised at random or from the embeddings of a text. peft's ``PromptTuningConfig``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from ptexp.errors import ConfigError
from ptexp.methods import register
from ptexp.methods.base import PeftMethod, extra_modules, positive


@dataclass
class PromptTuningOptions:
    name: str = "prompt_tuning"
    num_virtual_tokens: int = field(default=10, metadata={"help": "prompt length"})
    init: str = field(default="text", metadata={"help": "random | text (embeddings of init_text's tokens)"})
    init_text: str = field(
        default="Classify the text:", metadata={"help": "text whose token embeddings initialise the prompt"}
    )


@register
class PromptTuning(PeftMethod):
    name = "prompt_tuning"
    schema = PromptTuningOptions
    report_axes = ("method.num_virtual_tokens",)

    def check(self, cfg: DictConfig) -> list[str]:
        options = self.options(cfg)
        positive("method.num_virtual_tokens", options.num_virtual_tokens)
        if options.init not in ("random", "text"):
            raise ConfigError(f"method.init='{options.init}' is not valid; choose random or text.")
        return []

    def virtual_tokens(self, cfg: DictConfig) -> int:
        return int(cfg.method.num_virtual_tokens)

    def peft_config(self, cfg: DictConfig, task: Any) -> Any:
        from peft import PromptTuningConfig, PromptTuningInit

        from ptexp.embedded import resolve_model_path

        options = self.options(cfg)
        text = options.init == "text"
        return PromptTuningConfig(
            task_type=task.peft_task_type,
            num_virtual_tokens=options.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.TEXT if text else PromptTuningInit.RANDOM,
            prompt_tuning_init_text=options.init_text if text else None,
            tokenizer_name_or_path=resolve_model_path(cfg.model.name_or_path) if text else None,
            modules_to_save=extra_modules(cfg),
        )

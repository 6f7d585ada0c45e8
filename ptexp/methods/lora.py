"""LoRA (Hu et al. 2021): low-rank updates ``W + (alpha/r)·BA`` of the attention projections;
the backbone is frozen. peft's ``LoraConfig``; target modules default to peft's per-architecture
choice (query and value for BERT-style models)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from ptexp.errors import ConfigError
from ptexp.methods import register
from ptexp.methods.base import PeftMethod, extra_modules, positive


@dataclass
class LoraOptions:
    name: str = "lora"
    r: int = field(default=8, metadata={"help": "rank of the update"})
    lora_alpha: int = field(default=16, metadata={"help": "scale: the update is (alpha / r)·BA"})
    lora_dropout: float = field(default=0.1, metadata={"help": "dropout on the LoRA input"})
    target_modules: list[str] | None = field(
        default=None, metadata={"help": "module names to adapt; null = peft's default for the architecture"}
    )


@register
class Lora(PeftMethod):
    name = "lora"
    schema = LoraOptions
    report_axes = ("method.r",)

    def check(self, cfg: DictConfig) -> list[str]:
        options = self.options(cfg)
        positive("method.r", options.r)
        positive("method.lora_alpha", options.lora_alpha)
        if not 0.0 <= options.lora_dropout < 1.0:
            raise ConfigError(f"method.lora_dropout={options.lora_dropout} must be in [0, 1).")
        return []

    def peft_config(self, cfg: DictConfig, task: Any) -> Any:
        from peft import LoraConfig

        options = self.options(cfg)
        return LoraConfig(
            task_type=task.peft_task_type,
            r=options.r,
            lora_alpha=options.lora_alpha,
            lora_dropout=options.lora_dropout,
            target_modules=options.target_modules,
            modules_to_save=extra_modules(cfg),
        )

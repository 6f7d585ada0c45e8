"""Full fine-tuning: every weight of the backbone and head trains (the upper baseline a prompt
method is measured against). Saved once, at the end, with ``save_pretrained`` into ``model/``;
checkpoints hold the weights once (no peft adapter copy beside them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ptexp.methods import register
from ptexp.methods.base import Method

MODEL_DIR = "model"


@dataclass
class FullFinetuneOptions:
    name: str = "full_finetune"


@register
class FullFinetune(Method):
    name = "full_finetune"
    schema = FullFinetuneOptions
    #: The saved model *is* every trainable tensor: no second copy in trainable_state.safetensors.
    saves_trainable_state = False

    def check(self, cfg: DictConfig) -> list[str]:
        self.options(cfg)
        if list(cfg.model.extra_trainable_modules):
            return ["model.extra_trainable_modules has no effect with method=full_finetune: every weight trains."]
        return []

    def effective(self, data: dict[str, Any]) -> dict[str, Any]:
        data = super().effective(data)
        data.get("model", {}).pop("extra_trainable_modules", None)
        return data

    def build(self, base: Any, cfg: DictConfig, task: Any, tokenizer: Any) -> Any:
        for param in base.parameters():
            param.requires_grad = True
        return base

    def save(self, model: Any, tokenizer: Any, run_dir: Path) -> list[Path]:
        model.save_pretrained(run_dir / MODEL_DIR)
        return [run_dir / MODEL_DIR]

    def load(self, run_dir: Path, cfg: DictConfig, base: Any, tokenizer: Any) -> Any:
        return type(base).from_pretrained(run_dir / MODEL_DIR)

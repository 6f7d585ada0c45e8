"""Linear probe: the backbone frozen, only the task head trains (plus
``model.extra_trainable_modules``, e.g. the pooler, so it trains what P-tuning trains minus the
prompts). The floor every prompt method must beat."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ptexp.methods import register
from ptexp.methods.base import Method, train_only

#: Module names that form a transformers task head (as peft's modules_to_save for SEQ_CLS).
HEAD_MODULES = ("classifier", "score", "pre_classifier")


def trainable_names(cfg: DictConfig) -> list[str]:
    return [*HEAD_MODULES, *cfg.model.extra_trainable_modules]


@dataclass
class LinearProbeOptions:
    name: str = "linear_probe"


@register
class LinearProbe(Method):
    name = "linear_probe"
    schema = LinearProbeOptions

    def build(self, base: Any, cfg: DictConfig, task: Any, tokenizer: Any) -> Any:
        train_only(base, trainable_names(cfg))
        return base

    def save(self, model: Any, tokenizer: Any, run_dir: Path) -> list[Path]:
        return []  # trainable_state.safetensors (head and extra modules) is the whole artifact

    def load(self, run_dir: Path, cfg: DictConfig, base: Any, tokenizer: Any) -> Any:
        from ptexp.trainer import load_trainable_state

        model = self.build(base, cfg, None, tokenizer)
        load_trainable_state(model, str(run_dir))
        return model

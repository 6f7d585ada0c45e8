"""P-tuning (Liu et al., "GPT Understands, Too"): continuous prompts produced by a prompt
encoder (MLP or LSTM, the ``prompt_encoder`` group) and prepended to the input; the backbone
is frozen. peft's ``PromptEncoderConfig``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from ptexp.errors import ConfigError
from ptexp.methods import register
from ptexp.methods.base import PeftMethod, extra_modules

REPARAMETERIZATIONS = ("MLP", "LSTM")


@dataclass
class PTuningOptions:
    name: str = "p_tuning"


def check_prompt_encoder(pe: DictConfig) -> list[str]:
    """Errors for invalid values; returns warnings for values peft silently ignores."""
    if pe.num_virtual_tokens <= 0:
        raise ConfigError(
            f"prompt_encoder.num_virtual_tokens={pe.num_virtual_tokens} must be a positive integer "
            "(P-tuning papers use 1 to 128)."
        )
    if pe.encoder_hidden_size <= 0:
        raise ConfigError(f"prompt_encoder.encoder_hidden_size={pe.encoder_hidden_size} must be a positive integer.")
    if pe.encoder_num_layers <= 0:
        raise ConfigError(f"prompt_encoder.encoder_num_layers={pe.encoder_num_layers} must be a positive integer.")
    kind = str(pe.encoder_reparameterization_type)
    if kind not in REPARAMETERIZATIONS:
        raise ConfigError(
            f"prompt_encoder.encoder_reparameterization_type='{kind}' is not valid; choose MLP or LSTM "
            "(prompt_encoder=mlp or prompt_encoder=lstm)."
        )
    if not 0.0 <= pe.encoder_dropout < 1.0:
        raise ConfigError(f"prompt_encoder.encoder_dropout={pe.encoder_dropout} must be in [0, 1).")
    warnings = []
    if kind == "MLP":
        if pe.encoder_num_layers != 2:
            warnings.append(
                f"prompt_encoder.encoder_num_layers={pe.encoder_num_layers} has no effect with the MLP encoder: "
                "peft's MLP always has 3 linear layers. Use prompt_encoder=lstm to vary depth."
            )
        if pe.encoder_dropout != 0:
            warnings.append(
                f"prompt_encoder.encoder_dropout={pe.encoder_dropout} has no effect with the MLP encoder: "
                "peft never applies it. With prompt_encoder=lstm it acts between LSTM layers."
            )
    return warnings


def normalise_encoder(pe: dict[str, Any]) -> None:
    """peft's MLP ignores encoder_num_layers and encoder_dropout: equal runs, one key."""
    if pe.get("encoder_reparameterization_type") == "MLP":
        pe["encoder_num_layers"], pe["encoder_dropout"] = 2, 0.0


def prompt_encoder_config(pe_cfg: DictConfig, task: Any, cfg: DictConfig, **overrides: Any) -> Any:
    """The group's ``_target_`` (peft.PromptEncoderConfig) with the task filled in."""
    from hydra.utils import instantiate
    from peft import PromptEncoderReparameterizationType

    config = instantiate(
        pe_cfg, task_type=task.peft_task_type, modules_to_save=extra_modules(cfg), _convert_="all", **overrides
    )
    kind = getattr(config, "encoder_reparameterization_type", None)
    if isinstance(kind, str):
        # peft reads `.value` of this field on some paths (its MLP layer-count warning).
        config.encoder_reparameterization_type = PromptEncoderReparameterizationType(kind)
    return config


@register
class PTuning(PeftMethod):
    name = "p_tuning"
    schema = PTuningOptions
    uses_prompt_encoder = True
    tokens_key = "prompt_encoder.num_virtual_tokens"
    report_axes = ("prompt_encoder.num_virtual_tokens", "prompt_encoder.encoder_hidden_size")

    def check(self, cfg: DictConfig) -> list[str]:
        self.options(cfg)
        return check_prompt_encoder(cfg.prompt_encoder)

    def virtual_tokens(self, cfg: DictConfig) -> int:
        return int(cfg.prompt_encoder.num_virtual_tokens)

    def effective(self, data: dict[str, Any]) -> dict[str, Any]:
        normalise_encoder(data.get("prompt_encoder", {}))
        return data

    def peft_config(self, cfg: DictConfig, task: Any) -> Any:
        return prompt_encoder_config(cfg.prompt_encoder, task, cfg)

"""P-tuning (Liu et al., "GPT Understands, Too"): continuous prompts produced by a prompt
encoder (MLP or LSTM, the ``prompt_encoder`` group) and prepended to the input; the backbone
is frozen. peft's ``PromptEncoderConfig``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from ptexp.errors import ConfigError
from ptexp.methods import register
from ptexp.methods.base import PeftMethod, extra_modules

REPARAMETERIZATIONS = ("MLP", "LSTM")
TOKEN_INITS = ("random", "vocab")
HEADLESS_TASKS = ("CAUSAL_LM", "SEQ_2_SEQ_LM")
TOKEN_INIT_HELP = (
    "the prompt encoder's input embeddings: random (peft's default) or vocab (word embeddings of "
    "non-special vocabulary tokens sampled with the run's seed)"
)
HEAD_LR_HELP = (
    "learning rate of the head and model.extra_trainable_modules (the prompt encoder keeps "
    "trainer.learning_rate); null = trainer.learning_rate"
)


@dataclass
class PTuningOptions:
    name: str = "p_tuning"
    token_init: str = field(default="random", metadata={"help": TOKEN_INIT_HELP})
    head_learning_rate: float | None = field(default=None, metadata={"help": HEAD_LR_HELP})


def check_recipe(options: Any) -> None:
    """The recipe keys both P-tuning methods share (``method.token_init``, ``method.head_learning_rate``)."""
    if options.token_init not in TOKEN_INITS:
        raise ConfigError(
            f"method.token_init='{options.token_init}' is not valid; choose random (peft's random "
            "initialisation) or vocab (word embeddings of sampled vocabulary tokens)."
        )
    lr = options.head_learning_rate
    if lr is not None and not lr > 0:
        raise ConfigError(
            f"method.head_learning_rate={lr} must be a positive number, or null for trainer.learning_rate."
        )


def recipe_warnings(options: Any, cfg: DictConfig) -> list[str]:
    """A head learning rate where only the prompt encoder trains (no head: peft adds one to
    modules_to_save for SEQ_CLS and TOKEN_CLS only) would otherwise be dropped without a word."""
    task = str(cfg.dataset.get("task", "SEQ_CLS"))
    if options.head_learning_rate is None or task not in HEADLESS_TASKS or extra_modules(cfg):
        return []
    return [
        f"method.head_learning_rate={options.head_learning_rate} has no effect: dataset.task={task} has no task "
        "head and model.extra_trainable_modules is empty, so only the prompt encoder trains (at trainer.learning_rate)."
    ]


def normalise_recipe(method: dict[str, Any]) -> None:
    """A run that names a recipe key's default is the run that leaves it out (and the runs
    from before the key existed)."""
    if method.get("token_init") == "random":
        method.pop("token_init")
    if "head_learning_rate" in method and method["head_learning_rate"] is None:
        method.pop("head_learning_rate")


def vocab_token_ids(tokenizer: Any, count: int, vocab_rows: int, seed: int) -> list[int]:
    """``count`` distinct vocabulary ids drawn with ``seed``: no special tokens, and none of the
    bracketed placeholders ([unused12], <extra_id_0>) whose embeddings never trained."""
    import torch

    special = set(tokenizer.all_special_ids)
    names = tokenizer.convert_ids_to_tokens(list(range(vocab_rows)))
    usable = [
        i for i, name in enumerate(names) if i not in special and name and not (name[0] in "[<" and name[-1] in "]>")
    ]
    if len(usable) < count:
        raise ConfigError(f"method.token_init=vocab: the vocabulary has {len(usable)} usable tokens, not {count}.")
    # Its own generator: the global stream (and so the MLP/LSTM weights, data order) stays random init's.
    order = torch.randperm(len(usable), generator=torch.Generator().manual_seed(seed))[:count]
    return [usable[i] for i in order.tolist()]


def init_from_vocab(embedding: Any, word_embeddings: Any, tokenizer: Any, seed: int) -> list[int]:
    """Copy sampled word embeddings into the prompt encoder's input ``embedding``. peft's
    PromptTuningInit.SAMPLE_VOCAB does this for prompt tuning; PromptEncoderConfig has no such
    option. Returns the token ids used."""
    import torch

    ids = vocab_token_ids(tokenizer, embedding.weight.shape[0], word_embeddings.weight.shape[0], seed)
    with torch.no_grad():
        embedding.weight.copy_(word_embeddings.weight[ids].to(embedding.weight.dtype))
    return ids


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
        options = self.options(cfg)
        check_recipe(options)
        return check_prompt_encoder(cfg.prompt_encoder) + recipe_warnings(options, cfg)

    def virtual_tokens(self, cfg: DictConfig) -> int:
        return int(cfg.prompt_encoder.num_virtual_tokens)

    def effective(self, data: dict[str, Any]) -> dict[str, Any]:
        normalise_encoder(data.get("prompt_encoder", {}))
        normalise_recipe(data.get("method", {}))
        return data

    def peft_config(self, cfg: DictConfig, task: Any) -> Any:
        return prompt_encoder_config(cfg.prompt_encoder, task, cfg)

    def build(self, base: Any, cfg: DictConfig, task: Any, tokenizer: Any) -> Any:
        model = super().build(base, cfg, task, tokenizer)
        if self.options(cfg).token_init == "vocab":
            # The adapter saves the encoder's output, so predict needs nothing more to reload it.
            encoder = model.prompt_encoder[model.active_adapter]
            init_from_vocab(encoder.embedding, model.word_embeddings, tokenizer, int(cfg.seed))
        return model

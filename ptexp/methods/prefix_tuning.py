"""P-Tuning v2 / prefix tuning (Liu et al. 2022; Li & Liang 2021): trainable key/value prompts
at every layer ("deep prompts"), optionally reparameterised by an MLP. peft's ``PrefixTuningConfig``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from ptexp.methods import register
from ptexp.methods.base import PeftMethod, extra_modules, positive


@dataclass
class PrefixTuningOptions:
    name: str = "prefix_tuning"
    num_virtual_tokens: int = field(default=10, metadata={"help": "prefix length (per layer)"})
    prefix_projection: bool = field(default=False, metadata={"help": "reparameterise the prefix with an MLP"})
    encoder_hidden_size: int = field(default=128, metadata={"help": "width of that MLP (prefix_projection only)"})


@register
class PrefixTuning(PeftMethod):
    name = "prefix_tuning"
    schema = PrefixTuningOptions
    report_axes = ("method.num_virtual_tokens",)

    def check(self, cfg: DictConfig) -> list[str]:
        options = self.options(cfg)
        positive("method.num_virtual_tokens", options.num_virtual_tokens)
        positive("method.encoder_hidden_size", options.encoder_hidden_size)
        if not options.prefix_projection and options.encoder_hidden_size != 128:
            return ["method.encoder_hidden_size has no effect without method.prefix_projection=true."]
        return []

    def virtual_tokens(self, cfg: DictConfig) -> int:
        # The prefix is in every layer's keys/values; BERT-style models still offset positions by it.
        return int(cfg.method.num_virtual_tokens)

    def effective(self, data: dict[str, Any]) -> dict[str, Any]:
        data = super().effective(data)
        if not data["method"].get("prefix_projection"):
            data["method"]["encoder_hidden_size"] = 128
        return data

    def build(self, base: Any, cfg: DictConfig, task: Any, tokenizer: Any) -> Any:
        return prefix_when_generating(pass_prefix_as_cache(super().build(base, cfg, task, tokenizer)))

    def load(self, run_dir: Any, cfg: DictConfig, base: Any, tokenizer: Any) -> Any:
        return prefix_when_generating(pass_prefix_as_cache(super().load(run_dir, cfg, base, tokenizer)))

    def peft_config(self, cfg: DictConfig, task: Any) -> Any:
        from peft import PrefixTuningConfig

        options = self.options(cfg)
        return PrefixTuningConfig(
            task_type=task.peft_task_type,
            num_virtual_tokens=options.num_virtual_tokens,
            prefix_projection=options.prefix_projection,
            encoder_hidden_size=options.encoder_hidden_size,
            modules_to_save=extra_modules(cfg),
        )


def pass_prefix_as_cache(model: Any) -> Any:
    """transformers 5 renamed the encoders' ``past_key_values`` argument to ``cache`` (BERT,
    RoBERTa, ...); peft 0.21 looks for the old name in the forward signature and refuses
    ("Model does not support past key values"). For those models this model's prefix forward
    hands the prefix to the classifier as ``cache``: the same deep prompts, the head and loss
    of the transformers model itself."""
    import inspect
    import types

    backbone = model.base_model.get_submodule(model.transformer_backbone_name)
    names = inspect.signature(backbone.forward).parameters
    if "past_key_values" in inspect.signature(model.base_model.forward).parameters or "past_key_values" in names:
        return model
    if "cache" not in names:
        return model  # peft's own error says what is missing

    def prefix_forward(
        self: Any,
        input_ids: Any = None,
        attention_mask: Any = None,
        inputs_embeds: Any = None,
        labels: Any = None,
        output_attentions: Any = None,
        output_hidden_states: Any = None,
        return_dict: Any = None,
        **kwargs: Any,
    ) -> Any:
        batch_size = (input_ids if input_ids is not None else inputs_embeds).shape[0]
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        return self.base_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            labels=labels,
            cache=self.get_prompt(batch_size),
            **kwargs,
        )

    model._prefix_tuning_forward = types.MethodType(prefix_forward, model)
    return model


def prefix_when_generating(model: Any) -> Any:
    """peft 0.21 hands an encoder-decoder's prefix to ``generate`` as ``past_key_values``;
    transformers 5's T5 takes it as ``cache`` and, when generate passes its own (empty) cache
    too, keeps that one: generation would silently ignore the prefix that training used. The
    prefix goes in as ``cache`` instead (tested: the first generated step equals the forward)."""
    import inspect

    task_type = model.peft_config[model.active_adapter].task_type
    names = inspect.signature(model.base_model.forward).parameters
    if getattr(task_type, "value", task_type) != "SEQ_2_SEQ_LM" or "past_key_values" in names or "cache" not in names:
        return model
    prepare = model.prepare_inputs_for_generation

    def prepare_with_prefix(*args: Any, **kwargs: Any) -> Any:
        inputs = prepare(*args, **kwargs)
        if inputs.get("past_key_values") is not None:
            inputs["cache"] = inputs.pop("past_key_values")
        return inputs

    model.prepare_inputs_for_generation = prepare_with_prefix
    return model

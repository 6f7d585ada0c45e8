"""What the run, sweep, report and predict need from a training method (P-tuning, LoRA,
fine-tuning, ...). A method is one module in ``ptexp/methods/`` and one file in
``conf/method/``; nothing outside those two knows a method by name."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from omegaconf import DictConfig, OmegaConf

from ptexp.errors import ConfigError, closest


class Method(ABC):
    #: The option name in ``conf/method/`` and the value of ``method.name``.
    name: ClassVar[str]
    #: The dataclass of this method's ``method.*`` keys (with help metadata).
    schema: ClassVar[type]
    #: Whether the ``prompt_encoder`` group configures this method (else sweeping it is a no-op).
    uses_prompt_encoder: ClassVar[bool] = False
    #: Config keys its reports plot on the x axis, most telling first.
    report_axes: ClassVar[tuple[str, ...]] = ()
    #: Whether the run folder keeps trainable_state.safetensors (every trainable tensor by name).
    saves_trainable_state: ClassVar[bool] = True

    # -- before anything loads ---------------------------------------------------------------
    def options(self, cfg: DictConfig) -> Any:
        """``cfg.method`` checked against :attr:`schema`: unknown keys and wrong types are errors."""
        given = OmegaConf.to_container(cfg.method, resolve=True)
        assert isinstance(given, dict)
        fields = {f.name for f in dataclasses.fields(self.schema)}
        for key in given:
            if key not in fields:
                raise ConfigError(
                    f"method.{key} is not a key of method={self.name}; closest: {closest(key, fields)}. "
                    f"Valid keys: {', '.join(sorted(fields))}."
                )
        try:
            return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(self.schema), given))
        except Exception as err:  # omegaconf's ValidationError names the key and the type
            raise ConfigError(f"method={self.name}: {str(err).splitlines()[0]}") from None

    def check(self, cfg: DictConfig) -> list[str]:
        """Raise a ConfigError for invalid values; return warnings for values with no effect."""
        self.options(cfg)
        return []

    #: The key that sets the prompts' length, named when they exceed the model's positions.
    tokens_key: ClassVar[str] = "method.num_virtual_tokens"

    def virtual_tokens(self, cfg: DictConfig) -> int:
        """Positions the method's prompts take besides the input's own tokens."""
        return 0

    def tokens_text(self, cfg: DictConfig) -> str:
        """Those positions as an error message names them (``prompt_encoder.num_virtual_tokens=10``)."""
        return f"{self.tokens_key}={self.virtual_tokens(cfg)}"

    def effective(self, data: dict[str, Any]) -> dict[str, Any]:
        """The resolved run config with what this method ignores normalised away, so that a
        sweep runs jobs with the same effective config once."""
        if not self.uses_prompt_encoder:
            data.pop("prompt_encoder", None)
        return data

    # -- around the backbone -----------------------------------------------------------------
    @abstractmethod
    def build(self, base: Any, cfg: DictConfig, task: Any, tokenizer: Any) -> Any:
        """Wrap (or prepare) the backbone with its task head; set what trains."""

    def encoder(self, cfg: DictConfig, task: Any) -> Callable[[Any, dict[str, list], int], Any]:
        """``(tokenizer, batch, max_length) -> model inputs``: the task's tokenisation unless
        the method places tokens of its own (template P-tuning)."""
        return task.encoder(cfg)

    def describe(self, model: Any) -> dict[str, Any]:
        """The effective method config, for W&B and run.json."""
        return {"method": self.name}

    # -- after training ----------------------------------------------------------------------
    @abstractmethod
    def save(self, model: Any, tokenizer: Any, run_dir: Path) -> list[Path]:
        """Write the user-facing artifact(s) into the run folder; returns what it wrote."""

    @abstractmethod
    def load(self, run_dir: Path, cfg: DictConfig, base: Any, tokenizer: Any) -> Any:
        """The trained model of a finished run, from ``base`` (the backbone with a fresh head)."""


def extra_modules(cfg: DictConfig) -> list[str] | None:
    """``model.extra_trainable_modules`` (e.g. BERT's pooler, which reads a virtual token)."""
    return list(cfg.model.extra_trainable_modules) or None


class PeftMethod(Method):
    """A method that is a peft config: built with ``get_peft_model``, saved with
    ``save_pretrained`` and loaded with ``PeftModel.from_pretrained``, as a peft user would."""

    @abstractmethod
    def peft_config(self, cfg: DictConfig, task: Any) -> Any:
        """The peft config of this run (task type and modules_to_save filled in)."""

    def build(self, base: Any, cfg: DictConfig, task: Any, tokenizer: Any) -> Any:
        from peft import get_peft_model

        with _without_peft_deprecation():
            return get_peft_model(base, self.peft_config(cfg, task))

    def describe(self, model: Any) -> dict[str, Any]:
        config = model.peft_config["default"].to_dict()
        return {"method": self.name, **{k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}}

    def save(self, model: Any, tokenizer: Any, run_dir: Path) -> list[Path]:
        from ptexp.layout import ADAPTER_DIR

        model.save_pretrained(run_dir / ADAPTER_DIR)
        return [run_dir / ADAPTER_DIR]

    def load(self, run_dir: Path, cfg: DictConfig, base: Any, tokenizer: Any) -> Any:
        from peft import PeftModel

        from ptexp.layout import ADAPTER_DIR

        with _without_peft_deprecation():
            return PeftModel.from_pretrained(base, run_dir / ADAPTER_DIR)


@contextmanager
def _without_peft_deprecation() -> Iterator[None]:
    """peft 0.21 reads a transformers attribute that transformers 5 deprecates, on every wrap
    and load: a FutureWarning the user can do nothing about."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        yield


def train_only(model: Any, module_names: list[str]) -> None:
    """Freeze ``model`` except the modules named (as peft's modules_to_save matches them: the
    module's full name, or its last dotted parts: ``pooler`` and ``bert.pooler`` both match)."""
    for param in model.parameters():
        param.requires_grad = False
    for key, module in model.named_modules():
        if key and any(key == name or key.endswith(f".{name}") for name in module_names):
            for param in module.parameters():
                param.requires_grad = True


def positive(key: str, value: int | float) -> None:
    if value <= 0:
        raise ConfigError(f"{key}={value} must be positive.")

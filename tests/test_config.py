"""Composition: every option of every group, and type errors caught by the schemas."""

from __future__ import annotations

from importlib import resources

import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from ptexp.errors import ConfigError
from ptexp.validate import check_trainer
from tests.conftest import compose_cfg

GROUPS = ("model", "dataset", "method", "prompt_encoder", "trainer", "logger")
# Presets that patch the whole config (``# @package _global_``) or Hydra's, with how to select them.
PRESETS = (("experiment", "experiment"), ("sweep", "+sweep"), ("hparams_search", "hparams_search"))


def options(group: str) -> list[str]:
    folder = resources.files("ptexp.conf")
    for part in group.split("/"):
        folder = folder / part
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes(group: str, option: str) -> None:
    cfg = compose_cfg([f"{group}={option}"])
    assert cfg[group] is not None
    if group == "trainer":
        # every preset is valid TrainingArguments kwargs (bf16 needs a GPU, and says so)
        if option == "gpu" and not torch.cuda.is_available():
            with pytest.raises(ConfigError, match="trainer.bf16=True"):
                check_trainer(cfg.trainer)
        else:
            assert check_trainer(cfg.trainer)
    else:
        OmegaConf.to_container(cfg[group], resolve=True, throw_on_missing=False)


def test_defaults_are_the_embedded_offline_run() -> None:
    cfg = compose_cfg()
    assert cfg.model.name_or_path == "embedded:all-MiniLM-L6-v2"
    assert cfg.dataset.source == "embedded" and cfg.dataset.name == "tweets"
    assert cfg.prompt_encoder.encoder_reparameterization_type == "MLP"
    assert cfg.prompt_encoder.num_virtual_tokens == 10 and cfg.prompt_encoder.encoder_hidden_size == 128
    assert cfg.logger.backend == "wandb" and cfg.logger.mode == "offline"


def test_seed_recipe_preset() -> None:
    t = compose_cfg(["trainer=seed"]).trainer
    assert (t.learning_rate, t.num_train_epochs, t.per_device_train_batch_size, t.weight_decay) == (1e-3, 10, 16, 0.01)
    assert t.save_strategy == "epoch" and t.load_best_model_at_end is True


def test_wrong_type_fails_at_composition_naming_the_key() -> None:
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg(["prompt_encoder.num_virtual_tokens=abc"])
    assert "num_virtual_tokens" in str(err.value.__cause__ or err.value)


def test_misspelt_key_fails_at_composition() -> None:
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg(["prompt_encoder.num_virtual_token=5"])
    assert "num_virtual_token" in str(err.value.__cause__ or err.value)


def test_unknown_group_option_lists_valid_ones() -> None:
    with pytest.raises(MissingConfigException) as err:
        compose_cfg(["prompt_encoder=gru"])
    assert "lstm" in str(err.value) and "mlp" in str(err.value)


@pytest.mark.parametrize("group,select,option", [(g, s, o) for g, s in PRESETS for o in options(g)])
def test_every_preset_composes(group: str, select: str, option: str) -> None:
    """Experiment, sweep and search presets compose with Hydra's own config, and every key they
    sweep is a key of the composed run config (a typo would sweep nothing)."""
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="ptexp.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"{select}={option}"], return_hydra_config=True)
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    paired = OmegaConf.select(cfg, "hydra.sweeper.paired") or {}
    for key in [*params, *paired]:
        assert OmegaConf.select(cfg, key.lstrip("+"), default="<missing>") != "<missing>", key
    if group != "experiment":
        assert params or paired


@pytest.mark.parametrize("option", options("hydra/launcher"))
def test_every_launcher_preset_composes(option: str) -> None:
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="ptexp.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"hydra/launcher={option}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_
    OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_preset_is_valid_on_a_gpu() -> None:
    args = check_trainer(compose_cfg(["trainer=gpu"]).trainer)
    assert args.bf16 and args.dataloader_pin_memory

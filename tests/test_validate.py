"""Every bad input gets a ConfigError naming the key or file, before any model weights load."""

from __future__ import annotations

import pytest

from ptexp.errors import ConfigError
from ptexp.methods.p_tuning import check_prompt_encoder
from ptexp.run import run
from ptexp.validate import check_trainer
from tests.conftest import compose_cfg, set_key, write_table


def expect_error(cfg, tmp_path, *needles: str) -> str:
    with pytest.raises(ConfigError) as err:
        run(cfg, tmp_path / "run")
    message = str(err.value)
    for needle in needles:
        assert needle in message, message
    # nothing that looks finished was written
    assert not (tmp_path / "run" / "metrics.json").exists()
    return message


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("num_virtual_tokens", 0, "num_virtual_tokens=0"),
        ("num_virtual_tokens", -3, "num_virtual_tokens=-3"),
        ("encoder_hidden_size", 0, "encoder_hidden_size=0"),
        ("encoder_reparameterization_type", "GRU", "MLP or LSTM"),
        ("encoder_dropout", 1.0, "[0, 1)"),
        ("encoder_dropout", -0.1, "[0, 1)"),
    ],
)
def test_prompt_encoder_values(tiny_cfg, tmp_path, key, value, needle) -> None:
    expect_error(set_key(tiny_cfg, f"prompt_encoder.{key}", value), tmp_path, needle, key)


def test_mlp_ignored_knobs_warn() -> None:
    pe = compose_cfg(["prompt_encoder.encoder_num_layers=3", "prompt_encoder.encoder_dropout=0.1"]).prompt_encoder
    warnings = check_prompt_encoder(pe)
    assert len(warnings) == 2
    assert "encoder_num_layers=3 has no effect" in warnings[0]
    assert "encoder_dropout=0.1 has no effect" in warnings[1]
    lstm = compose_cfg(["prompt_encoder=lstm", "prompt_encoder.encoder_num_layers=3"]).prompt_encoder
    assert check_prompt_encoder(lstm) == []


def test_positions_limit(tiny_cfg, tmp_path) -> None:
    # the tiny BERT has 96 positions: 90 + 10 virtual tokens do not fit
    set_key(tiny_cfg, "dataset.max_length", 90)
    set_key(tiny_cfg, "prompt_encoder.num_virtual_tokens", 10)
    expect_error(tiny_cfg, tmp_path, "dataset.max_length=90", "num_virtual_tokens=10", "at most 86")


def test_missing_data_file(tiny_cfg, tmp_path) -> None:
    set_key(tiny_cfg, "dataset.validation_file", str(tmp_path / "nope.csv"))
    expect_error(tiny_cfg, tmp_path, "dataset.validation_file", "nope.csv", "does not exist")


def test_missing_text_column_lists_columns(tiny_cfg, tmp_path) -> None:
    set_key(tiny_cfg, "dataset.text_column", "sentence")
    expect_error(tiny_cfg, tmp_path, "dataset.text_column='sentence'", "'tweet'", "'mood'")


def test_missing_label_column_lists_columns(tiny_cfg, tmp_path) -> None:
    set_key(tiny_cfg, "dataset.label_column", "label")
    expect_error(tiny_cfg, tmp_path, "dataset.label_column='label'", "'tweet'", "'mood'")


def test_fewer_than_two_labels(tiny_cfg, tmp_path, tweets_rows) -> None:
    rows = [r for r in tweets_rows if r["mood"] == "positive"][:40]
    set_key(tiny_cfg, "dataset.train_file", str(write_table(tmp_path / "one.csv", rows)))
    expect_error(tiny_cfg, tmp_path, "1 distinct label", "at least two")


def test_empty_split(tiny_cfg, tmp_path) -> None:
    (tmp_path / "empty.csv").write_text("tweet,mood\n")
    set_key(tiny_cfg, "dataset.test_file", str(tmp_path / "empty.csv"))
    expect_error(tiny_cfg, tmp_path, "dataset.test_file", "split is empty")


def test_labels_unseen_in_train(tiny_cfg, tmp_path, tweets_rows) -> None:
    rows = [dict(r) for r in tweets_rows[:30]]
    rows[3]["mood"] = "sarcastic"
    set_key(tiny_cfg, "dataset.validation_file", str(write_table(tmp_path / "dev.csv", rows)))
    expect_error(tiny_cfg, tmp_path, "validation split", "never seen in train", "sarcastic")


def test_model_path_that_does_not_exist(tiny_cfg, tmp_path) -> None:
    set_key(tiny_cfg, "model.name_or_path", str(tmp_path / "no-such-model"))
    expect_error(tiny_cfg, tmp_path, "model.name_or_path", "does not exist")


def test_hub_id_offline_is_reported_not_hung(tiny_cfg, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    set_key(tiny_cfg, "model.name_or_path", "someone/not-a-cached-model")
    expect_error(tiny_cfg, tmp_path, "someone/not-a-cached-model", "HF_HUB_OFFLINE")


def test_unknown_training_argument_suggests_closest() -> None:
    with pytest.raises(ConfigError) as err:
        check_trainer({"learning_rat": 0.1})
    assert "trainer.learning_rat" in str(err.value) and "learning_rate" in str(err.value)


def test_renamed_training_argument_says_new_name() -> None:
    with pytest.raises(ConfigError, match="eval_strategy"):
        check_trainer({"evaluation_strategy": "epoch"})


def test_training_argument_bad_choice_and_type() -> None:
    with pytest.raises(ConfigError, match="lr_scheduler_type"):
        check_trainer({"lr_scheduler_type": "zigzag"})
    with pytest.raises(ConfigError, match="must be a number"):
        check_trainer({"learning_rate": "fast"})


def test_reserved_training_argument() -> None:
    with pytest.raises(ConfigError, match="root key seed"):
        check_trainer({"seed": 3})


def test_unreachable_hub_model_is_reported_within_seconds_once(tmp_path) -> None:
    """Without HF_HUB_OFFLINE and without a network, a hub id not in the cache fails at once
    (no minute of retries), exit 2, one message."""
    import subprocess
    import sys

    from tests.conftest import subprocess_env

    env = subprocess_env(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    env.pop("HF_HUB_OFFLINE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "ptexp.train", "model.name_or_path=someone/not-cached-model", "logger=none"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert output.count("cannot be reached") == 1, output
    assert "Traceback" not in output


def test_positions_without_prompts_name_only_max_length() -> None:
    from types import SimpleNamespace

    from ptexp.validate import check_positions

    backbone = SimpleNamespace(max_position_embeddings=512, model_type="bert")
    with pytest.raises(ConfigError) as err:
        check_positions(600, 0, backbone, "bert-base-uncased")
    assert str(err.value).startswith("dataset.max_length=600 exceeds the 512 positions") and "virtual" not in str(
        err.value
    )

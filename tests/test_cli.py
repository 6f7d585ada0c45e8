"""The console scripts as a user types them: short errors, non-zero exits, no traceback wall."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import subprocess_env

pytestmark = pytest.mark.slow  # ptexp-train subprocesses


def ptexp_train(*args: str, cwd) -> subprocess.CompletedProcess:
    env = subprocess_env()
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "ptexp.train", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "override,needles",
    [
        ("prompt_encoder.num_virtual_tokens=abc", ["num_virtual_tokens", "abc"]),
        ("model=gpt5", ["model", "minilm", "roberta-large"]),
        ("prompt_encoder.num_virtual_tokens=0", ["num_virtual_tokens=0", "positive integer"]),
        ("+trainer.learning_rat=0.1", ["trainer.learning_rat", "learning_rate"]),
        ("trainer.learning_rat=0.1", ["trainer.learning_rat"]),
        ("+trainer.evaluation_strategy=epoch", ["eval_strategy"]),
        ("dataset=csv", ["dataset.train_file"]),
    ],
)
def test_bad_input_exits_nonzero_with_short_message(tmp_path, override, needles) -> None:
    proc = ptexp_train(override, "logger=none", cwd=tmp_path)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    for needle in needles:
        assert needle in output, output
    assert "Traceback" not in output, output
    assert not list(tmp_path.rglob("metrics.json"))


@pytest.mark.parametrize(
    "override,closest,not_in",
    [
        ("prompt_encoder=lstmm", "closest: lstm", "schema"),
        ("prompt_encoder.num_virtual_token=20", "closest: num_virtual_tokens", "+prompt_encoder"),
        ("+prompt_encoder.num_virtual_token=20", "closest: num_virtual_tokens", "Traceback"),
        ("+sweep=tokens_x_hiden", "closest: tokens_x_hidden", "Traceback"),
        ("sed=3", "closest: seed", "Traceback"),
        ("trainer.learnin_rate=1e-3", "closest valid fields: learning_rate", "HYDRA_FULL_ERROR"),
        ("trainer.label_smoothing_factor=0.1", "+trainer.label_smoothing_factor=", "HYDRA_FULL_ERROR"),
        # trainer=default sets it (the help page once said +trainer.min_train_steps):
        ("+trainer.min_train_steps=100", "drop the '+', trainer.min_train_steps=", "HYDRA_FULL_ERROR"),
    ],
)
def test_hydra_level_mistakes_exit_2_with_the_closest_name(tmp_path, override, closest, not_in) -> None:
    """Unknown options and keys (also with '+') are caught before composition, exit 2, once."""
    proc = ptexp_train(override, "logger=none", cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert output.count(closest) == 1, output
    assert not_in not in output, output
    assert not (tmp_path / "outputs").exists()


def test_a_run_that_fails_validation_leaves_no_folder_and_says_it_once(tmp_path) -> None:
    proc = ptexp_train("dataset=csv", "dataset.train_file=nowhere.csv", "logger=none", cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert output.count("nowhere.csv' does not exist") == 1, output
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*"))


def test_help_is_a_users_page_without_torch(tmp_path) -> None:
    code = (
        "import sys; sys.argv = ['ptexp-train', '--help']; from ptexp.train import main; main(); "
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'datasets') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    page = proc.stdout
    assert "prompt_encoder: lstm, mlp" in page
    for needle in ("-m ", "ptexp-predict", "ptexp-report", "num_threads", "hydra.sweeper.plan", "+sweep="):
        assert needle in page, needle
    for internal in ("schema", "sweeper_default", "local:"):
        assert internal not in page, internal


def test_cfg_job_prints_the_composed_config(tmp_path) -> None:
    proc = ptexp_train("--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 0 and "num_virtual_tokens: 10" in proc.stdout


def test_options_in_a_group_subfolder_are_options_too() -> None:
    """dataset=study/<name> (a preset in conf/dataset/study/) passes the pre-check, a misspelt one
    names the closest, and --help lists them."""
    from ptexp.cli import check_overrides, group_options
    from ptexp.errors import ConfigError

    assert "study/sms_spam" in group_options("dataset") and "tweets" in group_options("dataset")
    check_overrides(["dataset=study/sms_spam"])
    with pytest.raises(ConfigError, match=r"dataset=study/sms_spa is not an option.*closest: study/sms_spam"):
        check_overrides(["dataset=study/sms_spa"])

"""The console scripts as a user types them: short errors, non-zero exits, no traceback wall."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import subprocess_env


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


def test_help_and_cfg_job_are_cheap(tmp_path) -> None:
    proc = ptexp_train("--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 0 and "num_virtual_tokens: 10" in proc.stdout
    proc = ptexp_train("--help", cwd=tmp_path)
    assert proc.returncode == 0 and "prompt_encoder: lstm, mlp" in proc.stdout

"""Two CPU processes (torchrun, gloo) train like one process with the same global batch,
and only rank 0 writes the run folder (ptexp sets average_tokens_across_devices=False: with
transformers 5's default the loss is doubled)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ptexp.outputs import read_json
from tests.conftest import subprocess_env, tiny_overrides

pytestmark = pytest.mark.slow  # torchrun subprocesses


@pytest.fixture(scope="module")
def tiny_bert_no_dropout(tmp_path_factory, tiny_bert) -> Path:
    """Dropout draws different random numbers in each process; without it, DDP and one
    process must compute the same losses."""
    import json
    import shutil

    folder = tmp_path_factory.mktemp("tiny-bert-no-dropout")
    for item in tiny_bert.iterdir():
        shutil.copy(item, folder / item.name)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def train(cmd_prefix: list[str], overrides: list[str], run_dir: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = subprocess_env(OMP_NUM_THREADS="1")
    return subprocess.run(
        [*cmd_prefix, "-m", "ptexp.train", *overrides, f"hydra.run.dir={run_dir}"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_gloo_ddp_matches_single_process(tiny_bert_no_dropout, tweet_files, tmp_path) -> None:
    common = [
        *tiny_overrides(tiny_bert_no_dropout, tweet_files, tmp_path),
        "logger=none",
        "trainer.max_steps=6",
        "+trainer.train_sampling_strategy=sequential",
        "trainer.logging_steps=1",
    ]
    single = train([sys.executable], [*common, "trainer.per_device_train_batch_size=16"], tmp_path / "one", tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = train(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533"],
        [*common, "trainer.per_device_train_batch_size=8", "+trainer.ddp_backend=gloo"],
        tmp_path / "two",
        tmp_path,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one, two = read_json(tmp_path / "one" / "metrics.json"), read_json(tmp_path / "two" / "metrics.json")
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["train_loss"] == pytest.approx(one["train_loss"], abs=1e-4)
    # evaluation pads the last uneven batch across ranks, so its mean loss agrees less tightly
    assert two["validation"]["loss"] == pytest.approx(one["validation"]["loss"], abs=1e-3)
    assert two["test"]["accuracy"] == one["test"]["accuracy"]
    # rank 0 alone wrote the run files: one predictions line per test example, not two
    lines = (tmp_path / "two" / "predictions_test.jsonl").read_text().splitlines()
    assert len(lines) == two["num_examples"]["test"]

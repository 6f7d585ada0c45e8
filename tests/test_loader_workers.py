"""Data loader worker processes inside launchers that run jobs in worker processes of their own
(joblib's loky): the combination the GPU preset needs, tested on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from ptexp.outputs import read_json
from tests.conftest import run_sweep, tiny_overrides


def _sweep(tiny_bert, tweet_files, root: Path, *extra: str) -> dict[str, dict]:
    args = [
        *tiny_overrides(tiny_bert, tweet_files, root),
        "dataset.max_train_samples=48",
        "dataset.max_eval_samples=40",
        "dataset.max_test_samples=40",
        "logger=none",
        "sweep_name=workers",
        "prompt_encoder.num_virtual_tokens=2,4",
        *extra,
    ]
    proc = run_sweep(args, root.parent, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    jobs = {p.parent.name: read_json(p) for p in (root / "multiruns" / "workers").glob("*/metrics.json")}
    assert len(jobs) == 2, output[-3000:]
    return jobs


@pytest.mark.slow
def test_parallel_launcher_jobs_start_loader_workers_and_match_a_sequential_sweep(
    tiny_bert, tweet_files, tmp_path
) -> None:
    parallel = _sweep(
        tiny_bert,
        tweet_files,
        tmp_path / "parallel",
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=2",
        "+trainer.dataloader_num_workers=2",
    )
    sequential = _sweep(tiny_bert, tweet_files, tmp_path / "sequential")
    assert sorted(parallel) == sorted(sequential)
    for job, metrics in parallel.items():
        # Workers only collate: the sampler (data order) stays in the job's process.
        assert metrics["test"]["loss"] == pytest.approx(sequential[job]["test"]["loss"], rel=1e-5)
        assert metrics["test"]["accuracy"] == sequential[job]["test"]["accuracy"]
        assert metrics["train_loss"] == pytest.approx(sequential[job]["train_loss"], rel=1e-5)

"""Sweeps on a real single-node SLURM cluster (scripts/slurm-local.sh up; .ci/run starts it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ptexp.outputs import read_json
from tests.conftest import subprocess_env
from tests.test_sweeps import base_overrides

pytestmark = [pytest.mark.slurm, pytest.mark.slow]  # sbatch'ed ptexp-train sweeps

# The preset for scripts/slurm-local.sh's node (no GPU, this machine's CPUs and memory).
SLURM_LAUNCHER = ["hydra/launcher=slurm_local", "hydra.launcher.timeout_min=10"]


@pytest.fixture(scope="module", autouse=True)
def slurm_env() -> dict[str, str]:
    root = Path(__file__).resolve().parents[1]
    status = subprocess.run(
        ["bash", str(root / "scripts" / "slurm-local.sh"), "status"], capture_output=True, text=True
    )
    if status.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"the local SLURM cluster is not up in CI:\n{status.stdout}{status.stderr}")
        pytest.skip("local SLURM is not up: run scripts/slurm-local.sh up")
    env_text = subprocess.run(
        ["bash", str(root / "scripts" / "slurm-local.sh"), "env"], capture_output=True, text=True, check=True
    ).stdout
    assert "hydra/launcher=slurm_local" in env_text  # tells the user how to sweep on it
    (export,) = [line for line in env_text.splitlines() if line.startswith("export SLURM_CONF=")]
    conf = export.split("=", 1)[1].strip("'\"")
    os.environ["SLURM_CONF"] = conf
    return {"SLURM_CONF": conf}


def multirun(args: list[str], cwd: Path, wait: bool = True, timeout: int = 600):
    env = subprocess_env()
    cmd = [sys.executable, "-m", "ptexp.train", "-m", *args]
    if not wait:
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def slurm_jobs(name_prefix: str = "") -> list[tuple[str, str]]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True, check=True).stdout
    return [tuple(line.split()) for line in out.splitlines() if line.strip()]


def wait_for(predicate, timeout: float = 240, what: str = "condition") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_sbatch_sweep_matches_basic_launcher_and_isolates_a_failure(tiny_bert, tweet_files, tmp_path) -> None:
    common = [*base_overrides(tiny_bert, tweet_files, tmp_path / "outputs"), "trainer.max_steps=4"]
    basic = multirun([*common, "sweep_name=basic", "prompt_encoder.num_virtual_tokens=1,2"], tmp_path)
    assert basic.returncode == 0, basic.stdout[-2000:] + basic.stderr[-2000:]
    slurm = multirun(
        [*common, *SLURM_LAUNCHER, "sweep_name=slurm", "prompt_encoder.num_virtual_tokens=1,2,0"], tmp_path
    )
    assert slurm.returncode == 1, slurm.stdout[-3000:] + slurm.stderr[-3000:]
    root = tmp_path / "outputs" / "multiruns"
    assert (root / "slurm" / ".submitit").is_dir()  # really went through sbatch
    assert read_json(root / "slurm" / "num_virtual_tokens=0" / "status.json")["status"] == "failed"
    assert "num_virtual_tokens=0" in slurm.stderr
    results = (root / "slurm" / "report" / "results.csv").read_text()
    assert results.count("completed") == 2 and results.count("failed") == 1

    # the same table rows (the SLURM sweep's table also notes its failed job below them)
    def rows(sweep: str) -> list[str]:
        return [
            line for line in (root / sweep / "report" / "ablation.md").read_text().splitlines() if line.startswith("|")
        ]

    assert rows("slurm") == rows("basic")


def test_job_killed_by_scancel_is_reported_and_nothing_waits(tiny_bert, tweet_files, tmp_path) -> None:
    args = [
        *base_overrides(tiny_bert, tweet_files, tmp_path / "outputs"),
        *SLURM_LAUNCHER,
        "sweep_name=cancel",
        "prompt_encoder.num_virtual_tokens=1,2",
        "trainer.num_train_epochs=1000",
        "trainer.eval_strategy=no",
        "trainer.save_strategy=no",
    ]
    before = {job for job, _ in slurm_jobs()}
    proc = multirun(args, tmp_path, wait=False)
    try:
        wait_for(
            lambda: len([j for j, state in slurm_jobs() if j not in before and state == "RUNNING"]) == 2,
            what="both array tasks running",
        )
        running = sorted(j for j, _ in slurm_jobs() if j not in before)
        subprocess.run(["scancel", *running], check=True)
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, out[-3000:]
    sweep_dir = tmp_path / "outputs" / "multiruns" / "cancel"
    for name in ("num_virtual_tokens=1", "num_virtual_tokens=2"):
        status = read_json(sweep_dir / name / "status.json")
        assert status["status"] == "failed" and "UncompletedJobError" in status["error"], status
    assert "2 of 2 jobs did not complete" in out


def test_requeued_job_resumes_with_identical_final_metrics(tiny_bert, tweet_files, tmp_path) -> None:
    common = [
        *base_overrides(tiny_bert, tweet_files, tmp_path / "outputs"),
        "dataset.max_train_samples=96",
        "trainer.per_device_train_batch_size=8",
        # Long enough that the signal sent after the first checkpoint lands mid-training
        # (6 epochs of these tiny steps could end before it arrived).
        "trainer.num_train_epochs=30",
        "prompt_encoder.num_virtual_tokens=3",
    ]
    reference = multirun([*common, "sweep_name=reference", "seed=5"], tmp_path)
    assert reference.returncode == 0, reference.stderr[-3000:]
    before = {job for job, _ in slurm_jobs()}
    proc = multirun(
        [*common, *SLURM_LAUNCHER, "hydra.launcher.max_num_timeout=3", "sweep_name=requeue", "seed=5"],
        tmp_path,
        wait=False,
    )
    job_dir = tmp_path / "outputs" / "multiruns" / "requeue" / "job"
    try:
        wait_for(
            lambda: any((p / "trainer_state.json").is_file() for p in job_dir.glob("checkpoints/checkpoint-*")),
            what="the first epoch checkpoint",
        )
        (job_id,) = [j for j, _ in slurm_jobs() if j not in before]
        # what SLURM sends before a time limit or on preemption (submitit's --signal=USR2@...)
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        out, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-3000:]
    log = (job_dir / "train.log").read_text()
    assert "caught SIGUSR2" in log and "resuming from" in log
    ours = read_json(job_dir / "metrics.json")
    theirs = read_json(tmp_path / "outputs" / "multiruns" / "reference" / "job" / "metrics.json")
    for split in ("validation", "test"):
        for key in ("accuracy", "macro_f1", "loss"):
            assert ours[split][key] == theirs[split][key], (split, key)
    assert (job_dir / "predictions_test.jsonl").read_text() == (
        tmp_path / "outputs" / "multiruns" / "reference" / "job" / "predictions_test.jsonl"
    ).read_text()


def test_the_gpu_preset_on_the_local_node_says_which_preset_fits(tiny_bert, tweet_files, tmp_path) -> None:
    args = [
        *base_overrides(tiny_bert, tweet_files, tmp_path / "outputs"),
        "hydra/launcher=slurm",  # asks for a GPU the local node does not have
        "sweep_name=gpu",
        "prompt_encoder.num_virtual_tokens=1,2",
    ]
    proc = multirun(args, tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "sbatch refused the sweep's jobs" in proc.stderr and "hydra/launcher=slurm_local" in proc.stderr
    assert "Traceback" not in proc.stderr

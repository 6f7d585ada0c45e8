"""Sweep fusion, proven on CPU: jobs trained as one fused group over one frozen backbone end
with the metrics, weights and run folder of their separate runs (``pytest -k fus``).

The backbone's dropout is 0 here (the fused pass draws dropout from the group's random stream,
a separate run from its own), so every difference left is float noise from batching rows of
several jobs into one forward.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from ptexp.fusion import Member, run_group
from ptexp.outputs import read_json
from ptexp.run import run
from tests.conftest import compose_cfg, run_sweep, subprocess_env, tiny_overrides
from tests.wandb_records import read_run

# Three jobs that differ in every fusable kind of knob: prompt length, encoder width and type,
# learning rate and seed (so init, data order and schedule all differ).
JOBS = {
    "n4_h16": ["prompt_encoder.num_virtual_tokens=4", "prompt_encoder.encoder_hidden_size=16", "seed=42"],
    "n7_h24": [
        "prompt_encoder.num_virtual_tokens=7",
        "prompt_encoder.encoder_hidden_size=24",
        "trainer.learning_rate=1e-2",
        "seed=1",
    ],
    "n2_h8": [
        "prompt_encoder=lstm",  # and another encoder type: a bidirectional LSTM
        "prompt_encoder.num_virtual_tokens=2",
        "prompt_encoder.encoder_hidden_size=8",
        "trainer.learning_rate=5e-2",
        "seed=7",
    ],
}
REL = 1e-5


@pytest.fixture(scope="session")
def still_bert(tmp_path_factory) -> Path:
    """The tests' tiny random BERT with every dropout at 0 (backbone, attention, classifier)."""
    from ptexp.testing import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("still-bert"), dropout=0.0)


def _base(still_bert: Path, tweet_files: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [*tiny_overrides(still_bert, tweet_files, out), "logger=none", *extra]


def _separate_and_fused(
    base: list[str], jobs: dict[str, list[str]], out: Path, one_pass: bool = True
) -> tuple[dict, list[Member]]:
    """Each job run alone, then all fused. ``one_pass``: every step's rows in ONE backbone pass,
    padded to the longest (what a GPU does); else the CPU default (passes by row length)."""
    separate = {name: run(compose_cfg([*base, *o]), out / "separate" / name, overrides=o) for name, o in jobs.items()}
    members = [Member(compose_cfg([*base, *o]), out / "fused" / name, overrides=o) for name, o in jobs.items()]
    group = run_group(members, padding_waste=math.inf if one_pass else None)
    # One backbone for all: the jobs' models hold the same encoder object (their own copies,
    # loaded by build as a separate run loads them, were dropped).
    assert len({id(m.trainer.model.get_base_model().bert.encoder) for m in members if m.trainer}) == 1
    # Every training step of every job went through the group: 96 examples, batch 16, 2 epochs
    # = 12 steps, each a rendezvous of all the jobs; in one backbone pass each when asked.
    assert group.passes == [len(jobs)] * 12
    if one_pass:
        assert group.backbone_calls == 12
    return separate, members


def _assert_same_numbers(separate: dict[str, dict], members: list[Member]) -> None:
    for member in members:
        assert member.error is None, (member.run_dir.name, member.error)
        alone, fused = separate[member.run_dir.name], member.metrics
        assert fused["train_loss"] == pytest.approx(alone["train_loss"], rel=REL), member.run_dir.name
        assert fused["best_epoch"] == alone["best_epoch"]
        for split in ("validation", "test"):
            for key in ("accuracy", "macro_f1", "loss"):
                assert fused[split][key] == pytest.approx(alone[split][key], rel=REL), (member.run_dir.name, split, key)
        assert len(fused["history"]) == len(alone["history"])
        for mine, theirs in zip(fused["history"], alone["history"]):
            assert mine["loss"] == pytest.approx(theirs["loss"], rel=REL)


def _assert_same_weights(a: Path, b: Path) -> None:
    from safetensors.torch import load_file

    mine, theirs = load_file(str(a)), load_file(str(b))
    assert set(mine) == set(theirs)
    for name, tensor in theirs.items():
        assert mine[name].shape == tensor.shape
        assert (mine[name] - tensor).abs().max().item() <= 1e-4 * max(1.0, tensor.abs().max().item()), name


@pytest.mark.slow  # trains tiny models end to end
def test_fused_jobs_equal_their_separate_runs(still_bert, tweet_files, tmp_path) -> None:
    """The core proof: 3 jobs with 4/7/2 virtual tokens, hidden 16/24/8, three learning rates
    and seeds, fused, end with their separate runs' train loss, per-epoch validation loss,
    selected epoch, validation and test metrics, and trained weights."""
    base = _base(still_bert, tweet_files, tmp_path / "outputs")
    separate, members = _separate_and_fused(base, JOBS, tmp_path)
    _assert_same_numbers(separate, members)
    for name in JOBS:
        _assert_same_weights(
            tmp_path / "fused" / name / "trainable_state.safetensors",
            tmp_path / "separate" / name / "trainable_state.safetensors",
        )
    # The jobs really were different runs (a test that fused three copies would prove little).
    assert len({round(m.metrics["train_loss"], 6) for m in members}) == 3


def _files(run_dir: Path) -> set[str]:
    """A run folder's files, W&B's time- and id-named ones by their kind only."""
    names = set()
    for path in run_dir.rglob("*"):
        if path.is_file():
            rel = path.relative_to(run_dir)
            names.add(f"wandb/{rel.suffix}" if rel.parts[0] == "wandb" else str(rel))
    return names


@pytest.mark.slow  # trains tiny models end to end
def test_fused_jobs_write_a_separate_runs_folder_with_a_per_job_pooler(still_bert, tweet_files, tmp_path) -> None:
    """With W&B offline on and the pooler trained per job (``model.extra_trainable_modules=
    [pooler]``, the embedded default's recipe): each fused job's folder holds the files of its
    separate run, the same metric keys, an adapter ptexp-predict loads, and its own W&B run
    (never the other job's) with its own summary."""
    from ptexp.predict import predict

    jobs = {name: JOBS[name] for name in ("n4_h16", "n7_h24")}
    base = [*tiny_overrides(still_bert, tweet_files, tmp_path / "outputs"), "model.extra_trainable_modules=[pooler]"]
    separate, members = _separate_and_fused(base, jobs, tmp_path, one_pass=False)  # the CPU default
    _assert_same_numbers(separate, members)
    for name in jobs:
        fused_dir, alone_dir = tmp_path / "fused" / name, tmp_path / "separate" / name
        assert _files(fused_dir) == _files(alone_dir)
        fused_state = fused_dir / "trainable_state.safetensors"
        _assert_same_weights(fused_state, alone_dir / "trainable_state.safetensors")
        from safetensors.torch import load_file

        assert any(".pooler.modules_to_save." in key for key in load_file(str(fused_state)))
        fused_metrics, alone_metrics = read_json(fused_dir / "metrics.json"), read_json(alone_dir / "metrics.json")
        assert set(fused_metrics) == set(alone_metrics)
        assert fused_metrics["trainable_params"] == alone_metrics["trainable_params"]
        assert fused_metrics["total_params"] == alone_metrics["total_params"]
        saved = [json.loads(line) for line in (fused_dir / "predictions_test.jsonl").read_text().splitlines()]
        again = predict(fused_dir, [row["text"] for row in saved[:20]])
        for mine, theirs in zip(again, saved[:20]):
            assert mine["label"] == theirs["label"]
            for label, p in theirs["probs"].items():
                assert mine["probs"][label] == pytest.approx(p, abs=1e-4)
        (wandb_file,) = (fused_dir / "wandb").glob("offline-run-*/run-*.wandb")
        record = read_run(wandb_file)
        assert record["run"].run_id == read_json(fused_dir / "run.json")["wandb"]["id"]
        assert record["config"]["prompt_encoder"]["num_virtual_tokens"] == int(name[1])
        assert record["summary"]["final/test/loss"] == pytest.approx(fused_metrics["test"]["loss"])
        steps = [h["train/loss"] for h in record["history"] if "train/loss" in h]
        assert len(steps) == 12  # this job's own 12 logged steps, not the other job's too
        assert record["exit"] == 0


@pytest.mark.slow  # trains tiny models end to end
def test_fused_sweep_gives_the_sequential_sweeps_report(still_bert, tweet_files, tmp_path) -> None:
    """A 2x2 tokens x hidden sweep through the CLI with hydra.sweeper.fuse=true (one launch
    job, one process, one backbone) reports the same table as fuse=false (four jobs one by
    one); every fused job has its own folder, .hydra record, status, log and W&B run."""
    grid = ["prompt_encoder.num_virtual_tokens=2,5", "prompt_encoder.encoder_hidden_size=8,16"]
    # Selecting by validation loss puts losses in the table: four distinct values per column
    # (the random tiny BERT learns too little in 6 steps for accuracy to tell the cells apart).
    base = [
        *tiny_overrides(still_bert, tweet_files, tmp_path / "outputs"),
        "dataset.max_train_samples=48",
        "trainer.metric_for_best_model=loss",
        *grid,
    ]
    sequential = run_sweep([*base, "sweep_name=sequential", "hydra.sweeper.fuse=false"], tmp_path)
    assert sequential.returncode == 0, sequential.stdout[-2000:] + sequential.stderr[-3000:]
    assert "fusion: off (hydra.sweeper.fuse=false)" in sequential.stdout + sequential.stderr
    fused = run_sweep([*base, "sweep_name=fused", "hydra.sweeper.fuse=true"], tmp_path)
    assert fused.returncode == 0, fused.stdout[-2000:] + fused.stderr[-3000:]
    said = fused.stdout + fused.stderr
    assert "fusion: 4 jobs in 1 fused group" in said
    assert "fused group of 4 jobs: 6 fused steps (24 job-steps" in said
    sweeps = tmp_path / "outputs" / "multiruns"
    for name in ("ablation.md", "ablation.tex"):
        assert (sweeps / "fused" / "report" / name).read_text() == (sweeps / "sequential" / "report" / name).read_text()
    table = (sweeps / "fused" / "report" / "ablation.md").read_text()
    assert "validation loss" in table and len(set(re.findall(r"\| (\d\.\d{4})", table))) >= 4
    columns = ["job", "status", "validation.accuracy", "test.accuracy", "validation.loss", "test.loss", "train_loss"]
    ours, theirs = (pd.read_csv(sweeps / s / "report" / "results.csv") for s in ("fused", "sequential"))
    ours, theirs = (f.sort_values("job").reset_index(drop=True) for f in (ours, theirs))
    assert list(ours.columns) == list(theirs.columns)
    assert ours[columns[:2]].equals(theirs[columns[:2]]) and set(ours["status"]) == {"completed"}
    for column in columns[2:]:
        assert ours[column].tolist() == pytest.approx(theirs[column].tolist(), rel=REL), column
    for job in (sweeps / "sequential").glob("num_virtual_tokens=*"):
        mine = sweeps / "fused" / job.name
        assert _files(mine) == _files(job), job.name
        recorded = [str(o).replace("=fused", "=sequential") for o in OmegaConf.load(mine / ".hydra" / "overrides.yaml")]
        assert recorded == list(OmegaConf.load(job / ".hydra" / "overrides.yaml"))
        choices = OmegaConf.load(mine / ".hydra" / "hydra.yaml").hydra.runtime.choices
        assert choices == OmegaConf.load(job / ".hydra" / "hydra.yaml").hydra.runtime.choices
        assert read_json(mine / "status.json")["status"] == "completed"
        log_text = (mine / "train.log").read_text()
        assert "validation:" in log_text and log_text.count("finished:") == 1  # its own lines only
        (wandb_file,) = (mine / "wandb").glob("offline-run-*/run-*.wandb")
        record = read_run(wandb_file)
        assert record["run"].run_group == "fused" and record["run"].display_name == job.name
        assert record["exit"] == 0


@pytest.mark.slow  # trains tiny models end to end
def test_a_diverging_job_leaves_the_fused_group_and_the_others_go_on(still_bert, tweet_files, tmp_path) -> None:
    """One job of three diverges (learning rate 1e20): it is recorded failed in its status.json
    with the run's own NaN error, drops out of the group's passes, and the two others end with
    their separate runs' numbers."""
    from ptexp.fusion import isolated

    base = _base(still_bert, tweet_files, tmp_path / "outputs")
    jobs = {name: JOBS[name] for name in ("n4_h16", "n7_h24")}
    separate = {
        name: run(compose_cfg([*base, *o]), tmp_path / "separate" / name, overrides=o) for name, o in jobs.items()
    }
    jobs["diverges"] = ["prompt_encoder.num_virtual_tokens=3", "trainer.learning_rate=1e20"]
    members = [Member(compose_cfg([*base, *o]), tmp_path / "fused" / name, overrides=o) for name, o in jobs.items()]
    group = run_group(members, body=isolated("validation.accuracy"))
    status = read_json(tmp_path / "fused" / "diverges" / "status.json")
    assert status["status"] == "failed" and "NonFiniteLossError" in status["error"] and "diverged" in status["error"]
    assert not (tmp_path / "fused" / "diverges" / "metrics.json").exists()
    assert group.passes[0] == 3 and group.passes[-1] == 2 and len(group.passes) == 12
    _assert_same_numbers(separate, members[:2])
    assert all(read_json(m.run_dir / "status.json")["status"] == "completed" for m in members[:2])


@pytest.mark.slow  # trains tiny models end to end
def test_a_fused_group_resumes_from_each_jobs_own_checkpoint(still_bert, tweet_files, tmp_path) -> None:
    """What a kill -9 of a fused group leaves: each job's folder holds the checkpoints its own
    Trainer had completed, not necessarily the same step for every job (a job may be killed
    while saving). Relaunched, the group resumes each job from its own last complete
    checkpoint (one job from epoch 1, one from scratch, at different steps in one group) and
    every job ends with the uninterrupted group's train loss and metrics."""
    import shutil

    base = _base(still_bert, tweet_files, tmp_path / "outputs", "keep_checkpoints=true", "trainer.save_total_limit=5")
    jobs = {name: JOBS[name] for name in ("n4_h16", "n7_h24", "n2_h8")}

    def group(folder: str) -> list[Member]:
        members = [Member(compose_cfg([*base, *o]), tmp_path / folder / n, overrides=o) for n, o in jobs.items()]
        run_group(members)
        return members

    whole = group("whole")
    # n4_h16 was killed after its epoch-1 checkpoint; n7_h24 while writing its epoch-2 one (no
    # trainer_state.json yet: not complete); n2_h8 before its first.
    shutil.copytree(
        tmp_path / "whole/n4_h16/checkpoints/checkpoint-6", tmp_path / "resumed/n4_h16/checkpoints/checkpoint-6"
    )
    shutil.copytree(
        tmp_path / "whole/n7_h24/checkpoints/checkpoint-6", tmp_path / "resumed/n7_h24/checkpoints/checkpoint-6"
    )
    half = tmp_path / "resumed/n7_h24/checkpoints/checkpoint-12"
    shutil.copytree(tmp_path / "whole/n7_h24/checkpoints/checkpoint-12", half)
    (half / "trainer_state.json").unlink()
    resumed = group("resumed")
    _assert_same_numbers({m.run_dir.name: m.metrics for m in whole}, resumed)
    for member in resumed:
        _assert_same_weights(
            member.run_dir / "trainable_state.safetensors",
            tmp_path / "whole" / member.run_dir.name / "trainable_state.safetensors",
        )


def test_fusion_groups_jobs_that_differ_only_in_per_job_knobs(tiny_bert, tweet_files, tmp_path) -> None:
    """Prompt-encoder knobs, learning rate and seed may differ within a group; the batch
    schedule, the data and the backbone may not; LoRA, layers trained inside the backbone and
    fp16 are refused with the reason."""
    from ptexp.fusion import fusion_key, unfusable
    from ptexp.sweep import experiment_config

    base = tiny_overrides(tiny_bert, tweet_files, tmp_path)

    def key(*extra: str) -> str:
        return fusion_key(experiment_config(compose_cfg([*base, *extra])))

    same = key()
    assert key("prompt_encoder=lstm", "prompt_encoder.num_virtual_tokens=9", "seed=3") == same
    assert key("trainer.learning_rate=1e-3", "prompt_encoder.encoder_hidden_size=64", "run_name=x") == same
    assert key("trainer.per_device_train_batch_size=8") != same
    assert key("dataset.max_train_samples=48") != same
    assert key("trainer.num_train_epochs=3") != same
    assert unfusable(compose_cfg(base)) is None
    assert unfusable(compose_cfg([*base, "model.extra_trainable_modules=[pooler]"])) is None  # one pooler per job
    assert "inside the shared backbone" in unfusable(compose_cfg([*base, "model.extra_trainable_modules=[encoder]"]))
    assert "method=lora" in unfusable(compose_cfg([*base, "method=lora"]))
    assert "fp16" in unfusable(compose_cfg([*base, "+trainer.fp16=true"]))


@pytest.mark.slow  # starts ptexp in a subprocess
def test_plan_shows_the_fused_groups_and_why_other_jobs_are_alone(tiny_bert, tweet_files, tmp_path) -> None:
    grid = ["method=p_tuning,lora", "seed=1,2", "trainer.per_device_train_batch_size=8,16"]
    base = [*tiny_overrides(tiny_bert, tweet_files, tmp_path / "outputs"), *grid, "hydra.sweeper.plan=true"]
    planned = run_sweep([*base, "hydra.sweeper.fuse=true"], tmp_path)
    assert planned.returncode == 0, planned.stdout[-2000:] + planned.stderr[-3000:]
    out = planned.stdout
    assert "fusion: 4 jobs in 2 fused groups (one process and one backbone each), 4 alone" in out
    assert (
        "group-0 (2 jobs): per_device_train_batch_size=8,method=p_tuning,seed=1, "
        "per_device_train_batch_size=8,method=p_tuning,seed=2" in out
    )
    assert "not fused: per_device_train_batch_size=16,method=lora,seed=2: method=lora changes the backbone" in out
    auto = run_sweep([*base, "hydra.sweeper.fuse=auto"], tmp_path)
    assert auto.returncode == 0 and "fusion: off (hydra.sweeper.fuse=auto and the jobs run on CPU" in auto.stdout
    # auto on a login node without a GPU, for jobs that ask SLURM for one: fused.
    on_gpus = run_sweep([*base, "hydra.sweeper.fuse=auto", "hydra/launcher=slurm"], tmp_path)
    assert on_gpus.returncode == 0 and "fusion: 4 jobs in 2 fused groups" in on_gpus.stdout
    # One job over several processes (torch.distributed) cannot be one of a group's threads.
    ddp = run_sweep([*base, "hydra.sweeper.fuse=true", "hydra/launcher=slurm_ddp"], tmp_path)
    assert ddp.returncode == 0 and "fusion: off (the launcher runs each job as several processes" in ddp.stdout
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow  # starts ptexp in subprocesses, kills one
def test_a_fused_sweep_killed_mid_training_resumes_to_the_uninterrupted_table(
    still_bert, tweet_files, tmp_path
) -> None:
    """kill -9 of a fused sweep (the whole process group, W&B service included) once every job
    has a complete epoch checkpoint and none has finished: relaunched, the sweep groups the
    interrupted jobs again, each resumes from its own checkpoint, and the report equals an
    uninterrupted fused sweep's."""
    import os
    import signal
    import time

    from ptexp.jobs import job_status

    grid = ["prompt_encoder.num_virtual_tokens=2,5", "prompt_encoder.encoder_hidden_size=8,16"]
    base = [
        *tiny_overrides(still_bert, tweet_files, tmp_path / "outputs"),
        "dataset.max_train_samples=192",
        "trainer.num_train_epochs=4",  # 3 epochs after the first checkpoint: time to kill mid-training
        "trainer.metric_for_best_model=loss",
        "hydra.sweeper.fuse=true",
        *grid,
    ]
    whole = run_sweep([*base, "sweep_name=whole"], tmp_path)
    assert whole.returncode == 0, whole.stdout[-2000:] + whole.stderr[-3000:]
    sweep_dir = tmp_path / "outputs" / "multiruns" / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ptexp.train", "-m", *base, "sweep_name=killed"],
        cwd=tmp_path,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        jobs = list(sweep_dir.glob("num_virtual_tokens=*"))
        saved = [j for j in jobs if list(j.glob("checkpoints/checkpoint-*/trainer_state.json"))]
        if len(saved) == 4 and not list(sweep_dir.glob("*/metrics.json")):
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    jobs = sorted(sweep_dir.glob("num_virtual_tokens=*"))
    assert len(jobs) == 4 and {job_status(j) for j in jobs} == {"interrupted"}, [job_status(j) for j in jobs]
    again = run_sweep([*base, "sweep_name=killed"], tmp_path)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    said = again.stdout + again.stderr
    assert "fusion: 4 jobs in 1 fused group" in said and "resuming from" in "".join(
        (j / "train.log").read_text() for j in jobs
    )
    sweeps = tmp_path / "outputs" / "multiruns"
    assert (sweeps / "killed" / "report" / "ablation.md").read_text() == (
        sweeps / "whole" / "report" / "ablation.md"
    ).read_text()
    for job in jobs:
        mine, theirs = read_json(job / "metrics.json"), read_json(sweeps / "whole" / job.name / "metrics.json")
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=REL)
        for split in ("validation", "test"):
            assert mine[split]["loss"] == pytest.approx(theirs[split]["loss"], rel=REL)


@pytest.mark.slow  # starts ptexp in subprocesses, signals one
def test_sigusr2_makes_every_fused_job_save_and_stop_then_the_sweep_resumes(still_bert, tweet_files, tmp_path) -> None:
    """SLURM's warning before a time limit (SIGUSR2) reaches a fused group's process: every job
    saves a checkpoint after its current step and stops (the group catches the signal for its
    job threads), the process ends, and the relaunched sweep resumes each job from that
    checkpoint to the uninterrupted sweep's table."""
    import signal
    import time

    from ptexp.jobs import job_status
    from ptexp.trainer import last_complete_checkpoint

    grid = ["prompt_encoder.num_virtual_tokens=2,5", "prompt_encoder.encoder_hidden_size=8,16"]
    base = [
        *tiny_overrides(still_bert, tweet_files, tmp_path / "outputs"),
        "dataset.max_train_samples=192",
        "trainer.num_train_epochs=4",
        "trainer.metric_for_best_model=loss",
        "logger=none",
        "hydra.sweeper.fuse=true",
        *grid,
    ]
    whole = run_sweep([*base, "sweep_name=whole"], tmp_path)
    assert whole.returncode == 0, whole.stdout[-2000:] + whole.stderr[-3000:]
    sweep_dir = tmp_path / "outputs" / "multiruns" / "signalled"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ptexp.train", "-m", *base, "sweep_name=signalled"],
        cwd=tmp_path,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        jobs = list(sweep_dir.glob("num_virtual_tokens=*"))
        if len([j for j in jobs if list(j.glob("checkpoints/checkpoint-*/trainer_state.json"))]) == 4:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGUSR2)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0 and "caught SIGUSR2" in out, out[-3000:]
    jobs = sorted(sweep_dir.glob("num_virtual_tokens=*"))
    assert {job_status(j) for j in jobs} == {"interrupted"}, [job_status(j) for j in jobs]
    for job in jobs:  # each job saved, then stopped: its last words name the checkpoint it left
        step = last_complete_checkpoint(str(job / "checkpoints")).rsplit("-", 1)[-1]
        assert f"stopped by SIGUSR2 after saving step {step}" in (job / "train.log").read_text(), job.name
    again = run_sweep([*base, "sweep_name=signalled"], tmp_path)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    sweeps = tmp_path / "outputs" / "multiruns"
    assert (sweeps / "signalled" / "report" / "ablation.md").read_text() == (
        sweeps / "whole" / "report" / "ablation.md"
    ).read_text()
    for job in jobs:
        mine, theirs = read_json(job / "metrics.json"), read_json(sweeps / "whole" / job.name / "metrics.json")
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=REL)
        for split in ("validation", "test"):
            assert mine[split]["loss"] == pytest.approx(theirs[split]["loss"], rel=REL)


@pytest.mark.slow  # starts ptexp in a subprocess
def test_fused_groups_run_under_the_parallel_launcher(still_bert, tweet_files, tmp_path) -> None:
    """Two groups (batch size 8 and 16 cannot share a schedule) run at once as two joblib jobs:
    the group's task travels to the worker processes, and every job of both groups completes."""
    grid = ["prompt_encoder.num_virtual_tokens=2,5", "trainer.per_device_train_batch_size=8,16"]
    args = [
        *tiny_overrides(still_bert, tweet_files, tmp_path / "outputs"),
        "dataset.max_train_samples=32",
        "logger=none",
        "sweep_name=parallel",
        "hydra/launcher=parallel",
        "hydra.sweeper.fuse=true",
        *grid,
    ]
    proc = run_sweep(args, tmp_path)
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, said[-3000:]
    assert "fusion: 4 jobs in 2 fused groups" in said and said.count("fused group of 2 jobs") == 2
    sweep_dir = tmp_path / "outputs" / "multiruns" / "parallel"
    statuses = [read_json(p)["status"] for p in sweep_dir.glob("*/status.json")]
    assert statuses == ["completed"] * 4


def test_cpu_passes_hold_rows_of_about_one_length() -> None:
    """On a CPU a pass costs its padded positions: rows join a pass while the padding stays
    within 5 % of their real positions; with no limit (a GPU) every row shares one pass."""
    import torch

    from ptexp.fusion import _Request, length_passes

    def request(rows: int, length: int) -> _Request:
        return _Request("encode", {"embeds": torch.zeros(rows, length, 2)})

    a, b, c = request(16, 70), request(16, 68), request(16, 55)
    ids = lambda passes: [[id(r) for r in p] for p in passes]  # noqa: E731
    assert ids(length_passes([c, a, b], 0.05)) == [[id(a), id(b)], [id(c)]]
    assert ids(length_passes([c, a, b], math.inf)) == [[id(a), id(b), id(c)]]

"""Sweeps through the real CLI (`python -m ptexp.train -m ...`) on a tiny BERT: folders,
W&B runs, report, kill + resume, failure isolation, no-op axes, paired axes, re-launch with an
added axis, plan mode, one Optuna study per sweep folder; and the sweeper's plugin interfaces."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from ptexp.outputs import read_json
from tests.conftest import compose_cfg, tiny_overrides
from tests.conftest import run_sweep as sweep
from tests.wandb_records import read_run

GRID = [
    "prompt_encoder.num_virtual_tokens=1,2,4",
    "prompt_encoder.encoder_hidden_size=8,16",
    "seed=1,2",
]


def base_overrides(tiny_bert, tweet_files, root: Path) -> list[str]:
    return [
        *tiny_overrides(tiny_bert, tweet_files, root),
        "dataset.max_train_samples=48",
        "dataset.max_eval_samples=40",
        "dataset.max_test_samples=40",
        "num_threads=1",
    ]


def wandb_runs(sweep_dir: Path) -> list[dict]:
    """The jobs' W&B runs (the report's own run, in report/, is not a job)."""
    files = sorted(sweep_dir.glob("*/wandb/offline-run-*/run-*.wandb"))
    return [read_run(f) for f in files if f.parents[2].name != "report"]


@pytest.fixture(scope="module")
def grid_sweep(tiny_bert, tweet_files, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, list[str]]:
    root = tmp_path_factory.mktemp("grid")
    args = [*base_overrides(tiny_bert, tweet_files, root / "outputs"), "sweep_name=grid", *GRID]
    proc = sweep(args, root)
    return root / "outputs" / "multiruns" / "grid", proc, args


@pytest.mark.slow  # ptexp-train subprocesses or training
def test_grid_sweep_gives_12_jobs_runs_and_a_table(grid_sweep) -> None:
    sweep_dir, proc, _ = grid_sweep
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = [p for p in sweep_dir.iterdir() if (p / "metrics.json").is_file()]
    assert len(jobs) == 12
    assert (sweep_dir / "num_virtual_tokens=1,encoder_hidden_size=8,seed=1").is_dir()
    runs = wandb_runs(sweep_dir)
    assert len(runs) == 12
    assert {r["run"].run_group for r in runs} == {"grid"}
    assert len({r["run"].display_name for r in runs}) == 12
    assert len({r["run"].run_id for r in runs}) == 12
    assert all(r["exit"] == 0 for r in runs)
    (report_run,) = [read_run(f) for f in (sweep_dir / "report" / "wandb").glob("offline-run-*/run-*.wandb")]
    assert report_run["run"].run_group == "grid" and report_run["run"].job_type == "report"
    results = pd.read_csv(sweep_dir / "report" / "results.csv")
    assert len(results) == 12 and set(results["status"]) == {"completed"}
    table = (sweep_dir / "report" / "ablation.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("|") and "---" not in line][1:]
    assert len(rows) == 6 and all(line.rstrip(" |").endswith("2") for line in rows)
    assert table.count("**") == 2  # best cell marked
    assert (sweep_dir / "report" / "heatmap.png").stat().st_size > 1000
    assert (sweep_dir / "report" / "prompt_length.png").is_file()
    assert "\\begin{tabular}" in (sweep_dir / "report" / "ablation.tex").read_text()
    assert "[12/12]" in proc.stderr + proc.stdout  # progress lines
    assert "Ablation" in proc.stdout


@pytest.mark.slow  # ptexp-train subprocesses or training
def test_killed_sweep_resumes_to_the_same_table(grid_sweep, tmp_path) -> None:
    reference, _, args = grid_sweep
    args = [a.replace(str(reference.parents[2]), str(tmp_path)) if a.startswith("paths.root=") else a for a in args]
    sweep_dir = tmp_path / "outputs" / "multiruns" / "grid"
    proc = sweep(args, tmp_path, wait=False)
    deadline = time.time() + 600
    # kill while a job is mid-training: 3 jobs done and the 4th has saved its epoch-1 checkpoint
    while time.time() < deadline:
        done = list(sweep_dir.glob("*/metrics.json")) if sweep_dir.is_dir() else []
        mid = [
            p
            for p in sweep_dir.glob("*/checkpoints/checkpoint-*/trainer_state.json")
            if not (p.parents[2] / "metrics.json").exists()
        ]
        if len(done) >= 3 and mid:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in sweep_dir.glob("*/metrics.json")}
    assert 3 <= len(finished) < 12
    again = sweep(args, tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"{len(finished)} of 12 jobs already finished" in again.stderr + again.stdout
    for name, mtime in finished.items():  # not re-run
        assert (sweep_dir / name / "metrics.json").stat().st_mtime_ns == mtime
    segments = [p for p in sweep_dir.glob("*/wandb/offline-run-*") if p.parents[1].name != "report"]
    ids = {p.name.rsplit("-", 1)[-1] for p in segments}
    assert len(ids) == 12  # the killed job continued its own W&B run ...
    assert len(segments) == 13  # ... in a second offline segment with the same id
    ours = (sweep_dir / "report" / "ablation.md").read_text()
    assert ours == (reference / "report" / "ablation.md").read_text()


@pytest.mark.slow  # ptexp-train subprocesses or training
def test_invalid_value_fails_alone_and_is_retried(tiny_bert, tweet_files, tmp_path) -> None:
    args = [
        *base_overrides(tiny_bert, tweet_files, tmp_path / "outputs"),
        "sweep_name=bad",
        "prompt_encoder.num_virtual_tokens=2,0",
        "trainer.max_steps=2",
    ]
    proc = sweep(args, tmp_path)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    sweep_dir = tmp_path / "outputs" / "multiruns" / "bad"
    assert (sweep_dir / "num_virtual_tokens=2" / "metrics.json").is_file()
    status = read_json(sweep_dir / "num_virtual_tokens=0" / "status.json")
    assert status["status"] == "failed" and "num_virtual_tokens=0" in status["error"]
    assert "1 of 2 jobs did not complete" in proc.stderr and "num_virtual_tokens=0" in proc.stderr
    mtime = (sweep_dir / "num_virtual_tokens=2" / "metrics.json").stat().st_mtime_ns
    again = sweep(args, tmp_path)
    assert again.returncode == 1
    assert "1 of 2 jobs already finished" in again.stderr + again.stdout
    assert (sweep_dir / "num_virtual_tokens=2" / "metrics.json").stat().st_mtime_ns == mtime


@pytest.mark.slow  # ptexp-train subprocesses or training
def test_mlp_noop_axis_runs_once_and_says_why(tiny_bert, tweet_files, tmp_path) -> None:
    args = [
        *base_overrides(tiny_bert, tweet_files, tmp_path / "outputs"),
        "sweep_name=noop",
        "prompt_encoder.encoder_num_layers=1,2,3",
        "trainer.max_steps=1",
    ]
    proc = sweep(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "2 of 3 jobs have the same effective config" in out
    assert "encoder_num_layers had no effect" in out
    sweep_dir = tmp_path / "outputs" / "multiruns" / "noop"
    assert len(list(sweep_dir.glob("*/metrics.json"))) == 1
    assert len(read_json(sweep_dir / "sweep.json")["merged"]) == 1


@pytest.mark.slow  # ptexp-train subprocesses or training
def test_paired_axes_zip_instead_of_multiplying(tiny_bert, tweet_files, tmp_path) -> None:
    presets = tmp_path / "presets" / "sweep"
    presets.mkdir(parents=True)
    (presets / "pairs.yaml").write_text(
        "# @package _global_\nsweep_name: pairs\nhydra:\n  sweeper:\n    paired:\n"
        "      prompt_encoder.num_virtual_tokens: 2,4,8\n      trainer.learning_rate: 0.03,0.01,0.003\n"
    )
    args = [
        *base_overrides(tiny_bert, tweet_files, tmp_path / "outputs"),
        f"hydra.searchpath=[file://{tmp_path / 'presets'}]",
        "+sweep=pairs",
        "trainer.max_steps=1",
    ]
    proc = sweep(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep_dir = tmp_path / "outputs" / "multiruns" / "pairs"
    names = sorted(p.name for p in sweep_dir.glob("*") if (p / "metrics.json").is_file())
    assert names == [
        "num_virtual_tokens=2,learning_rate=0.03",
        "num_virtual_tokens=4,learning_rate=0.01",
        "num_virtual_tokens=8,learning_rate=0.003",
    ]
    cfg = read_json(sweep_dir / names[2] / "run.json")
    assert "trainer.learning_rate=0.003" in cfg["overrides"]


def test_sweeper_uses_only_public_hydra_interfaces() -> None:
    from hydra.plugins.sweeper import Sweeper

    from hydra_plugins.ptexp_sweeper import ptexp_sweeper
    from ptexp import sweep as ptexp_sweep

    assert ptexp_sweep.PtexpSweeper.__bases__ == (Sweeper,)
    assert issubclass(ptexp_sweeper.PtexpSweeper, ptexp_sweep.PtexpSweeper)
    root = Path(__file__).resolve().parents[1]
    offenders = [
        f"{path.relative_to(root)}: {needle}"
        for folder in ("ptexp", "hydra_plugins")
        for path in (root / folder).rglob("*.py")
        for needle in ("hydra._internal", "unittest.mock", "from unittest import mock")
        if needle in path.read_text()
    ]
    assert offenders == []


def test_slurm_local_preset_fits_the_local_node() -> None:
    """scripts/slurm-local.sh's node has no GPU, CPUs=$(nproc), RealMemory=80% of MemTotal."""
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="ptexp.conf", version_base="1.3"):
        cfg = compose("train", ["hydra/launcher=slurm_local"], return_hydra_config=True).hydra.launcher
    assert cfg._target_.endswith("PtexpSlurmLauncher")
    assert cfg.gpus_per_node is None and cfg.gres is None
    assert cfg.cpus_per_task * cfg.tasks_per_node <= os.cpu_count()
    mem_total_mb = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    assert cfg.mem_gb * 1024 <= mem_total_mb * 0.8


def test_slurm_launcher_reports_a_job_killed_before_returning() -> None:
    from hydra.core.utils import JobStatus
    from submitit.core.utils import UncompletedJobError

    from hydra_plugins.ptexp_sweeper.ptexp_sweeper import wait_for_job

    class Killed:
        def results(self) -> list:
            raise UncompletedJobError("Job 7 (task: 0) with path /x has state CANCELLED")

    failed = wait_for_job(Killed(), ["seed=1"])
    assert failed.status == JobStatus.FAILED and failed.overrides == ["seed=1"]
    with pytest.raises(UncompletedJobError, match="CANCELLED"):
        failed.return_value  # noqa: B018


@pytest.mark.slow  # ptexp-train subprocesses or training
def test_plan_prints_the_count_and_writes_nothing(tiny_bert, tweet_files, tmp_path) -> None:
    args = [
        *base_overrides(tiny_bert, tweet_files, tmp_path / "outputs"),
        "sweep_name=planned",
        "prompt_encoder.num_virtual_tokens=1,2,4",
        "prompt_encoder.encoder_hidden_size=8,16",
        "seed=1,2,3,4",
        "prompt_encoder.encoder_num_layers=1,2",  # a no-op axis for the MLP encoder: 48 jobs, 24 distinct
        "hydra/launcher=parallel",
        "hydra.sweeper.plan=true",
    ]
    proc = sweep(args, tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "48 jobs: 0 finished, 0 failed" in proc.stdout
    assert "24 merged into another job with the same effective config" in proc.stdout
    assert "would run 24 jobs" in proc.stdout and "... and 4 more" in proc.stdout
    assert "num_virtual_tokens=4,encoder_hidden_size=16,seed=4,encoder_num_layers=1" not in proc.stdout  # truncated
    assert "estimate: none yet" in proc.stdout
    assert not (tmp_path / "outputs").exists()


def test_plan_names_the_jobs_that_would_fail_validation(tiny_bert, tweet_files, tmp_path) -> None:
    """dataset.max_length=90 + 8 prompts exceed the tiny BERT's 96 positions; 90 + 4 fit."""
    args = [
        *base_overrides(tiny_bert, tweet_files, tmp_path / "outputs"),
        "sweep_name=doomed",
        "dataset.max_length=90",
        "prompt_encoder.num_virtual_tokens=4,8",
        "hydra.sweeper.plan=true",
    ]
    proc = sweep(args, tmp_path)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "1 of these jobs would fail before training" in proc.stdout
    assert "num_virtual_tokens=8" in proc.stdout and "exceeds the 96 positions" in proc.stdout
    assert not (tmp_path / "outputs").exists()


def test_a_named_sweep_relaunched_on_other_data_refuses_to_reuse_its_jobs(tiny_bert, tweet_files, tmp_path) -> None:
    """Job folders are named by swept values only: the same sweep_name on other data must not
    report the earlier data's finished jobs as its own."""
    common = [
        *base_overrides(tiny_bert, tweet_files, tmp_path / "outputs"),
        "sweep_name=reused",
        "trainer.max_steps=1",
        "logger=none",
        "seed=1,2",
    ]
    first = sweep(common, tmp_path)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    again = sweep([*common, "dataset.max_train_samples=40"], tmp_path)
    assert again.returncode == 2, again.stdout[-2000:] + again.stderr[-3000:]
    assert "another experiment (dataset.max_train_samples: 48 -> 40)" in again.stderr
    assert "Traceback" not in again.stderr
    same = sweep(common, tmp_path)  # the same experiment again: its jobs are reused, not refused
    assert same.returncode == 0 and "2 of 2 jobs already finished" in same.stdout + same.stderr


def test_plan_mode_refuses_cfg_with_multirun_in_words() -> None:
    from ptexp.sweep import multirun_cfg_message

    message = multirun_cfg_message(["-m", "--cfg", "job", "seed=1,2"])
    assert message is not None and "hydra.sweeper.plan=true" in message
    assert multirun_cfg_message(["--cfg", "job"]) is None
    assert multirun_cfg_message(["-m", "seed=1,2"]) is None


@pytest.mark.slow  # ptexp-train subprocesses or training
def test_relaunch_with_an_added_axis_keeps_the_earlier_jobs(tiny_bert, tweet_files, tmp_path) -> None:
    common = [
        *base_overrides(tiny_bert, tweet_files, tmp_path / "outputs"),
        "sweep_name=grow",
        "trainer.max_steps=1",
        "logger=none",
        "prompt_encoder.num_virtual_tokens=1,2",
    ]
    sweep_dir = tmp_path / "outputs" / "multiruns" / "grow"
    first = sweep(common, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    earlier = {
        name: (sweep_dir / name / "metrics.json").stat().st_mtime_ns
        for name in ("num_virtual_tokens=1", "num_virtual_tokens=2")
    }
    # seed=42 is the default the first launch ran with: those two jobs are not run again
    before = sorted((p, p.stat().st_mtime_ns) for p in sweep_dir.rglob("*"))
    plan = sweep([*common, "seed=42,1", "hydra.sweeper.plan=true"], tmp_path)
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "4 jobs: 2 finished" in plan.stdout and "would run 2 jobs" in plan.stdout
    assert "estimate: ~0:" in plan.stdout and "2 finished jobs / 1 at once" in plan.stdout
    assert sorted((p, p.stat().st_mtime_ns) for p in sweep_dir.rglob("*")) == before  # not even the report
    second = sweep([*common, "seed=42,1"], tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "2 of 4 jobs already finished" in second.stdout + second.stderr
    for name, mtime in earlier.items():
        assert (sweep_dir / name / "metrics.json").stat().st_mtime_ns == mtime
    assert not (sweep_dir / "num_virtual_tokens=1,seed=42").exists()
    plan_file = read_json(sweep_dir / "sweep.json")
    assert {job["dir"] for job in plan_file["jobs"]} == {
        "num_virtual_tokens=1",
        "num_virtual_tokens=2",
        "num_virtual_tokens=1,seed=1",
        "num_virtual_tokens=2,seed=1",
    }
    assert plan_file["axes"] == ["prompt_encoder.num_virtual_tokens", "seed"]
    assert len(list(sweep_dir.glob("*/metrics.json"))) == 4
    results = pd.read_csv(sweep_dir / "report" / "results.csv")
    assert len(results) == 4 and set(results["status"]) == {"completed"}


@pytest.mark.slow  # ptexp-train subprocesses or training
def test_same_config_and_seed_give_identical_metrics(tiny_bert, tweet_files, tmp_path) -> None:
    from ptexp.run import run

    overrides = [*base_overrides(tiny_bert, tweet_files, tmp_path), "logger=none", "seed=7"]
    a = run(compose_cfg(overrides), tmp_path / "a")
    b = run(compose_cfg(overrides), tmp_path / "b")
    for key in ("validation", "test"):
        assert {k: v for k, v in a[key].items() if "runtime" not in k and "per_second" not in k} == {
            k: v for k, v in b[key].items() if "runtime" not in k and "per_second" not in k
        }
    assert a["train_loss"] == b["train_loss"]
    pa = (tmp_path / "a" / "predictions_test.jsonl").read_text()
    assert pa == (tmp_path / "b" / "predictions_test.jsonl").read_text()


def optuna_trials(sweep_dir: Path) -> list:
    import optuna

    return optuna.load_study(study_name=sweep_dir.name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}").trials


@pytest.mark.slow  # ptexp-train subprocesses or training
def test_optuna_study_per_sweep_folder_named_trials_and_a_guard(tiny_bert, tweet_files, tmp_path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    import optuna

    # num_virtual_tokens is left to the preset's search space (a fixed value would take it out)
    fixed = [o for o in base_overrides(tiny_bert, tweet_files, tmp_path / "outputs") if "num_virtual_tokens" not in o]
    args = [
        *fixed,
        "hparams_search=lr_length",
        "hydra.sweeper.n_trials=2",
        "trainer.max_steps=2",
        "logger=none",
    ]
    first = sweep(args, tmp_path)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    # the default sweep_name carries the data (train file's folder and stem) and the model
    (default_dir,) = (tmp_path / "outputs" / "multiruns" / "hparams_search").iterdir()
    assert default_dir.name == f"lr_length_{tweet_files['train'].parent.name}-train_{tiny_bert.name}"
    assert len(optuna_trials(default_dir)) == 2
    # trial folders are named by the sampled values only, and those are the report's axes
    trial_dirs = sorted(p.parent for p in default_dir.glob("*/metrics.json"))
    assert len(trial_dirs) == 2
    for folder in trial_dirs:
        assert folder.name.startswith("learning_rate=") and ",num_virtual_tokens=" in folder.name
    assert read_json(default_dir / "sweep.json")["axes"] == [
        "trainer.learning_rate",
        "prompt_encoder.num_virtual_tokens",
    ]
    by_name = {
        f"learning_rate={t.params['trainer.learning_rate']},"
        f"num_virtual_tokens={t.params['prompt_encoder.num_virtual_tokens']}": t
        for t in optuna_trials(default_dir)
    }
    assert set(by_name) == {p.name for p in trial_dirs}
    # the study's value is the run's validation metric
    for name, trial in by_name.items():
        assert trial.value == read_json(default_dir / name / "metrics.json")["validation"]["accuracy"]

    # the same command resumes the same study
    again = sweep(args, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = optuna_trials(default_dir)
    assert len(trials) == 4 and sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) >= 3

    # another sweep_name is another folder and another study, which never sees the first's trials
    other = sweep([*args, "sweep_name=hparams_search/other"], tmp_path)
    assert other.returncode == 0, other.stderr[-3000:]
    other_dir = tmp_path / "outputs" / "multiruns" / "hparams_search" / "other"
    assert len(optuna_trials(other_dir)) == 2 and len(optuna_trials(default_dir)) == 4

    # the same study on other data is refused, before any trial runs
    refused = sweep([*args, "sweep_name=hparams_search/other", "dataset.max_train_samples=40"], tmp_path)
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-3000:]
    assert "was started on another configuration" in refused.stderr
    assert "dataset.max_train_samples: 48 -> 40" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert len(optuna_trials(other_dir)) == 2


def test_search_tag_differs_by_data_and_model() -> None:
    from omegaconf import OmegaConf

    from ptexp.naming import search_tag

    def tag(dataset: dict, model: str) -> str:
        return search_tag(OmegaConf.create(dataset), OmegaConf.create({"name_or_path": model}))

    assert tag({"name": "tweets"}, "embedded:all-MiniLM-L6-v2") == "tweets_all-MiniLM-L6-v2"
    assert tag({"name": "nyu-mll/glue", "subset": "sst2"}, "roberta-large") == "glue-sst2_roberta-large"
    assert tag({"name": None, "train_file": "/data/trec/train.tsv"}, "/models/bert/") == "trec-train_bert"
    assert tag({"train_file": "/data/sick/train.jsonl"}, "bert-base-uncased") != tag(
        {"train_file": "/data/trec/train.tsv"}, "bert-base-uncased"
    )


def test_resume_ignores_a_checkpoint_killed_while_saving(tmp_path) -> None:
    from ptexp.trainer import TRAINABLE_STATE, last_complete_checkpoint

    for step, complete in ((3, True), (6, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / TRAINABLE_STATE).write_bytes(b"x")
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-3")
    assert last_complete_checkpoint(str(tmp_path / "missing")) is None

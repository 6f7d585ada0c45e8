"""Sweeps through the real CLI (`python -m ptexp.train -m ...`) on a tiny BERT: folders,
W&B runs, report, kill + resume, failure isolation, no-op axes, paired axes, optuna."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from ptexp.outputs import read_json
from tests.conftest import compose_cfg, subprocess_env, tiny_overrides
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


def sweep(args: list[str], cwd: Path, wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    env = subprocess_env()
    cmd = [sys.executable, "-m", "ptexp.train", "-m", *args]
    if not wait:
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


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


def test_optuna_study_resumes_from_its_storage(tiny_bert, tweet_files, tmp_path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    import optuna

    args = [
        *base_overrides(tiny_bert, tweet_files, tmp_path / "outputs"),
        "hparams_search=lr_length",
        "hydra.sweeper.n_trials=4",
        "trainer.max_steps=2",
        "logger=none",
    ]
    first = sweep(args, tmp_path)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    storage = f"sqlite:///{tmp_path / 'outputs' / 'multiruns' / 'hparams_search' / 'optuna.db'}"
    assert len(optuna.load_study(study_name="ptexp_lr_length", storage=storage).trials) == 4
    second = sweep(args, tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    trials = optuna.load_study(study_name="ptexp_lr_length", storage=storage).trials
    assert len(trials) == 8
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) >= 6
    study = optuna.load_study(study_name="ptexp_lr_length", storage=storage)
    assert "trainer.learning_rate" in study.best_params
    # every trial ran a distinct job folder in the study's sweep folder
    assert len(list((tmp_path / "outputs" / "multiruns" / "hparams_search").glob("*/metrics.json"))) >= 6


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

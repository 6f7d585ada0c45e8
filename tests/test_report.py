"""The report on job folders built on disk the way ptexp writes them (composed config.yaml,
.hydra/, metrics.json, status.json, sweep.json, an Optuna study), without training: model
selection on validation, n per cell, figures, re-launched sweeps, folders of single runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from ptexp import report as rp
from ptexp.jobs import write_status
from ptexp.layout import CONFIG_FILE, HYDRA_DIR, METRICS_FILE, MULTIRUN_FILE, OPTUNA_DB, STATUS_FILE, SWEEP_FILE
from ptexp.outputs import write_json

TOKENS = "prompt_encoder.num_virtual_tokens"
HIDDEN = "prompt_encoder.encoder_hidden_size"
LR = "trainer.learning_rate"
BASE = ["dataset.max_train_samples=48", "trainer=smoke", "num_threads=1"]


# -- job folders as ptexp writes them -------------------------------------------------------------------------
def compose_full(overrides: list[str]):
    with initialize_config_module(config_module="ptexp.conf", version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


def metrics_json(val: float, test: float, selection: str = "accuracy") -> dict:
    """metrics.json as ptexp.run records it (the best epoch's validation, then test)."""

    def split(acc: float) -> dict:
        return {
            "accuracy": acc,
            "macro_f1": round(acc - 0.05, 6),
            "loss": round(1.6 - acc, 6),
            "runtime": 0.01,
            "samples_per_second": 4000.0,
            "steps_per_second": 200.0,
        }

    validation = {**split(val), "epoch": 2.0, "step": 12}
    return {
        "validation": validation,
        "test": split(test),
        "best_epoch": 2.0,
        "history": [{**validation, "epoch": 1.0, "step": 6}, validation],
        "best_checkpoint": "checkpoint-12",
        "selection_metric": selection,
        "trainable_params": 1475,
        "total_params": 999622,
        "train_runtime": 0.08,
        "train_samples_per_second": 400.0,
        "train_loss": 1.1,
        "runtime": 5.0,
        "num_examples": {"train": 48, "validation": 40, "test": 40},
        "world_size": 1,
    }


def write_job(
    job_dir: Path,
    overrides: list[str],
    val: float | None = None,
    test: float | None = None,
    status: str = "completed",
    root: Path | None = None,
    metrics: dict | None = None,
) -> Path:
    """A job folder: Hydra's .hydra/, the resolved config.yaml (as ptexp.run writes it), then
    metrics.json (``metrics``, else :func:`metrics_json`) and status.json as the job's outcome says."""
    overrides = [*overrides, f"paths.root={root or job_dir.parent}"]
    cfg = compose_full(overrides)
    hydra_dir = job_dir / HYDRA_DIR
    hydra_dir.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), hydra_dir / "overrides.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": cfg.hydra}), hydra_dir / "hydra.yaml")
    task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    OmegaConf.save(task, hydra_dir / "config.yaml")
    if status == "missing":
        return job_dir
    (job_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(task, resolve=True))
    if status == "completed":
        write_json(job_dir / METRICS_FILE, metrics or metrics_json(val, test))
        write_status(job_dir, "completed")
    elif status == "failed":
        write_status(job_dir, "failed", error="ConfigError: num_virtual_tokens=0 must be positive")
    elif status == "interrupted":
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        write_json(job_dir / STATUS_FILE, {"status": "running", "pid": dead.pid, "host": socket.gethostname()})
    return job_dir


def write_sweep(sweep_dir: Path, axes: list[str], jobs: list[tuple[str, list[str]]], params: list[str]) -> None:
    """sweep.json (the ptexp sweeper's plan) and multirun.yaml (Hydra's config of the sweep)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        sweep_dir / SWEEP_FILE, {"axes": axes, "jobs": [{"dir": d, "overrides": o} for d, o in jobs], "merged": {}}
    )
    OmegaConf.save(compose_full([*BASE, "logger=none", *params]), sweep_dir / MULTIRUN_FILE)


def grid(sweep_dir: Path, cells: dict[tuple, list[tuple[int, float, float]]], keys: list[str]) -> None:
    """A finished sweep: per cell of ``keys`` values, (seed, validation, test) per job."""
    jobs = []
    for values, runs in cells.items():
        for seed, val, test in runs:
            overrides = [*BASE, *(f"{k}={v}" for k, v in zip(keys, values)), f"seed={seed}"]
            name = ",".join([*(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(keys, values)), f"seed={seed}"])
            write_job(sweep_dir / name, overrides, val, test)
            jobs.append((name, overrides))
    write_sweep(sweep_dir, [*keys, "seed"], jobs, [])


def data_rows(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("|") and "---" not in line]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]


def header(markdown: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith("|"))
    return [c.strip() for c in line.strip("|").split("|")]


# -- model selection and the table ----------------------------------------------------------------------------
def test_best_cell_is_selected_on_validation_and_reports_test(tmp_path) -> None:
    # tokens=4 has the best test accuracy, tokens=2 the best validation accuracy: a paper
    # may only report the configuration chosen without looking at test.
    sweep_dir = tmp_path / "sel"
    grid(
        sweep_dir,
        {
            (1,): [(1, 0.60, 0.58), (2, 0.62, 0.60)],
            (2,): [(1, 0.70, 0.61), (2, 0.72, 0.63)],
            (4,): [(1, 0.66, 0.70), (2, 0.64, 0.72)],
        },
        [TOKENS],
    )
    result = rp.report(sweep_dir, log_to_wandb=False)
    markdown = (sweep_dir / "report" / "ablation.md").read_text()
    assert "best cell (bold) selected by mean validation accuracy; test accuracy reported" in markdown
    assert header(markdown) == [
        "num_virtual_tokens",
        "validation accuracy (mean ± std)",
        "test accuracy (mean ± std)",
        "n",
    ]
    rows = data_rows(markdown)
    assert [r[0] for r in rows] == ["1", "2", "4"]
    assert markdown.count("**") == 2
    assert rows[1][2] == "**0.6200 ± 0.0141**"  # the validation winner's test cell
    assert "**" not in rows[2][2]
    assert all(r[-1] == "2" for r in rows)
    assert bool(result["table"].loc[1, "selected"])
    tex = (sweep_dir / "report" / "ablation.tex").read_text()
    assert "\\begin{tabular}" in tex and "\\textbf{0.6200 $\\pm$ 0.0141}" in tex
    assert "selected by mean validation accuracy" in tex


def test_loss_is_selected_by_its_minimum_and_metric_accepts_a_split_prefix(tmp_path) -> None:
    sweep_dir = tmp_path / "loss"
    # metrics_json: loss = 1.6 - accuracy, so the lowest validation loss is tokens=2
    grid(sweep_dir, {(1,): [(1, 0.60, 0.50)], (2,): [(1, 0.70, 0.40)]}, [TOKENS])
    assert rp.main([str(sweep_dir), "--metric", "loss", "--no-wandb"]) == 0
    markdown = (sweep_dir / "report" / "ablation.md").read_text()
    assert "selected by mean validation loss; test loss reported" in markdown and "lower is better" in markdown
    assert data_rows(markdown)[1][2] == "**1.2000**"
    assert rp.main([str(sweep_dir), "--metric", "test.macro_f1", "--no-wandb"]) == 0
    markdown = (sweep_dir / "report" / "ablation.md").read_text()
    assert "test macro_f1 (mean ± std)" in header(markdown)
    assert "selected by mean validation macro_f1" in markdown


def test_one_run_per_cell_shows_n_and_no_spread(tmp_path) -> None:
    sweep_dir = tmp_path / "one"
    grid(sweep_dir, {(1,): [(7, 0.6, 0.55)], (2,): [(7, 0.7, 0.65), (8, 0.72, 0.67)]}, [TOKENS])
    rp.report(sweep_dir, log_to_wandb=False)
    markdown = (sweep_dir / "report" / "ablation.md").read_text()
    single, double = data_rows(markdown)
    assert single == ["1", "0.6000", "0.5500", "1"]
    assert "±" in double[1] and double[-1] == "2"
    assert "0.0000" not in markdown


def test_an_unknown_metric_names_the_recorded_ones_and_exits_2(tmp_path, capsys) -> None:
    sweep_dir = tmp_path / "typo"
    grid(sweep_dir, {(1,): [(1, 0.6, 0.55)], (2,): [(1, 0.7, 0.65)]}, [TOKENS])
    assert rp.main([str(sweep_dir), "--no-wandb"]) == 0
    before = {p.name: p.read_bytes() for p in (sweep_dir / "report").iterdir() if p.is_file()}
    assert rp.main([str(sweep_dir), "--metric", "acuracy", "--no-wandb"]) == 2
    err = capsys.readouterr().err
    assert "No job recorded validation acuracy; the runs record: accuracy, loss, macro_f1" in err
    # the good report is still there, untouched
    assert {p.name: p.read_bytes() for p in (sweep_dir / "report").iterdir() if p.is_file()} == before


def test_metric_is_the_one_the_runs_select_by(tmp_path) -> None:
    sweep_dir = tmp_path / "f1"
    grid(sweep_dir, {(1,): [(1, 0.6, 0.55)], (2,): [(1, 0.7, 0.65)]}, [TOKENS])
    for job in sweep_dir.glob("*/metrics.json"):
        metrics = rp.read_json(job)
        write_json(job, {**metrics, "selection_metric": "macro_f1"})
    result = rp.report(sweep_dir, log_to_wandb=False)
    assert result["metric"] == "macro_f1"
    assert "selected by mean validation macro_f1" in result["markdown"]


# -- every job, every launch -----------------------------------------------------------------------------------
def test_relaunch_with_an_added_seed_axis_keeps_the_earlier_jobs(tmp_path) -> None:
    sweep_dir = tmp_path / "grow"
    # first launch: tokens=1,2 with the default seed (42); its plan is then overwritten
    for tokens, val, test in ((1, 0.60, 0.58), (2, 0.70, 0.66)):
        write_job(sweep_dir / f"num_virtual_tokens={tokens}", [*BASE, f"{TOKENS}={tokens}"], val, test)
    relaunch = []
    for tokens in (1, 2):
        for seed in (1, 2):
            name, overrides = f"num_virtual_tokens={tokens},seed={seed}", [*BASE, f"{TOKENS}={tokens}", f"seed={seed}"]
            write_job(sweep_dir / name, overrides, 0.5 + 0.1 * tokens, 0.5 + 0.08 * tokens)
            relaunch.append((name, overrides))
    write_sweep(sweep_dir, [TOKENS, "seed"], relaunch, [])

    result = rp.report(sweep_dir, log_to_wandb=False)
    results = pd.read_csv(sweep_dir / "report" / "results.csv")
    assert len(results) == 6 and set(results["status"]) == {"completed"}
    by_job = dict(zip(results["job"], results["seed"]))
    assert by_job["num_virtual_tokens=1"] == 42 and by_job["num_virtual_tokens=2,seed=2"] == 2
    assert [r[-1] for r in data_rows(result["markdown"])] == ["3", "3"]
    assert result["axes"] == [TOKENS]


def test_an_axis_only_a_later_launch_swept_is_filled_from_each_jobs_config(tmp_path) -> None:
    sweep_dir = tmp_path / "enc"
    write_job(sweep_dir / "num_virtual_tokens=4", [*BASE, f"{TOKENS}=4"], 0.6, 0.6)  # MLP by default
    jobs = []
    for encoder in ("mlp", "lstm"):
        name, overrides = f"prompt_encoder={encoder},seed=1", [*BASE, f"prompt_encoder={encoder}", "seed=1"]
        write_job(sweep_dir / name, overrides, 0.7, 0.7)
        jobs.append((name, overrides))
    write_sweep(sweep_dir, ["prompt_encoder", "seed"], jobs, [])
    result = rp.report(sweep_dir, log_to_wandb=False)
    table = result["table"]
    assert set(result["axes"]) == {"prompt_encoder", TOKENS}
    # the first job ran MLP with 4 tokens; the later ones their encoder's default length (10)
    assert sorted(zip(table["prompt_encoder"], table[TOKENS])) == [("lstm", 10), ("mlp", 4), ("mlp", 10)]


def test_a_config_changed_between_launches_is_a_column_not_an_average(tmp_path) -> None:
    sweep_dir = tmp_path / "edited"
    jobs = []
    # the same sweep launched twice, a preset's learning rate edited in between (not an override)
    for seed, lr in ((1, 0.01), (2, 0.03)):
        name, overrides = f"num_virtual_tokens=4,seed={seed}", [*BASE, f"{TOKENS}=4", f"seed={seed}"]
        job_dir = write_job(sweep_dir / name, overrides, 0.6, 0.6)
        config = OmegaConf.load(job_dir / CONFIG_FILE)
        config.trainer.learning_rate = lr
        (job_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(config))
        jobs.append((name, overrides))
    write_sweep(sweep_dir, [TOKENS, "seed"], jobs, [])
    result = rp.report(sweep_dir, log_to_wandb=False)
    assert LR in result["axes"]
    assert [r[-1] for r in data_rows(result["markdown"])] == ["1", "1"]
    assert "trainer.learning_rate differs between jobs" in result["markdown"]


def test_every_job_not_in_the_table_is_explained(tmp_path, capsys) -> None:
    sweep_dir = tmp_path / "mixed"
    jobs = []
    outcomes = [(1, "completed"), (2, "completed"), (3, "failed"), (4, "interrupted"), (5, "missing"), (6, "planned")]
    for tokens, status in outcomes:
        name, overrides = f"num_virtual_tokens={tokens}", [*BASE, f"{TOKENS}={tokens}"]
        if status != "planned":  # killed before Hydra made its folder: only sweep.json knows it
            write_job(sweep_dir / name, overrides, 0.6, 0.6, status=status)
        jobs.append((name, overrides))
    write_sweep(sweep_dir, [TOKENS], jobs, [])
    assert rp.main([str(sweep_dir), "--no-wandb"]) == 1
    out, err = capsys.readouterr()
    markdown = (sweep_dir / "report" / "ablation.md").read_text()
    note = "4 jobs not in the table: 2 never started or left no metrics.json, 1 failed, 1 interrupted (process gone)"
    assert note in markdown and note in out
    assert len(data_rows(markdown)) == 2
    assert "4 of 6 jobs did not complete" in err and "interrupted" in err and "num_virtual_tokens=3" in err
    results = pd.read_csv(sweep_dir / "report" / "results.csv")
    assert len(results) == 6
    assert results.set_index("job").loc["num_virtual_tokens=3", "error"].startswith("ConfigError")


# -- a folder of single runs ---------------------------------------------------------------------------------
def test_a_days_single_runs_are_tabulated_by_the_keys_that_differ(tmp_path) -> None:
    day = tmp_path / "outputs" / "runs" / "2026-11-26"
    for i, (tokens, val) in enumerate(((2, 0.6), (4, 0.7), (8, 0.65))):
        run_dir = day / f"10-0{i}-00_prompt_encoder.num_virtual_tokens={tokens}"
        overrides = [*BASE, f"{TOKENS}={tokens}", f"run_name=r{i}", f"logger.project=p{i}"]
        write_job(run_dir, overrides, val, val - 0.02, root=tmp_path / f"elsewhere{i}")
        (run_dir / STATUS_FILE).unlink()  # single runs write no status.json
        wandb_files = run_dir / "wandb" / "offline-run-x" / "files"  # holds a config.yaml too
        wandb_files.mkdir(parents=True)
        (wandb_files / "config.yaml").write_text("seed: 1\n")
    assert rp.main([str(day), "--no-wandb"]) == 0
    markdown = (day / "report" / "ablation.md").read_text()
    assert header(markdown)[0] == "num_virtual_tokens" and len(header(markdown)) == 4
    rows = data_rows(markdown)
    assert [r[0] for r in rows] == ["2", "4", "8"] and rows[1][2] == "**0.6800**"
    assert len(pd.read_csv(day / "report" / "results.csv")) == 3


def test_runs_on_different_data_get_a_best_each_not_one_across(tmp_path) -> None:
    """A day's folder with runs on two datasets: each dataset's best is chosen on its own
    validation score; a score on one dataset never beats one on another."""
    day = tmp_path / "runs" / "2026-11-26"
    results = {
        ("tweets", 2): (0.80, 0.79),
        ("tweets", 4): (0.85, 0.84),
        ("trec", 2): (0.40, 0.41),
        ("trec", 4): (0.30, 0.31),
    }
    for i, ((data, tokens), (val, test)) in enumerate(results.items()):
        overrides = [*BASE, f"{TOKENS}={tokens}", f"dataset.max_test_samples={100 if data == 'tweets' else 200}"]
        write_job(day / f"10-0{i}-00_{data}_{tokens}", overrides, val, test, root=tmp_path / f"o{i}")
    assert rp.main([str(day), "--no-wandb"]) in (0, 1)
    rows = data_rows((day / "report" / "ablation.md").read_text())
    bold = [r for r in rows if any(c.startswith("**") for c in r)]
    assert len(bold) == 2  # 0.84 on one dataset and 0.41 on the other
    assert {c for r in bold for c in r if c.startswith("**")} == {"**0.8400**", "**0.4100**"}


def test_an_empty_folder_is_one_line_and_exit_2(tmp_path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert rp.main([str(tmp_path / "empty"), "--no-wandb"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ptexp-report: no run folders in") and err.count("\n") == 1
    assert not (tmp_path / "empty" / "report").exists()
    assert rp.main([str(tmp_path / "nowhere")]) == 2


# -- figures -------------------------------------------------------------------------------------------------
def test_figures_are_vector_pdf_and_300_dpi_png_of_a_column(tmp_path) -> None:
    from PIL import Image

    sweep_dir = tmp_path / "fig"
    cells = {
        (t, h): [
            (s, 0.5 + 0.02 * t / (1 + h / 32) + 0.01 * s, 0.48 + 0.02 * t / (1 + h / 32) + 0.005 * s) for s in (1, 2)
        ]
        for t in (1, 5, 10, 20)
        for h in (32, 128)
    }
    grid(sweep_dir, cells, [TOKENS, HIDDEN])
    result = rp.report(sweep_dir, log_to_wandb=False)
    out = sweep_dir / "report"
    for stem in ("heatmap", "prompt_length"):
        assert (out / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
        with Image.open(out / f"{stem}.png") as image:
            assert image.size[0] >= 900  # ≥ 3 in at 300 dpi
            assert round(image.info["dpi"][0]) == 300
    assert {p.name for p in result["figures"]} == {"heatmap.png", "prompt_length.png"}


def test_report_files_respect_the_umask(tmp_path) -> None:
    sweep_dir = tmp_path / "mode"
    grid(sweep_dir, {(1,): [(1, 0.6, 0.6)], (2,): [(1, 0.7, 0.7)]}, [TOKENS])
    old = os.umask(0o022)
    try:
        rp.report(sweep_dir, log_to_wandb=False)
    finally:
        os.umask(old)
    for name in ("results.csv", "ablation.md", "ablation.tex", "prompt_length.png", "prompt_length.pdf"):
        assert (sweep_dir / "report" / name).stat().st_mode & 0o777 == 0o644, name


def test_a_figure_from_an_earlier_report_does_not_outlive_its_data(tmp_path) -> None:
    sweep_dir = tmp_path / "stale"
    grid(sweep_dir, {(1,): [(1, 0.6, 0.6)], (2,): [(1, 0.7, 0.7)]}, [TOKENS])
    out = sweep_dir / "report"
    out.mkdir()
    for name in ("heatmap.png", "heatmap.pdf", "by_learning_rate.png", "notes.txt"):
        (out / name).write_bytes(b"drawn from an earlier grid")
    result = rp.report(sweep_dir, log_to_wandb=False)
    assert sorted(p.name for p in out.iterdir()) == [
        "ablation.md",
        "ablation.tex",
        "notes.txt",
        "prompt_length.pdf",
        "prompt_length.png",
        "results.csv",
    ]
    assert set(result["files"]) >= {"prompt_length.pdf", "prompt_length.png", "results", "markdown", "latex"}


# -- Optuna ----------------------------------------------------------------------------------------------------
def optuna_sweep(sweep_dir: Path, trials: list[tuple[float, int, float, float]]) -> None:
    """An Optuna search as the hparams_search preset leaves it: the study in <sweep>/optuna.db
    named after the folder, one folder per trial named by its sampled values."""
    import optuna
    from optuna.distributions import CategoricalDistribution, LogUniformDistribution

    sweep_dir.mkdir(parents=True)
    params = ["hparams_search=lr_length"]
    OmegaConf.save(compose_full([*BASE, "logger=none", *params]), sweep_dir / MULTIRUN_FILE)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=sweep_dir.name, storage=f"sqlite:///{sweep_dir / OPTUNA_DB}", direction="maximize"
    )
    space = {LR: LogUniformDistribution(1e-3, 1e-1), TOKENS: CategoricalDistribution([4, 10, 20, 50])}
    for lr, tokens, val, test in trials:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # add_trial, create_trial
            trial = optuna.trial.create_trial(params={LR: lr, TOKENS: tokens}, distributions=space, value=val)
            study.add_trial(trial)
        overrides = [*BASE, f"{LR}={lr}", f"{TOKENS}={tokens}"]
        write_job(sweep_dir / f"learning_rate={lr},num_virtual_tokens={tokens}", overrides, val, test)


def test_optuna_axes_are_the_searched_parameters_and_best_is_by_validation(tmp_path) -> None:
    sweep_dir = tmp_path / "hparams_search" / "lr_length_tweets"
    optuna_sweep(
        sweep_dir,
        [(0.002, 4, 0.55, 0.50), (0.03, 10, 0.72, 0.64), (0.01, 20, 0.69, 0.71), (0.08, 50, 0.40, 0.38)],
    )
    result = rp.report(sweep_dir, log_to_wandb=False)
    assert result["kind"] == "optuna"
    assert result["axes"] == [LR, TOKENS]  # never a metric column such as validation.accuracy
    assert header(result["markdown"])[:2] == ["learning_rate", "num_virtual_tokens"]
    assert "Best trial of 4 (4 complete) by validation accuracy" in result["markdown"]
    assert (
        "#1 (learning_rate=0.03, num_virtual_tokens=10): validation accuracy 0.7200, test accuracy 0.6400"
        in (result["markdown"])
    )
    out = sweep_dir / "report"
    for stem in ("optuna_history", "optuna_importance"):
        assert (out / f"{stem}.pdf").is_file() and (out / f"{stem}.png").is_file()
    assert not (out / "heatmap.png").exists()  # a search is no grid


def test_optuna_with_one_complete_trial_skips_importance_quietly(tmp_path) -> None:
    sweep_dir = tmp_path / "lone"
    optuna_sweep(sweep_dir, [(0.01, 10, 0.6, 0.6)])
    result = rp.report(sweep_dir, log_to_wandb=False)
    assert (sweep_dir / "report" / "optuna_history.png").is_file()
    assert not (sweep_dir / "report" / "optuna_importance.png").exists()
    assert "Best trial of 1" in result["markdown"]


# -- pieces ----------------------------------------------------------------------------------------------------
def test_overrides_are_typed_as_hydra_types_them() -> None:
    parsed = rp.parse_overrides(
        ["a.flag=true", "b=null", "c=[1,2]", "d='two words'", "+e.lr=1e-3", "f=0.01", "prompt_encoder=lstm"]
    )
    assert parsed == {
        "a.flag": True,
        "b": None,
        "c": "[1,2]",
        "d": "two words",
        "e.lr": 0.001,
        "f": 0.01,
        "prompt_encoder": "lstm",
    }


def test_callback_reports_when_a_multirun_ends(tmp_path) -> None:
    from hydra.experimental.callback import Callback

    sweep_dir = tmp_path / "cb"
    grid(sweep_dir, {(1,): [(1, 0.6, 0.6)], (2,): [(1, 0.7, 0.7)]}, [TOKENS])
    assert issubclass(rp.ReportCallback, Callback)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}})
    rp.ReportCallback().on_multirun_end(config)
    assert (sweep_dir / "report" / "ablation.md").is_file()


@pytest.mark.slow
def test_report_is_logged_to_the_sweeps_wandb_group(tmp_path) -> None:
    from tests.wandb_records import read_run

    sweep_dir = tmp_path / "wb"
    grid(sweep_dir, {(1,): [(1, 0.6, 0.6)], (2,): [(1, 0.7, 0.7)]}, [TOKENS])
    OmegaConf.save(compose_full([*BASE, "logger=wandb", "logger.mode=offline"]), sweep_dir / MULTIRUN_FILE)
    result = rp.report(sweep_dir)
    assert "wandb_dir" in result
    (run_file,) = (sweep_dir / "report" / "wandb").glob("offline-run-*/run-*.wandb")
    run = read_run(run_file)
    assert run["run"].run_group == "wb" and run["run"].job_type == "report"


# -- the methods table -----------------------------------------------------------------------------------------
LABELS = ["negative", "neutral", "positive"]
# What each method trains of MiniLM-L12 (33.4 M parameters), as metrics.json records it: the
# counts, train time (s), peak CPU RSS (MB) and saved size (bytes) of one run.
RESOURCES = {
    "p_tuning": (101_507, 41.0, 912.0, 420_000),
    "lora": (148_611, 55.0, 1010.0, 610_000),
    "linear_probe": (1_155, 18.0, 850.0, 4_700),
    "prompt_tuning": (5_379, 30.0, 880.0, 22_000),
    "full_finetune": (33_361_155, 160.0, 1900.0, 133_500_000),
}
TOTAL = 33_361_155


def method_metrics(method: str, val: float, test: float, majority: tuple[float, float] = (0.45, 0.47)) -> dict:
    """metrics.json as ptexp.run now records it: resources and the majority-class floor too."""
    trainable, seconds, rss, saved = RESOURCES[method]
    return {
        **metrics_json(val, test),
        "trainable_params": trainable,
        "total_params": TOTAL,
        "train_runtime": seconds,
        "peak_memory_mb": {"cpu_rss": rss},
        "saved_bytes": saved,
        "majority_class": {"label": "negative", "validation_accuracy": majority[0], "test_accuracy": majority[1]},
    }


def methods_sweep(
    sweep_dir: Path, runs: dict[str, list[tuple[int, float, float]]], extra: dict[str, list[str]] | None = None
) -> None:
    """A finished ``-m method=...,... seed=...`` sweep: per method, (seed, validation, test) per job;
    ``extra`` adds a method's other overrides (an axis such as the prompt length)."""
    jobs = []
    for method, method_runs in runs.items():
        for seed, val, test in method_runs:
            more = (extra or {}).get(method, [])
            overrides = [*BASE, f"method={method}", *more, f"seed={seed}"]
            name = ",".join([f"method={method}", *(o.replace("prompt_encoder.", "") for o in more), f"seed={seed}"])
            job_dir = write_job(sweep_dir / name, overrides, metrics=method_metrics(method, val, test))
            write_json(job_dir / "run.json", {"seed": seed, "overrides": overrides, "labels": LABELS})
            jobs.append((name, overrides))
    write_sweep(sweep_dir, ["method", "seed"], jobs, [])


def test_methods_table_has_a_row_per_method_sorted_and_selected_on_validation(tmp_path, capsys) -> None:
    from PIL import Image

    sweep_dir = tmp_path / "methods"
    # LoRA is best on validation, the linear probe on test: the table may only crown LoRA.
    methods_sweep(
        sweep_dir,
        {
            "p_tuning": [(1, 0.70, 0.69), (2, 0.72, 0.71)],
            "lora": [(1, 0.74, 0.66), (2, 0.76, 0.68)],
            "linear_probe": [(1, 0.60, 0.72), (2, 0.62, 0.74)],
        },
    )
    assert rp.main([str(sweep_dir), "--no-wandb"]) == 0
    out = sweep_dir / "report"
    markdown = (out / "methods.md").read_text()
    assert header(markdown) == [
        "method",
        "validation accuracy (mean ± std)",
        "validation macro_f1 (mean ± std)",
        "test accuracy (mean ± std)",
        "test macro_f1 (mean ± std)",
        "trainable params",
        "train time (s)",
        "peak memory (MB)",
        "saved (MB)",
        "n",
    ]
    rows = data_rows(markdown)
    assert [r[0] for r in rows] == ["**lora**", "p_tuning", "linear_probe", "majority class (negative)"]
    assert rows[0][1] == "0.7500 ± 0.0141" and rows[0][2] == "0.7000 ± 0.0141"  # macro_f1 = accuracy - 0.05
    assert rows[0][3] == "**0.6700 ± 0.0141**"  # the validation winner's test accuracy, not the best test
    assert markdown.count("**") == 4
    assert rows[0][5:] == ["149 k (0.45 %)", "55.0", "1010", "0.582", "2"]
    assert rows[2][5] == "1.16 k (0.0035 %)"
    # the floor: 45 % / 47 % of the labels are "negative"; macro-F1 = 2p/(1+p)/3
    assert rows[3][1:5] == ["0.4500", "0.2069", "0.4700", "0.2132"]
    assert rows[3][-1] == "–"
    assert "rows sorted by mean validation accuracy" in markdown
    assert "best method (bold) selected by mean validation accuracy; test accuracy reported" in markdown
    assert "Pareto frontier of test accuracy" in markdown and "linear_probe: 1.16 k, 0.7300." in markdown
    tex = (out / "methods.tex").read_text()
    assert "\\textbf{lora}" in tex and "\\textbf{0.6700 $\\pm$ 0.0141}" in tex
    assert "\\midrule\nmajority class (negative)" in tex and "p\\_tuning" in tex and "(0.45 \\%)" in tex
    assert "\\label{tab:methods}" in tex
    # every job's method, in the csv a comparison across sweeps concatenates
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns[:4]) == ["job", "status", "error", "method"]
    assert sorted(results["method"]) == ["linear_probe"] * 2 + ["lora"] * 2 + ["p_tuning"] * 2
    for suffix in ("pdf", "png"):
        assert (out / f"pareto.{suffix}").is_file()
    assert (out / "pareto.pdf").read_bytes()[:5] == b"%PDF-"
    with Image.open(out / "pareto.png") as image:
        assert image.size[0] >= 900 and round(image.info["dpi"][0]) == 300
    console = capsys.readouterr().out
    assert f"Methods ({sweep_dir}):" in console and "majority class (negative)" in console


def test_majority_class_row_says_when_the_jobs_saw_different_data(tmp_path) -> None:
    sweep_dir = tmp_path / "disagree"
    methods_sweep(sweep_dir, {"p_tuning": [(1, 0.7, 0.7)], "lora": [(1, 0.6, 0.6)]})
    lora = sweep_dir / "method=lora,seed=1" / METRICS_FILE
    metrics = rp.read_json(lora)
    majority = {**metrics["majority_class"], "test_accuracy": 0.52}
    # ... and LoRA ran on a GPU: its CUDA peak gets a column of its own
    write_json(lora, {**metrics, "majority_class": majority, "peak_memory_mb": {"cpu_rss": 1010.0, "cuda": 812.4}})
    result = rp.report(sweep_dir, log_to_wandb=False)
    markdown = result["methods_markdown"]
    *_, floor = data_rows(markdown)
    assert floor[:4] == ["majority class (negative)", "0.4500", "0.2069", "0.4700–0.5200"]
    assert "The jobs disagree on the majority class (test accuracy 0.4700–0.5200)" in markdown
    gpu = header(markdown).index("peak GPU memory (MB)")
    assert {r[0]: r[gpu] for r in data_rows(markdown)[:2]} == {"**p_tuning**": "–", "lora": "812"}


def test_a_method_lacking_an_axis_keeps_its_row_in_every_table(tmp_path) -> None:
    # method x prompt length: LoRA and the linear probe have no prompts. The sweeper ran each once
    # (its other lengths merged as the same effective config); their config.yaml still holds
    # the prompt_encoder group with the length their overrides named.
    sweep_dir = tmp_path / "lacking"
    methods_sweep(
        sweep_dir,
        {
            "p_tuning": [(1, 0.70, 0.68), (2, 0.72, 0.70)],
            "lora": [(1, 0.74, 0.66), (2, 0.76, 0.68)],
            "linear_probe": [(1, 0.60, 0.62)],
        },
        extra={"p_tuning": [f"{TOKENS}=4"], "lora": [f"{TOKENS}=4"], "linear_probe": [f"{TOKENS}=8"]},
    )
    p_tuning_8 = [*BASE, "method=p_tuning", f"{TOKENS}=8", "seed=1"]
    job = write_job(sweep_dir / "method=p_tuning,num_virtual_tokens=8,seed=1", p_tuning_8, 0.8, 0.78)
    write_json(job / METRICS_FILE, method_metrics("p_tuning", 0.80, 0.78))
    plan = rp.read_json(sweep_dir / SWEEP_FILE)
    plan["jobs"].append({"dir": job.name, "overrides": p_tuning_8})
    plan["axes"] = ["method", TOKENS, "seed"]
    write_json(sweep_dir / SWEEP_FILE, plan)

    result = rp.report(sweep_dir, log_to_wandb=False)
    assert result["axes"] == ["method", TOKENS]
    ablation = data_rows(result["markdown"])
    assert sorted((r[0], r[1], r[-1]) for r in ablation) == [
        ("linear_probe", "–", "1"),
        ("lora", "–", "2"),
        ("p_tuning", "4", "2"),
        ("p_tuning", "8", "1"),
    ]
    methods = result["methods_markdown"]
    assert header(methods)[:2] == ["method", "num_virtual_tokens"]
    assert [r[:2] for r in data_rows(methods)] == [
        ["**p_tuning**", "8"],
        ["lora", "–"],
        ["p_tuning", "4"],
        ["linear_probe", "–"],
        ["majority class (negative)", "–"],
    ]
    assert "–: a setting the method does not have (linear_probe: num_virtual_tokens; lora: num_virtual_tokens)" in (
        methods
    )
    assert len(result["methods_table"]) == 4
    # the prompt-length figure keeps them too: a dotted line each, at their mean
    assert (sweep_dir / "report" / "prompt_length.png").is_file()
    assert (sweep_dir / "report" / "heatmap.png").is_file()


def test_every_groupby_and_pivot_in_the_report_keeps_missing_keys() -> None:
    # pandas drops rows whose key is NaN unless told (dropna=True): a method without an axis
    # would vanish from a table without a word. Every such call must say what it does.
    import inspect
    import re

    source = inspect.getsource(rp)
    calls = re.findall(r"\.(groupby|pivot_table|pivot|value_counts|nunique|crosstab)\(([^)]*)\)", source)
    assert calls, "the report counts values somewhere"
    for name, arguments in calls:
        assert "dropna=" in arguments, f".{name}({arguments}) must pass dropna"


def test_runs_from_before_the_method_registry_are_p_tuning(tmp_path) -> None:
    # A day of single runs: two P-tuning runs from before methods existed (no method in their
    # config, no resources or majority class in metrics.json), one LoRA run of today.
    day = tmp_path / "runs" / "2026-12-01"
    for i, tokens in enumerate((4, 8)):
        run_dir = write_job(day / f"old{i}", [*BASE, f"{TOKENS}={tokens}"], 0.6 + 0.05 * i, 0.6, root=tmp_path)
        config = OmegaConf.load(run_dir / CONFIG_FILE)
        del config["method"]
        (run_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(config))
        (run_dir / STATUS_FILE).unlink()
    write_job(day / "lora", [*BASE, "method=lora"], root=tmp_path, metrics=method_metrics("lora", 0.7, 0.66))
    (day / "lora" / STATUS_FILE).unlink()
    result = rp.report(day, log_to_wandb=False)
    results = pd.read_csv(day / "report" / "results.csv").set_index("job")
    assert results["method"].to_dict() == {"old0": "p_tuning", "old1": "p_tuning", "lora": "lora"}
    assert "method" in result["axes"] and "method.name" not in result["axes"]
    # no prompt_encoder column for LoRA's sake: only the P-tuning runs' own lengths
    assert not any(a.startswith("prompt_encoder.") and a != TOKENS for a in result["axes"])
    rows = data_rows(result["methods_markdown"])
    assert [r[0] for r in rows] == ["**lora**", "p_tuning", "p_tuning", "majority class (negative)"]
    old = rows[2]
    assert old[header(result["methods_markdown"]).index("peak memory (MB)")] == "–"
    assert (
        "macro-F1 needs the number of classes (run.json's labels): the jobs do not record it"
        in (result["methods_markdown"])
    )


def test_one_method_gets_no_methods_table(tmp_path) -> None:
    sweep_dir = tmp_path / "one_method"
    grid(sweep_dir, {(1,): [(1, 0.6, 0.6)], (2,): [(1, 0.7, 0.7)]}, [TOKENS])
    (sweep_dir / "report").mkdir()
    (sweep_dir / "report" / "methods.md").write_text("from an earlier report")
    result = rp.report(sweep_dir, log_to_wandb=False)
    assert "methods_markdown" not in result and not (sweep_dir / "report" / "methods.md").exists()
    assert set(pd.read_csv(sweep_dir / "report" / "results.csv")["method"]) == {"p_tuning"}


def crowded_methods() -> pd.DataFrame:
    """Seven methods as a methods sweep on MiniLM leaves them: three within a factor of two
    of 100 k trainable parameters, two near 1 k."""
    rows = [
        ("full_finetune", 33_361_155, 0.78, 0.012),
        ("lora", 148_611, 0.74, 0.010),
        ("p_tuning", 101_507, 0.70, 0.015),
        ("p_tuning_template", 101_891, 0.71, 0.020),
        ("prefix_tuning", 93_315, 0.69, 0.011),
        ("prompt_tuning", 5_379, 0.62, 0.030),
        ("linear_probe", 1_155, 0.60, 0.005),
    ]
    table = pd.DataFrame(
        {
            "method": [r[0] for r in rows],
            "n": 3,
            "trainable_params": [float(r[1]) for r in rows],
            "test_accuracy_mean": [r[2] for r in rows],
            "test_accuracy_std": [r[3] for r in rows],
            "selected": [r[0] == "lora" for r in rows],
        }
    )
    return table


def test_pareto_labels_neither_collide_nor_leave_the_axes() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    majority = rp.Majority("negative", {"validation": (0.45, 0.45), "test": (0.47, 0.47)}, 3)
    fig, notes = rp.pareto_figure(crowded_methods(), [], "accuracy", majority)
    assert fig is not None and notes == []
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    (ax,) = fig.axes
    frame = ax.get_window_extent(renderer)
    # the text's own box: an annotation's extent would include its leader line
    boxes = {t.get_text(): Text.get_window_extent(t, renderer) for t in ax.texts}
    assert len(boxes) == 7
    for name, box in boxes.items():
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, name
    names = sorted(boxes)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not boxes[a].overlaps(boxes[b]), (a, b)


def test_pareto_frontier_and_the_figures_numbers() -> None:
    # (parameters, accuracy): the second has more parameters and less accuracy than the first
    points = [(1_000.0, 0.60), (5_000.0, 0.58), (100_000.0, 0.70), (100_000.0, 0.69), (3e7, 0.78)]
    assert rp.pareto_front(points) == [0, 2, 4]
    assert rp.pareto_front([(1.0, 0.5), (2.0, 0.4)], greater=False) == [0, 1]  # a loss: lower is better
    assert rp.frontier_note(crowded_methods(), [], "accuracy") == [
        "Pareto frontier of test accuracy against trainable parameters (no other method is as good or better "
        "on both, and better on one): linear_probe: 1.16 k, 0.6000; prompt_tuning: 5.38 k, 0.6200; "
        "prefix_tuning: 93.3 k, 0.6900; p_tuning: 102 k, 0.7000; p_tuning_template: 102 k, 0.7100; "
        "lora: 149 k, 0.7400; full_finetune: 33.4 M, 0.7800."
    ]
    assert [rp.count_text(n) for n in (475, 1_475, 999_600, 1_200_000, 33_361_155, 7e9)] == [
        "475",
        "1.48 k",
        "1 M",
        "1.2 M",
        "33.4 M",
        "7 B",
    ]
    assert rp._params_cell(33_361_155, 33_361_155) == "33.4 M (100 %)"
    assert rp._params_cell(1_155, float("nan")) == "1.16 k"
    assert rp.majority_macro_f1(0.5, 2) == pytest.approx(1 / 3)


def test_baseline_row_comes_from_the_task_s_recorded_baseline(tmp_path) -> None:
    """Runs record ``task`` and the task's ``baseline`` (name and per-split metrics): the methods
    table's last row shows them as recorded, the same figures the older majority_class key gave."""
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    runs = {"p_tuning": [(1, 0.70, 0.69), (2, 0.72, 0.71)], "lora": [(1, 0.74, 0.66)]}
    methods_sweep(old_dir, runs)
    methods_sweep(new_dir, runs)
    for path in new_dir.glob(f"*/{METRICS_FILE}"):
        metrics = rp.read_json(path)
        del metrics["majority_class"]
        metrics["task"] = "SEQ_CLS"
        metrics["baseline"] = {
            "name": "majority class (negative)",
            "validation": {"accuracy": 0.45, "macro_f1": 0.2069},
            "test": {"accuracy": 0.47, "macro_f1": 0.2132},
        }
        write_json(path, metrics)
    for folder in (old_dir, new_dir):
        assert rp.main([str(folder), "--no-wandb"]) == 0
    old, new = (data_rows((f / "report" / "methods.md").read_text()) for f in (old_dir, new_dir))
    assert new[-1][:5] == old[-1][:5] == ["majority class (negative)", "0.4500", "0.2069", "0.4700", "0.2132"]
    # a disagreeing job is named, as for the older key
    path = next(new_dir.glob(f"method=lora*/{METRICS_FILE}"))
    metrics = rp.read_json(path)
    metrics["baseline"]["test"]["accuracy"] = 0.52
    write_json(path, metrics)
    assert rp.main([str(new_dir), "--no-wandb"]) == 0
    markdown = (new_dir / "report" / "methods.md").read_text()
    assert data_rows(markdown)[-1][3] == "0.4700–0.5200"
    assert "The jobs disagree on the baseline (test accuracy 0.4700–0.5200)" in markdown

"""End to end: a run trains, evaluates, saves, logs to W&B offline, and predicts back."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ptexp.outputs import read_json
from ptexp.predict import predict
from ptexp.run import run
from ptexp.trainer import NonFiniteLossError
from tests.conftest import assert_resume_matches, compose_cfg, set_key, subprocess_env, tiny_overrides
from tests.wandb_records import read_run

pytestmark = pytest.mark.slow  # trains tiny models end to end


@pytest.fixture(scope="module")
def tiny_run(tiny_bert, tweet_files, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("tiny-run")
    cfg = compose_cfg(tiny_overrides(tiny_bert, tweet_files, out))
    run_dir = out / "run"
    metrics = run(cfg, run_dir, overrides=["trainer=smoke"])
    return run_dir, metrics


def test_run_folder_holds_everything_needed_to_reproduce(tiny_run) -> None:
    run_dir, metrics = tiny_run
    for name in (
        "config.yaml",
        "metrics.json",
        "run.json",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "trainable_state.safetensors",
        "predictions_test.jsonl",
    ):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "checkpoints").exists()
    saved = read_json(run_dir / "metrics.json")
    assert saved["test"]["accuracy"] == metrics["test"]["accuracy"]
    assert {"accuracy", "macro_f1", "loss"} <= set(saved["validation"]) and {"accuracy", "macro_f1"} <= set(
        saved["test"]
    )
    assert saved["trainable_params"] < saved["total_params"]
    assert saved["best_epoch"] in (1.0, 2.0) and saved["train_samples_per_second"] > 0
    info = read_json(run_dir / "run.json")
    assert info["seed"] == 42 and info["labels"] == ["negative", "neutral", "positive"]
    assert info["packages"]["peft"] and info["packages"]["torch"] and "commit" in info["git"]
    assert info["started"] < info["ended"] and info["wandb"]["id"]
    assert not list(run_dir.rglob("*.tmp"))


def test_files_respect_the_umask(tiny_run) -> None:
    """Colleagues on a shared cluster can read the results (mkstemp alone would give 0600)."""
    run_dir, _ = tiny_run
    mask = os.umask(0)
    os.umask(mask)
    names = ["metrics.json", "config.yaml", "run.json", "predictions_test.jsonl", "trainable_state.safetensors"]
    names += [str(p.relative_to(run_dir)) for p in (run_dir / "adapter").iterdir()]  # safetensors writes 0600
    for name in names:
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o666 & ~mask, name


def test_saved_adapter_is_the_best_epoch_not_the_last(tiny_bert, tweet_files, tmp_path) -> None:
    """Select the epoch with the *highest* validation loss (so the choice is not the last epoch):
    the saved adapter and ptexp-predict reproduce that epoch's recorded loss, not the last's."""
    import numpy as np

    from ptexp.data import load_splits

    cfg = compose_cfg(
        [
            *tiny_overrides(tiny_bert, tweet_files, tmp_path),
            "trainer.num_train_epochs=3",
            "trainer.metric_for_best_model=loss",
            "trainer.greater_is_better=true",
            "trainer.per_device_eval_batch_size=256",  # one batch: the loss is the plain mean
            "logger=none",
        ]
    )
    metrics = run(cfg, tmp_path / "run")
    history = metrics["history"]
    assert len(history) == 3
    worst = max(history, key=lambda h: h["loss"])
    assert worst["epoch"] != history[-1]["epoch"], "precondition: the selected epoch is not the last"
    assert metrics["validation"]["loss"] == worst["loss"] and metrics["best_epoch"] == worst["epoch"]
    validation = load_splits(cfg.dataset).splits["validation"]
    predicted = predict(tmp_path / "run", validation["text"])
    names = validation.features["label"].names
    probs = np.array([[p["probs"][n] for n in names] for p in predicted])
    loss = float(-np.log(probs[np.arange(len(probs)), validation["label"]]).mean())
    assert loss == pytest.approx(worst["loss"], abs=1e-4)
    assert abs(loss - history[-1]["loss"]) > 1e-3


def test_resumed_run_records_the_same_figures_as_an_uninterrupted_one(tiny_bert, tweet_files, tmp_path) -> None:
    """A run resumed from its epoch-1 checkpoint ends with the uninterrupted run's train_loss,
    validation and test metrics (the Trainer alone averages only the resumed steps)."""
    assert_resume_matches([*tiny_overrides(tiny_bert, tweet_files, tmp_path), "logger=none"], tmp_path)


def test_wandb_offline_run_holds_config_and_final_metrics(tiny_run) -> None:
    run_dir, metrics = tiny_run
    files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    record = read_run(files[0])
    assert record["run"].run_id == read_json(run_dir / "run.json")["wandb"]["id"]
    assert record["run"].display_name == "trainer=smoke"
    config = record["config"]
    assert config["prompt_encoder"]["num_virtual_tokens"] == 4
    assert config["method_effective"]["peft_type"] == "P_TUNING"
    assert config["trainable_params"] == metrics["trainable_params"]
    assert record["summary"]["final/test/accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert any("train/loss" in h for h in record["history"])
    assert record["exit"] == 0


def test_predict_round_trip_equals_the_runs_predictions(tiny_run) -> None:
    run_dir, _ = tiny_run
    saved = [json.loads(line) for line in (run_dir / "predictions_test.jsonl").read_text().splitlines()]
    texts = [row["text"] for row in saved[:40]]
    again = predict(run_dir, texts)
    assert [r["label"] for r in again] == [row["label"] for row in saved[:40]]
    for mine, theirs in zip(again, saved[:40]):
        for label, p in theirs["probs"].items():
            assert mine["probs"][label] == pytest.approx(p, abs=1e-4)


def test_predict_cli_file_and_stdin(tiny_run, tmp_path) -> None:
    run_dir, _ = tiny_run
    saved = [json.loads(line) for line in (run_dir / "predictions_test.jsonl").read_text().splitlines()][:5]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"tweet": r["text"], "id": i}) for i, r in enumerate(saved)))
    cli = [sys.executable, "-m", "ptexp.predict", str(run_dir)]
    proc = subprocess.run([*cli, "--file", str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "in.predictions.jsonl").read_text().splitlines()]
    assert [r["predicted_label"] for r in rows] == [r["label"] for r in saved] and rows[0]["id"] == 0
    proc = subprocess.run(cli, input="\n".join(r["text"] for r in saved), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert [line.split("\t")[0] for line in proc.stdout.strip().splitlines()] == [r["label"] for r in saved]
    bad = subprocess.run([*cli, "--file", str(tmp_path / "missing.csv")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "missing.csv" in bad.stderr and "Traceback" not in bad.stderr


def test_failed_run_finishes_its_wandb_run_and_writes_no_metrics(tiny_bert, tweet_files, tmp_path) -> None:
    cfg = compose_cfg(tiny_overrides(tiny_bert, tweet_files, tmp_path))
    set_key(cfg, "trainer.learning_rate", 1e20)  # valid config, diverges mid-run
    set_key(cfg, "trainer.warmup_steps", 0)
    with pytest.raises(NonFiniteLossError, match="diverged"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.json").exists()
    files = list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert files and read_run(files[0])["exit"] == 1


def test_cli_trains_on_unseen_csv_with_only_paths_and_columns(tiny_bert, tweet_files, tmp_path) -> None:
    env = subprocess_env()
    args = [
        f"model.name_or_path={tiny_bert}",
        "dataset=csv",
        f"dataset.train_file={tweet_files['train']}",
        f"dataset.validation_file={tweet_files['validation']}",
        f"dataset.test_file={tweet_files['test']}",
        "dataset.text_column=tweet",
        "dataset.label_column=mood",
        "trainer=smoke",
        "trainer.max_steps=6",
        "logger=none",
        "dataset.max_length=32",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "ptexp.train", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (metrics_file,) = list((tmp_path / "outputs" / "runs").rglob("metrics.json"))
    metrics = read_json(metrics_file)
    assert metrics["num_examples"] == {"train": 600, "validation": 150, "test": 150}
    assert 0 <= metrics["test"]["accuracy"] <= 1
    output = proc.stdout + proc.stderr
    # the user learns where the run went, at the start and at the end
    assert output.count(str(metrics_file.parent.resolve())) >= 2, output[-2000:]
    log_text = (metrics_file.parent / "train.log").read_text()
    assert log_text.count("validation: ") == len(metrics["history"]) >= 1
    assert log_text.count(" train: loss ") >= len(metrics["history"])  # at least one per epoch
    assert "pin_memory" not in output and "newly initialized" not in output


def test_embedded_default_on_a_small_slice_learns(tmp_path) -> None:
    """The real MiniLM on real tweets, a small slice: beats the majority class."""
    cfg = compose_cfg(
        [
            "dataset.max_train_samples=480",
            "dataset.max_eval_samples=200",
            "dataset.max_test_samples=300",
            "trainer.num_train_epochs=2",
            "trainer.min_train_steps=null",  # 2 epochs, not the 25 the step floor makes of 480 rows
            "logger=none",
            f"paths.root={tmp_path}",
        ]
    )
    metrics = run(cfg, tmp_path / "run")
    test = json.loads((tmp_path / "run" / "predictions_test.jsonl").read_text().splitlines()[0])
    assert set(test["probs"]) == {"negative", "neutral", "positive"}
    golds = [
        json.loads(line)["gold"] for line in (tmp_path / "run" / "predictions_test.jsonl").read_text().splitlines()
    ]
    majority = max(golds.count(g) for g in set(golds)) / len(golds)
    assert metrics["test"]["accuracy"] > majority + 0.05

"""Shared fixtures: composed configs pointed at tmp folders, a tiny random BERT on disk,
and small real data files cut from the embedded tweets corpus."""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, open_dict

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import ptexp.naming  # noqa: E402,F401  (registers the resolvers conf/train.yaml uses)
import ptexp.schema  # noqa: E402,F401  (registers the structured configs)

TWEET_LABELS = ("negative", "neutral", "positive")


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a ptexp subprocess: offline, and without the WANDB_* variables an
    in-process run left behind. WANDB_SERVICE in particular would attach the child to this
    process's wandb-core, which then outlives a killed child and keeps its run id "in use"."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") or k == "WANDB_SILENT"}
    return {**env, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


def run_sweep(args: list[str], cwd: Path, wait: bool = True, timeout: int = 900) -> Any:
    """``python -m ptexp.train -m ARGS`` in ``cwd``: the finished process (output captured), or
    with ``wait=False`` the running one (its own session, output in ``stdout``)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "ptexp.train", "-m", *args]
    if not wait:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    return subprocess.run(cmd, cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)


def compose_cfg(overrides: list[str] | None = None) -> DictConfig:
    with initialize_config_module(config_module="ptexp.conf", version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides or []))


@pytest.fixture(scope="session")
def tweets_rows() -> list[dict[str, str]]:
    """900 real tweets (300 per label) from the embedded corpus."""
    from ptexp.embedded import embedded_dataset_file

    path = embedded_dataset_file("tweets")
    per_label: dict[str, list[str]] = {label: [] for label in TWEET_LABELS}
    seen: set[str] = set()
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        for row in csv.DictReader(f):
            bucket = per_label.get(row["sentiment"])
            text = row["text"].strip()
            if bucket is not None and len(bucket) < 300 and text and text not in seen:
                seen.add(text)
                bucket.append(text)
            if all(len(b) == 300 for b in per_label.values()):
                break
    rows = [{"tweet": t, "mood": label} for label, texts in per_label.items() for t in texts]
    random.Random(0).shuffle(rows)
    return rows


def write_table(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def tweet_files(tmp_path_factory, tweets_rows) -> dict[str, Path]:
    """A TSV train/dev/test split with column names ptexp has never seen (tweet, mood)."""
    folder = tmp_path_factory.mktemp("tweets")
    return {
        "train": write_table(folder / "train.tsv", tweets_rows[:600], "\t"),
        "validation": write_table(folder / "dev.tsv", tweets_rows[600:750], "\t"),
        "test": write_table(folder / "test.tsv", tweets_rows[750:], "\t"),
    }


@pytest.fixture(scope="session")
def pair_files(tmp_path_factory, tweets_rows) -> dict[str, Path]:
    """Sentence pairs from real tweets, paired two by two: columns first, second, and same_mood
    (yes when both tweets carry the same sentiment)."""
    pairs = [
        {"first": a["tweet"], "second": b["tweet"], "same_mood": "yes" if a["mood"] == b["mood"] else "no"}
        for a, b in zip(tweets_rows[0::2], tweets_rows[1::2])
    ]
    folder = tmp_path_factory.mktemp("pairs")
    return {
        "train": write_table(folder / "train.tsv", pairs[:300], "\t"),
        "validation": write_table(folder / "dev.tsv", pairs[300:375], "\t"),
        "test": write_table(folder / "test.tsv", pairs[375:], "\t"),
    }


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with random weights and the MiniLM tokenizer, saved like a
    hub checkpoint so the real from_pretrained path loads it."""
    from ptexp.testing import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def tiny_overrides(tiny_bert: Path, tweet_files: dict[str, Path], out: Path) -> list[str]:
    return [
        f"model.name_or_path={tiny_bert}",
        "model.extra_trainable_modules=[]",
        "dataset=csv",
        f"dataset.train_file={tweet_files['train']}",
        f"dataset.validation_file={tweet_files['validation']}",
        f"dataset.test_file={tweet_files['test']}",
        "dataset.text_column=tweet",
        "dataset.label_column=mood",
        "dataset.max_length=32",
        "dataset.max_train_samples=96",
        "prompt_encoder.num_virtual_tokens=4",
        "prompt_encoder.encoder_hidden_size=16",
        "trainer=smoke",
        "trainer.per_device_train_batch_size=16",
        "num_threads=1",
        f"paths.root={out}",
    ]


@pytest.fixture
def tiny_cfg(tiny_bert, tweet_files, tmp_path) -> DictConfig:
    return compose_cfg(tiny_overrides(tiny_bert, tweet_files, tmp_path / "outputs"))


def set_key(cfg: DictConfig, dotted: str, value) -> DictConfig:
    from omegaconf import OmegaConf

    with open_dict(cfg):
        OmegaConf.update(cfg, dotted, value, merge=False)
    return cfg


def assert_resume_matches(overrides: list[str], root: Path) -> Path:
    """Run once with every checkpoint kept, then restart a fresh run folder from the first
    checkpoint alone (what a kill right after that save leaves): the restarted run must end
    with the uninterrupted run's train_loss and validation/test metrics. Returns that checkpoint."""
    import shutil

    from ptexp.run import run

    overrides = [*overrides, "keep_checkpoints=true", "trainer.save_total_limit=5"]
    whole = run(compose_cfg(overrides), root / "whole")
    first = min((root / "whole" / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    shutil.copytree(first, root / "resumed" / "checkpoints" / first.name)
    resumed = run(compose_cfg(overrides), root / "resumed")
    assert resumed["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-6)
    before = json.loads((first / "ptexp_loss_state.json").read_text())["train_runtime"]
    assert resumed["train_runtime"] > before > 0  # the time before the restart is counted too
    for split in ("validation", "test"):
        for key in ("accuracy", "macro_f1", "loss"):
            assert resumed[split][key] == pytest.approx(whole[split][key], abs=1e-6), (split, key)
    return first


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide GPT-2 (decoder-only) with random weights and the MiniLM tokenizer
    ([CLS] as BOS, [SEP] as EOS), saved like a hub checkpoint: CAUSAL_LM's tiny model."""
    from ptexp.testing import build_tiny_gpt2

    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))

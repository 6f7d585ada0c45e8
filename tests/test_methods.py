"""Every training method on the tiny BERT: trains, evaluates, saves, predicts back what the run
predicted, resumes to the same figures, and trains exactly the parameters its formula says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptexp.methods import all_methods
from ptexp.predict import predict
from ptexp.run import run
from tests.conftest import assert_resume_matches, compose_cfg, tiny_overrides
from tests.wandb_records import read_run

pytestmark = pytest.mark.slow  # trains tiny models end to end

D, LAYERS, LABELS, N = 32, 2, 3, 4  # the tiny BERT's width and depth; tweet labels; prompt length
HEAD = D * LABELS + LABELS
METHODS = {
    # method: (overrides, trainable parameters by the method's formula)
    "p_tuning": ([], N * D + (D * 16 + 16) + (16 * 16 + 16) + (16 * D + D) + HEAD),
    "prompt_tuning": ([f"method.num_virtual_tokens={N}", "method.init=random"], N * D + HEAD),
    "prefix_tuning": ([f"method.num_virtual_tokens={N}"], N * 2 * LAYERS * D + HEAD),
    "lora": (["method.r=2"], LAYERS * 2 * 2 * (D + D) + HEAD),  # query and value: r·(d_in + d_out)
    "linear_probe": ([], HEAD),
    "full_finetune": ([], None),  # every parameter
}


def method_overrides(name: str, tiny_bert, tweet_files, root: Path) -> list[str]:
    extra, _ = METHODS[name]
    return [
        *tiny_overrides(tiny_bert, tweet_files, root),
        f"method={name}",
        *extra,
        "logger=none",
        "dataset.max_train_samples=64",
        "dataset.max_eval_samples=48",
        "dataset.max_test_samples=48",
    ]


def test_every_registered_method_is_tested() -> None:
    assert set(all_methods()) - {"p_tuning_template"} == set(METHODS)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_trains_saves_predicts_and_counts(name: str, tiny_bert, tweet_files, tmp_path) -> None:
    overrides = [*method_overrides(name, tiny_bert, tweet_files, tmp_path), "logger=wandb"]
    metrics = run(compose_cfg(overrides), tmp_path / "run")
    (wandb_file,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    record = read_run(wandb_file)
    assert record["config"]["method"]["name"] == name and record["config"]["method_effective"]["method"] == name
    assert record["summary"]["final/test/accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    _, formula = METHODS[name]
    if formula is None:
        assert metrics["trainable_params"] == metrics["total_params"]
    else:
        assert metrics["trainable_params"] == formula
    assert metrics["saved_bytes"] > 0 and metrics["peak_memory_mb"]["cpu_rss"] > 0
    saved = [json.loads(line) for line in (tmp_path / "run" / "predictions_test.jsonl").read_text().splitlines()]
    again = predict(tmp_path / "run", [row["text"] for row in saved])
    assert [r["label"] for r in again] == [row["label"] for row in saved]
    for mine, theirs in zip(again, saved):
        for label, p in theirs["probs"].items():
            assert mine["probs"][label] == pytest.approx(p, abs=1e-4)


@pytest.mark.parametrize("name", ["prompt_tuning", "prefix_tuning", "lora", "linear_probe", "full_finetune"])
def test_method_resumes_to_the_same_figures(name: str, tiny_bert, tweet_files, tmp_path) -> None:
    """A run restarted from its epoch-1 checkpoint (what a kill after that save leaves) ends
    with the uninterrupted run's figures."""
    first = assert_resume_matches(method_overrides(name, tiny_bert, tweet_files, tmp_path), tmp_path)
    assert not list(first.glob("*adapter*")) and not (first / "model.safetensors").exists()  # weights once


def test_prefix_reaches_the_encoder(tiny_bert, tweet_files, tmp_path) -> None:
    """peft 0.21 cannot pass the prefix to transformers 5's BERT (``past_key_values`` is now
    ``cache``); ptexp's forward does: changing the prefix changes the logits."""
    import torch

    from ptexp.modeling import build_model
    from ptexp.tasks import get_task

    cfg = compose_cfg(method_overrides("prefix_tuning", tiny_bert, tweet_files, tmp_path))
    tokenizer, model = build_model(cfg, get_task("SEQ_CLS"), ["a", "b", "c"])
    model.eval()
    batch = tokenizer(["the flight was late", "great crew"], return_tensors="pt", padding=True)
    with torch.no_grad():
        before = model(**batch).logits.clone()
        for param in model.prompt_encoder.parameters():
            param.add_(1.0)
        after = model(**batch).logits
    assert (before - after).abs().max() > 1e-4

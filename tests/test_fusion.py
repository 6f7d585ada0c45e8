"""Sweep fusion, proven on CPU: jobs trained as one fused group over one frozen backbone end
with the metrics, weights and run folder of their separate runs (``pytest -k fus``).

The backbone's dropout is 0 here (the fused pass draws dropout from the group's random stream,
a separate run from its own), so every difference left is float noise from batching rows of
several jobs into one forward.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptexp.fusion import Member, run_group
from ptexp.run import run
from tests.conftest import compose_cfg, tiny_overrides

pytestmark = pytest.mark.slow  # trains tiny models end to end

# Three jobs that differ in every fusable kind of knob: prompt length, encoder width,
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

    folder = build_tiny_bert(tmp_path_factory.mktemp("still-bert"))
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _base(still_bert: Path, tweet_files: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [*tiny_overrides(still_bert, tweet_files, out), "logger=none", *extra]


def _separate_and_fused(base: list[str], jobs: dict[str, list[str]], out: Path) -> tuple[dict, list[Member]]:
    separate = {name: run(compose_cfg([*base, *o]), out / "separate" / name, overrides=o) for name, o in jobs.items()}
    members = [Member(compose_cfg([*base, *o]), out / "fused" / name, overrides=o) for name, o in jobs.items()]
    group = run_group(members)
    # Every training step of every job went through one shared backbone pass: 96 examples,
    # batch 16, 2 epochs = 12 steps, each one pass over all jobs' rows.
    assert group.passes == [len(jobs)] * 12
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


def test_fused_jobs_write_a_separate_runs_folder_with_a_per_job_pooler(still_bert, tweet_files, tmp_path) -> None:
    """With W&B offline on and the pooler trained per job (``model.extra_trainable_modules=
    [pooler]``, the embedded default's recipe): each fused job's folder holds the files of its
    separate run, the same metric keys, an adapter ptexp-predict loads, and its own W&B run
    (never the other job's) with its own summary."""
    from ptexp.outputs import read_json
    from ptexp.predict import predict
    from tests.wandb_records import read_run

    jobs = {name: JOBS[name] for name in ("n4_h16", "n7_h24")}
    base = [*tiny_overrides(still_bert, tweet_files, tmp_path / "outputs"), "model.extra_trainable_modules=[pooler]"]
    separate, members = _separate_and_fused(base, jobs, tmp_path)
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

"""The recipe study's levers (issue 13) as config keys: vocabulary initialisation of the
virtual tokens (method.token_init), the head's own learning rate (method.head_learning_rate),
LayerNorms trained besides the prompt (model.extra_trainable_modules) and early stopping
(trainer.early_stopping_patience), and the step floor the study chose (trainer.min_train_steps).
Real Trainer, tiny random BERT."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from ptexp.errors import ConfigError
from ptexp.methods.p_tuning import vocab_token_ids
from ptexp.outputs import read_json
from ptexp.predict import load_predictor, predict
from ptexp.run import Hooks, run
from tests.conftest import assert_resume_matches, compose_cfg, tiny_overrides

LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def still_bert(tmp_path_factory) -> Path:
    """The tiny BERT with every dropout at 0: fused and separate runs then agree up to float noise."""
    from ptexp.testing import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("still-bert"), dropout=0.0)


def _overrides(tiny_bert, tweet_files, out: Path, *extra: str) -> list[str]:
    return [*tiny_overrides(tiny_bert, tweet_files, out), "logger=none", *extra]


def _words(model) -> torch.Tensor:
    """The backbone's word embeddings (template P-tuning wraps the backbone as ``base``)."""
    return getattr(model, "base", model).get_input_embeddings().weight.detach()


def _prompt_embedding(model) -> torch.Tensor:
    return next(p for n, p in model.named_parameters() if n.startswith("prompt_encoder.") and "embedding" in n)


# -- refused before anything loads ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("method.token_init=glove", "method.token_init='glove'"),
        ("method.head_learning_rate=0", "method.head_learning_rate=0"),
        ("method.head_learning_rate=-1e-3", "method.head_learning_rate=-0.001"),
        ("+trainer.early_stopping_patience=0", "trainer.early_stopping_patience=0"),
        ("+trainer.early_stopping_patience=1.5", "trainer.early_stopping_patience=1.5"),
        ("+trainer.early_stopping_patience=true", "trainer.early_stopping_patience=True"),
        ("+trainer.min_train_steps=0", "trainer.min_train_steps=0"),
        ("+trainer.min_train_steps=2.5", "trainer.min_train_steps=2.5"),
    ],
)
def test_bad_lever_values_are_config_errors_naming_the_key(tiny_bert, tweet_files, tmp_path, override, named) -> None:
    from ptexp.validate import check_run

    cfg = compose_cfg(_overrides(tiny_bert, tweet_files, tmp_path, override))
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(".", r"\.")):
        check_run(cfg)


def test_early_stopping_without_evaluations_is_refused(tiny_bert, tweet_files, tmp_path) -> None:
    from ptexp.validate import check_run

    cfg = compose_cfg(
        _overrides(
            tiny_bert,
            tweet_files,
            tmp_path,
            "+trainer.early_stopping_patience=2",
            "trainer.eval_strategy=no",
            "trainer.save_strategy=no",
        )
    )
    with pytest.raises(ConfigError, match="eval_strategy"):
        check_run(cfg)


def test_template_method_checks_the_same_keys(tiny_bert, tweet_files, tmp_path) -> None:
    from ptexp.validate import check_run

    cfg = compose_cfg(_overrides(tiny_bert, tweet_files, tmp_path, "method=p_tuning_template", "method.token_init=x"))
    with pytest.raises(ConfigError, match="method.token_init='x'"):
        check_run(cfg)


def test_defaults_spelt_out_are_the_same_experiment(tiny_bert, tweet_files, tmp_path) -> None:
    """Sweeps that name a lever's default (random, null) skip the runs that leave it out."""
    from ptexp.sweep import effective_key

    base = _overrides(tiny_bert, tweet_files, tmp_path)
    plain = effective_key(compose_cfg(base))
    spelt = ["method.token_init=random", "method.head_learning_rate=null", "+trainer.early_stopping_patience=null"]
    assert effective_key(compose_cfg([*base, *spelt])) == plain
    for changed in ("method.token_init=vocab", "method.head_learning_rate=0.1", "+trainer.early_stopping_patience=2"):
        assert effective_key(compose_cfg([*base, changed])) != plain, changed


def test_schema_help_documents_the_keys() -> None:
    import dataclasses

    from ptexp.methods.p_tuning import PTuningOptions
    from ptexp.methods.p_tuning_template import PTuningTemplateOptions
    from ptexp.validate import PTEXP_TRAINER_KEYS

    for schema in (PTuningOptions, PTuningTemplateOptions):
        helps = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(schema)}
        assert "vocab" in helps["token_init"] and "trainer.learning_rate" in helps["head_learning_rate"]
    assert "evaluations" in PTEXP_TRAINER_KEYS["early_stopping_patience"]


# -- token_init=vocab ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["p_tuning", "p_tuning_template"])
def test_vocab_init_copies_word_embeddings_of_sampled_ordinary_tokens(tiny_bert, tweet_files, tmp_path, method) -> None:
    from ptexp.modeling import build_model
    from ptexp.tasks import get_task

    def built(*extra: str):
        cfg = compose_cfg(_overrides(tiny_bert, tweet_files, tmp_path, f"method={method}", *extra))
        torch.manual_seed(0)
        return build_model(cfg, get_task("SEQ_CLS"), LABELS)

    tokenizer, model = built("method.token_init=vocab", "seed=7")
    prompts = _prompt_embedding(model).detach()
    words = _words(model)
    ids = vocab_token_ids(tokenizer, prompts.shape[0], words.shape[0], 7)
    assert len(set(ids)) == prompts.shape[0]
    assert not set(ids) & set(tokenizer.all_special_ids)
    assert all(not t.startswith("[") for t in tokenizer.convert_ids_to_tokens(ids))  # no [unusedN]
    torch.testing.assert_close(prompts, words[ids])
    # Another seed draws other tokens; random init is no word embedding at all.
    _, other = built("method.token_init=vocab", "seed=8")
    assert not torch.equal(_prompt_embedding(other).detach(), prompts)
    _, random_init = built("seed=7")
    rand = _prompt_embedding(random_init).detach()
    assert torch.cdist(rand, words).min() > 1e-3


# -- end to end --------------------------------------------------------------------------------------
@pytest.mark.slow  # trains tiny models end to end
@pytest.mark.parametrize("method", ["p_tuning", "p_tuning_template"])
def test_vocab_init_head_lr_and_layernorms_train_and_round_trip(tiny_bert, tweet_files, tmp_path, method) -> None:
    """One run with all three method levers: the prompts start from word embeddings, the head
    and the LayerNorms get their own (scheduled) learning rate and change; ptexp-predict
    reloads the trained LayerNorms and reproduces the run's test predictions."""
    lr, head_lr = 3e-2, 1e-1
    cfg = compose_cfg(
        _overrides(
            tiny_bert,
            tweet_files,
            tmp_path,
            f"method={method}",
            "method.token_init=vocab",
            f"method.head_learning_rate={head_lr}",
            "model.extra_trainable_modules=[pooler,LayerNorm]",
            f"trainer.learning_rate={lr}",
        )
    )
    seen: dict = {}

    def on_built(built) -> None:
        seen["tokenizer"] = built.tokenizer
        seen["initial"] = {n: p.detach().clone() for n, p in built.model.named_parameters() if p.requires_grad}
        seen["words"] = _words(built.model).clone()

    def on_fitted(fitted) -> None:
        trainer = fitted.trainer
        names = {id(p): n for n, p in fitted.built.model.named_parameters()}
        seen["groups"] = [(g["lr"], [names[id(p)] for p in g["params"]]) for g in trainer.optimizer.param_groups]
        scheduler = trainer.lr_scheduler
        seen["base_lrs"] = list(scheduler.base_lrs)
        # Each group's rate halfway through, by the run's own scheduler (at the end all are 0).
        half = scheduler.last_epoch // 2
        seen["halfway"] = [lam(half) * base for lam, base in zip(scheduler.lr_lambdas, scheduler.base_lrs)]

    run_dir = tmp_path / "run"
    run(cfg, run_dir, hooks=Hooks(built=on_built, fitted=on_fitted))

    initial = seen["initial"]
    embedding = next(n for n in initial if n.startswith("prompt_encoder.") and "embedding" in n)
    ids = vocab_token_ids(seen["tokenizer"], initial[embedding].shape[0], seen["words"].shape[0], int(cfg.seed))
    torch.testing.assert_close(initial[embedding], seen["words"][ids])

    # Two learning rates, both decayed by the same schedule.
    assert sorted(set(seen["base_lrs"])) == [lr, head_lr]
    is_prompt = [all(n.startswith("prompt_encoder.") for n in names) for _, names in seen["groups"]]
    is_head = [not any(n.startswith("prompt_encoder.") for n in names) for _, names in seen["groups"]]
    assert all(p != h for p, h in zip(is_prompt, is_head))  # no group mixes the two
    assert {b for b, p in zip(seen["base_lrs"], is_prompt) if p} == {lr}
    assert {b for b, h in zip(seen["base_lrs"], is_head) if h} == {head_lr}
    prompt_half = {round(x, 12) for x, p in zip(seen["halfway"], is_prompt) if p}
    head_half = {round(x, 12) for x, h in zip(seen["halfway"], is_head) if h}
    assert len(prompt_half) == len(head_half) == 1
    assert 0 < prompt_half.pop() < lr and head_half.pop() == pytest.approx(head_lr * seen["halfway"][0] / lr)
    grouped = [n for _, names in seen["groups"] for n in names]
    assert sorted(grouped) == sorted(initial)  # every trainable parameter, once

    trained = load_file(str(run_dir / "trainable_state.safetensors"))
    norms = [n for n in trained if "LayerNorm" in n]
    assert len(norms) == 2 * (1 + 2 * 2)  # embeddings + 2 per layer x 2 layers, weight and bias
    assert all(not torch.equal(trained[n], initial[n]) for n in norms)
    if method == "p_tuning":
        adapter = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
        assert sum("LayerNorm" in k for k in adapter) == len(norms)

    _, model, *_ = load_predictor(run_dir)
    loaded = dict(model.named_parameters())
    for name in norms:
        torch.testing.assert_close(loaded[name].detach(), trained[name])
    saved = [json.loads(line) for line in (run_dir / "predictions_test.jsonl").read_text().splitlines()][:40]
    again = predict(run_dir, [r["text"] for r in saved])
    assert [r["label"] for r in again] == [r["label"] for r in saved]
    for mine, theirs in zip(again, saved):
        for label, p in theirs["probs"].items():
            assert mine["probs"][label] == pytest.approx(p, abs=1e-4)


@pytest.mark.slow  # trains a tiny model end to end
def test_a_near_zero_head_learning_rate_freezes_the_head_but_not_the_prompts(tiny_bert, tweet_files, tmp_path) -> None:
    cfg = compose_cfg(
        _overrides(
            tiny_bert,
            tweet_files,
            tmp_path,
            "method.head_learning_rate=1e-12",
            "model.extra_trainable_modules=[pooler]",
        )
    )
    seen: dict = {}
    hooks = Hooks(built=lambda b: seen.update({n: p.detach().clone() for n, p in b.model.named_parameters()}))
    run(cfg, tmp_path / "run", hooks=hooks)
    trained = load_file(str(tmp_path / "run" / "trainable_state.safetensors"))
    head = [n for n in trained if not n.startswith("prompt_encoder.")]
    assert any("classifier" in n for n in head) and any("pooler" in n for n in head)
    for name in head:
        assert (trained[name] - seen[name]).abs().max() < 1e-9, name
    prompt = [n for n in trained if n.startswith("prompt_encoder.")]
    assert all((trained[n] - seen[n]).abs().max() > 1e-4 for n in prompt)


@pytest.mark.slow  # trains a tiny model end to end
def test_early_stopping_stops_after_patience_and_restores_the_best_epoch(tiny_bert, tweet_files, tmp_path) -> None:
    """Select the epoch with the highest validation loss (training lowers it, so the best is an
    early epoch): with patience 1 the run stops one evaluation after its best, long before
    num_train_epochs, and the restored epoch is the best one."""
    cfg = compose_cfg(
        _overrides(
            tiny_bert,
            tweet_files,
            tmp_path,
            "trainer.num_train_epochs=8",
            "+trainer.early_stopping_patience=1",
            "trainer.metric_for_best_model=loss",
            "trainer.greater_is_better=true",
            "trainer.per_device_eval_batch_size=256",
        )
    )
    metrics = run(cfg, tmp_path / "run")
    losses = [h["loss"] for h in metrics["history"]]
    best = losses.index(max(losses))
    assert len(losses) == best + 2 < 8  # stopped one evaluation after the best
    assert metrics["best_epoch"] == metrics["history"][best]["epoch"]
    assert metrics["validation"]["loss"] == losses[best]


@pytest.mark.slow  # trains a tiny model end to end, twice
def test_a_resumed_run_with_the_levers_matches_the_uninterrupted_one(tiny_bert, tweet_files, tmp_path) -> None:
    """Resume from epoch 1's checkpoint: the split optimizer's state loads, and early stopping
    counts the evaluations before the restart (it stops after the same epoch)."""
    overrides = _overrides(
        tiny_bert,
        tweet_files,
        tmp_path,
        "method.head_learning_rate=1e-1",
        "model.extra_trainable_modules=[pooler]",
        "trainer.num_train_epochs=6",
        "+trainer.early_stopping_patience=1",
        "trainer.metric_for_best_model=loss",
        "trainer.greater_is_better=true",
    )
    assert_resume_matches(overrides, tmp_path)
    whole, resumed = (read_json(tmp_path / name / "metrics.json") for name in ("whole", "resumed"))
    assert len(resumed["history"]) == len(whole["history"]) < 6
    assert resumed["best_epoch"] == whole["best_epoch"]


# -- fused sweeps ------------------------------------------------------------------------------------
@pytest.mark.slow  # trains tiny models end to end, alone and fused
def test_fused_jobs_with_the_levers_equal_their_separate_runs(still_bert, tweet_files, tmp_path) -> None:
    """Why fusion may group jobs that differ in these keys: each job's vocabulary draw, head
    learning rate and early stop are its own (its prompt encoder, optimizer, callback). A job
    that stops early leaves the group; the others train on to their separate runs' numbers."""
    from ptexp.fusion import Member, run_group, unfusable
    from tests.test_fusion import _assert_same_numbers, _assert_same_weights

    base = [
        *tiny_overrides(still_bert, tweet_files, tmp_path / "outputs"),
        "logger=none",
        "model.extra_trainable_modules=[pooler]",
        "trainer.num_train_epochs=4",
        "trainer.metric_for_best_model=loss",
        "trainer.greater_is_better=true",
    ]
    jobs = {
        "vocab_head_stop1": [
            "method.token_init=vocab",
            "method.head_learning_rate=1e-1",
            "+trainer.early_stopping_patience=1",
            "seed=42",
        ],
        "plain": ["trainer.learning_rate=1e-2", "seed=1"],
        "lstm_vocab_stop2": [
            "prompt_encoder=lstm",
            "method.token_init=vocab",
            "method.head_learning_rate=3e-3",
            "+trainer.early_stopping_patience=2",
            "seed=7",
        ],
    }
    for overrides in jobs.values():
        assert unfusable(compose_cfg([*base, *overrides])) is None
    separate = {n: run(compose_cfg([*base, *o]), tmp_path / "separate" / n, overrides=o) for n, o in jobs.items()}
    members = [Member(compose_cfg([*base, *o]), tmp_path / "fused" / n, overrides=o) for n, o in jobs.items()]
    run_group(members, padding_waste=math.inf)
    _assert_same_numbers(separate, members)
    for name in jobs:
        _assert_same_weights(
            tmp_path / "fused" / name / "trainable_state.safetensors",
            tmp_path / "separate" / name / "trainable_state.safetensors",
        )
    epochs = {m.run_dir.name: len(m.metrics["history"]) for m in members}
    assert epochs["vocab_head_stop1"] < epochs["plain"] == 4  # one job left the group early


def test_fusion_groups_jobs_that_differ_only_in_the_levers() -> None:
    from ptexp.fusion import fusion_key

    def experiment(method: dict, trainer: dict) -> dict:
        return {"method": {"name": "p_tuning", **method}, "trainer": {"learning_rate": 1e-2, **trainer}, "seed": 1}

    plain = fusion_key(experiment({}, {}))
    assert fusion_key(experiment({"token_init": "vocab", "head_learning_rate": 0.1}, {})) == plain
    assert fusion_key(experiment({}, {"early_stopping_patience": 2})) == plain
    assert fusion_key(experiment({}, {"num_train_epochs": 2})) != plain
    # The step floor raises each job's epochs from its own training set: jobs of one group share
    # the set, so they share the floor's epochs only if they share the floor.
    assert fusion_key(experiment({}, {"min_train_steps": 750})) != plain


def test_fusion_refuses_layernorms_inside_the_shared_backbone(tiny_bert, tweet_files, tmp_path) -> None:
    from ptexp.fusion import unfusable

    cfg = compose_cfg(_overrides(tiny_bert, tweet_files, tmp_path, "model.extra_trainable_modules=[pooler,LayerNorm]"))
    assert "['LayerNorm'] trains layers inside the shared backbone" in unfusable(cfg)
    pooler = compose_cfg(_overrides(tiny_bert, tweet_files, tmp_path, "model.extra_trainable_modules=[pooler]"))
    assert unfusable(pooler) is None


def test_the_command_line_names_the_plus_for_early_stopping() -> None:
    from ptexp.cli import check_overrides, help_page

    with pytest.raises(ConfigError, match=r"\+trainer\.early_stopping_patience="):
        check_overrides(["trainer.early_stopping_patience=2"])
    check_overrides(["+trainer.early_stopping_patience=2", "method.token_init=vocab", "method.head_learning_rate=0.1"])
    page = help_page()
    assert "+trainer.early_stopping_patience" in page
    # trainer=default sets the floor: Hydra refuses a '+' for it.
    assert "  trainer.min_train_steps" in page and "+trainer.min_train_steps" not in page
    check_overrides(["trainer=smoke", "+trainer.min_train_steps=100"])


# -- the step floor ----------------------------------------------------------------------------------
@pytest.mark.slow  # trains a tiny model end to end, twice
def test_min_train_steps_raises_the_epochs_of_a_small_training_set(tiny_bert, tweet_files, tmp_path) -> None:
    """96 rows in batches of 16 are 6 steps an epoch: a floor of 20 steps makes 2 epochs into 4
    (24 steps), evaluated and recorded as such; max_steps, when set, still rules."""
    from ptexp.run import epochs_for

    floor = _overrides(tiny_bert, tweet_files, tmp_path, "trainer.num_train_epochs=2", "+trainer.min_train_steps=20")
    metrics = run(compose_cfg(floor), tmp_path / "floor")
    assert metrics["num_examples"]["train"] == 96
    assert metrics["num_train_epochs"] == 4 == len(metrics["history"])
    assert metrics["history"][-1]["step"] == 24
    capped = run(compose_cfg([*floor, "trainer.max_steps=9"]), tmp_path / "capped")
    assert capped["history"][-1]["step"] == 9
    # Below the floor nothing changes; a larger set needs fewer epochs for the same floor.
    assert run(compose_cfg([*floor[:-1], "+trainer.min_train_steps=5"]), tmp_path / "above")["num_train_epochs"] == 2
    batch16 = SimpleNamespace(per_device_train_batch_size=16, world_size=1, gradient_accumulation_steps=1)
    assert epochs_for(750, 2000, batch16) == 6 and epochs_for(750, 3000, batch16) == 4


@pytest.mark.slow  # trains a tiny model end to end, twice
def test_a_run_killed_after_it_stopped_early_resumes_to_the_same_end(tiny_bert, tweet_files, tmp_path) -> None:
    """Killed after training stopped early but before metrics.json (while testing): the restart
    resumes from the stopping epoch's checkpoint and must not train on past it."""
    overrides = _overrides(
        tiny_bert,
        tweet_files,
        tmp_path,
        "trainer.num_train_epochs=8",
        "+trainer.early_stopping_patience=1",
        "trainer.metric_for_best_model=loss",
        "trainer.greater_is_better=true",
        "trainer.per_device_eval_batch_size=256",
        "trainer.save_total_limit=2",  # trainer=default's: the best and the last checkpoint stay
    )
    whole = run(compose_cfg(overrides), tmp_path / "whole")
    assert len(whole["history"]) < 8

    def killed(fitted) -> None:
        last = max(int(p.name.split("-")[1]) for p in (tmp_path / "resumed" / "checkpoints").glob("checkpoint-*"))
        assert last == whole["history"][-1]["step"]  # the restart resumes from the stopping epoch
        raise KeyboardInterrupt("killed while testing")

    with pytest.raises(KeyboardInterrupt):
        run(compose_cfg(overrides), tmp_path / "resumed", hooks=Hooks(fitted=killed))
    resumed = run(compose_cfg(overrides), tmp_path / "resumed")
    assert [h["step"] for h in resumed["history"]] == [h["step"] for h in whole["history"]]
    assert resumed["best_epoch"] == whole["best_epoch"]
    assert resumed["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-6)
    for key in ("accuracy", "loss"):
        assert resumed["test"][key] == pytest.approx(whole["test"][key], abs=1e-6)


@pytest.mark.parametrize(
    "sweep", sorted(p.stem for p in (Path(__file__).parent.parent / "ptexp/conf/sweep").glob("study_*.yaml"))
)
def test_the_study_levers_switch_the_step_floor_off(sweep) -> None:
    """Every lever was measured before trainer=default's step floor existed: with the floor the
    3-epoch cell of study_epochs trained 6 epochs on the study's 2,000 examples, and a re-launch
    refused every job that finished before the floor existed."""
    from omegaconf import open_dict

    from ptexp.sweep import effective_key

    assert compose_cfg([]).trainer.min_train_steps == 750
    cfg = compose_cfg([f"+sweep={sweep}", "trainer.num_train_epochs=3"])
    assert cfg.trainer.min_train_steps is None
    before_the_floor = compose_cfg([f"+sweep={sweep}", "trainer.num_train_epochs=3"])
    with open_dict(before_the_floor):
        del before_the_floor.trainer["min_train_steps"]
    assert effective_key(cfg) == effective_key(before_the_floor)


def test_a_head_learning_rate_where_only_the_prompt_encoder_trains_warns(
    tiny_gpt2, tiny_bert, tweet_files, tmp_path
) -> None:
    """CAUSAL_LM P-tuning has no task head: with no extra modules the key would change nothing."""
    from ptexp.validate import check_run
    from tests.test_task_causal_lm import lm_overrides

    lm = [*lm_overrides(tiny_gpt2, tweet_files, tmp_path), "logger=none", "method.head_learning_rate=0.1"]
    warnings = check_run(compose_cfg(lm))[1]
    assert any("method.head_learning_rate=0.1 has no effect: dataset.task=CAUSAL_LM" in w for w in warnings)
    with_extra = check_run(compose_cfg([*lm, "model.extra_trainable_modules=[ln_f]"]))[1]
    seq_cls = check_run(compose_cfg(_overrides(tiny_bert, tweet_files, tmp_path, "method.head_learning_rate=0.1")))[1]
    assert not any("head_learning_rate" in w for w in with_extra + seq_cls)

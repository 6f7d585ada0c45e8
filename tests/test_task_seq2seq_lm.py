"""SEQ_2_SEQ_LM (text-to-text on encoder-decoder models) end to end on a tiny random T5 with
the embedded MiniLM tokenizer: a task it learns in seconds (three words in, the category most of
them belong to out), training, evaluation by generation, the baseline, saving, ptexp-predict,
resume, W&B, a 2x2 sweep and its report, every method, and the bad inputs refused before any
model loads."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ptexp.errors import ConfigError
from ptexp.outputs import read_json
from ptexp.tasks.generation import exact_match
from tests.conftest import compose_cfg, run_sweep, subprocess_env, write_table
from tests.wandb_records import read_run

CATEGORIES = {
    "colour": ["red", "blue", "green", "black", "white"],
    "animal": ["cat", "dog", "bird", "fish", "cow"],
    "fruit": ["apple", "pear", "lemon", "grape", "plum"],
}
WORDS = [w for words in CATEGORIES.values() for w in words]


def category_rows(n: int, seed: int) -> list[dict[str, str]]:
    """Three words, two of one category (the target) and one at random, shuffled."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        category = rng.choice(sorted(CATEGORIES))
        words = [*rng.sample(CATEGORIES[category], 2), rng.choice(WORDS)]
        rng.shuffle(words)
        rows.append({"words": " ".join(words), "category": category})
    return rows


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory) -> Path:
    from ptexp.testing import build_tiny_t5

    return build_tiny_t5(tmp_path_factory.mktemp("tiny-t5"))


@pytest.fixture(scope="module")
def tiny_bart(tmp_path_factory) -> Path:
    """A 1+1-layer, 32-wide BART (learned positions, unlike T5's relative ones) with random
    weights and the MiniLM tokenizer; its decoder starts with [SEP], BART's way (eos)."""
    import torch
    from transformers import AutoTokenizer, BartConfig, BartForConditionalGeneration

    from ptexp.embedded import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("embedded:all-MiniLM-L6-v2"))
    config = BartConfig(
        vocab_size=tokenizer.vocab_size,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.sep_token_id,
        forced_eos_token_id=None,
    )
    folder = tmp_path_factory.mktemp("tiny-bart")
    torch.manual_seed(0)
    BartForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def category_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("categories")
    return {
        "train": write_table(folder / "train.csv", category_rows(400, 0)),
        "validation": write_table(folder / "dev.csv", category_rows(60, 1)),
        "test": write_table(folder / "test.csv", category_rows(60, 2)),
    }


def t2t_overrides(model: Path, files: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        f"model.name_or_path={model}",
        "model.extra_trainable_modules=[]",
        "dataset=csv",
        "dataset.task=SEQ_2_SEQ_LM",
        f"dataset.train_file={files['train']}",
        f"dataset.validation_file={files['validation']}",
        f"dataset.test_file={files['test']}",
        "dataset.text_column=words",
        "dataset.label_column=category",
        "dataset.max_length=16",
        "dataset.deduplicate=false",
        "+dataset.task_options.max_target_length=8",
        "+dataset.task_options.max_new_tokens=4",
        "prompt_encoder.num_virtual_tokens=4",
        "prompt_encoder.encoder_hidden_size=16",
        "trainer=smoke",
        "trainer.per_device_train_batch_size=16",
        "num_threads=1",
        f"paths.root={out}",
        *extra,
    ]


def saved_predictions(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "predictions_test.jsonl").read_text().splitlines()]


# -- learning: the metric far above the trivial baseline ------------------------------------


@pytest.fixture(scope="module")
def learned_run(tiny_t5, category_files, tmp_path_factory) -> tuple[Path, dict]:
    """Full fine-tuning (the tiny T5's weights are random: a prompt alone has nothing to steer)."""
    from ptexp.run import run

    out = tmp_path_factory.mktemp("learned")
    overrides = t2t_overrides(
        tiny_t5, category_files, out, "method=full_finetune", "trainer.learning_rate=1e-2", "trainer.num_train_epochs=3"
    )
    metrics = run(compose_cfg([*overrides, "logger=none"]), out / "run")
    return out / "run", metrics


@pytest.mark.slow  # trains ~75 steps
def test_tiny_t5_learns_the_task_far_above_the_baseline(learned_run) -> None:
    run_dir, metrics = learned_run
    saved = read_json(run_dir / "metrics.json")
    assert saved["task"] == "SEQ_2_SEQ_LM" and saved["selection_metric"] == "rougeL"
    baseline = saved["baseline"]
    assert baseline["name"].startswith("most frequent target ('")
    assert 0.2 < baseline["test"]["exact_match"] < 0.5  # one of three categories
    assert metrics["test"]["exact_match"] >= 0.85 > baseline["test"]["exact_match"] + 0.4
    assert metrics["test"]["rougeL"] >= 0.85 and metrics["validation"]["rougeL"] >= 0.85
    # predictions_test.jsonl: source, gold target and generated text, scoring what metrics.json says
    lines = saved_predictions(run_dir)
    assert len(lines) == 60 and set(lines[0]) == {"text", "gold", "generated"}
    assert exact_match([r["generated"] for r in lines], [r["gold"] for r in lines]) == pytest.approx(
        metrics["test"]["exact_match"]
    )


@pytest.mark.slow  # a ptexp-predict subprocess on the trained run
def test_ptexp_predict_prints_the_generated_text(learned_run) -> None:
    run_dir, _ = learned_run
    lines = saved_predictions(run_dir)[:6]
    cli = [sys.executable, "-m", "ptexp.predict", str(run_dir)]
    proc = subprocess.run(
        [*cli, *(r["text"] for r in lines)], capture_output=True, text=True, timeout=300, env=subprocess_env()
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = [line.split("\t") for line in proc.stdout.strip().splitlines()]
    assert printed == [[r["generated"], r["text"]] for r in lines]
    assert {r["generated"] for r in lines} <= set(CATEGORIES)


@pytest.mark.slow  # ptexp-train subprocesses
def test_a_killed_run_resumes_to_the_uninterrupted_runs_figures(learned_run, tiny_t5, category_files, tmp_path) -> None:
    """ptexp-train killed (SIGKILL) after its first epoch's checkpoint, then launched again into
    the same run folder: it resumes there and ends with the uninterrupted run's figures."""
    import os
    import signal
    import time

    _, whole = learned_run
    run_dir = tmp_path / "run"
    args = [
        *t2t_overrides(
            tiny_t5, category_files, tmp_path, "method=full_finetune", "trainer.learning_rate=1e-2", "logger=none"
        ),
        "trainer.num_train_epochs=3",
        f"hydra.run.dir={run_dir}",
    ]
    cmd = [sys.executable, "-m", "ptexp.train", *args]
    env = subprocess_env()
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(run_dir.glob("checkpoints/checkpoint-*/trainer_state.json")):
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "metrics.json").exists(), "killed too late: the run had finished"
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stderr + again.stdout
    resumed = read_json(run_dir / "metrics.json")
    assert resumed["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-6)
    for split in ("validation", "test"):
        for key in ("exact_match", "rougeL", "loss"):
            assert resumed[split][key] == pytest.approx(whole[split][key], abs=1e-6), (split, key)


# -- P-tuning learns: prompts elicit what a (tiny) pretrained model can do -----------------------


@pytest.fixture(scope="module")
def instructed_t5(tiny_t5, tmp_path_factory) -> Path:
    """The tiny T5 fine-tuned on two instructions, 'category: w w w' -> the category and
    'first: w w w' -> the first word: a small pretrained model with a skill that a prompt, in
    place of the instruction, can call up (P-tuning's premise; random weights offer none)."""
    from ptexp.run import run

    out = tmp_path_factory.mktemp("instructed")
    files = {}
    for seed, (split, n) in enumerate([("train", 800), ("validation", 40), ("test", 40)], start=20):
        rows = []
        for row, instruction in zip(category_rows(n, seed), random.Random(seed).choices(["category", "first"], k=n)):
            target = row["category"] if instruction == "category" else row["words"].split()[0]
            rows.append({"words": f"{instruction}: {row['words']}", "category": target})
        files[split] = write_table(out / f"{split}.csv", rows)
    overrides = t2t_overrides(
        tiny_t5, files, out, "method=full_finetune", "trainer.learning_rate=1e-2", "trainer.num_train_epochs=4"
    )
    run(compose_cfg([*overrides, "logger=none"]), out / "run")
    model = out / "run" / "model"
    for file in (out / "run" / "adapter").iterdir():  # the run keeps its tokenizer there
        shutil.copy(file, model / file.name)
    return model


@pytest.mark.slow  # trains twice per method
@pytest.mark.parametrize("method", ["p_tuning", "p_tuning_template"])
def test_prompts_learn_to_call_up_the_pretrained_skill(method, instructed_t5, category_files, tmp_path) -> None:
    """Without the instruction, the plain three words: untrained prompts get (almost) nothing
    right; trained ones (the backbone frozen) answer the category far above the baseline."""
    from ptexp.run import run

    overrides = t2t_overrides(
        instructed_t5,
        category_files,
        tmp_path,
        f"method={method}",
        *(["method.template='[P:2] {text} [P:2]'"] if method == "p_tuning_template" else []),
        "dataset.max_train_samples=200",
        "logger=none",
    )
    untrained = run(compose_cfg([*overrides, "trainer.learning_rate=1e-9"]), tmp_path / "untrained")
    trained = run(compose_cfg([*overrides, "trainer.learning_rate=3e-2", "trainer.num_train_epochs=5"]), tmp_path / "t")
    baseline = trained["baseline"]["test"]["exact_match"]
    assert untrained["test"]["exact_match"] < 0.2 and baseline < 0.5
    assert trained["test"]["exact_match"] >= max(baseline + 0.25, untrained["test"]["exact_match"] + 0.5)
    assert trained["trainable_params"] < 0.01 * trained["total_params"]


# -- P-tuning end to end: train, save, predict, W&B, resume ----------------------------------


@pytest.fixture(scope="module")
def p_tuning_run(tiny_t5, category_files, tmp_path_factory) -> tuple[Path, dict]:
    from ptexp.run import run

    out = tmp_path_factory.mktemp("p-tuning")
    overrides = t2t_overrides(tiny_t5, category_files, out, "dataset.max_train_samples=64")
    metrics = run(compose_cfg(overrides), out / "run", overrides=["method=p_tuning"])
    return out / "run", metrics


@pytest.mark.slow  # trains
def test_p_tuning_run_saves_predicts_back_and_logs_to_wandb(p_tuning_run) -> None:
    from ptexp.predict import predict

    run_dir, metrics = p_tuning_run
    for name in (
        "config.yaml",
        "metrics.json",
        "run.json",
        "adapter/adapter_config.json",
        "trainable_state.safetensors",
    ):
        assert (run_dir / name).is_file(), name
    assert read_json(run_dir / "adapter" / "adapter_config.json")["task_type"] == "SEQ_2_SEQ_LM"
    assert {"exact_match", "rougeL", "bleu", "loss"} <= set(metrics["validation"]) and len(metrics["history"]) == 2
    assert metrics["trainable_params"] < metrics["total_params"]
    lines = saved_predictions(run_dir)
    again = predict(run_dir, [r["text"] for r in lines[:20]])
    assert [r["generated"] for r in again] == [r["generated"] for r in lines[:20]]
    (wandb_file,) = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    record = read_run(wandb_file)
    assert record["config"]["dataset"]["task"] == "SEQ_2_SEQ_LM"
    assert record["config"]["method_effective"]["peft_type"] == "P_TUNING"
    assert record["summary"]["final/test/rougeL"] == pytest.approx(metrics["test"]["rougeL"])
    assert any("eval/rougeL" in h for h in record["history"]) and record["exit"] == 0


@pytest.mark.slow  # trains twice
@pytest.mark.parametrize(
    "method", [["method=p_tuning"], ["method=p_tuning_template", "method.template='[P:2] {text} [P:2]'"]]
)
def test_resumed_run_ends_with_the_uninterrupted_runs_figures(method, tiny_t5, category_files, tmp_path) -> None:
    """A restart from the epoch-1 checkpoint alone (what a kill right after that save leaves)
    ends with the same train loss and generated-text metrics as the uninterrupted run."""
    from ptexp.run import run

    overrides = [
        *t2t_overrides(tiny_t5, category_files, tmp_path, *method, "dataset.max_train_samples=64", "logger=none"),
        "keep_checkpoints=true",
        "trainer.save_total_limit=5",
    ]
    whole = run(compose_cfg(overrides), tmp_path / "whole")
    first = min((tmp_path / "whole" / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    shutil.copytree(first, tmp_path / "resumed" / "checkpoints" / first.name)
    resumed = run(compose_cfg(overrides), tmp_path / "resumed")
    assert resumed["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-6)
    for split in ("validation", "test"):
        for key in ("exact_match", "rougeL", "bleu", "loss"):
            assert resumed[split][key] == pytest.approx(whole[split][key], abs=1e-6), (split, key)
    assert saved_predictions(tmp_path / "resumed") == saved_predictions(tmp_path / "whole")


# -- every method ------------------------------------------------------------------------------

PROMPT_METHODS = {
    "p_tuning": [],
    "p_tuning_template": ["method.template='[P:2] {text} [P:2]'"],
    "prompt_tuning": ["method.num_virtual_tokens=4"],
    "prefix_tuning": ["method.num_virtual_tokens=4"],
    "lora": [],
    "full_finetune": [],
}


@pytest.mark.parametrize("backbone", ["tiny_t5", "tiny_bart"])
@pytest.mark.parametrize("method", sorted(PROMPT_METHODS))
def test_generation_reads_what_each_method_trains(method, backbone, request, category_files, tmp_path) -> None:
    """The first generated token's scores equal the training forward's, and both change when
    the method's trainable parameters do: the prompts (prefix, template slots, LoRA weights) are
    in generation too, not only in the loss."""
    import torch

    from ptexp.methods import get_method
    from ptexp.modeling import build_model
    from ptexp.tasks import get_task
    from ptexp.validate import check_job

    model_dir = request.getfixturevalue(backbone)
    cfg = compose_cfg(t2t_overrides(model_dir, category_files, tmp_path, f"method={method}", *PROMPT_METHODS[method]))
    task = get_task("SEQ_2_SEQ_LM")
    check_job(cfg)
    torch.manual_seed(0)
    tokenizer, model = build_model(cfg, task, [])
    model.eval()
    encode = get_method(method).encoder(cfg, task)
    enc = encode(tokenizer, {"text": ["red dog cat", "plum pear blue"]}, 16)
    inputs = tokenizer.pad([{k: enc[k][i] for k in enc} for i in range(2)], return_tensors="pt")
    start = torch.full((2, 1), model.config.decoder_start_token_id)
    with torch.no_grad():
        initial = model(**inputs, decoder_input_ids=start).logits[:, -1]
        for param in (p for p in model.parameters() if p.requires_grad):  # as if trained
            param.add_(torch.randn_like(param) * 0.5)
        forward = model(**inputs, decoder_input_ids=start).logits[:, -1]
        generated = model.generate(**inputs, max_new_tokens=2, output_scores=True, return_dict_in_generate=True)
    assert not torch.allclose(forward, initial, atol=1e-3)
    assert torch.allclose(generated.scores[0], forward, atol=1e-4)


@pytest.mark.slow  # trains each method briefly
@pytest.mark.parametrize("method", ["p_tuning_template", "prompt_tuning", "prefix_tuning", "lora"])
def test_each_method_trains_and_predicts_back(method, tiny_t5, category_files, tmp_path) -> None:
    from ptexp.predict import predict
    from ptexp.run import run

    overrides = t2t_overrides(
        tiny_t5,
        category_files,
        tmp_path,
        f"method={method}",
        *PROMPT_METHODS[method],
        "dataset.max_train_samples=32",
        "trainer.num_train_epochs=1",
        "logger=none",
    )
    metrics = run(compose_cfg(overrides), tmp_path / "run")
    assert 0 <= metrics["test"]["rougeL"] <= 1 and metrics["trainable_params"] < metrics["total_params"]
    lines = saved_predictions(tmp_path / "run")
    again = predict(tmp_path / "run", [r["text"] for r in lines[:8]])
    assert [r["generated"] for r in again] == [r["generated"] for r in lines[:8]]


def test_sentence_pairs_are_one_source_and_predict_back(tiny_t5, category_files, tmp_path) -> None:
    """With dataset.text_pair_column the encoder reads both texts (as the tokenizer joins a
    pair); predictions and ptexp-predict carry the pair."""
    from ptexp.predict import predict
    from ptexp.run import run

    rows = [
        {"first": " ".join(r["words"].split()[:2]), "second": r["words"].split()[2], "category": r["category"]}
        for r in category_rows(60, 7)
    ]
    files = {s: write_table(tmp_path / f"{s}.csv", rows[i * 20 : (i + 1) * 20]) for i, s in enumerate(category_files)}
    overrides = [o for o in t2t_overrides(tiny_t5, files, tmp_path, "logger=none") if "text_column" not in o]
    overrides += ["dataset.text_column=first", "dataset.text_pair_column=second", "trainer.num_train_epochs=1"]
    run(compose_cfg(overrides), tmp_path / "run")
    lines = saved_predictions(tmp_path / "run")
    assert [(r["text"], r["text_pair"], r["gold"]) for r in lines] == [
        (r["first"], r["second"], r["category"]) for r in rows[40:]
    ]
    again = predict(tmp_path / "run", [r["text"] for r in lines], [r["text_pair"] for r in lines])
    assert [r["generated"] for r in again] == [r["generated"] for r in lines]
    from transformers import AutoTokenizer

    from ptexp.tasks import get_task

    tokenizer = AutoTokenizer.from_pretrained(tiny_t5)
    encoded = get_task("SEQ_2_SEQ_LM").encoder(compose_cfg(overrides))(
        tokenizer, {"text": ["red dog"], "text_pair": ["cat"]}, 16
    )
    assert tokenizer.decode(encoded["input_ids"][0]) == "[CLS] red dog [SEP] cat [SEP]"
    assert "token_type_ids" not in encoded


def test_targets_become_text_whatever_their_column_type() -> None:
    """A hub dataset's ClassLabel target is its name; a number is written as text; rows with an
    empty target or source are incomplete (dropped and counted by the data layer)."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    from ptexp.tasks import get_task

    task = get_task("SEQ_2_SEQ_LM")
    named = Dataset.from_dict(
        {"text": ["a", "b", "c"], "label": [1, 0, -1]},
        features=Features({"text": Value("string"), "label": ClassLabel(names=["no", "yes"])}),
    )
    numbers = Dataset.from_dict({"text": ["a", "b"], "label": [3, 12]})
    splits, vocabulary = task.encode_labels(DatasetDict({"train": named, "test": numbers}), None, {})
    assert vocabulary == [] and splits["train"]["label"] == ["yes", "no"] and splits["test"]["label"] == ["3", "12"]
    assert not task.is_complete({"text": "a", "label": "  "}) and not task.is_complete({"text": " ", "label": "x"})
    assert task.is_complete({"text": "a", "label": 0})


def test_commongen_preset_loads_a_real_generation_task(tiny_t5, monkeypatch) -> None:
    """dataset=commongen (MIT, shipped in tests/data): concepts in, a sentence out; its targets
    fit the preset's max_target_length, and copying the source is the baseline to beat."""
    from ptexp.data import load_splits
    from ptexp.tasks import get_task
    from ptexp.validate import check_run

    monkeypatch.chdir(Path(__file__).parents[1])  # the preset's paths are relative to the repository
    cfg = compose_cfg(["dataset=commongen", f"model.name_or_path={tiny_t5}", "model.extra_trainable_modules=[]"])
    check_run(cfg)
    splits = load_splits(cfg.dataset).splits
    assert {s: len(d) for s, d in splits.items()} == {"train": 3000, "validation": 400, "test": 500}
    assert not set(splits["train"]["text"]) & set(splits["test"]["text"])
    task = get_task("SEQ_2_SEQ_LM")
    task.check_data(splits, cfg)
    baseline = task.baseline(splits, [])
    assert baseline["name"] == "copy the source" and 0.2 < baseline["test"]["rougeL"] < 0.4


# -- a 2x2 sweep and its report -------------------------------------------------------------


@pytest.mark.slow  # a ptexp-train -m subprocess
def test_sweep_2x2_reports_the_tasks_metric(tiny_t5, category_files, tmp_path) -> None:
    """learning rate x seed, fine-tuning two epochs: the table is in validation/test rougeL, and
    the better learning rate is far above the baseline (about 0.33)."""
    import pandas as pd

    args = [
        *t2t_overrides(tiny_t5, category_files, tmp_path / "outputs", "method=full_finetune"),
        "dataset.max_eval_samples=30",
        "dataset.max_test_samples=30",
        "trainer.num_train_epochs=2",
        "sweep_name=t2t",
        "trainer.learning_rate=1e-2,1e-4",
        "seed=1,2",
    ]
    proc = run_sweep(args, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sweep_dir = tmp_path / "outputs" / "multiruns" / "t2t"
    results = pd.read_csv(sweep_dir / "report" / "results.csv")
    assert len(results) == 4 and set(results["status"]) == {"completed"}
    assert set(results["selection_metric"]) == {"rougeL"}
    best = results.groupby("trainer.learning_rate")["validation.rougeL"].mean()
    assert best[0.01] > 0.6 > best[0.0001]
    table = (sweep_dir / "report" / "ablation.md").read_text()
    assert "validation rougeL (mean ± std)" in table and "test rougeL" in table
    rows = [line for line in table.splitlines() if line.startswith("|") and "---" not in line][1:]
    assert len(rows) == 2 and all(line.rstrip(" |").endswith("2") for line in rows)
    assert table.count("**") == 2 and "**" in next(r for r in rows if r.startswith("| 0.01"))


# -- bad input, refused before any model loads ---------------------------------------------


def _check(overrides: list[str]) -> None:
    from ptexp.validate import check_job

    check_job(compose_cfg(overrides))


def test_an_encoder_only_model_is_refused(tiny_t5, category_files, tmp_path) -> None:
    overrides = t2t_overrides(tiny_t5, category_files, tmp_path)
    overrides = [o for o in overrides if not o.startswith("model.name_or_path")] + [
        "model.name_or_path=embedded:all-MiniLM-L6-v2"
    ]
    with pytest.raises(ConfigError, match=r"is not an encoder-decoder model \(model_type 'bert'.*SEQ_CLS"):
        _check(overrides)


def test_a_decoder_only_model_is_refused(tiny_t5, category_files, tmp_path) -> None:
    from transformers import GPT2Config

    folder = tmp_path / "gpt2"
    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(folder)  # config.json is all the check reads
    overrides = [o for o in t2t_overrides(tiny_t5, category_files, tmp_path) if not o.startswith("model.name_or")]
    with pytest.raises(ConfigError, match=r"model_type 'gpt2'.*decoder-only one.*CAUSAL_LM"):
        _check([*overrides, f"model.name_or_path={folder}"])


def test_a_missing_target_column_is_named(tiny_t5, category_files, tmp_path) -> None:
    from ptexp.run import prepare

    overrides = [*t2t_overrides(tiny_t5, category_files, tmp_path, "logger=none"), "dataset.label_column=summary"]
    with pytest.raises(ConfigError, match=r"dataset.label_column='summary' is not a column.*\['words', 'category'\]"):
        prepare(compose_cfg(overrides), tmp_path / "run")


def test_a_target_longer_than_allowed_is_refused_before_the_model_loads(
    tiny_t5, tiny_bart, category_files, tmp_path
) -> None:
    """prepare() reads data and the tokenizer only: the error comes before build() loads weights."""
    from ptexp.run import prepare

    overrides = t2t_overrides(tiny_t5, category_files, tmp_path, "logger=none")
    overrides = [o.replace("max_target_length=8", "max_target_length=2") for o in overrides]
    with pytest.raises(ConfigError) as err:
        prepare(compose_cfg(overrides), tmp_path / "run")
    message = str(err.value)
    assert "target(s) of the train split" in message and "max_target_length=2" in message
    assert "at least 3" in message  # [CLS] word [SEP]
    with pytest.raises(ConfigError, match=r"max_target_length=600 exceeds the 512 tokens its tokenizer allows"):
        _check(
            [
                o.replace("max_target_length=8", "max_target_length=600")
                for o in t2t_overrides(tiny_t5, category_files, tmp_path)
            ]
        )
    bart = t2t_overrides(tiny_bart, category_files, tmp_path, "+dataset.task_options.max_new_tokens=65")
    with pytest.raises(ConfigError, match=r"max_new_tokens=65 exceeds the 64 decoder positions of .*tiny-bart"):
        _check([o for o in bart if "max_new_tokens=4" not in o])


def test_linear_probe_and_bad_options_are_refused(tiny_t5, category_files, tmp_path) -> None:
    base = t2t_overrides(tiny_t5, category_files, tmp_path)
    with pytest.raises(ConfigError, match=r"method=linear_probe trains only a classification head"):
        _check([*base, "method=linear_probe"])
    with pytest.raises(ConfigError, match=r"task_options.metrics=\['rougeX'\]: choose one or more of"):
        _check([*base, "+dataset.task_options.metrics=[rougeX]"])
    with pytest.raises(ConfigError, match=r"chosen by 'rougeL' \(the default.*does not compute it"):
        _check([*base, "+dataset.task_options.metrics=[exact_match]"])
    with pytest.raises(ConfigError, match=r"task_options.max_new_tokenz is not an option.*closest: max_new_tokens"):
        _check([*base, "+dataset.task_options.max_new_tokenz=3"])


@pytest.mark.slow  # a ptexp-train subprocess
def test_cli_refuses_an_encoder_only_model_in_one_paragraph(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ptexp.train", "dataset=tweets_t2t", "logger=none", f"paths.root={tmp_path}"],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "is not an encoder-decoder model" in proc.stderr and "model=t5-small" in proc.stderr
    assert not list(tmp_path.rglob("metrics.json"))

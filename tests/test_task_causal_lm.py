"""CAUSAL_LM on a tiny random GPT-2 (decoder-only, MiniLM tokenizer) and real tweets: the
generation metrics, the options and bad input refused before any model loads, the encoding
(loss on the target only), label-word scoring, greedy generation against peft's pitfalls
(peft#2123, #2134: virtual tokens in generate, padding and positions), and end to end runs:
train, evaluate, save, predict, resume, W&B, every method, a 2x2 sweep and its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ptexp.errors import ConfigError
from ptexp.tasks import get_task
from ptexp.tasks.causal_lm import (
    CausalLMEncoder,
    CausalLMOptions,
    class_scores,
    greedy_generate,
    target_nll,
)
from ptexp.tasks.generation import (
    bleu,
    exact_match,
    generation_metrics,
    most_frequent_target,
    perplexity,
    rouge,
)
from tests.conftest import compose_cfg, run_sweep, subprocess_env
from tests.wandb_records import read_run

WORDS = "{negative: terrible, neutral: okay, positive: great}"


def lm_overrides(model: Path, tweet_files: dict[str, Path], out: Path, mode: str = "classify") -> list[str]:
    """The tweets TSV files (columns tweet, mood) through the CAUSAL_LM presets, tiny sizes."""
    return [
        f"model.name_or_path={model}",
        "model.extra_trainable_modules=[]",
        f"dataset={'tweets_lm' if mode == 'classify' else 'tweets_gen'}",
        "dataset.source=csv",
        "dataset.name=null",
        f"dataset.train_file={tweet_files['train']}",
        f"dataset.validation_file={tweet_files['validation']}",
        f"dataset.test_file={tweet_files['test']}",
        "dataset.text_column=tweet",
        "dataset.label_column=mood",
        "dataset.max_length=24",
        "dataset.max_train_samples=96",
        "dataset.max_eval_samples=40",
        "dataset.max_test_samples=40",
        "prompt_encoder.num_virtual_tokens=4",
        "prompt_encoder.encoder_hidden_size=16",
        "trainer=smoke",
        "trainer.per_device_train_batch_size=16",
        "num_threads=1",
        f"paths.root={out}",
    ]


# -- generation metrics (ptexp.tasks.generation) -------------------------------------------


def test_generation_metrics_by_hand() -> None:
    assert exact_match(["Great ", "ok"], ["great", "okay"]) == 0.5
    scores = rouge(["the cats sat", "好的 谢谢"], ["the cat sat", "好的"], ["rouge1", "rougeL"])
    # stemmed: cats = cat; CJK characters are tokens (rouge-score alone would score them 0)
    assert scores["rougeL"] == pytest.approx((1.0 + 2 * 1 * 0.5 / 1.5) / 2)
    assert bleu(["a b c d e"], ["a b c d e"]) == pytest.approx(100.0)
    assert perplexity(2 * 3.0, 3) == pytest.approx(7.389056, rel=1e-6)
    assert generation_metrics(["x"], ["y"], ["exact_match", "rougeL"]) == {"exact_match": 0.0, "rougeL": 0.0}
    base = most_frequent_target(["pos", "neg", "Neg"], {"validation": ["neg", "pos"], "test": ["neg"]})
    assert base["validation"] == {"exact_match": 0.5, "rougeL": 0.5} and base["test"]["exact_match"] == 1.0
    with pytest.raises(ValueError, match="2 predictions for 1"):
        exact_match(["a", "b"], ["a"])


# -- options and bad input, before any model loads -----------------------------------------


def _check_job(overrides: list[str]):
    from ptexp.validate import check_job

    return check_job(compose_cfg(overrides))


def test_encoder_only_model_is_refused_before_loading(tiny_bert, tweet_files, tmp_path) -> None:
    overrides = [*lm_overrides(tiny_bert, tweet_files, tmp_path), "dataset.max_length=16"]
    with pytest.raises(ConfigError) as err:
        _check_job(overrides)
    message = str(err.value)
    assert f"model.name_or_path='{tiny_bert}'" in message and "'bert'" in message
    assert "decoder-only" in message and "model=gpt2" in message and "SEQ_CLS" in message
    # the embedded MiniLM (a BERT) too
    with pytest.raises(ConfigError, match="embedded:all-MiniLM-L6-v2.*decoder-only"):
        _check_job([o for o in overrides if not o.startswith("model.name_or_path")])


def test_cli_refuses_an_encoder_only_model_with_exit_2_and_no_run_folder(tweet_files, tmp_path) -> None:
    args = ["dataset=tweets_lm", "dataset.max_train_samples=50", "logger=none"]  # model=minilm, the default
    proc = subprocess.run(
        [sys.executable, "-m", "ptexp.train", *args],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "decoder-only" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("decoder-only language model") == 1
    assert not list((tmp_path / "outputs").rglob("config.yaml"))


def test_prompt_answer_and_prompts_beyond_the_positions_are_refused(tiny_gpt2, tweet_files, tmp_path) -> None:
    # 128 positions: 100 of text + 4 virtual + BOS + "Sentiment:" + 32 of target do not fit
    overrides = [*lm_overrides(tiny_gpt2, tweet_files, tmp_path, "generate"), "dataset.max_length=100"]
    with pytest.raises(ConfigError) as err:
        _check_job([*overrides, "dataset.task_options.max_target_length=32"])
    message = str(err.value)
    assert "max_target_length=32" in message and "128 positions" in message and "Lower dataset.max_length" in message
    _check_job([*overrides, "dataset.task_options.max_target_length=8"])  # fits
    with pytest.raises(ConfigError, match="max_new_tokens=40"):  # generating past the positions
        _check_job([*overrides, "dataset.task_options.max_target_length=8", "+dataset.task_options.max_new_tokens=40"])


def test_target_longer_than_max_target_length_is_named(tiny_gpt2) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2)
    encode = CausalLMEncoder(CausalLMOptions(mode="generate", max_target_length=4))
    with pytest.raises(ConfigError, match=r"'one two three four five' is 6 tokens.*max_target_length=4"):
        encode(tokenizer, {"text": ["hi"], "label": ["one two three four five"]}, 16)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ("dataset.task_options.mode=classfy", "mode='classfy'.*classify.*generate"),
        ("dataset.task_options.label_words.positive=terrible", "'negative' and 'positive' the same word"),
        ("dataset.task_options.prompt='It was'", r"must hold \{text\}"),
        ("+dataset.task_options.label_word=x", "closest: label_words"),
    ],
)
def test_bad_task_options_are_refused(tiny_gpt2, tweet_files, tmp_path, options, match) -> None:
    with pytest.raises(ConfigError, match=match):
        _check_job([*lm_overrides(tiny_gpt2, tweet_files, tmp_path), options])


def test_methods_that_cannot_serve_the_task_are_refused(tiny_gpt2, tweet_files, tmp_path) -> None:
    with pytest.raises(ConfigError, match="linear_probe trains a classification head.*p_tuning"):
        _check_job([*lm_overrides(tiny_gpt2, tweet_files, tmp_path), "method=linear_probe"])
    with pytest.raises(ConfigError, match="p_tuning_template.*mode=generate"):
        _check_job([*lm_overrides(tiny_gpt2, tweet_files, tmp_path, "generate"), "method=p_tuning_template"])
    with pytest.raises(ConfigError, match="metric_for_best_model='accuracy'.*rougeL"):
        _check_job(
            [*lm_overrides(tiny_gpt2, tweet_files, tmp_path, "generate"), "trainer.metric_for_best_model=accuracy"]
        )


def test_default_selection_metric_follows_the_mode(tiny_gpt2, tweet_files, tmp_path) -> None:
    args, _ = _check_job(lm_overrides(tiny_gpt2, tweet_files, tmp_path, "generate"))
    assert args.metric_for_best_model == "rougeL" and args.greater_is_better
    args, _ = _check_job(lm_overrides(tiny_gpt2, tweet_files, tmp_path))
    assert args.metric_for_best_model == "accuracy"
    assert get_task("CAUSAL_LM").greater_is_better("perplexity") is False


def test_data_errors_name_the_column_and_the_labels(tiny_gpt2, tweet_files, tmp_path) -> None:
    from ptexp.data import load_splits

    cfg = compose_cfg([*lm_overrides(tiny_gpt2, tweet_files, tmp_path, "generate"), "dataset.label_column=answer"])
    with pytest.raises(ConfigError, match="dataset.label_column='answer' is not a column.*'tweet', 'mood'"):
        load_splits(cfg.dataset)
    cfg = compose_cfg(
        [
            *lm_overrides(tiny_gpt2, tweet_files, tmp_path),
            "~dataset.task_options.label_words.neutral",
            "~dataset.task_options.label_words.positive",
        ]
    )
    with pytest.raises(ConfigError, match=r"no word for the label\(s\) \['neutral', 'positive'\]"):
        load_splits(cfg.dataset)


# -- encoding, loss on the target only, scores and generation --------------------------------


def _tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _p_tuning(model_path: Path, seed: int = 0):
    """A P-tuning CAUSAL_LM model whose prompts are far from their initialisation (so they
    change the continuation)."""
    from peft import PromptEncoderConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=4, encoder_hidden_size=16)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_path), config).eval()
    with torch.no_grad():
        for p in model.prompt_encoder.parameters():
            p.add_(torch.randn_like(p) * 2)
    return model


def _batch(tokenizer, texts: list[str], targets: list[str] | None = None, mode: str = "generate"):
    from ptexp.tasks.causal_lm import CausalLMCollator, pad_id

    batch = {"text": texts, **({"label": targets} if targets else {})}
    enc = CausalLMEncoder(CausalLMOptions(mode=mode, prompt="{text} Sentiment:"))(tokenizer, batch, 32)
    rows = [{k: enc[k][i] for k in enc} for i in range(len(texts))]
    return CausalLMCollator(pad_id(tokenizer))(rows)


def test_encoding_puts_the_loss_on_the_target_only(tiny_gpt2) -> None:
    tokenizer = _tokenizer(tiny_gpt2)
    batch = _batch(tokenizer, ["the flight was late", "thanks"], ["negative", "positive"])
    first = batch["input_ids"][0].tolist()
    assert first[0] == tokenizer.cls_token_id  # the tokenizer's own BOS (not GPT-2's: its BOS is its EOS)
    target = tokenizer(" negative", add_special_tokens=False)["input_ids"] + [tokenizer.sep_token_id]
    labels = batch["labels"][0].tolist()
    prompt_length = labels.index(target[0])
    assert labels[:prompt_length] == [-100] * prompt_length and labels[prompt_length:] == target
    assert first[prompt_length:] == target
    assert tokenizer.decode(first[1:prompt_length]) == "the flight was late sentiment :"
    short = batch["labels"][1].tolist()  # right padding: -100 after the target, mask 0
    assert short[-1] == -100 and batch["attention_mask"][1].tolist()[-1] == 0


def test_peft_prepends_ignored_labels_for_the_virtual_tokens(tiny_gpt2) -> None:
    """peft's own loss (labels passed through PeftModelForCausalLM, which prepends n x -100)
    equals the target-only loss computed by hand from the logits: no virtual token and no
    prompt token is trained towards anything."""
    model = _p_tuning(tiny_gpt2)
    batch = _batch(_tokenizer(tiny_gpt2), ["the flight was late", "thanks a lot"], ["negative", "positive"])
    with torch.no_grad():
        loss = model(**batch).loss
        nll, count = target_nll(model, batch)
    assert model(**batch).logits.shape[1] == batch["input_ids"].shape[1] + 4
    assert float(loss) == pytest.approx(float(nll.sum() / count.sum()), rel=1e-5)
    assert count.tolist() == [int((row != -100).sum()) for row in batch["labels"]]


def _manual_greedy(model, ids: list[int], steps: int) -> list[int]:
    """One unpadded row, one full forward per token: the reference continuation."""
    out = []
    seq = torch.tensor([ids])
    with torch.no_grad():
        for _ in range(steps):
            token = int(model(input_ids=seq, attention_mask=torch.ones_like(seq)).logits[0, -1].argmax())
            out.append(token)
            seq = torch.cat([seq, torch.tensor([[token]])], dim=1)
    return out


TEXTS = ["the flight was late again and nobody told us", "thanks", "lost my bag at the airport"]


def test_greedy_generation_equals_a_manual_loop_whatever_the_batch(tiny_gpt2) -> None:
    """Catches virtual tokens missing from generation (peft#2123, #2134) and padding that moves
    positions: batched, right-padded rows of different lengths continue exactly as each row
    alone does in a plain loop over forward(); the prompts do change the continuation."""
    from transformers import AutoModelForCausalLM

    tokenizer = _tokenizer(tiny_gpt2)
    model = _p_tuning(tiny_gpt2)
    batch = _batch(tokenizer, TEXTS)
    with torch.no_grad():
        generated = greedy_generate(model, batch["input_ids"], batch["attention_mask"], 6, None, 0)
    base = AutoModelForCausalLM.from_pretrained(tiny_gpt2).eval()
    differs = False
    for row, text in enumerate(TEXTS):
        ids = _batch(tokenizer, [text])["input_ids"][0].tolist()
        assert generated[row].tolist() == _manual_greedy(model, ids, 6), text
        differs |= generated[row].tolist() != _manual_greedy(base, ids, 6)
    assert differs, "the prompts never changed the continuation: they were not injected"


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="peft 0.21.2 + transformers 5.24: generate() with its KV cache does not continue as forward() does "
    "for P-tuning (peft#2123/#2134 family); ptexp generates with its own loop. XPASS = fixed upstream.",
)
def test_peft_generate_with_cache_equals_the_manual_loop(tiny_gpt2) -> None:
    tokenizer = _tokenizer(tiny_gpt2)
    model = _p_tuning(tiny_gpt2)
    for text in TEXTS:
        ids = _batch(tokenizer, [text])["input_ids"]
        with torch.no_grad():
            out = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False, pad_token_id=0
            )
        assert out[0, ids.shape[1] :].tolist() == _manual_greedy(model, ids[0].tolist(), 6), text


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="peft 0.21.2 drops position_ids for prompt methods, so a left-padded row's positions shift by its "
    "padding: why ptexp pads on the right and reads each row at its own last position. XPASS = fixed upstream.",
)
def test_peft_left_padding_keeps_a_rows_next_token_scores(tiny_gpt2) -> None:
    tokenizer = _tokenizer(tiny_gpt2)
    model = _p_tuning(tiny_gpt2)
    short, long = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in (TEXTS[1], TEXTS[0]))
    pad = len(long) - len(short)
    ids = torch.tensor([[0] * pad + short, long])
    mask = torch.tensor([[0] * pad + [1] * len(short), [1] * len(long)])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[0, -1]
        alone = model(input_ids=torch.tensor([short]), attention_mask=torch.ones(1, len(short))).logits[0, -1]
    assert torch.allclose(padded, alone, atol=1e-4)


def test_label_word_scores_are_summed_token_log_probs(tiny_gpt2) -> None:
    tokenizer = _tokenizer(tiny_gpt2)
    model = _p_tuning(tiny_gpt2)
    batch = _batch(tokenizer, TEXTS[:2], mode="classify")
    great, okay = (tokenizer(f" {w}", add_special_tokens=False)["input_ids"] for w in ("great", "okay"))
    multi = tokenizer(" quite terrible", add_special_tokens=False)["input_ids"]
    assert len(great) == len(okay) == 1 and len(multi) == 2
    with torch.no_grad():
        single = class_scores(model, batch["input_ids"], batch["attention_mask"], [great, okay], 0)
        mixed = class_scores(model, batch["input_ids"], batch["attention_mask"], [great, multi], 0)
        assert mixed[:, 0].tolist() == pytest.approx(single[:, 0].tolist(), abs=1e-5)
        for row, text in enumerate(TEXTS[:2]):
            ids = torch.tensor([_batch(tokenizer, [text], mode="classify")["input_ids"][0].tolist() + multi])
            logp = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].log_softmax(-1)
            end = logp.shape[0] - 2  # last prompt position predicts the first word token
            expected = float(logp[end - 1, multi[0]] + logp[end, multi[1]])
            assert float(mixed[row, 1]) == pytest.approx(expected, abs=1e-4)


# -- end to end --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classify_run(tiny_gpt2, tweet_files, tmp_path_factory) -> tuple[Path, dict]:
    from ptexp.run import run

    out = tmp_path_factory.mktemp("clm-classify")
    metrics = run(compose_cfg(lm_overrides(tiny_gpt2, tweet_files, out)), out / "run", overrides=["trainer=smoke"])
    return out / "run", metrics


@pytest.mark.slow
def test_classify_run_writes_metrics_predictions_and_wandb(classify_run) -> None:
    run_dir, metrics = classify_run
    for name in ("adapter/adapter_config.json", "trainable_state.safetensors", "predictions_test.jsonl", "run.json"):
        assert (run_dir / name).is_file(), name
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["task"] == "CAUSAL_LM" and saved["selection_metric"] == "accuracy"
    assert {"accuracy", "macro_f1", "loss"} <= set(saved["validation"]) and "accuracy" in saved["test"]
    assert saved["baseline"]["name"].startswith("majority class")
    rows = [json.loads(line) for line in (run_dir / "predictions_test.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and set(rows[0]["probs"]) == {"negative", "neutral", "positive"}
    assert sum(rows[0]["probs"].values()) == pytest.approx(1.0, abs=1e-4)
    assert sum(r["label"] == r["gold"] for r in rows) / 40 == pytest.approx(metrics["test"]["accuracy"])
    (wandb_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    record = read_run(wandb_file)
    assert record["config"]["dataset"]["task"] == "CAUSAL_LM"
    assert record["config"]["method_effective"]["task_type"] == "CAUSAL_LM"
    assert record["summary"]["final/test/accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert record["exit"] == 0


@pytest.mark.slow
def test_classify_predict_round_trip_and_cli(classify_run, tmp_path) -> None:
    from ptexp.predict import predict

    run_dir, _ = classify_run
    saved = [json.loads(line) for line in (run_dir / "predictions_test.jsonl").read_text().splitlines()][:12]
    again = predict(run_dir, [r["text"] for r in saved], batch_size=5)
    assert [r["label"] for r in again] == [r["label"] for r in saved]
    for mine, theirs in zip(again, saved):
        assert mine["probs"] == pytest.approx(theirs["probs"], abs=1e-4)
    proc = subprocess.run(
        [sys.executable, "-m", "ptexp.predict", str(run_dir), saved[0]["text"]],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\t")[0] == saved[0]["label"] and "positive=" in proc.stdout


@pytest.mark.slow
def test_fine_tuned_tiny_gpt2_scores_label_words_far_above_the_majority_class(tiny_gpt2, tweet_files, tmp_path) -> None:
    """No package ships causal-LM weights, so learning is shown from scratch: the random tiny
    GPT-2, fully fine-tuned for 2 epochs on 600 real tweets through label-word scores, beats
    always answering the majority class by far on 150 unseen tweets (measured: 0.633 vs 0.34)."""
    from ptexp.run import run

    overrides = [
        *lm_overrides(tiny_gpt2, tweet_files, tmp_path),
        "method=full_finetune",
        "trainer.learning_rate=3e-3",
        "dataset.max_train_samples=null",
        "dataset.max_eval_samples=null",
        "dataset.max_test_samples=null",
        "logger=none",
    ]
    metrics = run(compose_cfg(overrides), tmp_path / "run")
    floor = metrics["baseline"]["test"]["accuracy"]
    assert metrics["num_examples"]["test"] == 150 and floor < 0.4
    assert metrics["test"]["accuracy"] > floor + 0.15, (metrics["test"], metrics["baseline"])
    assert metrics["test"]["macro_f1"] > metrics["baseline"]["test"]["macro_f1"] + 0.3


def _resume_matches(overrides: list[str], root: Path, keys: tuple[str, ...]) -> None:
    """As tests.conftest.assert_resume_matches, for this task's metrics: a fresh run folder
    restarted from the uninterrupted run's first checkpoint ends with the same figures."""
    import shutil

    from ptexp.run import run

    overrides = [*overrides, "keep_checkpoints=true", "trainer.save_total_limit=5", "logger=none"]
    whole = run(compose_cfg(overrides), root / "whole")
    first = min((root / "whole" / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    shutil.copytree(first, root / "resumed" / "checkpoints" / first.name)
    resumed = run(compose_cfg(overrides), root / "resumed")
    assert resumed["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-6)
    for split in ("validation", "test"):
        for key in (*keys, "loss"):
            assert resumed[split][key] == pytest.approx(whole[split][key], abs=1e-6), (split, key)


@pytest.mark.slow
def test_classify_resumes_to_the_same_figures(tiny_gpt2, tweet_files, tmp_path) -> None:
    _resume_matches(
        [*lm_overrides(tiny_gpt2, tweet_files, tmp_path), "dataset.max_train_samples=48"],
        tmp_path,
        ("accuracy", "macro_f1"),
    )


@pytest.mark.slow
def test_generate_resumes_to_the_same_figures(tiny_gpt2, tweet_files, tmp_path) -> None:
    _resume_matches(
        [*lm_overrides(tiny_gpt2, tweet_files, tmp_path, "generate"), "dataset.max_train_samples=48"],
        tmp_path,
        ("exact_match", "rougeL", "perplexity"),
    )


@pytest.mark.slow
def test_generate_run_predicts_back_what_it_recorded(tiny_gpt2, tweet_files, tmp_path) -> None:
    from ptexp.predict import predict
    from ptexp.run import run

    overrides = [*lm_overrides(tiny_gpt2, tweet_files, tmp_path, "generate"), "logger=none"]
    metrics = run(compose_cfg(overrides), tmp_path / "run")
    assert metrics["selection_metric"] == "rougeL" and metrics["test"]["perplexity"] > 1
    assert metrics["baseline"]["name"].startswith("most frequent target")
    assert set(metrics["baseline"]["test"]) == {"exact_match", "rougeL"}
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions_test.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and {"text", "gold", "output"} <= set(rows[0])
    again = predict(tmp_path / "run", [r["text"] for r in rows[:10]], batch_size=4)
    assert [r["output"] for r in again] == [r["output"] for r in rows[:10]]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"tweet": r["text"], "mood": r["gold"]}) for r in rows[:3]))
    proc = subprocess.run(
        [sys.executable, "-m", "ptexp.predict", str(tmp_path / "run"), "--file", str(src)],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = [json.loads(line) for line in (tmp_path / "in.predictions.jsonl").read_text().splitlines()]
    assert [w["predicted_output"] for w in written] == [r["output"] for r in rows[:3]]
    assert [w["mood"] for w in written] == [r["gold"] for r in rows[:3]]  # the gold column kept as given


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "mode"),
    [
        ("p_tuning_template", "classify"),
        ("prompt_tuning", "generate"),
        ("prefix_tuning", "classify"),
        ("prefix_tuning", "generate"),
        ("lora", "classify"),
        ("full_finetune", "generate"),
    ],
)
def test_every_method_trains_and_predicts(tiny_gpt2, tweet_files, tmp_path, method, mode) -> None:
    """Each method that can serve the task runs a step, and its saved artifact predicts what
    the run recorded (the prompt, prefix, LoRA or weights are really restored)."""
    from ptexp.predict import predict
    from ptexp.run import run

    overrides = [
        *lm_overrides(tiny_gpt2, tweet_files, tmp_path, mode),
        f"method={method}",
        "dataset.max_train_samples=32",
        "dataset.max_test_samples=8",
        "trainer.num_train_epochs=1",
        "logger=none",
    ]
    if method == "p_tuning_template":
        overrides.append("method.template='[P:2] {text} [P:2]'")
    if method == "prompt_tuning":
        overrides.append("method.init=random")
    run(compose_cfg(overrides), tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions_test.jsonl").read_text().splitlines()]
    again = predict(tmp_path / "run", [r["text"] for r in rows])
    if mode == "classify":
        for mine, theirs in zip(again, rows):
            assert mine["probs"] == pytest.approx(theirs["probs"], abs=1e-4)
    else:
        assert [r["output"] for r in again] == [r["output"] for r in rows]


@pytest.mark.slow
def test_two_by_two_sweep_tables_rouge(tiny_gpt2, tweet_files, tmp_path) -> None:
    args = [
        *lm_overrides(tiny_gpt2, tweet_files, tmp_path / "outputs", "generate"),
        "dataset.max_train_samples=32",
        "dataset.max_eval_samples=16",
        "dataset.max_test_samples=16",
        "trainer.num_train_epochs=1",
        "sweep_name=lm",
        "prompt_encoder.num_virtual_tokens=2,4",
        "seed=1,2",
    ]
    proc = run_sweep(args, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = tmp_path / "outputs" / "multiruns" / "lm" / "report"
    table = (report / "ablation.md").read_text()
    assert "Validation and test rougeL" in table and "num_virtual_tokens" in table, table
    results = (report / "results.csv").read_text().splitlines()[0].split(",")
    assert {"validation.rougeL", "test.exact_match", "test.perplexity", "baseline.name"} <= set(results)
    rows = [line for line in table.splitlines() if line.startswith("|") and "---" not in line][1:]
    assert sum(line.rstrip(" |").endswith("2") for line in rows) == 2  # two cells, two seeds each

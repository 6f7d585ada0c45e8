"""TOKEN_CLS (named-entity recognition, BIO tags): the data contract, sub-word alignment, the
virtual-token offset, entity-level metrics, and runs end to end on a tiny BERT.

The tiny model learns a small context-dependent NER set made here: the same names are people
in some sentences and places in others ("I met Jordan ." / "we flew to Jordan ."), so the
baseline (each word's most frequent tag in train) gets about half the entities and only a
model that reads the context gets them all. Real data (tests/data/wnut17, CC BY 4.0) is read
and checked too.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ptexp.errors import ConfigError
from tests.conftest import compose_cfg, run_sweep, subprocess_env
from tests.wandb_records import read_run

WNUT = Path(__file__).parent / "data" / "wnut17"
NAMES = (
    "Jordan Paris Georgia Victoria Austin Sydney Florence Chelsea Madison Dallas "
    "Phoenix Savannah Charlotte Denver Houston Lincoln Memphis Eugene Troy Regina"
).split()
SURNAMES = "Smith Brown Lee Clark Young King Wright Hill Green Adams".split()
PERSON = ["yesterday I met {X} at the party", "{X} said hello to me", "my friend {X} is funny", "I called {X}"]
PLACE = ["we flew to {X} last week", "I live in {X} now", "the weather in {X} is nice", "she moved to {X}"]
OPENERS = ["", "well", "honestly", "so", "today", "oh"]
CLOSERS = [".", "!", "again .", "... really", "lol", ""]


def context_ner(count: int, seed: int) -> list[dict[str, list[str]]]:
    """Unique sentences; a name is B-person (people may have a surname: I-person) or
    B-location by its context only."""
    rng = random.Random(seed)
    seen: set[str] = set()
    rows = []
    while len(rows) < count:
        kind = rng.choice(["person", "location"])
        entity = [rng.choice(NAMES)] + ([rng.choice(SURNAMES)] if kind == "person" and rng.random() < 0.5 else [])
        template = f"{rng.choice(OPENERS)} {rng.choice(PERSON if kind == 'person' else PLACE)} {rng.choice(CLOSERS)}"
        words, tags = [], []
        for word in template.split():
            if word == "{X}":
                words += entity
                tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(entity) - 1)
            else:
                words.append(word)
                tags.append("O")
        if " ".join(words) not in seen:
            seen.add(" ".join(words))
            rows.append({"tokens": words, "ner_tags": tags})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def ner_files(tmp_path_factory) -> dict[str, Path]:
    rows = context_ner(600, seed=0)
    folder = tmp_path_factory.mktemp("ner")
    return {
        "train": write_jsonl(folder / "train.jsonl", rows[:400]),
        "validation": write_jsonl(folder / "dev.jsonl", rows[400:500]),
        "test": write_jsonl(folder / "test.jsonl", rows[500:]),
    }


def ner_overrides(tiny_bert: Path, files: dict[str, Path], out: Path) -> list[str]:
    return [
        f"model.name_or_path={tiny_bert}",
        "model.extra_trainable_modules=[]",
        "dataset=ner",
        f"dataset.train_file={files['train']}",
        f"dataset.validation_file={files['validation']}",
        f"dataset.test_file={files['test']}",
        "dataset.max_length=32",
        "prompt_encoder.num_virtual_tokens=4",
        "prompt_encoder.encoder_hidden_size=16",
        "trainer=smoke",
        "trainer.per_device_train_batch_size=16",
        "num_threads=1",
        f"paths.root={out}",
    ]


def dataset_cfg(*overrides: str):
    return compose_cfg(["dataset=ner", *overrides]).dataset


def saved_predictions(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "predictions_test.jsonl").read_text().splitlines()]


# -- alignment, offsets and metrics (no training) -------------------------------------------


def test_first_sub_word_carries_the_tag_the_rest_are_ignored() -> None:
    from transformers import AutoTokenizer

    from ptexp.embedded import resolve_model_path
    from ptexp.tasks import get_task

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("embedded:all-MiniLM-L6-v2"))
    task = get_task("TOKEN_CLS")
    words = ["Barack", "Obama", "visited", "Ouagadougou"]
    enc = task.encode(tokenizer, {"text": [words], "label": [[1, 2, 0, 3]]}, 32)
    pieces = tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
    labels = enc["labels"][0]
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]" and labels[0] == labels[-1] == -100
    word_ids = enc.word_ids(0)
    for word, tag in enumerate([1, 2, 0, 3]):
        positions = [i for i, w in enumerate(word_ids) if w == word]
        assert labels[positions[0]] == tag
        assert all(labels[i] == -100 for i in positions[1:])
    assert len([p for p in pieces if p.startswith("##")]) >= 1  # precondition: a word split into sub-words
    # A whitespace-separated string is the same words; without tags each word start is marked 0.
    again = task.encode(tokenizer, {"text": [" ".join(words)]}, 32)
    assert again["input_ids"][0] == enc["input_ids"][0]
    assert [x != -100 for x in again["labels"][0]] == [x != -100 for x in labels]
    truncated = task.encode(tokenizer, {"text": [words]}, 4)["labels"][0]
    assert len(truncated) == 4 and sum(x != -100 for x in truncated) == 2  # [CLS] barack obama [SEP]


def test_template_prompts_and_anchor_words_get_no_label() -> None:
    """p_tuning_template places prompts (and anchor words) inside the input: those positions
    carry -100, the words keep their tags in order."""
    from transformers import AutoTokenizer

    from ptexp.embedded import resolve_model_path
    from ptexp.methods.p_tuning_template import PLACEHOLDER, TemplateEncoder, parse_template
    from ptexp.tasks import get_task

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("embedded:all-MiniLM-L6-v2"))
    task = get_task("TOKEN_CLS")
    batch = {"text": [["Jo", "flew", "to", "Ouagadougou"]], "label": [[3, 0, 0, 1]]}
    plain = task.encode(tokenizer, batch, 32)
    placed = TemplateEncoder(parse_template("[P:2] {text} [P:1] names:"), task.encode)(tokenizer, batch, 32)
    ids, labels = placed["input_ids"][0], placed["labels"][0]
    assert len(ids) == len(labels) == len(plain["input_ids"][0]) + 3 + len(tokenizer.tokenize("names:"))
    assert ids[:2] == [PLACEHOLDER] * 2 and labels[:2] == [-100, -100]
    assert all(label == -100 for i, label in zip(ids, labels) if i == PLACEHOLDER)
    assert [x for x in labels if x != -100] == [3, 0, 0, 1]
    assert labels[2 : 2 + len(plain["labels"][0])] == plain["labels"][0]


def test_labels_are_padded_by_the_virtual_tokens_peft_prepends(tiny_bert) -> None:
    """peft#1974: P-tuning's logits are n longer than the labels it passes on. The Trainer's
    collator pads the labels on the left by n (prefix tuning and LoRA: 0), so the loss runs."""
    import torch
    from transformers import AutoTokenizer

    from ptexp.modeling import build_model
    from ptexp.tasks import get_task
    from ptexp.tasks.token_cls import LeftPadLabels, prepended_positions

    task = get_task("TOKEN_CLS")
    names = ["O", "B-person", "I-person"]
    expected = {"p_tuning": 4, "prompt_tuning": 6, "prefix_tuning": 0, "lora": 0, "linear_probe": 0}
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    enc = task.encode(tokenizer, {"text": [["I", "met", "Jordan"], ["hi"]], "label": [[0, 0, 1], [0]]}, 16)
    features = [{k: enc[k][i] for k in enc.keys()} for i in range(2)]
    for method, n in expected.items():
        overrides = [f"model.name_or_path={tiny_bert}", "model.extra_trainable_modules=[]", "dataset=ner"]
        overrides += ["prompt_encoder.num_virtual_tokens=4", f"method={method}"]
        overrides += ["method.num_virtual_tokens=6"] if method in ("prompt_tuning", "prefix_tuning") else []
        cfg = compose_cfg([*overrides, "dataset.train_file=x"])
        _, model = build_model(cfg, task, names)
        assert prepended_positions(model) == n, method
        batch = LeftPadLabels(task.collator(tokenizer), n)(features)
        out = model(**batch)
        assert out.logits.shape[1] == batch["labels"].shape[1] == batch["input_ids"].shape[1] + n
        assert torch.isfinite(out.loss)
        assert (batch["labels"][:, :n] == -100).all()


def test_metrics_are_seqeval_entity_scores_on_words_only() -> None:
    import numpy as np
    from seqeval.metrics import f1_score
    from transformers import EvalPrediction

    from ptexp.tasks import get_task

    names = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    compute = get_task("TOKEN_CLS").metrics_function(None, names)
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-LOC"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["I-LOC", "B-LOC"]]  # an I- after O opens an entity, as in seqeval
    index = {n: i for i, n in enumerate(names)}
    # Positions as a prepend method leaves them: 2 virtual tokens, [CLS], a continuation sub-word, padding.
    labels = np.full((2, 12), -100)
    logits = np.zeros((2, 12, len(names)))
    for row, (g, p) in enumerate(zip(gold, pred)):
        for word, (gt, pt) in enumerate(zip(g, p)):
            labels[row, 3 + 2 * word] = index[gt]
            logits[row, 3 + 2 * word, index[pt]] = 5.0
        logits[row, 4, index["B-PER"]] = 9.0  # a continuation sub-word: never counted
    scores = compute(EvalPrediction(predictions=logits, label_ids=labels))
    assert scores["f1"] == pytest.approx(f1_score(gold, pred))
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["accuracy"] == pytest.approx(4 / 6)


# -- the data contract -----------------------------------------------------------------------


def test_lists_and_whitespace_strings_read_alike_and_the_vocabulary_comes_from_the_data(ner_files, tmp_path) -> None:
    from ptexp.data import load_splits
    from tests.conftest import write_table

    rows = [json.loads(line) for line in ner_files["train"].read_text().splitlines()][:50]
    tsv = write_table(
        tmp_path / "train.tsv", [{"words": " ".join(r["tokens"]), "tags": " ".join(r["ner_tags"])} for r in rows], "\t"
    )
    from_json = load_splits(dataset_cfg(f"dataset.train_file={ner_files['train']}", "dataset.max_train_samples=null"))
    from_tsv = load_splits(
        dataset_cfg(
            f"dataset.train_file={tsv}", "dataset.source=csv", "dataset.text_column=words", "dataset.label_column=tags"
        )
    )
    assert from_json.label_names == from_tsv.label_names == ["O", "B-location", "I-location", "B-person", "I-person"]
    merged = {tuple(w): t for s in from_json.splits.values() for w, t in zip(s["text"], s["label"])}
    for split in from_tsv.splits.values():
        for words, tags in zip(split["text"], split["label"]):
            assert merged[tuple(words)] == tags
    fixed = ["O", "B-person", "I-person", "B-location", "I-location", "B-misc", "I-misc"]
    chosen = load_splits(dataset_cfg(f"dataset.train_file={ner_files['train']}", f"dataset.label_names={fixed}"))
    assert chosen.label_names == fixed


def test_tags_stored_as_class_label_ids_read_as_their_names() -> None:
    """The hub's NER sets (wnut_17, conll2003) store tags as ids of a ClassLabel."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value

    from ptexp.tasks import get_task

    features = Features({"text": Sequence(Value("string")), "label": Sequence(ClassLabel(names=["O", "B-x", "I-x"]))})
    train = Dataset.from_dict({"text": [["a", "b", "c"]], "label": [[1, 2, 0]]}, features=features)
    splits, names = get_task("TOKEN_CLS").encode_labels(
        DatasetDict({"train": train}), dataset_cfg("dataset.train_file=x"), {"train": "the hub's train split"}
    )
    assert names == ["O", "B-x", "I-x"] and splits["train"]["label"] == [[1, 2, 0]]


def test_wnut17_slice_reads_with_its_six_types() -> None:
    from ptexp.data import load_splits

    cfg = compose_cfg(["dataset=wnut17", *(f"dataset.{s}_file={WNUT / f}" for s, f in SPLIT_FILES.items())]).dataset
    data = load_splits(cfg)
    kinds = ["corporation", "creative-work", "group", "location", "person", "product"]
    assert data.label_names == ["O", *(f"{p}-{k}" for k in kinds for p in "BI")]
    assert {s: len(d) for s, d in data.splits.items()} == {"train": 1444, "validation": 1006, "test": 1280}
    assert "CC BY 4.0" in (WNUT / "README.md").read_text()


SPLIT_FILES = {"train": "train.jsonl", "validation": "dev.jsonl", "test": "test.jsonl"}


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"tokens": ["a", "b", "c"], "ner_tags": ["O", "O"]}, ["row 3 has 3 words", "2 tags", "bad.jsonl"]),
        ({"tokens": ["Jo", "ran"], "ner_tags": ["PER", "O"]}, ["'PER'", "not a BIO tag", "bad.jsonl", "row 3"]),
        ({"tokens": ["Jo", "ran"], "ner_tags": ["S-PER", "O"]}, ["'S-PER'", "IOBES"]),
    ],
)
def test_a_row_that_breaks_the_contract_is_named(tmp_path, row, expected) -> None:
    from ptexp.data import load_splits

    good = {"tokens": ["I", "met", "Jo"], "ner_tags": ["O", "O", "B-person"]}
    path = write_jsonl(tmp_path / "bad.jsonl", [good, {**good, "tokens": ["hi", "Jo", "!"]}, row])
    with pytest.raises(ConfigError) as err:
        load_splits(dataset_cfg(f"dataset.train_file={path}"))
    for part in expected:
        assert part in str(err.value)


def test_conll_files_convert_to_the_json_lines_the_task_reads(tmp_path) -> None:
    """WNUT-17's layout: word<TAB>tag lines, a blank or tab-only line between sentences."""
    from ptexp.data import load_splits

    conll = tmp_path / "train.conll"
    conll.write_text("-DOCSTART-\tO\n\nI\tO\nmet\tO\nJo\tB-person\n\t\nin\tO\nOslo\tB-location\n\nhi\tO\n")
    out = tmp_path / "train.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "ptexp.tasks.token_cls", str(conll), str(out)], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "wrote 3 sentences" in proc.stdout, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [
        {"tokens": ["I", "met", "Jo"], "ner_tags": ["O", "O", "B-person"]},
        {"tokens": ["in", "Oslo"], "ner_tags": ["O", "B-location"]},
        {"tokens": ["hi"], "ner_tags": ["O"]},
    ]
    data = load_splits(dataset_cfg(f"dataset.train_file={out}", "dataset.validation_size=1", "dataset.test_size=1"))
    assert data.label_names == ["O", "B-location", "I-location", "B-person", "I-person"]


def test_label_names_missing_a_tag_and_only_o_tags_are_refused(tmp_path, ner_files) -> None:
    from ptexp.data import load_splits

    with pytest.raises(ConfigError, match=r"dataset.label_names lacks: \['B-person', 'I-person'\]"):
        load_splits(dataset_cfg(f"dataset.train_file={ner_files['train']}", "dataset.label_names=[O,B-location]"))
    flat = write_jsonl(tmp_path / "flat.jsonl", [{"tokens": ["a", "b"], "ner_tags": ["O", "O"]}] * 3)
    with pytest.raises(ConfigError, match="only 'O' tags"):
        load_splits(dataset_cfg(f"dataset.train_file={flat}", "dataset.deduplicate=false"))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["dataset.text_pair_column=tokens"], "has no second text"),
        (["dataset.label_names=[O,PER]"], "not BIO tags"),
        (["trainer.metric_for_best_model=macro_f1"], "not a metric dataset.task=TOKEN_CLS computes"),
    ],
)
def test_the_task_refuses_what_it_cannot_do_from_the_config_alone(overrides, expected) -> None:
    from ptexp.tasks import get_task

    with pytest.raises(ConfigError, match=expected):
        get_task("TOKEN_CLS").check(compose_cfg(["dataset=ner", "dataset.train_file=x", *overrides]))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["dataset.label_column=tags"], "dataset.label_column='tags' is not a column"),
        (["dataset.max_length=100"], "exceeds the 96 positions"),
    ],
)
def test_bad_input_is_refused_before_any_model_loads(tiny_bert, ner_files, tmp_path, overrides, expected) -> None:
    """The run's first stage (checks and data, no weights) refuses it and leaves no run folder."""
    from ptexp.run import prepare

    cfg = compose_cfg([*ner_overrides(tiny_bert, ner_files, tmp_path), "logger=none", *overrides])
    with pytest.raises(ConfigError, match=expected):
        prepare(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # a ptexp-train subprocess
def test_a_tag_not_in_bio_form_stops_the_cli_with_one_paragraph(tiny_bert, ner_files, tmp_path) -> None:
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"tokens": ["Jo", "ran"], "ner_tags": ["PER", "O"]}])
    out = tmp_path / "outputs"
    args = [*ner_overrides(tiny_bert, ner_files, out), f"dataset.train_file={bad}"]
    proc = subprocess.run(
        [sys.executable, "-m", "ptexp.train", *args], capture_output=True, text=True, env=subprocess_env(), timeout=300
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    message = [line for line in proc.stderr.splitlines() if "not a BIO tag" in line]
    assert len(message) == 1 and "'PER'" in message[0] and "bad.jsonl" in message[0]
    assert "Traceback" not in proc.stderr and "LOAD REPORT" not in proc.stderr
    assert not list(out.rglob("metrics.json")) and not list(out.rglob("config.yaml"))


# -- end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ner_run(tiny_bert, ner_files, tmp_path_factory) -> tuple[Path, dict]:
    from ptexp.run import run

    out = tmp_path_factory.mktemp("ner-run")
    metrics = run(compose_cfg(ner_overrides(tiny_bert, ner_files, out)), out / "run", overrides=["dataset=ner"])
    return out / "run", metrics


@pytest.mark.slow
def test_p_tuning_run_records_entity_metrics_baseline_and_spans(ner_run) -> None:
    run_dir, metrics = ner_run
    for name in ("adapter/adapter_model.safetensors", "trainable_state.safetensors", "metrics.json", "run.json"):
        assert (run_dir / name).is_file(), name
    assert metrics["task"] == "TOKEN_CLS" and metrics["selection_metric"] == "f1"
    assert {"f1", "precision", "recall", "accuracy", "loss"} <= set(metrics["validation"]) & set(metrics["test"])
    baseline = metrics["baseline"]
    assert baseline["name"] == "most frequent tag per word in train"
    # The names are ambiguous by design: the lookup gets about half of the entities.
    assert 0.3 < baseline["test"]["f1"] < 0.7
    # A frozen random backbone has little context to offer P-tuning; it still finds entities
    # (every-token-O scores 0). test_the_tiny_model_learns_the_context shows the ceiling.
    assert metrics["test"]["f1"] > 0.2
    records = saved_predictions(run_dir)
    assert len(records) == 100 and set(records[0]) == {"tokens", "gold", "entities", "tags"}
    for record in records:
        assert len(record["tags"]) == len(record["tokens"])
        for kind, start, end, text in record["gold"] + record["entities"]:
            assert kind in ("person", "location") and text == " ".join(record["tokens"][start : end + 1])
    assert json.loads((run_dir / "run.json").read_text())["labels"][0] == "O"


@pytest.mark.slow
def test_predict_round_trip_and_cli_print_entities(ner_run) -> None:
    from ptexp.predict import predict

    run_dir, _ = ner_run
    records = saved_predictions(run_dir)[:30]
    again = predict(run_dir, [" ".join(r["tokens"]) for r in records])
    assert [r["entities"] for r in again] == [r["entities"] for r in records]
    assert [r["tags"] for r in again] == [r["tags"] for r in records]
    texts = ["Barack Obama visited Paris", "we flew to Jordan last week"]
    proc = subprocess.run(
        [sys.executable, "-m", "ptexp.predict", str(run_dir), *texts],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [line.split("\t")[1] for line in lines] == texts
    expected = [r for r in predict(run_dir, texts)]
    for line, result in zip(lines, expected):
        spans = [f"{kind}: {text} [{start}-{end}]" for kind, start, end, text in result["entities"]]
        assert line.split("\t")[0] == (" | ".join(spans) or "(no entities)")
    assert "LOAD REPORT" not in proc.stderr


@pytest.mark.slow
def test_wandb_offline_run_holds_the_entity_metrics(ner_run) -> None:
    run_dir, metrics = ner_run
    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    record = read_run(path)
    assert record["run"].display_name == "dataset=ner" and record["exit"] == 0
    assert record["config"]["dataset"]["task"] == "TOKEN_CLS"
    assert record["config"]["labels"] == ["O", "B-location", "I-location", "B-person", "I-person"]
    assert record["summary"]["final/test/f1"] == pytest.approx(metrics["test"]["f1"])
    assert any("eval/f1" in h for h in record["history"])


@pytest.mark.slow
def test_resumed_run_ends_with_the_same_metrics(tiny_bert, ner_files, tmp_path) -> None:
    """Killed right after its first checkpoint (the folder as a kill leaves it), the run
    resumes to the uninterrupted run's train_loss and validation/test metrics."""
    from ptexp.run import run

    overrides = [*ner_overrides(tiny_bert, ner_files, tmp_path), "logger=none", "keep_checkpoints=true"]
    overrides += ["trainer.save_total_limit=5"]
    whole = run(compose_cfg(overrides), tmp_path / "whole")
    first = min((tmp_path / "whole" / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    shutil.copytree(first, tmp_path / "resumed" / "checkpoints" / first.name)
    resumed = run(compose_cfg(overrides), tmp_path / "resumed")
    assert resumed["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-6)
    for split in ("validation", "test"):
        for key in ("f1", "precision", "recall", "accuracy", "loss"):
            assert resumed[split][key] == pytest.approx(whole[split][key], abs=1e-6), (split, key)
    assert saved_predictions(tmp_path / "resumed") == saved_predictions(tmp_path / "whole")


@pytest.mark.slow
def test_the_tiny_model_learns_the_context(tiny_bert, ner_files, tmp_path) -> None:
    """Fine-tuned, the tiny encoder learns in seconds that the context decides the type,
    which the per-word lookup cannot know."""
    from ptexp.run import run

    overrides = [*ner_overrides(tiny_bert, ner_files, tmp_path), "logger=none", "method=full_finetune"]
    overrides += ["trainer.learning_rate=5e-3", "trainer.num_train_epochs=6", "trainer.per_device_train_batch_size=8"]
    metrics = run(compose_cfg(overrides), tmp_path / "run")
    floor = metrics["baseline"]["test"]["f1"]
    assert metrics["test"]["f1"] >= 0.9 and metrics["test"]["f1"] >= floor + 0.3, (metrics["test"], floor)


@pytest.mark.slow
@pytest.mark.parametrize(
    "method",
    [
        ["method=p_tuning_template", "method.template='[P:2] {text} [P:2]'"],
        ["method=prompt_tuning", "method.num_virtual_tokens=3"],
        ["method=prefix_tuning", "method.num_virtual_tokens=3"],
        ["method=full_finetune"],
        ["method=linear_probe"],
    ],
    ids=lambda m: m[0].removeprefix("method="),
)
def test_every_method_trains_saves_and_predicts_back(tiny_bert, ner_files, tmp_path, method) -> None:
    from ptexp.predict import predict
    from ptexp.run import run

    overrides = [*ner_overrides(tiny_bert, ner_files, tmp_path), "logger=none", "trainer.num_train_epochs=1", *method]
    metrics = run(compose_cfg(overrides), tmp_path / "run")
    assert metrics["test"]["accuracy"] > 0.5 and metrics["trainable_params"] > 0
    records = saved_predictions(tmp_path / "run")[:20]
    again = predict(tmp_path / "run", [" ".join(r["tokens"]) for r in records])
    assert [r["tags"] for r in again] == [r["tags"] for r in records]


@pytest.mark.slow
def test_a_2x2_sweep_tables_entity_f1(tiny_bert, ner_files, tmp_path) -> None:
    import pandas as pd

    out = tmp_path / "outputs"
    args = [*ner_overrides(tiny_bert, ner_files, out), "logger=none", "sweep_name=ner", "trainer.num_train_epochs=1"]
    args += ["method=lora,full_finetune", "trainer.learning_rate=1e-2,3e-2"]
    proc = run_sweep(args, tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = out / "multiruns" / "ner" / "report"
    results = pd.read_csv(report / "results.csv")
    assert len(results) == 4 and results["test.f1"].notna().all()
    tables = "".join(p.read_text() for p in report.glob("*.md"))
    assert "f1" in tables and "most frequent tag per word in train" in tables

"""Splits and labels: deterministic, stratified, named by the data."""

from __future__ import annotations

from collections import Counter

import pytest

from ptexp.data import load_splits
from tests.conftest import compose_cfg, write_table


def test_embedded_tweets_split_is_deterministic_and_stratified() -> None:
    cfg = compose_cfg(
        ["dataset.max_train_samples=null", "dataset.max_eval_samples=null", "dataset.max_test_samples=null"]
    )
    a = load_splits(cfg.dataset)
    b = load_splits(cfg.dataset)
    assert a.label_names == ["negative", "neutral", "positive"]
    sizes = {s: len(d) for s, d in a.splits.items()}
    total = sum(sizes.values())
    assert total > 35_000
    assert abs(sizes["test"] / total - 0.1) < 0.01 and abs(sizes["validation"] / total - 0.1) < 0.01
    for split in ("train", "validation", "test"):
        assert a.splits[split]["text"][:50] == b.splits[split]["text"][:50]
    shares = {s: Counter(d["label"]) for s, d in a.splits.items()}
    for label in range(3):
        fractions = [shares[s][label] / sizes[s] for s in shares]
        assert max(fractions) - min(fractions) < 0.01  # stratified
    assert not set(a.splits["test"]["text"][:2000]) & set(a.splits["train"]["text"])


def test_other_split_seed_changes_the_split() -> None:
    a = load_splits(compose_cfg().dataset)
    b = load_splits(compose_cfg(["dataset.split_seed=7"]).dataset)
    assert a.splits["test"]["text"][:20] != b.splits["test"]["text"][:20]


def test_max_samples_subsample_stratified() -> None:
    d = load_splits(compose_cfg(["dataset.max_train_samples=300"]).dataset).splits["train"]
    counts = Counter(d["label"])
    assert len(d) == 300 and min(counts.values()) > 40


def test_integer_labels_and_carved_splits(tmp_path, tweets_rows) -> None:
    ids = {"negative": 0, "neutral": 1, "positive": 2}
    rows = [{"sentence": r["tweet"], "y": ids[r["mood"]]} for r in tweets_rows]
    path = write_table(tmp_path / "all.csv", rows)
    cfg = compose_cfg(
        [
            "dataset=csv",
            f"dataset.train_file={path}",
            "dataset.text_column=sentence",
            "dataset.label_column=y",
            "dataset.validation_size=0.2",
            "dataset.test_size=0.2",
        ]
    ).dataset
    data = load_splits(cfg)
    assert data.label_names == ["0", "1", "2"]
    assert {s: len(d) for s, d in data.splits.items()} == {"train": 540, "validation": 180, "test": 180}


def test_label_names_fix_the_order(tmp_path, tweets_rows) -> None:
    path = write_table(tmp_path / "t.csv", tweets_rows)
    cfg = compose_cfg(
        [
            "dataset=csv",
            f"dataset.train_file={path}",
            "dataset.text_column=tweet",
            "dataset.label_column=mood",
            "dataset.label_names=[positive,neutral,negative]",
        ]
    ).dataset
    data = load_splits(cfg)
    assert data.label_names == ["positive", "neutral", "negative"]
    mood = {r["tweet"]: r["mood"] for r in tweets_rows}
    train = data.splits["train"]
    assert all(data.label_names[y] == mood[t] for t, y in zip(train["text"], train["label"]))


def test_sentence_pairs_and_jsonl(tmp_path, tweets_rows) -> None:
    import json

    path = tmp_path / "pairs.jsonl"
    path.write_text(
        "\n".join(json.dumps({"a": r["tweet"], "b": r["tweet"][::-1], "l": r["mood"]}) for r in tweets_rows)
    )
    cfg = compose_cfg(
        [
            "dataset=json",
            f"dataset.train_file={path}",
            "dataset.text_column=a",
            "dataset.text_pair_column=b",
            "dataset.label_column=l",
        ]
    ).dataset
    data = load_splits(cfg)
    assert set(data.splits["train"].column_names) == {"text", "text_pair", "label"}


def test_hub_loader_on_a_local_dataset_folder(tmp_path, tweets_rows) -> None:
    """source=hub runs the real datasets.load_dataset(name, subset) path; a local folder
    stands in for the hub here."""
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    write_table(folder / "train.csv", [{"sentence": r["tweet"], "label": r["mood"]} for r in tweets_rows[:600]])
    write_table(folder / "test.csv", [{"sentence": r["tweet"], "label": r["mood"]} for r in tweets_rows[600:]])
    cfg = compose_cfg(
        [
            "dataset=sst2",
            f"dataset.name={folder}",
            "dataset.subset=null",
            "dataset.test_split=test",
            "dataset.validation_size=100",
        ]
    ).dataset
    data = load_splits(cfg)
    assert {s: len(d) for s, d in data.splits.items()} == {"train": 500, "validation": 100, "test": 300}
    with pytest.raises(Exception, match="validation"):
        load_splits(compose_cfg(["dataset=sst2", f"dataset.name={folder}", "dataset.subset=null"]).dataset)

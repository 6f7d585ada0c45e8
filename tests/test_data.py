"""Splits and labels: deterministic, stratified, named by the data."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from ptexp.data import load_splits
from ptexp.errors import ConfigError
from tests.conftest import compose_cfg, subprocess_env, write_table


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


# --- data integrity: every row read, or an error naming the file and line ---------------------


def _clean(text: str) -> str:
    """A tweet as one TSV field: tabs and line breaks inside it become spaces."""
    return " ".join(text.replace("\t", " ").replace("\r", " ").replace("\n", " ").split())


def _csv_cfg(path, *extra: str):
    return compose_cfg(
        ["dataset=csv", f"dataset.train_file={path}", "dataset.text_column=tweet", "dataset.label_column=mood", *extra]
    ).dataset


def _total(data) -> int:
    return sum(len(d) for d in data.splits.values())


def test_tsv_with_an_unbalanced_quote_keeps_every_row(tmp_path, tweets_rows, caplog) -> None:
    """GLUE-style TSV: one example per line, quotes are text. pandas' quote processing merged
    the lines after a stray quote into one text (600 rows read as 560, no warning)."""
    rows = [(_clean(r["tweet"]).replace('"', ""), r["mood"]) for r in tweets_rows[:600]]
    rows[100] = ('"Worst flight ever, said my neighbour as we boarded', rows[100][1])
    path = tmp_path / "train.tsv"
    path.write_text("tweet\tmood\n" + "".join(f"{t}\t{m}\n" for t, m in rows), encoding="utf-8")
    caplog.set_level("INFO", logger="ptexp")
    data = load_splits(_csv_cfg(path, "dataset.deduplicate=false"))
    assert _total(data) == 600
    texts = {t for d in data.splits.values() for t in d["text"]}
    assert rows[100][0] in texts and rows[101][0] in texts
    assert "train.tsv: 600 rows" in caplog.text


def test_tsv_with_opt_in_quoting_that_merges_lines_fails(tmp_path, tweets_rows) -> None:
    """With +dataset.load_kwargs.quoting=0 the CSV parser honours the stray quote and joins
    lines; its own row count cannot see that, the merged field's line breaks can."""
    rows = [(_clean(r["tweet"]).replace('"', ""), r["mood"]) for r in tweets_rows[:300]]
    # A quote opened on line 52 and closed at the end of a text two lines later: every parsed
    # row still has two fields, three lines became one row.
    rows[50] = ('"Worst flight ever, said my neighbour', rows[50][1])
    rows[52] = (rows[52][0] + ' ... and that was it"', rows[52][1])
    path = tmp_path / "train.tsv"
    path.write_text("tweet\tmood\n" + "".join(f"{t}\t{m}\n" for t, m in rows), encoding="utf-8")
    with pytest.raises(ConfigError, match="train.tsv.*line break or a tab"):
        load_splits(_csv_cfg(path, "dataset.deduplicate=false", "+dataset.load_kwargs.quoting=0"))


def test_tsv_written_by_a_csv_writer_reads_back_exactly(tweet_files, tweets_rows) -> None:
    """Fields a csv/pandas writer quoted as a whole (quotes doubled inside, a carriage return
    inside) are unquoted, so such a TSV reads back as written."""
    cfg = compose_cfg(
        [
            "dataset=csv",
            f"dataset.train_file={tweet_files['train']}",
            f"dataset.validation_file={tweet_files['validation']}",
            f"dataset.test_file={tweet_files['test']}",
            "dataset.text_column=tweet",
            "dataset.label_column=mood",
        ]
    ).dataset
    data = load_splits(cfg)
    read = sorted(t for d in data.splits.values() for t in d["text"])
    assert read == sorted(r["tweet"] for r in tweets_rows)
    assert any('"' in t for t in read) and any("\r" in t for t in read)


def test_csv_with_an_unquoted_comma_fails_naming_file_and_line(tmp_path, tweets_rows) -> None:
    rows = [(_clean(r["tweet"]).replace(",", " ").replace('"', ""), r["mood"]) for r in tweets_rows[:300]]
    rows[50] = ("Delayed again, and again", rows[50][1])  # line 52: header + 50 rows before it
    path = tmp_path / "ragged.csv"
    path.write_text("tweet,mood\n" + "".join(f"{t},{m}\n" for t, m in rows), encoding="utf-8")
    expected = r"ragged\.csv.* 3 field\(s\) on line 52 but its header has 2 \(tweet, mood\)"
    with pytest.raises(ConfigError, match=expected):
        load_splits(_csv_cfg(path))


def test_csv_row_missing_a_field_fails_instead_of_being_dropped(tmp_path, tweets_rows) -> None:
    """pandas pads a short row with NaN, and the label filter then dropped it without a word."""
    rows = [f"{_clean(r['tweet']).replace(',', ' ').replace(chr(34), '')},{r['mood']}" for r in tweets_rows[:300]]
    rows[9] = _clean(tweets_rows[9]["tweet"]).replace(",", " ").replace('"', "")  # no label, no comma
    path = tmp_path / "short.csv"
    path.write_text("tweet,mood\n" + "\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"short\.csv.* 1 field\(s\) on line 11"):
        load_splits(_csv_cfg(path))


def test_ragged_csv_is_reported_once_by_the_cli(tmp_path, tweets_rows) -> None:
    rows = [(_clean(r["tweet"]).replace(",", " ").replace('"', ""), r["mood"]) for r in tweets_rows[:300]]
    rows[50] = ("Delayed again, and again", rows[50][1])
    path = tmp_path / "ragged.csv"
    path.write_text("tweet,mood\n" + "".join(f"{t},{m}\n" for t, m in rows), encoding="utf-8")
    args = [
        "dataset=csv",
        f"dataset.train_file={path}",
        "dataset.text_column=tweet",
        "dataset.label_column=mood",
        "logger=none",
        "trainer=smoke",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "ptexp.train", *args],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-3000:]
    assert output.count("on line 52") == 1, output
    assert "Traceback" not in output


def test_csv_with_a_quoted_multiline_field_is_read_as_one_row(tmp_path, tweets_rows, caplog) -> None:
    rows = [{"tweet": r["tweet"], "mood": r["mood"]} for r in tweets_rows[:300]]
    rows[7]["tweet"] = 'Landed at last,\nbags lost, crew great,\n"never again" they said'
    path = write_table(tmp_path / "quoted.csv", rows)
    caplog.set_level("INFO", logger="ptexp")
    data = load_splits(_csv_cfg(path))
    assert _total(data) == 300
    assert rows[7]["tweet"] in {t for d in data.splits.values() for t in d["text"]}
    assert "quoted.csv: 300 rows" in caplog.text


def test_jsonl_with_a_broken_line_fails_naming_it(tmp_path, tweets_rows) -> None:
    import json

    lines = [json.dumps({"tweet": r["tweet"], "mood": r["mood"]}) for r in tweets_rows[:200]]
    lines[4] = lines[4][:-5]  # cut off mid-object
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(lines) + "\n")
    cfg = compose_cfg(
        ["dataset=json", f"dataset.train_file={path}", "dataset.text_column=tweet", "dataset.label_column=mood"]
    ).dataset
    with pytest.raises(ConfigError, match=r"broken\.jsonl.*line 5"):
        load_splits(cfg)


def test_dropped_and_duplicate_rows_are_counted_in_the_log(tmp_path, tweets_rows, caplog) -> None:
    rows = [{"tweet": r["tweet"], "mood": r["mood"]} for r in tweets_rows[:300]]
    rows[3]["tweet"] = ""
    rows[4]["mood"] = ""
    rows[5]["tweet"] = "   "
    rows[10]["tweet"] = rows[11]["tweet"] = rows[12]["tweet"]
    path = write_table(tmp_path / "train.tsv", rows, "\t")
    caplog.set_level("INFO", logger="ptexp")
    data = load_splits(_csv_cfg(path))
    assert _total(data) == 300 - 3 - 2
    assert "dropped 3 rows of train.tsv with an empty text or label" in caplog.text
    assert "removed 2 duplicate texts from train.tsv" in caplog.text


def test_load_splits_does_not_repeat_the_source_checks(tmp_path, tweets_rows, monkeypatch) -> None:
    """check_sources runs once per run, in ptexp.validate.check_run; loading does not redo it."""
    import ptexp.data

    calls = []
    real = ptexp.data.check_sources
    monkeypatch.setattr(ptexp.data, "check_sources", lambda cfg: calls.append(cfg) or real(cfg))
    load_splits(_csv_cfg(write_table(tmp_path / "t.csv", tweets_rows[:300])))
    assert calls == []


def test_a_file_in_another_encoding_names_the_line_of_the_bad_byte(tmp_path, tweets_rows) -> None:
    rows = [(_clean(r["tweet"]), r["mood"]) for r in tweets_rows[:300]]
    text = "tweet\tmood\n" + "".join(f"{t}\t{m}\n" for t, m in rows[:40]) + "café au lait\tneutral\n"
    text += "".join(f"{t}\t{m}\n" for t, m in rows[40:])
    path = tmp_path / "train.tsv"
    path.write_bytes(text.encode("latin-1", errors="replace"))
    with pytest.raises(ConfigError, match="is not UTF-8 text .* on line 42"):
        load_splits(_csv_cfg(path))


def test_an_empty_csv_record_is_dropped_and_counted_not_called_a_merge(tmp_path, tweets_rows, caplog) -> None:
    rows = [(_clean(r["tweet"]).replace('"', "").replace(",", ";"), r["mood"]) for r in tweets_rows[:300]]
    path = tmp_path / "train.csv"
    path.write_text(
        "tweet,mood\n"
        + "".join(f"{t},{m}\n" for t, m in rows[:10])
        + ",\n"
        + "".join(f"{t},{m}\n" for t, m in rows[10:]),
        encoding="utf-8",
    )
    caplog.set_level("INFO", logger="ptexp")
    data = load_splits(_csv_cfg(path, "dataset.deduplicate=false"))
    assert _total(data) == 300
    assert "train.csv: 301 rows" in caplog.text and "dropped 1 row" in caplog.text

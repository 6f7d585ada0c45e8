"""ptexp-predict and the saved predictions on a sentence-pair run: pairs are first-class in
arguments, stdin and files, and a single text given to a pair run is an error, not a guess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ptexp.errors import ConfigError
from ptexp.predict import main, predict
from ptexp.run import run
from tests.conftest import compose_cfg, subprocess_env, tiny_overrides, write_table


@pytest.fixture(scope="module")
def pair_run(tiny_bert, pair_files, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pair-run")
    columns = ("dataset.text_column", "dataset.label_column")
    overrides = [o for o in tiny_overrides(tiny_bert, pair_files, out) if not o.startswith(columns)]
    overrides += [
        "dataset.text_column=first",
        "dataset.text_pair_column=second",
        "dataset.label_column=same_mood",
        "logger=none",
    ]
    run(compose_cfg(overrides), out / "run", overrides=overrides)
    return out / "run"


def _saved(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "predictions_test.jsonl").read_text().splitlines()]


def test_prediction_records_hold_both_texts(pair_run, pair_files) -> None:
    from ptexp.data import load_splits
    from ptexp.predict import read_run
    from ptexp.tasks import get_task

    cfg, labels = read_run(pair_run)
    test = load_splits(cfg.dataset).splits["test"]
    logits = np.log(np.tile([0.25, 0.75], (len(test), 1)))
    records = get_task("SEQ_CLS").prediction_records(test, logits, labels)
    assert [(r["text"], r["text_pair"]) for r in records] == list(zip(test["text"], test["text_pair"]))
    assert [r["gold"] for r in records] == [labels[g] for g in test["label"]]
    assert {r["label"] for r in records} == {labels[1]} and records[0]["probs"][labels[1]] == pytest.approx(0.75)
    # The run's own predictions_test.jsonl (ptexp.run writes these records).
    saved = _saved(pair_run)
    assert [(r["text"], r["text_pair"]) for r in saved] == [(r["text"], r["text_pair"]) for r in records]


def test_predict_pairs_from_arguments_stdin_and_file(pair_run, tmp_path, capsys) -> None:
    saved = _saved(pair_run)[:4]
    expected = [r["label"] for r in saved]
    # The Python API reproduces the run's own test predictions.
    again = predict(pair_run, [r["text"] for r in saved], [r["text_pair"] for r in saved])
    assert [r["label"] for r in again] == expected
    for mine, theirs in zip(again, saved):
        assert mine["probs"] == pytest.approx(theirs["probs"], abs=1e-4)

    # Arguments: first<TAB>second, or joined by --sep.
    assert main([str(pair_run), *(f"{r['text']}\t{r['text_pair']}" for r in saved)]) == 0
    assert [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()] == expected
    assert main([str(pair_run), "--sep", " ||| ", *(f"{r['text']} ||| {r['text_pair']}" for r in saved)]) == 0
    assert [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()] == expected

    # A file with both columns: the input rows come back with their predictions.
    src = tmp_path / "pairs.jsonl"
    src.write_text(
        "\n".join(
            json.dumps({"id": i, "first": r["text"], "second": r["text_pair"], "label": r["gold"]})
            for i, r in enumerate(saved)
        )
    )
    assert main([str(pair_run), "--file", str(src)]) == 0
    rows = [json.loads(line) for line in (tmp_path / "pairs.predictions.jsonl").read_text().splitlines()]
    assert [r["predicted_label"] for r in rows] == expected
    assert [r["label"] for r in rows] == [r["gold"] for r in saved]  # the input's gold column survives
    assert [(r["id"], r["second"]) for r in rows] == [(i, r["text_pair"]) for i, r in enumerate(saved)]

    # Other column names, given on the command line.
    renamed = write_table(tmp_path / "renamed.tsv", [{"a": r["text"], "b": r["text_pair"]} for r in saved], "\t")
    assert main([str(pair_run), "--file", str(renamed), "--text-column", "a", "--text-pair-column", "b"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "renamed.predictions.jsonl").read_text().splitlines()]
    assert [r["predicted_label"] for r in rows] == expected


def test_predict_cli_reads_pairs_from_stdin_without_noise(pair_run) -> None:
    saved = _saved(pair_run)[:3]
    proc = subprocess.run(
        [sys.executable, "-m", "ptexp.predict", str(pair_run)],
        input="".join(f"{r['text']}\t{r['text_pair']}\n" for r in saved),
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert [line.split("\t")[0] for line in proc.stdout.splitlines()] == [r["label"] for r in saved]
    # The head is restored from the adapter: transformers' "MISSING ... newly initialized"
    # report, its progress bar and peft's FutureWarning are noise, not news.
    for noise in ("LOAD REPORT", "MISSING", "newly initialized", "Warning", "Loading weights"):
        assert noise not in proc.stderr, proc.stderr


def test_a_single_text_given_to_a_pair_run_exits_2(pair_run, monkeypatch, capsys) -> None:
    import io

    assert main([str(pair_run), "the flight was fine"]) == 2
    err = capsys.readouterr().err
    assert "sentence pairs" in err and "text_pair_column='second'" in err and "argument 1" in err
    monkeypatch.setattr(sys, "stdin", io.StringIO("first\tsecond\njust one text\n"))
    assert main([str(pair_run)]) == 2
    assert "stdin line 2" in capsys.readouterr().err
    assert main([str(pair_run), "one\ttwo\tthree"]) == 2
    assert "exactly two texts" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="sentence pairs"):
        predict(pair_run, ["the flight was fine"])


def test_file_without_the_pair_column_exits_2(pair_run, tmp_path, capsys) -> None:
    src = write_table(tmp_path / "only_first.csv", [{"first": "the flight was fine", "id": "1"}])
    assert main([str(pair_run), "--file", str(src)]) == 2
    err = capsys.readouterr().err
    assert "no column 'second'" in err and "['first', 'id']" in err and "--text-pair-column" in err
    assert "Traceback" not in err and "KeyError" not in err


def test_metrics_match_scikit_learn() -> None:
    from sklearn.metrics import f1_score

    from ptexp.tasks.seq_cls import macro_f1

    rng = np.random.default_rng(0)
    for _ in range(200):
        labels, preds = rng.integers(0, 4, 25), rng.integers(0, 4, 25)
        assert macro_f1(labels, preds) == pytest.approx(f1_score(labels, preds, average="macro"))


def test_predict_and_tasks_import_no_heavy_modules() -> None:
    """ptexp-predict checks its arguments before torch loads, and never needs datasets or sklearn."""
    code = (
        "import sys, ptexp.predict, ptexp.tasks, ptexp.data; "
        "print(sorted(m for m in ('sklearn', 'datasets', 'torch', 'transformers', 'peft') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"

"""The recipe study's cross-dataset table (ptexp.study) on a real tiny study: ptexp sweeps on a
tiny BERT over two small datasets cut from the embedded tweets, read back and checked against
the runs' own metrics.json; selection by validation rank; a partial study said as such."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ptexp import study
from tests.conftest import run_sweep, subprocess_env, tiny_overrides, write_table

DATASETS = ("tweets", "tweets_flip")
LRS = ("1e-05", "1.0")
SEEDS = (1, 2)
METHODS = (study.P_TUNING, study.FULL_FT, study.LINEAR_PROBE)


def flip_files(folder: Path, rows: list[dict[str, str]]) -> dict[str, Path]:
    """Binary negative/positive tweets whose test split is the validation split with every label
    flipped: a run's test accuracy is then 1 - its validation accuracy, so ranking the values
    on test gives the opposite order of ranking them on validation. Train is mostly positive and
    validation mostly negative: a tiny random model predicts one class everywhere, the one its
    initialisation favours at a negligible rate and train's majority at a rate that moves it."""
    negative = [r for r in rows if r["mood"] == "negative"]
    positive = [r for r in rows if r["mood"] == "positive"]
    train = positive[:84] + negative[:12]
    validation = negative[100:128] + positive[100:112]
    flipped = {"negative": "positive", "positive": "negative"}
    return {
        "train": write_table(folder / "train.csv", train),
        "validation": write_table(folder / "dev.csv", validation),
        "test": write_table(folder / "test.csv", [{**r, "mood": flipped[r["mood"]]} for r in validation]),
    }


@pytest.fixture(scope="module")
def tiny_study(tiny_bert, tweet_files, tweets_rows, tmp_path_factory) -> Path:
    """study_lr_tweets and study_lr_tweets_flip (2 learning rates x 2 seeds each) and
    study_baselines_tweets (3 methods x 2 seeds), named as scripts/study.sh names them."""
    root = tmp_path_factory.mktemp("study")
    files = {"tweets": tweet_files, "tweets_flip": flip_files(root, tweets_rows)}
    for dataset in DATASETS:
        args = [
            *tiny_overrides(tiny_bert, files[dataset], root / "outputs"),
            "dataset.max_train_samples=48",
            "dataset.max_eval_samples=40",
            "dataset.max_test_samples=40",
            "logger=none",
            f"sweep_name=study_lr_{dataset}",
            f"seed={','.join(map(str, SEEDS))}",
            f"trainer.learning_rate={','.join(LRS)}",
        ]
        proc = run_sweep(args, root)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # The baselines lever on one dataset only: the targets table, and a lever missing a dataset.
    args = [
        *tiny_overrides(tiny_bert, tweet_files, root / "outputs"),
        "dataset.max_train_samples=48",
        "dataset.max_eval_samples=40",
        "dataset.max_test_samples=40",
        "logger=none",
        "sweep_name=study_baselines_tweets",
        f"seed={','.join(map(str, SEEDS))}",
        f"method={','.join(METHODS)}",
    ]
    proc = run_sweep(args, root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root / "outputs"


def recomputed(root: Path, dataset: str) -> dict[float, dict[str, list[float]]]:
    """Per learning rate, each split's accuracies straight from the job folders' metrics.json."""
    out: dict[float, dict[str, list[float]]] = {}
    for metrics in sorted((root / "multiruns" / f"study_lr_{dataset}").glob("*/metrics.json")):
        config = (metrics.parent / "config.yaml").read_text()
        lr = float(next(line for line in config.splitlines() if "learning_rate:" in line).split(":")[1])
        data = json.loads(metrics.read_text())
        for split in ("validation", "test"):
            out.setdefault(lr, {}).setdefault(split, []).append(data[split]["accuracy"])
    return out


def mean_ranks(values: dict[float, dict[str, list[float]]], split: str) -> dict[float, float]:
    means = pd.Series({lr: statistics.mean(v[split]) for lr, v in values.items()})
    return means.rank(ascending=False, method="average").to_dict()


@pytest.mark.slow  # 8 tiny training jobs in two ptexp-train subprocesses
def test_table_matches_the_runs_and_ranks_on_validation(tiny_study) -> None:
    result = study.study_report(tiny_study, datasets=[*DATASETS, "never_run"], levers=["lr"])
    assert set(result["files"]) == {"lr", "cells", "summary"}  # only the levers asked for
    cells = result["cells"]
    assert len(cells) == 4 and set(cells["n"]) == {2}
    runs = {d: recomputed(tiny_study, d) for d in DATASETS}
    lr_column = "trainer.learning_rate"
    for _, cell in cells.iterrows():
        accs = runs[cell["dataset"]][float(cell[lr_column])]
        for split in ("validation", "test"):
            assert cell[f"{split}_accuracy_mean"] == pytest.approx(statistics.mean(accs[split]))
            assert cell[f"{split}_accuracy_std"] == pytest.approx(statistics.stdev(accs[split]))

    # The flipped dataset orders the two rates one way on validation and the other on test:
    # a ranking taken on test would give each value the other's rank there.
    by_val = {d: mean_ranks(runs[d], "validation") for d in DATASETS}
    by_test = mean_ranks(runs["tweets_flip"], "test")
    assert by_val["tweets_flip"] != by_test, "the flipped test split no longer discriminates; change LRS"
    for _, cell in cells.iterrows():
        assert cell["rank_on_dataset"] == by_val[cell["dataset"]][float(cell[lr_column])]
    expected = {lr: statistics.mean(by_val[d][lr] for d in DATASETS) for lr in map(float, LRS)}
    for _, cell in cells.iterrows():
        assert cell["mean_rank"] == pytest.approx(expected[float(cell[lr_column])])
    best = min(expected.values())
    chosen = {float(v) for v in cells.loc[cells["chosen"], lr_column]}
    assert chosen and all(expected[lr] == best for lr in chosen)

    # The Markdown shows the same figures: each test cell as points ± seed std (n).
    markdown = (result["out"] / "lr.md").read_text()
    for _, cell in cells.iterrows():
        accs = runs[cell["dataset"]][float(cell[lr_column])]["test"]
        assert f"{100 * statistics.mean(accs):.1f} ± {100 * statistics.stdev(accs):.1f} (2)" in markdown
    assert markdown.count(study.CHOSEN) >= 1 + markdown.count("Tie:")  # the chosen row is marked
    assert "No result for this lever on: never_run." in markdown
    summary = (result["out"] / "summary.md").read_text()
    assert "- lr: never_run" in summary and result["missing"] == ["study_lr_never_run"]
    png = result["out"] / "lr.png"
    assert png.stat().st_size > 10_000


@pytest.mark.slow
def test_partial_study_from_the_command_line(tiny_study, tmp_path) -> None:
    """One job unfinished (its metrics.json gone, as when it was killed) and a whole sweep
    missing: the cell says n = 1, the missing sweep is named, and the table still comes out."""
    root = tmp_path / "partial"
    shutil.copytree(tiny_study / "multiruns" / "study_lr_tweets", root / "multiruns" / "study_lr_tweets")
    (job,) = [
        p for p in (root / "multiruns" / "study_lr_tweets").iterdir() if p.name == f"seed=2,learning_rate={LRS[1]}"
    ]
    (job / "metrics.json").unlink()
    (job / "status.json").write_text(json.dumps({"status": "failed", "error": "killed"}))
    proc = subprocess.run(
        [sys.executable, "-m", "ptexp.study", str(root), "--datasets", ",".join(DATASETS), "--levers", "lr,baselines"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cells = pd.read_csv(root / "study-report" / "cells.csv")
    assert sorted(cells["n"]) == [1, 2]
    summary = (root / "study-report" / "summary.md").read_text()
    missing = summary.split("## Missing sweeps (3")[1]
    assert "- lr: tweets_flip\n- baselines: tweets, tweets_flip" in missing
    assert "1 failed" in summary
    assert "(1)" in (root / "study-report" / "lr.md").read_text()


def test_dataset_suffix_wins_by_length(tmp_path) -> None:
    for name in ("study_lr_clinc_pairs", "study_prompt_length_clinc_domain", "study_lr_other"):
        (tmp_path / "multiruns" / name).mkdir(parents=True)
    sweeps, unknown = study.discover(tmp_path, ["clinc_pairs", "pairs", "clinc_domain"])
    assert {(s.lever, s.dataset) for s in sweeps} == {("lr", "clinc_pairs"), ("prompt_length", "clinc_domain")}
    assert unknown == ["study_lr_other"]
    assert set(study.known_datasets()) >= {"sms_spam", "clinc_pairs"}
    assert "baselines" in study.planned_levers()


@pytest.mark.slow
def test_targets_table_from_the_baselines_lever(tiny_study, tmp_path) -> None:
    out = tmp_path / "report"
    study.study_report(tiny_study, datasets=list(DATASETS), levers=["lr"], out=out)
    assert (out / "lr.md").is_file()
    result = study.study_report(tiny_study, datasets=list(DATASETS), levers=["baselines"], out=out)
    assert not (out / "lr.md").exists() and not (out / "lr.png").exists()  # not left beside fresh tables
    runs: dict[str, list[dict]] = {}
    for metrics in (tiny_study / "multiruns" / "study_baselines_tweets").glob("*/metrics.json"):
        method = next(m for m in METHODS if f"method={m}" in metrics.parent.name)
        runs.setdefault(method, []).append(json.loads(metrics.read_text()))
    assert {m: len(r) for m, r in runs.items()} == dict.fromkeys(METHODS, 2)

    def test_mean(method: str) -> float:
        return statistics.mean(r["test"]["accuracy"] for r in runs[method])

    row = next(line for line in result["targets"].splitlines() if line.startswith("| tweets "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    pt = [r["test"]["accuracy"] for r in runs[study.P_TUNING]]
    assert cells[1] == f"{100 * statistics.mean(pt):.1f} ± {100 * statistics.stdev(pt):.1f} (2)"
    assert cells[4] == f"{100 * (test_mean(study.FULL_FT) - test_mean(study.P_TUNING)):+.1f}"
    share = statistics.mean(100 * r["trainable_params"] / r["total_params"] for r in runs[study.P_TUNING])
    assert cells[7] == f"{share:.2f}" and cells[8] == "yes"  # < 2 % of the parameters
    # Full fine-tuning trains everything, P-tuning a sliver: the shares must differ a lot.
    full = result["cells"][result["cells"]["value"] == f"method={study.FULL_FT}"]
    assert full["trainable_share_pct"].iloc[0] > 90 > share
    assert "No baselines result on: tweets_flip." in result["targets"]
    assert (result["out"] / "targets.md").is_file() and (result["out"] / "baselines.png").is_file()


@pytest.mark.slow
def test_recipes_compared_across_levers(tiny_study, tmp_path) -> None:
    """--compare ranks several sweep families together, one row per recipe; a recipe measured
    on fewer datasets (baselines: one of two) is shown but cannot be chosen."""
    result = study.study_report(
        tiny_study, datasets=list(DATASETS), levers=["lr"], out=tmp_path, compare=["lr", "baselines", "absent"]
    )
    cells = result["cells"][result["cells"]["lever"] == study.COMPARE]
    assert sorted(cells.groupby("value")["dataset"].count()) == [1, 1, 1, 2, 2]
    chosen = set(cells.loc[cells["chosen"], study.RECIPE])
    assert chosen == {"lr"}
    markdown = (tmp_path / "compare.md").read_text()
    assert "No sweep of absent" in markdown and "not eligible to be chosen" in markdown
    assert (tmp_path / "compare.png").is_file() and not (tmp_path / "baselines.md").exists()


@pytest.mark.slow  # reads the tiny study's sweeps
def test_choose_prints_the_value_of_best_validation_rank_as_an_override(tiny_study) -> None:
    """The candidate recipe: the learning rate of best mean VALIDATION rank over both datasets, as
    an override ptexp-train takes; a lever ranked on too few datasets, or never run, is left out."""
    runs = {d: recomputed(tiny_study, d) for d in DATASETS}
    by_val = {d: mean_ranks(runs[d], "validation") for d in DATASETS}
    mean_rank = {lr: statistics.mean(by_val[d][lr] for d in DATASETS) for lr in map(float, LRS)}
    best = min(mean_rank, key=mean_rank.get)
    if list(mean_rank.values()).count(mean_rank[best]) > 1:
        pytest.skip("the two rates tie on mean rank in this draw; the tie rule is tested above")
    overrides, notes = study.chosen_overrides(tiny_study, ["lr", "init"], DATASETS, min_datasets=2)
    assert overrides == [f"++trainer.learning_rate={best:g}"]
    assert notes[0].startswith("lr: ") and notes[1] == "init: no finished job"
    assert study.chosen_overrides(tiny_study, ["lr"], DATASETS, min_datasets=3)[0] == []
    proc = subprocess.run(
        [sys.executable, "-m", "ptexp.study", str(tiny_study), "--datasets", ",".join(DATASETS), "--choose", "lr"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [] and "left out (ranked on 2 dataset(s)" in proc.stderr  # default: 4 datasets


def test_choose_refuses_a_root_without_sweeps_and_an_unknown_lever(tmp_path) -> None:
    """A mistyped root or lever would otherwise print an empty recipe and exit 0, which
    study_gpu.sh reads as 'nothing finished yet'."""

    def choose(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "ptexp.study", *args],
            capture_output=True,
            text=True,
            env=subprocess_env(),
            timeout=120,
        )

    empty = choose(str(tmp_path / "nowhere"), "--choose")
    assert empty.returncode == 2 and "no study sweeps" in empty.stderr and empty.stdout == ""
    (tmp_path / "multiruns" / "study_lr_sms_spam").mkdir(parents=True)
    typo = choose(str(tmp_path), "--choose", "lr,epochs+patiense")
    assert typo.returncode == 2 and "--choose patiense: no such lever" in typo.stderr and typo.stdout == ""
    assert "patience" in typo.stderr  # the valid levers are listed
    known = choose(str(tmp_path), "--choose", "lr,init")
    assert known.returncode == 0, known.stderr
    assert known.stdout.strip() == "" and "init: no finished job" in known.stderr
    assert choose(str(tmp_path), "--choose", "--min-datasets", "0").returncode == 2

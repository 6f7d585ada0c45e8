"""The recipe study's cross-dataset tables (issue 13): every study sweep under a root
(``<root>/multiruns/study_<lever>_<dataset>``, as ``scripts/study.sh`` names them) read with
the report's own loaders, one table per lever ranked across datasets, the targets table from
the baselines lever, a figure per lever and a CSV of every cell, into ``<root>/study-report``.

A lever's value is chosen by its MEAN RANK across datasets, the rank within a dataset taken on
the mean VALIDATION metric over seeds: test figures are shown, never used to choose. Works on a
partial study: each cell says its n, and missing sweeps and unfinished jobs are listed.

    ptexp-study [outputs/study] [--datasets a,b] [--levers x,y] [--metric accuracy]
                [--compare candidate,baselines] [--out DIR]

``--compare`` ranks several sweep families (candidate recipes, each swept as
``study_<name>_<dataset>``, and the baselines) against each other in ``compare.md``.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ptexp import report as rp
from ptexp.experiment import greater_is_better
from ptexp.jobs import read_sweep
from ptexp.outputs import write_atomic

if TYPE_CHECKING:
    import pandas as pd

PREFIX = "study_"
OUT_DIR = "study-report"
CELLS_FILE = "cells.csv"
SUMMARY_FILE = "summary.md"
TARGETS_FILE = "targets.md"
MANIFEST = ".written"  # what the last run wrote, so the next one can remove what it no longer writes
# The baselines lever's sweep and its three methods (ptexp/conf/sweep/study_baselines.yaml).
BASELINES = "baselines"
P_TUNING, FULL_FT, LINEAR_PROBE = "p_tuning", "full_finetune", "linear_probe"
# Issue 13's targets, in accuracy points (and per cent of the parameters).
TARGET_GAP = 3.0
TARGET_STD = 1.5
TARGET_SHARE = 2.0
CHOSEN = "✓"
# The comparison of several levers (candidate recipes): its file stem, and its first column.
COMPARE = "compare"
RECIPE = "recipe"

PACKAGE = Path(__file__).resolve().parent
STUDY_SCRIPT = PACKAGE.parent / "scripts" / "study.sh"


def known_datasets() -> list[str]:
    """The study datasets: one preset each under ptexp/conf/dataset/study."""
    return sorted(p.stem for p in (PACKAGE / "conf" / "dataset" / "study").glob("*.yaml"))


def planned_levers() -> list[str]:
    """The levers scripts/study.sh runs (its LEVERS=(...) line); empty when the script is absent
    (an installed package): then only the levers found on disk are expected."""
    if not STUDY_SCRIPT.is_file():
        return []
    found = re.search(r"^LEVERS=\(([^)]*)\)", STUDY_SCRIPT.read_text(), re.MULTILINE)
    return found.group(1).split() if found else []


# -- finding and reading the sweeps -------------------------------------------------------------------------------
@dataclass
class Sweep:
    name: str
    lever: str
    dataset: str
    folder: Path


def discover(root: Path, datasets: Sequence[str]) -> tuple[list[Sweep], list[str]]:
    """The study sweeps under ``root/multiruns``, and the names of ``study_*`` folders whose name
    ends in no known dataset. Dataset names hold underscores (clinc_pairs), so the longest
    matching dataset wins: study_lr_clinc_pairs is lever lr, never lever lr_clinc."""
    multiruns = Path(root) / "multiruns"
    found, unknown = [], []
    folders = sorted(p for p in multiruns.iterdir() if p.is_dir()) if multiruns.is_dir() else []
    for folder in folders:
        if not folder.name.startswith(PREFIX):
            continue
        rest = folder.name[len(PREFIX) :]
        match = next(
            (d for d in sorted(datasets, key=len, reverse=True) if rest.endswith(f"_{d}") and len(rest) > len(d) + 1),
            None,
        )
        if match is None:
            unknown.append(folder.name)
            continue
        found.append(Sweep(folder.name, rest[: -len(match) - 1], match, folder))
    return found, unknown


@dataclass
class Loaded:
    """One sweep as the report reads it: the frame (a row per job), its records and axes."""

    sweep: Sweep
    frame: pd.DataFrame
    records: list[rp.JobRecord]
    axes: list[str]
    notes: list[str]


def load(sweep: Sweep, metric: str) -> Loaded:
    frame, records, kind = rp.collect(sweep.folder)
    if frame.empty:
        return Loaded(sweep, frame, records, [], ["no job folders"])
    axes, notes = rp.find_axes(records, kind, sweep.folder)
    # The plan's axes too: a sweep where only one value has finished so far still has its axis.
    declared = [rp.METHOD if a == rp.METHOD_NAME else a for a in read_sweep(sweep.folder).get("axes") or []]
    axes = rp._unique([a for a in axes + declared if a != rp.SEED])
    return Loaded(sweep, frame, records, axes, notes + rp.exclusion_notes(frame, metric))


def with_axes(loaded: Loaded, axes: list[str]) -> pd.DataFrame:
    """The frame with a column per axis, read from each job's config where its overrides lack it
    (the report's own rule: the saved config is the truth)."""
    frame = loaded.frame.copy()
    for axis in axes:
        if axis not in frame:
            frame[axis] = [r.value(axis) for r in loaded.records]
    return frame


# -- cells --------------------------------------------------------------------------------------------------------
def _mean(values: pd.Series) -> float:
    return float(values.mean()) if len(values) else math.nan


def lever_cells(lever: str, loaded: list[Loaded], metric: str) -> tuple[list[str], pd.DataFrame, dict]:
    """Every (value, dataset) cell of one lever: n, validation and test mean/std over seeds
    (the report's ablation_table), the mean wall time and trainable share; and each cell's test
    metric per seed (for the seed std of a cross-dataset mean)."""
    import pandas as pd

    axes = rp._unique([a for item in loaded for a in item.axes])
    rows, per_seed = [], {}
    for item in loaded:
        frame = with_axes(item, axes)
        table = rp.ablation_table(frame, axes, metric) if not frame.empty else None
        if table is None:
            continue
        done = frame[(frame["status"] == "completed") & frame[f"validation.{metric}"].notna()]
        keys = [tuple(rp._canon(v) for v in row) for row in done[axes].itertuples(index=False)] if axes else None
        for _, cell in table.iterrows():
            key = tuple(rp._canon(cell[a]) for a in axes)
            part = done[[k == key for k in keys]] if axes else done
            row: dict[str, Any] = {"lever": lever, "dataset": item.sweep.dataset, "sweep": item.sweep.name}
            row["value"] = value_label(axes, [cell[a] for a in axes])
            row.update({a: cell[a] for a in axes})
            row["key"] = key
            row["n"] = int(cell["n"])
            for split in rp.SPLITS:
                row[f"{split}_mean"], row[f"{split}_std"] = cell[f"{split}_mean"], cell[f"{split}_std"]
            row["seeds"] = cell["seeds"]
            for column, name in (("runtime", "runtime_s"), ("train_runtime", "train_runtime_s")):
                row[name] = _mean(rp._numbers(part, column))
            trainable, total = _mean(rp._numbers(part, "trainable_params")), _mean(rp._numbers(part, "total_params"))
            row["trainable_params"] = trainable
            row["trainable_share_pct"] = 100 * trainable / total if total and math.isfinite(total) else math.nan
            rows.append(row)
            test = f"test.{metric}"
            if test in part and rp.SEED in part:
                per_seed[key, item.sweep.dataset] = {
                    str(s): float(v) for s, v in zip(part[rp.SEED], pd.to_numeric(part[test], errors="coerce"))
                }
    return axes, pd.DataFrame(rows), per_seed


def value_label(axes: list[str], values: list[Any]) -> str:
    names = rp.short_names(axes)
    return ", ".join(f"{names[a]}={rp.show(v)}" for a, v in zip(axes, values)) or "all runs"


# -- ranking ------------------------------------------------------------------------------------------------------
@dataclass
class Ranking:
    """Per value (row key): its rank on each dataset (by mean validation metric; ties share the
    average rank), the mean of those ranks, and the row(s) chosen."""

    ranks: pd.DataFrame  # index: row key, columns: datasets
    mean_rank: pd.Series
    n_ranked: pd.Series
    chosen: list[tuple] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def rank(cells: pd.DataFrame, metric: str, datasets: list[str]) -> Ranking:
    validation = cells.pivot_table(index="key", columns="dataset", values="validation_mean", aggfunc="first")
    validation = validation.reindex(columns=[d for d in datasets if d in validation.columns])
    # Selection never looks at test: ranks come from the validation means only.
    ranks = validation.rank(axis=0, ascending=not greater_is_better(metric), method="average")
    mean_rank, n_ranked = ranks.mean(axis=1), ranks.notna().sum(axis=1)
    result = Ranking(ranks, mean_rank, n_ranked)
    if not n_ranked.any():
        return result
    # A value measured on fewer datasets has had fewer chances to rank badly: only the values
    # ranked on the most datasets compete.
    eligible = mean_rank[n_ranked == n_ranked.max()]
    best = eligible[eligible == eligible.min()]
    if len(best) > 1:
        # Equal mean ranks: the higher mean validation metric over the datasets decides (still no test).
        sign = 1.0 if greater_is_better(metric) else -1.0
        score = validation.loc[best.index].mean(axis=1) * sign
        best = best[score == score.max()]
        tied = ", ".join(_label(cells, k) for k in best.index)
        if len(best) > 1:
            result.notes.append(f"Tie: {tied} share the best mean rank and mean validation {metric}; all marked.")
        else:
            result.notes.append(f"Tie on mean rank broken by the mean validation {metric} over datasets: {tied}.")
    result.chosen = list(best.index)
    if (n_ranked < n_ranked.max()).any():
        short = ", ".join(f"{_label(cells, k)} ({int(n)})" for k, n in n_ranked[n_ranked < n_ranked.max()].items())
        result.notes.append(
            f"Ranked on fewer datasets than the others (not eligible to be chosen): {short}; "
            "each rank is among the values present on that dataset."
        )
    return result


def _label(cells: pd.DataFrame, key: tuple) -> str:
    return str(cells.loc[cells["key"].map(lambda k: k == key), "value"].iloc[0])


def seed_std_of_mean(per_seed: dict, key: tuple, datasets: list[str]) -> tuple[float, int]:
    """Std over seeds of the per-seed mean across ``datasets`` (only seeds every one of them
    ran), and how many seeds that is."""
    import numpy as np

    seeds = [set(per_seed.get((key, d), {})) for d in datasets]
    common = sorted(set.intersection(*seeds)) if seeds else []
    means = [np.nanmean([per_seed[key, d][s] for d in datasets]) for s in common]
    return (float(np.std(means, ddof=1)) if len(means) > 1 else math.nan), len(means)


# -- writing ------------------------------------------------------------------------------------------------------
def points(mean: float, std: float, n: int | None = None) -> str:
    """A fraction as accuracy points, mean ± seed std (n): 81.2 ± 1.3 (3)."""
    if not math.isfinite(mean):
        return "–"
    text = f"{100 * mean:.1f}"
    if math.isfinite(std):
        text += f" ± {100 * std:.1f}"
    return text if n is None else f"{text} ({n})"


def lever_table(
    lever: str, axes: list[str], cells: pd.DataFrame, ranking: Ranking, per_seed: dict, metric: str, datasets: list
) -> tuple[str, pd.DataFrame]:
    """The lever's Markdown (test table, validation-and-rank table, notes) and its summary rows."""
    import pandas as pd

    names = rp.short_names(axes)
    present = [d for d in datasets if d in set(cells["dataset"])]
    order = sorted(
        cells.drop_duplicates("key")[["key", *axes]].itertuples(index=False),
        key=lambda r: tuple(rp._sort_key(v) for v in r[1:]),
    )
    by_cell = {(r["key"], r["dataset"]): r for _, r in cells.iterrows()}
    test_rows, val_rows, summary = [], [], []
    for row in order:
        key = row[0]
        label = {names[a]: rp.show(v) for a, v in zip(axes, row[1:])} if axes else {"configuration": "all runs"}
        test, val = dict(label), dict(label)
        means, stds = [], []
        for d in present:
            cell = by_cell.get((key, d))
            if cell is None:
                test[d] = val[d] = "–"
                continue
            test[d] = points(cell["test_mean"], cell["test_std"], cell["n"])
            r = ranking.ranks.at[key, d] if key in ranking.ranks.index else math.nan
            val[d] = points(cell["validation_mean"], cell["validation_std"], cell["n"]) + (
                f" #{r:g}" if math.isfinite(r) else ""
            )
            means.append(cell["test_mean"])
            if math.isfinite(cell["test_std"]):
                stds.append(cell["test_std"])
        with_data = [d for d in present if (key, d) in by_cell]
        std, n_seeds = seed_std_of_mean(per_seed, key, with_data)
        mean = float(sum(means) / len(means)) if means else math.nan
        test[f"mean over datasets ({metric})"] = (
            f"{points(mean, std)} ({len(means)} ds, {n_seeds} seeds)" if means else "–"
        )
        test["max seed std"] = f"{100 * max(stds):.1f}" if stds else "–"
        mean_rank = ranking.mean_rank.get(key, math.nan)
        chosen = key in ranking.chosen
        rank_text = f"{mean_rank:.2f}" if math.isfinite(mean_rank) else "–"
        test["mean rank (validation)"] = f"**{rank_text}** {CHOSEN}" if chosen else rank_text
        test_rows.append(test)
        val_rows.append(val)
        summary.append(
            {
                "lever": lever,
                "value": _label(cells, key),
                "datasets": len(means),
                "mean_test": mean,
                "seed_std_of_mean": std,
                "max_seed_std": max(stds) if stds else math.nan,
                "mean_rank": mean_rank,
                "chosen": chosen,
            }
        )
    test_md = pd.DataFrame(test_rows).to_markdown(index=False, disable_numparse=True)
    val_md = pd.DataFrame(val_rows).to_markdown(index=False, disable_numparse=True)
    direction = "highest" if greater_is_better(metric) else "lowest"
    lines = [
        f"# Lever: {lever}",
        f"Table: test {metric} in points, mean ± seed std (n runs) per dataset; the mean over datasets "
        f"± the std over seeds of the per-seed mean (seeds every dataset ran); max seed std: the largest "
        f"per-dataset std. Chosen ({CHOSEN}): the best MEAN RANK across datasets, each rank taken on the "
        f"mean VALIDATION {metric} ({direction} = rank 1; ties share the average rank). Test never chooses.",
        test_md,
        f"Table: validation {metric} in points, mean ± seed std (n), and #rank within the dataset (what the "
        "mean rank averages).",
        val_md,
    ]
    missing = [d for d in datasets if d not in present]
    notes = list(ranking.notes)
    if missing:
        notes.append(f"No result for this lever on: {', '.join(missing)}.")
    lines += notes
    return "\n\n".join(lines), pd.DataFrame(summary)


def targets_table(cells: pd.DataFrame, datasets: list[str]) -> str | None:
    """Issue 13's targets from the baselines lever, per dataset and on the mean over datasets."""
    import pandas as pd

    if cells.empty or rp.METHOD not in cells:
        return None
    rows, pt_means, ft_means = [], [], []
    for d in datasets:
        part = cells[cells["dataset"] == d]
        if part.empty:
            continue
        cell = {
            m: part[part[rp.METHOD] == m].iloc[0]
            for m in (P_TUNING, FULL_FT, LINEAR_PROBE)
            if m in set(part[rp.METHOD])
        }
        pt, ft, lp = cell.get(P_TUNING), cell.get(FULL_FT), cell.get(LINEAR_PROBE)

        def fig(c: Any) -> str:
            return points(c["test_mean"], c["test_std"], c["n"]) if c is not None else "–"

        gap = 100 * (ft["test_mean"] - pt["test_mean"]) if pt is not None and ft is not None else math.nan
        std_ok = pt is not None and math.isfinite(pt["test_std"]) and 100 * pt["test_std"] <= TARGET_STD
        share = pt["trainable_share_pct"] if pt is not None else math.nan
        if pt is not None and ft is not None:
            pt_means.append(pt["test_mean"])
            ft_means.append(ft["test_mean"])
        rows.append(
            {
                "dataset": d,
                "P-tuning": fig(pt),
                "full FT": fig(ft),
                "linear probe": fig(lp),
                "gap (FT − PT)": f"{gap:+.1f}" if math.isfinite(gap) else "–",
                f"gap ≤ {TARGET_GAP:g}": _yes(math.isfinite(gap) and gap <= TARGET_GAP, math.isfinite(gap)),
                f"PT std ≤ {TARGET_STD:g}": _yes(std_ok, pt is not None and math.isfinite(pt["test_std"])),
                "PT trainable %": f"{share:.2f}" if math.isfinite(share) else "–",
                f"PT < {TARGET_SHARE:g} %": _yes(share < TARGET_SHARE, math.isfinite(share)),
                "PT s/job": rp._amount(pt["runtime_s"]) if pt is not None else "–",
                "FT s/job": rp._amount(ft["runtime_s"]) if ft is not None else "–",
            }
        )
    if not rows:
        return None
    if pt_means:
        stds_ok = sum(r[f"PT std ≤ {TARGET_STD:g}"] == "yes" for r in rows)
        gap = 100 * (sum(ft_means) - sum(pt_means)) / len(pt_means)
        rows.append(
            {
                "dataset": f"**mean ({len(pt_means)} datasets)**",
                "P-tuning": points(sum(pt_means) / len(pt_means), math.nan),
                "full FT": points(sum(ft_means) / len(ft_means), math.nan),
                "linear probe": "",
                "gap (FT − PT)": f"{gap:+.1f}",
                f"gap ≤ {TARGET_GAP:g}": _yes(gap <= TARGET_GAP, True),
                f"PT std ≤ {TARGET_STD:g}": f"{stds_ok}/{len(rows)}",
                "PT trainable %": "",
                f"PT < {TARGET_SHARE:g} %": "",
                "PT s/job": "",
                "FT s/job": "",
            }
        )
    caption = (
        f"Table: issue 13's targets. Test accuracy in points, mean ± seed std (n runs), of the default P-tuning "
        f"recipe, full fine-tuning and a linear probe (the floor); gap = full FT − P-tuning in points (target "
        f"≤ {TARGET_GAP:g} on the mean over datasets); P-tuning's seed std (target ≤ {TARGET_STD:g} per dataset); "
        f"its trainable share of the parameters (target < {TARGET_SHARE:g} %) and the mean wall time of one job "
        "(metrics.json's runtime: data, training and evaluation)."
    )
    missing = [d for d in datasets if d not in set(cells["dataset"])]
    notes = [f"No baselines result on: {', '.join(missing)}."] if missing else []
    return "\n\n".join(
        ["# Targets", caption, pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True), *notes]
    )


def _yes(ok: bool, known: bool) -> str:
    return ("yes" if ok else "**no**") if known else "–"


def lever_figure(
    lever: str, axes: list[str], cells: pd.DataFrame, ranking: Ranking, metric: str, datasets: list, out: Path
) -> list[Path]:
    """One panel per dataset (validation and test mean ± seed std of each value, on that
    dataset's own scale, its rank on validation at the right edge) and a last panel of mean
    ranks, the chosen value's bar in its own colour. Values run down the y axis, so that long
    labels (a comparison's recipes) stay horizontal and readable."""
    import matplotlib
    from matplotlib.figure import Figure

    present = [d for d in datasets if d in set(cells["dataset"])]
    order = sorted(
        cells.drop_duplicates("key")[["key", *axes]].itertuples(index=False),
        key=lambda r: tuple(rp._sort_key(v) for v in r[1:]),
    )
    keys = [r[0] for r in order]
    labels = [", ".join(rp.show(v) for v in r[1:] if rp._canon(v) is not None) or "all runs" for r in order]
    title = ", ".join(rp.short_names(axes).values()) or "configuration"
    panels = len(present) + 1
    ncols = min(panels, 4)
    nrows = -(-panels // ncols)
    ys = list(range(len(keys)))
    by_cell = {(r["key"], r["dataset"]): r for _, r in cells.iterrows()}
    with matplotlib.rc_context({**rp.FIGURE_STYLE, "axes.grid.axis": "x"}):
        height = nrows * (0.9 + 0.28 * len(keys)) + 0.7
        fig = Figure(figsize=(0.6 + 0.12 * max(map(len, labels)) + 1.9 * ncols, height), layout="constrained")
        grid = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
        handles = []
        for ax, d in zip(grid.flat, present):
            for k, (split, marker, fill) in enumerate((("validation", "o", "none"), ("test", "s", None))):
                pts = [(y, by_cell[key, d]) for y, key in zip(ys, keys) if (key, d) in by_cell]
                line = ax.errorbar(
                    [100 * c[f"{split}_mean"] for _, c in pts],
                    [y + (k - 0.5) * 0.3 for y, _ in pts],
                    xerr=[100 * c[f"{split}_std"] if math.isfinite(c[f"{split}_std"]) else 0 for _, c in pts],
                    color=rp.LINE_COLORS[k],
                    marker=marker,
                    mfc=fill or rp.LINE_COLORS[k],
                    ls="none",
                    label=f"{split} (mean ± seed std)",
                )
                if len(handles) < 2:
                    handles.append(line)
            for y, key in zip(ys, keys):
                r = ranking.ranks.at[key, d] if key in ranking.ranks.index else math.nan
                if math.isfinite(r):
                    ax.annotate(
                        f"#{r:g}",
                        (1.0, y),
                        xycoords=("axes fraction", "data"),
                        xytext=(2, 0),
                        textcoords="offset points",
                        va="center",
                        fontsize=6.5,
                    )
            ns = [by_cell[key, d]["n"] for key in keys if (key, d) in by_cell]
            ax.set_title(f"{d} ({rp._n_phrase(ns)})")
            ax.set_xlabel(f"{metric} (points)")
        ax = grid.flat[len(present)]
        means = [ranking.mean_rank.get(key, math.nan) for key in keys]
        colors = [rp.LINE_COLORS[5] if key in ranking.chosen else rp.LINE_COLORS[4] for key in keys]
        ax.barh(ys, [m if math.isfinite(m) else 0 for m in means], color=colors, height=0.6)
        for y, m in zip(ys, means):
            if math.isfinite(m):
                mark = f" {CHOSEN}" if keys[y] in ranking.chosen else ""
                ax.text(m, y, f" {m:.2f}{mark}", va="center", fontsize=6.5)
        ax.set_xlim(0, max([m for m in means if math.isfinite(m)] or [1]) * 1.4)
        ax.set_xlabel("mean rank on validation\n(lower is better)")
        ax.set_title(f"mean rank ({len(present)} datasets)")
        for ax in grid[:, 0]:
            ax.set_yticks(ys, labels)
            ax.set_ylabel(title)
        grid[0, 0].set_ylim(len(keys) - 0.5, -0.5)  # first value on top
        for ax in list(grid.flat)[panels:]:
            ax.set_visible(False)
        fig.legend(handles, [h.get_label() for h in handles], loc="outside lower center", ncol=2, frameon=False)
        fig.suptitle(f"Lever {lever}: {metric} per dataset, mean ± seed std (#: rank on validation; {CHOSEN} chosen)")
        return rp._save_figure(fig, out, lever)


# -- the study report ---------------------------------------------------------------------------------------------
def study_report(
    root: Path,
    datasets: Sequence[str] | None = None,
    levers: Sequence[str] | None = None,
    metric: str = "accuracy",
    out: Path | None = None,
    compare: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Write the study's tables, figures and cells.csv into ``out`` (default ``<root>/study-report``).
    ``datasets``: the study's dataset names (default: the presets); ``levers``: the levers to
    tabulate and expect (default: every lever found; scripts/study.sh's are expected too);
    ``compare``: levers (sweep families, e.g. candidate recipes and baselines) ranked together in
    one more table, ``compare.md``, each row a recipe. Returns what was found and written."""
    import pandas as pd

    root = Path(root)
    datasets = list(datasets or known_datasets())
    sweeps, unknown = discover(root, datasets)
    found = rp._unique([s.lever for s in sweeps])
    expected = list(levers) if levers else rp._unique(planned_levers() + found)
    result: dict[str, Any] = {"sweeps": [s.name for s in sweeps], "unrecognised": unknown, "files": {}, "levers": {}}
    names = {s.name for s in sweeps}
    result["missing"] = [f"{PREFIX}{lv}_{d}" for lv in expected for d in datasets if f"{PREFIX}{lv}_{d}" not in names]
    if not sweeps:
        return result
    out = Path(out) if out else root / OUT_DIR
    out.mkdir(parents=True, exist_ok=True)
    all_cells, summaries, sweep_rows, per_lever = [], [], [], {}
    for lever in rp._unique([*(lv for lv in expected if lv in found), *(compare or [])]):
        loaded = [load(s, metric) for s in sweeps if s.lever == lever]
        if not loaded:
            continue
        sweep_rows += [sweep_row(item) for item in loaded]
        axes, cells, per_seed = lever_cells(lever, loaded, metric)
        per_lever[lever] = (axes, cells, per_seed)
        notes = [f"{i.sweep.name}: {n}" for i in loaded for n in i.notes]
        if lever not in expected:
            continue  # only asked for in the comparison
        tabulated = tabulate(lever, axes, cells, per_seed, metric, datasets, out, notes, result)
        if tabulated is None:
            continue
        cells, summary = tabulated
        all_cells.append(cells)
        summaries.append(summary)
        if lever == BASELINES:
            targets = targets_table(cells, datasets)
            if targets:
                write_atomic(out / TARGETS_FILE, targets + "\n")
                result["files"]["targets"] = [out / TARGETS_FILE]
                result["targets"] = targets
    if compare:
        absent = [lv for lv in compare if lv not in per_lever]
        axes, cells, per_seed = comparison_cells([(lv, *per_lever[lv]) for lv in compare if lv in per_lever])
        notes = [f"No sweep of {', '.join(absent)} under {root / 'multiruns'}."] if absent else []
        tabulated = tabulate(COMPARE, axes, cells, per_seed, metric, datasets, out, notes, result)
        if tabulated is not None:
            all_cells.append(tabulated[0])
            summaries.append(tabulated[1])
    if all_cells:
        cells = pd.concat(all_cells, ignore_index=True).drop(columns=["key"])
        front = ["lever", "value", "dataset", "sweep", "n", "validation_mean", "validation_std", "test_mean"]
        cells = cells[[*front, "test_std"] + [c for c in cells.columns if c not in [*front, "test_std"]]]
        cells = cells.rename(columns=_metric_names(metric))
        write_atomic(out / CELLS_FILE, cells.to_csv(index=False))
        result["files"]["cells"] = [out / CELLS_FILE]
        result["cells"] = cells
    summary_md = summary_markdown(root, datasets, sweep_rows, summaries, result, metric)
    write_atomic(out / SUMMARY_FILE, summary_md + "\n")
    result["files"]["summary"] = [out / SUMMARY_FILE]
    result["summary"] = summary_md
    result["out"] = out
    _forget_stale(out, [p for paths in result["files"].values() for p in paths])
    return result


def sweep_row(item: Loaded) -> dict[str, Any]:
    frame = item.frame
    status = frame["status"].value_counts().to_dict() if not frame.empty else {}
    return {
        "sweep": item.sweep.name,
        "lever": item.sweep.lever,
        "dataset": item.sweep.dataset,
        "jobs": len(frame),
        "completed": int(status.get("completed", 0)),
        "not completed": ", ".join(f"{n} {s}" for s, n in status.items() if s != "completed") or "–",
        "notes": " ".join(item.notes) or "–",
    }


def tabulate(
    lever: str,
    axes: list[str],
    cells: pd.DataFrame,
    per_seed: dict,
    metric: str,
    datasets: list[str],
    out: Path,
    notes: list[str],
    result: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Rank one lever's cells, write its Markdown and figure; its cells (with ranks) and summary."""
    markdown_file = out / f"{lever}.md"
    result["files"][lever] = [markdown_file]
    tail = "\n\nJobs not in the table, per sweep:\n\n" + "\n".join(f"- {n}" for n in notes) if notes else ""
    if cells.empty:
        write_atomic(markdown_file, f"# Lever: {lever}\n\nNo completed job with validation {metric} yet.{tail}\n")
        return None
    ranking = rank(cells, metric, datasets)
    markdown, summary = lever_table(lever, axes, cells, ranking, per_seed, metric, datasets)
    write_atomic(markdown_file, markdown + tail + "\n")
    result["files"][lever] += lever_figure(lever, axes, cells, ranking, metric, datasets, out)
    result["levers"][lever] = {"chosen": [_label(cells, k) for k in ranking.chosen], "summary": summary}
    cells = cells.assign(
        rank_on_dataset=[ranking.ranks.at[k, d] for k, d in zip(cells["key"], cells["dataset"])],
        mean_rank=[ranking.mean_rank.get(k) for k in cells["key"]],
        chosen=[k in ranking.chosen for k in cells["key"]],
    )
    return cells, summary


def comparison_cells(parts: list[tuple[str, list[str], pd.DataFrame, dict]]) -> tuple[list[str], pd.DataFrame, dict]:
    """Several levers' cells as one lever whose first axis is the recipe (the lever's name):
    candidate recipes, each its own sweep family, ranked against each other and the baselines."""
    import pandas as pd

    # Only axes some recipe has a value of (a lever with no finished cell brings none).
    axes = [
        RECIPE,
        *rp._unique(
            [
                a
                for _, lever_axes, cells, _ in parts
                for a in lever_axes
                if a in cells and cells[a].map(rp._canon).notna().any()
            ]
        ),
    ]
    frames, per_seed = [], {}
    for lever, _, cells, seeds in parts:
        if cells.empty:
            continue
        cells = cells.assign(**{a: None for a in axes if a not in cells and a != RECIPE}).assign(**{RECIPE: lever})
        values = [[row[a] for a in axes] for _, row in cells.iterrows()]
        keys = [tuple(rp._canon(v) for v in row) for row in values]
        per_seed.update(
            {(new, d): seeds[old, d] for old, new, d in zip(cells["key"], keys, cells["dataset"]) if (old, d) in seeds}
        )
        # A recipe's label names only the axes it has (a candidate has no method axis).
        labels = [value_label(*zip(*[(a, v) for a, v in zip(axes, row) if rp._canon(v) is not None])) for row in values]
        frames.append(cells.assign(key=keys, value=labels, lever=COMPARE))
    return axes, (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), per_seed


def _forget_stale(out: Path, written: list[Path]) -> None:
    """Remove what an earlier run wrote and this one did not (a lever since left out, or no
    longer found): a stale table beside fresh ones would read as current."""
    manifest = out / MANIFEST
    names = {p.name for p in written}
    previous = manifest.read_text().split() if manifest.is_file() else []
    for name in set(previous) - names:
        (out / name).unlink(missing_ok=True)
    write_atomic(manifest, "\n".join(sorted(names)) + "\n")


def _metric_names(metric: str) -> dict[str, str]:
    return {f"{s}_{stat}": f"{s}_{metric}_{stat}" for s in rp.SPLITS for stat in ("mean", "std")}


def summary_markdown(
    root: Path, datasets: list[str], sweep_rows: list[dict], summaries: list, result: dict, metric: str
) -> str:
    import pandas as pd

    lines = [
        "# Recipe study: cross-dataset summary",
        f"Study root: `{root}`; datasets: {', '.join(datasets)}; metric: {metric}. Each lever's value is chosen by "
        f"its mean rank across datasets on validation {metric} (see `<lever>.md`); test is reported, never used to "
        f"choose. Every mean carries its seed std; `{CELLS_FILE}` holds every cell.",
    ]
    if summaries:
        chosen = pd.concat(summaries, ignore_index=True)
        chosen = chosen[chosen["chosen"]]
        rows = [
            {
                "lever": r["lever"],
                "chosen value": r["value"],
                "mean rank": f"{r['mean_rank']:.2f}",
                f"mean test {metric} (points)": points(r["mean_test"], r["seed_std_of_mean"]),
                "max seed std": f"{100 * r['max_seed_std']:.1f}" if math.isfinite(r["max_seed_std"]) else "–",
                "datasets": int(r["datasets"]),
            }
            for _, r in chosen.iterrows()
        ]
        lines += ["## Chosen per lever", pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)]
    if sweep_rows:
        lines += ["## Sweeps read", pd.DataFrame(sweep_rows).to_markdown(index=False, disable_numparse=True)]
    if result["missing"]:
        by_lever: dict[str, list[str]] = {}
        for name in result["missing"]:
            lever, dataset = next((name[len(PREFIX) : -len(d) - 1], d) for d in datasets if name.endswith(f"_{d}"))
            by_lever.setdefault(lever, []).append(dataset)
        lines += [
            f"## Missing sweeps ({len(result['missing'])}: `{PREFIX}<lever>_<dataset>` not under `{root}/multiruns`)",
            "\n".join(f"- {lever}: {', '.join(ds)}" for lever, ds in by_lever.items()),
        ]
    if result["unrecognised"]:
        lines += [
            "## Not read",
            f"`study_*` folders whose name ends in none of the datasets: {', '.join(result['unrecognised'])} "
            "(name their dataset with --datasets to read them).",
        ]
    return "\n\n".join(lines)


# -- the candidate recipe --------------------------------------------------------------------------------------------
#: The levers a candidate recipe combines, in priority order (``a+b``: two levers' values compete as
#: one, e.g. fixed epochs against 10 epochs with early stopping). Not the baselines (methods) nor
#: the template lever, whose values differ between single-text and pair datasets.
CHOOSE = ["lr", "epochs+patience", "trainable", "init", "head_lr", "prompt_length", "encoder", "schedule"]


def _override(axis: str, value: Any) -> str | None:
    """One chosen axis value as a ptexp-train override; None for the default (null)."""
    canon = rp._canon(value)
    if canon is None:
        return None
    text = rp.show(value)
    if canon[0] == "str" and text.startswith("["):
        import json

        text = "[" + ",".join(str(v) for v in json.loads(text)) + "]"
    # ++ sets a key whether the composed config has it or not (early_stopping_patience is added);
    # a group choice (prompt_encoder=lstm) is a plain override.
    return f"++{axis}={text}" if "." in axis else f"{axis}={text}"


def chosen_overrides(
    root: Path,
    levers: Sequence[str] = CHOOSE,
    datasets: Sequence[str] | None = None,
    metric: str = "accuracy",
    min_datasets: int = 4,
) -> tuple[list[str], list[str]]:
    """Each lever's value of best mean validation rank (``rank``), combined into one recipe as
    ptexp-train overrides, and a line per lever saying why. A lever counts once it is ranked on
    ``min_datasets`` datasets; a later lever touching a key an earlier one set is left out. The
    axes come from each job's saved config, so a preset's fixed setting (study_patience's 10
    epochs) is part of its value."""
    datasets = list(datasets or known_datasets())
    sweeps, _ = discover(root, datasets)
    chosen: dict[str, str] = {}
    notes: list[str] = []
    for spec in levers:
        parts = spec.split("+")
        loaded = [load(s, metric) for s in sweeps if s.lever in parts]
        axes, cells, _ = lever_cells(spec, loaded, metric) if loaded else ([], None, {})
        if cells is None or cells.empty:
            notes.append(f"{spec}: no finished job")
            continue
        ranking = rank(cells, metric, datasets)
        ranked_on = int(ranking.n_ranked.max())
        if ranked_on < min_datasets or len(ranking.chosen) != 1:
            notes.append(f"{spec}: left out (ranked on {ranked_on} dataset(s), chosen: {len(ranking.chosen)})")
            continue
        best = ranking.chosen[0]
        row = cells[cells["key"].map(lambda k, best=best: k == best)].iloc[0]
        settings = {a: o for a in axes if (o := _override(a, row[a])) is not None}
        if "trainer.num_train_epochs" in settings and "trainer.min_train_steps" not in axes:
            # The budget levers measured exact epoch counts (their presets switch the floor off);
            # under trainer=default's step floor a chosen 3 would silently train 6.
            settings["trainer.min_train_steps"] = "++trainer.min_train_steps=null"
        ranks = ", ".join(f"{_label(cells, k)} {r:.2f}" for k, r in ranking.mean_rank.sort_values().items())
        clash = sorted(set(settings) & set(chosen))
        if clash:
            notes.append(f"{spec}: {row['value']} not combined: {', '.join(clash)} set by an earlier lever")
            continue
        chosen.update(settings)
        notes.append(f"{spec}: {row['value']} (mean validation rank over {ranked_on} datasets: {ranks})")
    return list(chosen.values()), notes


def _names(text: str | None) -> list[str] | None:
    return [t for t in text.split(",") if t] if text else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ptexp-study",
        description="The recipe study's cross-dataset tables: every <root>/multiruns/study_<lever>_<dataset> sweep, "
        "one table and figure per lever (values ranked by mean rank across datasets on validation), the targets "
        "table from the baselines lever and cells.csv, into <root>/study-report.",
    )
    parser.add_argument("root", type=Path, nargs="?", default=Path("outputs/study"), help="the study root")
    parser.add_argument("--datasets", help="comma-separated dataset names (default: ptexp/conf/dataset/study)")
    parser.add_argument("--levers", help="comma-separated levers to tabulate and expect (default: all found)")
    parser.add_argument("--metric", default="accuracy", help="metric name in metrics.json (default: accuracy)")
    parser.add_argument("--out", type=Path, help="output folder (default: <root>/study-report)")
    parser.add_argument(
        "--compare",
        help="comma-separated levers ranked together in compare.md, one row per recipe (e.g. candidate sweeps "
        "study_<name>_<dataset> against baselines)",
    )
    parser.add_argument(
        "--choose",
        nargs="?",
        const=",".join(CHOOSE),
        help="print the candidate recipe instead of writing tables: each lever's value of best mean rank, "
        "combined, as ptexp-train overrides on one line (why, on stderr); levers in priority order "
        f"(default: {','.join(CHOOSE)})",
    )
    parser.add_argument("--min-datasets", type=int, default=4, help="--choose: datasets a lever must be ranked on")
    args = parser.parse_args(argv)
    datasets = _names(args.datasets) or known_datasets()
    no_sweeps = (
        f"ptexp-study: no study sweeps in {args.root / 'multiruns'} (folders named {PREFIX}<lever>_<dataset>, "
        f"datasets: {', '.join(datasets)})."
    )
    if args.choose is not None:
        if args.min_datasets < 1:
            parser.error(f"--min-datasets={args.min_datasets}: a lever must be ranked on at least 1 dataset")
        levers = _names(args.choose) or CHOOSE
        sweeps, _ = discover(args.root, datasets)
        if not sweeps:
            # A mistyped root would otherwise print an empty recipe and succeed.
            print(no_sweeps, file=sys.stderr)
            return 2
        known = {s.lever for s in sweeps} | set(planned_levers()) | {p for spec in CHOOSE for p in spec.split("+")}
        unknown = sorted({p for spec in levers for p in spec.split("+")} - known)
        if unknown:
            print(
                f"ptexp-study: --choose {','.join(unknown)}: no such lever under {args.root / 'multiruns'} nor in "
                f"scripts/study.sh; levers: {', '.join(sorted(known))} (a+b: two levers' values compete as one).",
                file=sys.stderr,
            )
            return 2
        overrides, notes = chosen_overrides(args.root, levers, datasets, args.metric, args.min_datasets)
        print("\n".join(notes), file=sys.stderr)
        print(" ".join(overrides))
        return 0
    result = study_report(
        args.root, _names(args.datasets), _names(args.levers), args.metric, args.out, _names(args.compare)
    )
    if not result["sweeps"]:
        print(no_sweeps, file=sys.stderr)
        return 2
    print(result["summary"])
    for name, paths in result["files"].items():
        print(f"  {name}: {', '.join(str(p) for p in paths)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Turn a folder of finished runs into results a paper can use: ``results.csv``, an ablation
table whose best cell is selected on validation and reported on test, and figures.

The folder is a sweep (``outputs/multiruns/<sweep>``: every job folder in it, whatever launch
made it) or any folder of single runs (``outputs/runs/<day>``: the columns are the config keys
that differ). ``ptexp-report <folder>`` by hand, or automatically when a multirun ends
(:class:`ReportCallback`, configured under ``hydra.callbacks``).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import numbers
import os
import re
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ptexp.experiment import DEFAULT_METRIC, NON_EXPERIMENT_KEYS, greater_is_better, selection_metric
from ptexp.jobs import job_status, read_status, read_sweep
from ptexp.layout import (
    CONFIG_FILE,
    HYDRA_DIR,
    METRICS_FILE,
    MULTIRUN_FILE,
    OPTUNA_DB,
    REPORT_DIR,
    RUN_FILE,
    STATUS_FILE,
    SWEEP_FILE,
)
from ptexp.outputs import read_json, write_atomic

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

log = logging.getLogger("ptexp.report")

RESULTS_FILE = "results.csv"
TABLE_MD = "ablation.md"
TABLE_TEX = "ablation.tex"
SEED = "seed"
TOKENS = "prompt_encoder.num_virtual_tokens"
SPLITS = ("validation", "test")
# Folders a run folder search never enters: they hold files named like a run's own
# (W&B's files/config.yaml) without being runs.
NOT_RUNS = {"wandb", REPORT_DIR, HYDRA_DIR, ".submitit"}

# Sized for one column of a two-column paper (3.25-3.5 in); 8 pt text stays readable there.
COLUMN_WIDTH_IN = 3.4
FIGURE_STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "errorbar.capsize": 2.5,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    # TrueType in the PDF: journals reject Type 3 fonts, and the text stays editable.
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "savefig.dpi": 300,
}
# Okabe & Ito's palette: distinguishable with every common colour-vision deficiency.
LINE_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
HEATMAP_CMAP = "cividis"
MAX_LINES = len(LINE_COLORS)

STATUS_WORDS = {
    "failed": "failed",
    "interrupted": "interrupted (process gone)",
    "running": "still running",
    "missing": "never started or left no metrics.json",
}


# -- finding the runs ---------------------------------------------------------------------------------------------
@dataclass
class Job:
    """One row of the report: a run or sweep-job folder (which may not exist yet for a planned job)."""

    name: str
    dir: Path
    overrides: list[str] = field(default_factory=list)


def _is_run_dir(path: Path) -> bool:
    return any(
        (path / name).is_file() for name in (METRICS_FILE, STATUS_FILE, CONFIG_FILE, f"{HYDRA_DIR}/overrides.yaml")
    )


def _saved_overrides(job_dir: Path) -> list[str]:
    hydra_overrides = job_dir / HYDRA_DIR / "overrides.yaml"
    if hydra_overrides.is_file():
        return [str(o) for o in OmegaConf.load(hydra_overrides)]
    if (job_dir / RUN_FILE).is_file():
        return [str(o) for o in read_json(job_dir / RUN_FILE).get("overrides") or []]
    return []


def folder_kind(folder: Path) -> str:
    """``optuna`` (an Optuna search), ``sweep`` (ptexp's or Hydra's grid) or ``runs`` (single runs)."""
    multirun = folder / MULTIRUN_FILE
    sweeper = OmegaConf.select(OmegaConf.load(multirun), "hydra.sweeper._target_") if multirun.is_file() else None
    if (folder / OPTUNA_DB).is_file() or "optuna" in str(sweeper).lower():
        return "optuna"
    if (folder / SWEEP_FILE).is_file() or (folder / MULTIRUN_FILE).is_file():
        return "sweep"
    return "runs"


def find_jobs(folder: Path, kind: str) -> list[Job]:
    """A sweep: the union of the latest launch's plan (so a job killed before it wrote anything
    still counts) and every job folder on disk (earlier launches, whose plan sweep.json no
    longer lists). A folder of runs: every run folder below it."""
    if kind == "runs":
        return [
            Job(str(p.relative_to(folder)) if p != folder else p.name, p, _saved_overrides(p)) for p in _walk(folder)
        ]
    jobs = {
        job["dir"]: Job(job["dir"], folder / job["dir"], list(job["overrides"]))
        for job in read_sweep(folder).get("jobs", [])
    }
    for path in sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in NOT_RUNS and _is_run_dir(p)):
        jobs.setdefault(path.name, Job(path.name, path, _saved_overrides(path)))
    return list(jobs.values())


def _walk(folder: Path) -> list[Path]:
    found = []
    for root, dirs, _ in os.walk(folder):
        path = Path(root)
        if _is_run_dir(path):
            found.append(path)
            dirs.clear()  # a run's own subfolders (adapter, checkpoints, wandb) are not runs
            continue
        dirs[:] = sorted(d for d in dirs if d not in NOT_RUNS)
    return found


def _sweeper_config(folder: Path) -> dict[str, Any]:
    """``hydra.sweeper`` of the sweep: multirun.yaml, else a job's .hydra/hydra.yaml (Optuna's
    sweeper writes no multirun.yaml)."""
    candidates = [folder / MULTIRUN_FILE]
    if folder.is_dir():
        candidates += sorted(folder.glob(f"*/{HYDRA_DIR}/hydra.yaml"))[:1]
    for path in candidates:
        if path.is_file():
            node = OmegaConf.select(OmegaConf.load(path), "hydra.sweeper", default=None)
            if node is not None:
                # Unresolved: interpolations such as the storage path name resolvers this process may lack.
                return dict(OmegaConf.to_container(node, resolve=False))  # type: ignore[arg-type]
    return {}


# -- reading one job ----------------------------------------------------------------------------------------------
def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``key=value`` overrides with values typed as Hydra types them (``true``, ``null``, lists,
    quoted strings); a group choice (``prompt_encoder=lstm``) keeps the group as its key."""
    return dict(_parse_override(item) for item in items)


@functools.lru_cache(maxsize=4096)
def _parse_override(item: str) -> tuple[str, Any]:
    # Cached: every job of a sweep repeats the same base overrides, and Hydra's parser is slow.
    try:
        (override,) = OverridesParser.create().parse_overrides([item])
    except HydraException:
        key, _, value = item.partition("=")
        return key.lstrip("+~"), value
    value = None if override.is_delete() else override.value()
    if isinstance(value, (list, dict)):
        value = override.get_value_element_as_str()  # hashable, and as the user wrote it
    return override.key_or_group, value


def _ignored(key: str) -> bool:
    return key.split(".", 1)[0].split("/", 1)[0] in NON_EXPERIMENT_KEYS


def flat_config(cfg: DictConfig) -> dict[str, Any]:
    """The config as dotted keys (lists as JSON text, so that values compare and group),
    without the keys that never change a result."""
    import pandas as pd

    data = OmegaConf.to_container(cfg, resolve=True)
    flat = pd.json_normalize(data).iloc[0].to_dict() if data else {}
    return {
        k: json.dumps(v, default=str) if isinstance(v, (list, dict)) else v for k, v in flat.items() if not _ignored(k)
    }


@dataclass
class JobRecord:
    job: Job
    status: str
    overrides: dict[str, Any]
    config: dict[str, Any]  # flat_config of the saved config.yaml; empty if the job never got that far
    choices: dict[str, Any]  # Hydra's config-group choices (prompt_encoder: lstm)
    metrics: dict[str, Any]
    error: str | None = None

    def value(self, key: str) -> Any:
        """The value this job ran with: the saved config is the truth; a key a launch did not
        sweep (an axis added later) is found there too."""
        for source in (self.config, self.choices, self.overrides):
            if key in source:
                return source[key]
        return None


def read_job(job: Job) -> JobRecord:
    import pandas as pd

    status = job_status(job.dir)
    config_file = job.dir / CONFIG_FILE
    config = flat_config(OmegaConf.load(config_file)) if config_file.is_file() else {}
    hydra_file = job.dir / HYDRA_DIR / "hydra.yaml"
    choices: dict[str, Any] = {}
    if hydra_file.is_file():
        node = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.runtime.choices", default=None)
        choices = dict(OmegaConf.to_container(node)) if node is not None else {}  # type: ignore[arg-type]
    metrics: dict[str, Any] = {}
    if status == "completed":
        flat = pd.json_normalize(read_json(job.dir / METRICS_FILE)).iloc[0].to_dict()
        # Per-epoch history (a list) stays in metrics.json: one row is one run's final figures.
        metrics = {k: v for k, v in flat.items() if not isinstance(v, (list, dict))}
    error = read_status(job.dir).get("error") if status != "completed" else None
    return JobRecord(job, status, parse_overrides(job.overrides), config, choices, metrics, error)


# -- the table's rows and columns ---------------------------------------------------------------------------------
def _canon(value: Any) -> Any:
    """Equal values compare equal whatever their source (``lr=1e-2`` vs 0.01 in config.yaml)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return ("bool", bool(value))
    if isinstance(value, numbers.Real):  # numpy's numbers too, as pandas hands them back
        return ("num", float(value))
    return ("str", str(value))


def _sort_key(value: Any) -> tuple:
    canon = _canon(value)
    if canon is None:
        return (2, 0.0, "")
    kind, v = canon
    return (0, v, "") if kind == "num" else (1, 0.0, str(v))


def _varies(records: list[JobRecord], key: str) -> bool:
    # A job that never wrote its config (planned, not started) does not know the value: it
    # must not make a constant key look swept.
    known = [r for r in records if key in r.config or key in r.choices or key in r.overrides]
    return len({_canon(r.value(key)) for r in known}) > 1


def _unique(keys: list[str]) -> list[str]:
    return list(dict.fromkeys(keys))


def find_axes(records: list[JobRecord], kind: str, folder: Path) -> tuple[list[str], list[str]]:
    """The columns that tell cells apart (the seed is the replicate, never an axis), and notes
    on any the sweep did not declare."""
    done = [r for r in records if r.status == "completed"]
    notes: list[str] = []
    if kind == "optuna":
        # Only what the study searched: other varying columns are outcomes (metrics), not inputs.
        # The sweeper's plan first: a key fixed on the command line is in params but not searched.
        searched = read_sweep(folder).get("axes") or list((_sweeper_config(folder).get("params") or {}).keys())
        return [k for k in searched if k != SEED], notes
    if kind == "runs":
        keys = _unique([k for r in done for k in r.config])
        return [k for k in keys if k != SEED and _varies(done, k)], notes
    declared = list(read_sweep(folder).get("axes") or [])
    override_keys = _unique([k for r in records for k in r.overrides if not _ignored(k)])
    axes = [k for k in _unique(declared + override_keys) if k != SEED and _varies(records, k)]
    # Jobs in one cell must be the same experiment up to the seed; a key that differs inside a
    # cell (a preset edited between launches) becomes a column rather than being averaged away.
    cells: dict[tuple, list[JobRecord]] = {}
    for r in done:
        cells.setdefault(tuple(_canon(r.value(a)) for a in axes), []).append(r)
    config_keys = _unique([k for r in done for k in r.config])
    hidden = [
        k
        for k in config_keys
        if k != SEED
        and k not in axes
        and not any(k.startswith(f"{a}.") for a in axes)  # set by a group axis (prompt_encoder=lstm)
        and any(_varies(members, k) for members in cells.values())
    ]
    if hidden:
        notes.append(
            f"{', '.join(hidden)} differ{'s' if len(hidden) == 1 else ''} between jobs the sweep's axes do not "
            "tell apart (changed between launches?): shown as column(s)."
        )
    return axes + hidden, notes


def collect(folder: Path, kind: str | None = None) -> tuple[pd.DataFrame, list[JobRecord], str]:
    """One row per job: its status, error, the value of every override key (filled from its
    config where it lacks one) and its metrics."""
    import pandas as pd

    kind = kind or folder_kind(folder)
    records = [read_job(job) for job in find_jobs(folder, kind)]
    # The seed always: it is what makes two rows of one cell replicates.
    keys = _unique(
        [k for r in records for k in r.overrides if not k.startswith("hydra.")]
        + list((_sweeper_config(folder).get("params") or {}).keys() if kind == "optuna" else [])
        + [SEED]
    )
    rows = []
    for r in records:
        row: dict[str, Any] = {"job": r.job.name, "status": r.status, "error": r.error}
        row.update({k: r.value(k) for k in keys})
        row.update(r.metrics)
        rows.append(row)
    return pd.DataFrame(rows), records, kind


def report_metric(metric: str | None, records: list[JobRecord]) -> str:
    """The metric name without its split: ``--metric``'s (``test.accuracy`` still accepted), else the
    one the runs select their best epoch by."""
    if metric:
        return metric.split(".", 1)[1] if metric.split(".", 1)[0] in SPLITS else metric.removeprefix("eval_")
    chosen = Counter(_selection_metric(r) for r in records if r.status == "completed")
    return chosen.most_common(1)[0][0] if chosen else DEFAULT_METRIC


def _selection_metric(record: JobRecord) -> str:
    recorded = record.metrics.get("selection_metric")
    if isinstance(recorded, str) and recorded:
        return recorded
    trainer = {k.split(".", 1)[1]: v for k, v in record.config.items() if k.startswith("trainer.")}
    return selection_metric({"trainer": trainer})


def ablation_table(frame: pd.DataFrame, axes: list[str], metric: str) -> pd.DataFrame | None:
    """Per cell (axes values; seeds pooled): n, validation and test mean/std, and ``selected``:
    the cell with the best mean validation metric."""
    import numpy as np
    import pandas as pd

    val, test = f"validation.{metric}", f"test.{metric}"
    if val not in frame.columns:
        return None
    done = frame[(frame["status"] == "completed") & frame[val].notna()]
    if done.empty:
        return None
    cells: dict[tuple, list[int]] = {}
    for idx, row in done.iterrows():
        cells.setdefault(tuple(_canon(row[a]) for a in axes), []).append(idx)
    rows = []
    for members in cells.values():
        part = done.loc[members]
        first = part.iloc[0]
        row = {a: first[a] for a in axes}
        row["n"] = len(part)
        for split, column in (("validation", val), ("test", test)):
            values = pd.to_numeric(part[column], errors="coerce").dropna() if column in part else pd.Series([])
            row[f"{split}_mean"] = float(values.mean()) if len(values) else np.nan
            row[f"{split}_std"] = float(values.std(ddof=1)) if len(values) > 1 else np.nan
        row["seeds"] = ",".join(str(s) for s in part[SEED]) if SEED in part else ""
        rows.append(row)
    rows.sort(key=lambda r: tuple(_sort_key(r[a]) for a in axes))
    table = pd.DataFrame(rows)
    means = table["validation_mean"]
    best = means.idxmax() if greater_is_better(metric) else means.idxmin()
    table["selected"] = table.index == best
    return table


# -- writing the table --------------------------------------------------------------------------------------------
def short_names(axes: list[str]) -> dict[str, str]:
    short = {a: a.rsplit(".", 1)[-1] for a in axes}
    return short if len(set(short.values())) == len(short) else {a: a for a in axes}


def show(value: Any) -> str:
    """An axis value as a person writes it: 0.003, not 0.0030000000000000001; null as –."""
    canon = _canon(value)
    if canon is None:
        return "–"
    kind, v = canon
    if kind == "bool":
        return "true" if v else "false"
    if kind == "num":
        return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"
    return str(v)


def _cell(mean: float, std: float, n: int, latex: bool) -> str:
    if math.isnan(mean):
        return "–"
    if n < 2 or math.isnan(std):
        return f"{mean:.4f}"  # one run has no spread: printing ± 0.0000 would claim one
    pm = " $\\pm$ " if latex else " ± "
    return f"{mean:.4f}{pm}{std:.4f}"


def caption(metric: str) -> str:
    direction = "" if greater_is_better(metric) else " (lower is better)"
    return (
        f"Validation and test {metric}{direction}, mean ± std over n runs (seeds) per configuration; "
        f"best cell (bold) selected by mean validation {metric}; test {metric} reported."
    )


_TEX_SPECIAL = {"\\": "\\textbackslash{}", "±": "$\\pm$", **{c: f"\\{c}" for c in "&%$#_{}"}}


def _tex(text: str) -> str:
    return re.sub(r"[\\&%$#_{}±]", lambda m: _TEX_SPECIAL[m.group()], text)


def format_table(table: pd.DataFrame, axes: list[str], metric: str, latex: bool = False) -> str:
    """Markdown (or LaTeX) with validation and test columns and n; the test cell of the cell
    selected on validation is bold."""
    import pandas as pd

    names = short_names(axes)
    shown = pd.DataFrame(
        {names[a]: [show(v) for v in table[a]] for a in axes} if axes else {"configuration": ["all runs"] * len(table)}
    )
    for split in SPLITS:
        cells = [_cell(r[f"{split}_mean"], r[f"{split}_std"], int(r["n"]), latex) for _, r in table.iterrows()]
        shown[f"{split} {metric} (mean ± std)"] = cells
    best = int(table.index[table["selected"]][0])
    bold_col = f"test {metric} (mean ± std)" if shown.at[best, f"test {metric} (mean ± std)"] != "–" else None
    bold_col = bold_col or f"validation {metric} (mean ± std)"
    text = shown.at[best, bold_col]
    shown.at[best, bold_col] = f"\\textbf{{{text}}}" if latex else f"**{text}**"
    shown["n"] = table["n"].astype(int).to_numpy()
    if latex:
        shown.columns = [_tex(c) for c in shown.columns]
        for column in shown.columns[: len(axes) or 1]:
            shown[column] = [_tex(v) for v in shown[column]]
        return shown.to_latex(index=False, escape=False, caption=_tex(caption(metric)), label="tab:ablation")
    return shown.to_markdown(index=False, disable_numparse=True)


def _count_phrase(counts: Counter) -> str:
    return ", ".join(f"{n} {STATUS_WORDS.get(s, s)}" for s, n in counts.most_common())


def exclusion_notes(frame: pd.DataFrame, metric: str) -> list[str]:
    """Why each job that is not in the table is not there."""
    counts = Counter(frame.loc[frame["status"] != "completed", "status"])
    val = f"validation.{metric}"
    done = frame[frame["status"] == "completed"]
    lacking = int(done[val].isna().sum()) if val in done else len(done)
    if lacking:
        counts[f"completed without validation {metric} in metrics.json"] = lacking
    total = sum(counts.values())
    if not total:
        return []
    return [
        f"{total} job{'s' if total != 1 else ''} not in the table: {_count_phrase(counts)} "
        f"({RESULTS_FILE} has each job's status and error)."
    ]


def _repeat_notes(table: pd.DataFrame, axes: list[str]) -> list[str]:
    repeated = [
        ", ".join(f"{short_names(axes)[a]}={show(r[a])}" for a in axes) or "all runs"
        for _, r in table.iterrows()
        if r["seeds"] and len(r["seeds"].split(",")) != len(set(r["seeds"].split(",")))
    ]
    if not repeated:
        return []
    return [f"Cells with a seed run more than once (the same config re-run; n counts both): {'; '.join(repeated)}."]


# -- figures ------------------------------------------------------------------------------------------------------
def _save_figure(fig: Figure, out: Path, stem: str) -> list[Path]:
    """Vector PDF for the paper, 300-dpi PNG for slides and W&B; tight bounding box so that no
    label or colorbar title is clipped."""
    paths = [out / f"{stem}.pdf", out / f"{stem}.png"]
    # Embedding fonts in the PDF logs ~60 INFO lines from fontTools, which Hydra's logging
    # (root at INFO) would print at the end of every sweep.
    subset_log = logging.getLogger("fontTools")
    level = subset_log.level
    subset_log.setLevel(logging.WARNING)
    try:
        for path in paths:
            # Via a temp file, as every report file: a reader never sees half a figure.
            tmp = path.with_name(f".{path.name}.tmp")
            fig.savefig(tmp, format=path.suffix[1:], dpi=300, bbox_inches="tight", pad_inches=0.03)
            os.replace(tmp, path)
    finally:
        subset_log.setLevel(level)
    return paths


def _n_phrase(ns: Any) -> str:
    low, high = int(min(ns)), int(max(ns))
    return f"n = {low}" if low == high else f"n = {low}–{high}"


def _log_base(values: list[float]) -> int | None:
    """Log scale when the values span a decade or so (prompt lengths 1..128, learning rates):
    base 2 for integers, 10 otherwise; None for a linear axis."""
    if min(values) <= 0 or max(values) / min(values) < 8:
        return None
    return 2 if all(float(v).is_integer() for v in values) else 10


def _value_axis(ax: Any, values: list[float]) -> None:
    """Ticks at the x values that ran, labelled as written (1, 2, 4 … or 0.001, 0.01): never
    10^0/10^1, and no unlabelled minor ticks."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    numeric = sorted(set(values))
    base = _log_base(numeric)
    if base:
        ax.set_xscale("log", base=base)
    ax.xaxis.set_major_locator(FixedLocator(numeric))
    ax.xaxis.set_major_formatter(FixedFormatter([show(v) for v in numeric]))
    ax.xaxis.set_minor_locator(NullLocator())


def heatmap(table: pd.DataFrame, axes: list[str], metric: str, out: Path) -> list[Path]:
    """Two axes: test metric per cell as mean ± std, the cell selected on validation outlined."""
    if len(axes) != 2:
        return []
    import matplotlib
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    x_key = TOKENS if TOKENS in axes else max(axes, key=lambda a: table[a].map(_canon).nunique())
    y_key = next(a for a in axes if a != x_key)
    xs = sorted({_canon(v): v for v in table[x_key]}.values(), key=_sort_key)
    ys = sorted({_canon(v): v for v in table[y_key]}.values(), key=_sort_key)
    if len(xs) < 2 and len(ys) < 2:
        return []
    mean = np.full((len(ys), len(xs)), np.nan)
    std, count = mean.copy(), np.zeros_like(mean)
    selected = None
    for _, r in table.iterrows():
        i = [_canon(y) for y in ys].index(_canon(r[y_key]))
        j = [_canon(x) for x in xs].index(_canon(r[x_key]))
        mean[i, j], std[i, j], count[i, j] = r["test_mean"], r["test_std"], r["n"]
        if r["selected"]:
            selected = (i, j)
    if np.isnan(mean).all():
        return []
    names = short_names(axes)
    with matplotlib.rc_context({**FIGURE_STYLE, "axes.grid": False}):
        width = max(COLUMN_WIDTH_IN, 1.3 + 0.5 * len(xs))
        fig = Figure(figsize=(width, 1.2 + 0.38 * len(ys)), layout="constrained")
        ax = fig.add_subplot()
        cmap = matplotlib.colormaps[HEATMAP_CMAP].with_extremes(bad="#d9d9d9")
        image = ax.imshow(np.ma.masked_invalid(mean), cmap=cmap, aspect="auto")
        ax.set_xticks(range(len(xs)), [show(x) for x in xs])
        ax.set_yticks(range(len(ys)), [show(y) for y in ys])
        ax.set_xlabel(names[x_key])
        ax.set_ylabel(names[y_key])
        ax.tick_params(length=0)
        fontsize = 6.5 if len(xs) <= 6 else 5.5
        for (i, j), value in np.ndenumerate(mean):
            if np.isnan(value):
                ax.text(j, i, "–", ha="center", va="center", fontsize=fontsize)
                continue
            red, green, blue, _ = cmap(image.norm(value))
            # Dark text on light cells, light on dark (relative luminance, ITU-R BT.709).
            color = "black" if 0.2126 * red + 0.7152 * green + 0.0722 * blue > 0.45 else "white"
            text = f"{value:.3f}" if count[i, j] < 2 or np.isnan(std[i, j]) else f"{value:.3f}\n±{std[i, j]:.3f}"
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=fontsize, linespacing=1.1)
        if selected is not None:
            i, j = selected
            for lw, edge in ((2.6, "white"), (1.2, "black")):  # visible on dark and light cells
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=lw, edgecolor=edge))
        colorbar = fig.colorbar(image, ax=ax, pad=0.02, fraction=0.06)
        colorbar.set_label(f"test {metric} (mean)")
        colorbar.ax.tick_params(labelsize=6.5)
        spread = (
            f"mean ± std over seeds ({_n_phrase(count[count > 0])} per cell)"
            if count.max() > 1
            else "one run per cell (no spread)"
        )
        ax.set_title(f"Test {metric}, {spread}\noutlined: best by validation {metric}", fontsize=7.5)
        return _save_figure(fig, out, "heatmap")


def line_plot(table: pd.DataFrame, axes: list[str], metric: str, out: Path) -> list[Path]:
    """Test metric against prompt length (else the first numeric axis), one line per value of
    the other axes, error bars = std over seeds."""
    import matplotlib
    import numpy as np
    from matplotlib.figure import Figure

    numeric = [a for a in axes if all(_canon(v) is not None and _canon(v)[0] == "num" for v in table[a])]
    candidates = [a for a in ([TOKENS] if TOKENS in numeric else []) + numeric if table[a].map(_canon).nunique() >= 2]
    if not candidates:
        return []
    x_key = candidates[0]
    others = [a for a in axes if a != x_key]
    groups: dict[tuple, list[int]] = {}
    for idx, r in table.iterrows():
        groups.setdefault(tuple(_canon(r[a]) for a in others), []).append(idx)
    if len(groups) > MAX_LINES:
        log.info("line plot skipped: %d lines would not be readable", len(groups))
        return []
    names = short_names(axes)
    stem = "prompt_length" if x_key == TOKENS else f"by_{names[x_key].replace('.', '_')}"
    xs = [float(v) for v in table[x_key]]
    base = _log_base(xs)
    span = (math.log10(max(xs) / min(xs)) if base else max(xs) - min(xs)) or 1.0
    with matplotlib.rc_context(FIGURE_STYLE):
        fig = Figure(figsize=(COLUMN_WIDTH_IN, 2.6 if others else 2.4), layout="constrained")
        ax = fig.add_subplot()
        handles, labels = [], []
        selected = None
        for k, members in enumerate(groups.values()):
            part = table.loc[members].sort_values(x_key, key=lambda s: s.astype(float))
            # Lines side by side by a hair, so that their error bars do not hide each other.
            shift = (k - (len(groups) - 1) / 2) * 0.012 * span
            x = part[x_key].astype(float).to_numpy()
            x = x * 10**shift if base else x + shift
            line = ax.errorbar(
                x,
                part["test_mean"],
                yerr=np.nan_to_num(part["test_std"].to_numpy(dtype=float)),
                color=LINE_COLORS[k],
                marker=MARKERS[k],
            )
            handles.append(line)
            labels.append(", ".join(show(part.iloc[0][a]) for a in others))
            chosen = part["selected"].to_numpy()
            if chosen.any():
                selected = (x[chosen], part["test_mean"].to_numpy()[chosen])
        if selected is not None:
            (ring,) = ax.plot(*selected, marker="o", ms=10, mfc="none", mec="black", ls="none")
            handles.append(ring)
            labels.append(f"best by validation {metric}")
        _value_axis(ax, xs)
        ax.set_xlabel(names[x_key] if x_key != TOKENS else "prompt length (num_virtual_tokens)")
        ax.set_ylabel(f"test {metric}")
        if table["n"].max() > 1:
            ax.set_title(f"Test {metric}, mean ± std over seeds ({_n_phrase(table['n'])} per point)")
        else:
            ax.set_title(f"Test {metric}, one run per point (no spread)")
        if others:
            fig.legend(
                handles,
                labels,
                title=", ".join(names[a] for a in others),
                loc="outside lower center",
                ncol=min(len(handles), 4),
                frameon=False,
                columnspacing=1.0,
                handletextpad=0.4,
            )
        else:
            ax.legend(handles[-1:], labels[-1:], frameon=False, loc="best")
        return _save_figure(fig, out, stem)


# -- Optuna -------------------------------------------------------------------------------------------------------
def optuna_summary(
    folder: Path, frame: pd.DataFrame, axes: list[str], metric: str, out: Path
) -> tuple[list[str], dict[str, list[Path]]]:
    """The study's best trial (by the validation metric it optimised) with that trial's test
    metric, and Optuna's optimisation-history and parameter-importance plots."""
    db = folder / OPTUNA_DB
    if not db.is_file():
        return [], {}
    try:
        import optuna
    except ImportError:  # an optional extra: the table stands without it
        return [f"{OPTUNA_DB} found but optuna is not installed (pip install -e '.[optuna]'): no study summary."], {}

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = _load_study(optuna, f"sqlite:///{db}", folder)
        if study is None:
            return [f"{OPTUNA_DB} holds no study named {folder.name}: Optuna plots skipped."], {}
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            return [f"The study {study.study_name} has no complete trial yet."], {}
        figures = _optuna_figures(optuna, study, metric, out)
        best = study.best_trial
        order = [k for k in axes if k in best.params] + [k for k in best.params if k not in axes]
        params = ", ".join(f"{k.rsplit('.', 1)[-1]}={show(best.params[k])}" for k in order)
        goal = "maximised" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "minimised"
        test = _test_of_trial(frame, best.params, metric)
        test_text = (
            f"test {metric} {test:.4f}" if test is not None else f"test {metric} not found among the job folders"
        )
        note = (
            f"Best trial of {len(study.trials)} ({len(complete)} complete) by validation {metric}, the value "
            f"the study {goal}: #{best.number} ({params}): validation {metric} {best.value:.4f}, {test_text}."
        )
        return [note], figures
    finally:
        optuna.logging.set_verbosity(verbosity)


def _load_study(optuna: Any, storage: str, folder: Path) -> Any:
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    configured = _sweeper_config(folder).get("study_name")
    for name in (folder.name, configured):
        if name in names:
            return optuna.load_study(study_name=name, storage=storage)
    return optuna.load_study(study_name=names[0], storage=storage) if len(names) == 1 else None


def _test_of_trial(frame: pd.DataFrame, params: dict[str, Any], metric: str) -> float | None:
    test = f"test.{metric}"
    if test not in frame:
        return None
    done = frame[frame["status"] == "completed"]
    for _, row in done.iterrows():
        if all(k in row and _same(row[k], v) for k, v in params.items()):
            return float(row[test])
    return None


def _same(a: Any, b: Any) -> bool:
    ca, cb = _canon(a), _canon(b)
    if ca and cb and ca[0] == cb[0] == "num":
        return math.isclose(ca[1], cb[1], rel_tol=1e-9)
    return ca == cb


def _optuna_figures(optuna: Any, study: Any, metric: str, out: Path) -> dict[str, list[Path]]:
    import matplotlib
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_optimization_history

    figures: dict[str, list[Path]] = {}
    # Optuna switches pyplot to its ggplot style globally; the context puts everything back.
    with matplotlib.rc_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning on every call
        try:
            ax = plot_optimization_history(study, target_name=f"validation {metric}")
        except Exception as err:  # noqa: BLE001  (a plotting library's failure must not cost the table)
            log.warning("Optuna's optimisation-history plot failed: %s", err)
        else:
            try:
                _restyle_optuna(ax, len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]))
                figures["optuna_history"] = _save_figure(ax.figure, out, "optuna_history")
            finally:
                plt.close(ax.figure)
    importance = importance_plot(optuna, study, metric, out)
    if importance:
        figures["optuna_importance"] = importance
    return figures


def importance_plot(optuna: Any, study: Any, metric: str, out: Path) -> list[Path]:
    """Optuna's parameter importances, drawn here: Optuna 2.10's own plot calls
    ``matplotlib.cm.get_cmap`` (removed in Matplotlib 3.9), and its default fANOVA evaluator
    fails on scikit-learn >= 1.3's tree arrays; the random-forest impurity evaluator works, and
    a fixed seed makes the figure reproducible."""
    import matplotlib
    from matplotlib.figure import Figure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            evaluator = optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=0)
            scores = optuna.importance.get_param_importances(study, evaluator=evaluator)
        except (ValueError, RuntimeError, ImportError) as err:
            # Needs two or more complete trials whose parameters differ, and scikit-learn.
            log.info("parameter importances skipped: %s", err)
            return []
    if not scores:
        return []
    names = list(scores)[::-1]  # most important on top
    with matplotlib.rc_context({**FIGURE_STYLE, "axes.grid.axis": "x"}):
        fig = Figure(figsize=(COLUMN_WIDTH_IN, 0.9 + 0.3 * len(names)), layout="constrained")
        ax = fig.add_subplot()
        ax.barh([n.rsplit(".", 1)[-1] for n in names], [scores[n] for n in names], color=LINE_COLORS[0], height=0.6)
        for y, n in enumerate(names):
            ax.text(scores[n], y, f" {scores[n]:.2f}", va="center", fontsize=7)
        ax.set_xlim(0, max(scores.values()) * 1.2)
        ax.set_xlabel(f"importance for validation {metric}\n(mean decrease in impurity)")
        n_complete = len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE])
        ax.set_title(f"Parameter importances ({n_complete} complete trials)")
        return _save_figure(fig, out, "optuna_importance")


def _restyle_optuna(ax: Any, n_complete: int) -> None:
    """Optuna draws for a screen (6.4 in, 10-14 pt, fractional trial ticks); make it a paper
    column's figure with the same palette as the others."""
    from matplotlib.ticker import MaxNLocator

    fig = ax.figure
    fig.set_size_inches(COLUMN_WIDTH_IN, 2.5)
    fig.set_layout_engine("constrained")
    ax.set_title(f"Optimisation history ({n_complete} complete trials)", fontsize=8)
    ax.set_xlabel("trial", fontsize=8)
    ax.yaxis.label.set_fontsize(8)
    ax.tick_params(labelsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for artist, color in zip([*ax.collections, *ax.lines], LINE_COLORS[:1] + LINE_COLORS[5:6] * 4):
        artist.set_color(color)
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, ["trial", "best so far"][: len(handles)], fontsize=7, loc="best")


# -- the report ---------------------------------------------------------------------------------------------------
def report(folder: Path, metric: str | None = None, log_to_wandb: bool = True) -> dict[str, Any]:
    """Write results.csv, the table (Markdown + LaTeX) and figures into ``<folder>/report``.

    Returns what was written (``files``), the jobs that did not complete (``failed``: job,
    status, error), ``jobs`` (0 when the folder holds no run: nothing is written then),
    ``notes`` and, when a table could be made, ``table`` and ``markdown``.
    """
    folder = Path(folder)
    frame, records, kind = collect(folder)
    result: dict[str, Any] = {"jobs": len(frame), "kind": kind, "failed": [], "files": {}, "notes": []}
    if frame.empty:  # the caller says so in its own words (main: one line, exit 2)
        return result
    metric = report_metric(metric, records)
    result["metric"] = metric
    axes, notes = find_axes(records, kind, folder)
    for axis in axes:
        if axis not in frame:
            frame.insert(3, axis, [r.value(axis) for r in records])
    result["axes"] = axes
    out = folder / REPORT_DIR
    out.mkdir(exist_ok=True)
    _clear_figures_and_tex(out)
    write_atomic(out / RESULTS_FILE, frame.to_csv(index=False))
    result["files"]["results"] = out / RESULTS_FILE
    result["failed"] = [
        (r.job.name, r.status, r.error or "") for r in records if r.status not in ("completed", "running")
    ]
    notes += exclusion_notes(frame, metric)
    merged = (read_sweep(folder).get("merged") or {}) if kind == "sweep" else {}
    if merged:
        count = sum(len(v) for v in merged.values())
        notes.append(f"{count} planned job(s) not run: same effective config as another job ({SWEEP_FILE}: merged).")
    table = ablation_table(frame, axes, metric)
    figures: dict[str, list[Path]] = {}
    if table is not None:
        notes = _repeat_notes(table, axes) + notes
        if kind != "optuna":  # a search's trials are no grid: its own plots below say more
            figures["heatmap"] = heatmap(table, axes, metric, out)
            figures["line"] = line_plot(table, axes, metric, out)
    if kind == "optuna":
        # The study optimised the runs' own selection metric, whatever --metric the table shows.
        objective = report_metric(None, records)
        optuna_notes, optuna_figures = optuna_summary(folder, frame, axes, objective, out)
        notes = optuna_notes + notes
        figures.update(optuna_figures)
    result["files"].update({path.name: path for paths in figures.values() for path in paths})
    result["notes"] = notes
    result["figures"] = [p for paths in figures.values() for p in paths if p.suffix == ".png"]
    if table is None:
        by_split = [{c.split(".", 1)[1] for c in frame.columns if c.startswith(f"{s}.")} for s in SPLITS]
        timing = {"runtime", "samples_per_second", "steps_per_second"}
        recorded = sorted(by_split[0] & by_split[1] - timing)
        if recorded and f"validation.{metric}" not in frame:
            result["unknown_metric"] = True
            notes.insert(0, f"No job recorded validation {metric}; the runs record: {', '.join(recorded)}.")
        write_atomic(out / TABLE_MD, "\n\n".join(["No completed run to tabulate.", *notes]) + "\n")
        result["files"]["markdown"] = out / TABLE_MD
    else:
        markdown = "\n\n".join([f"Table: {caption(metric)}", format_table(table, axes, metric), *notes])
        latex = format_table(table, axes, metric, latex=True)
        write_atomic(out / TABLE_MD, markdown + "\n")
        write_atomic(out / TABLE_TEX, "".join(f"% {n}\n" for n in notes) + latex)
        result["files"].update(markdown=out / TABLE_MD, latex=out / TABLE_TEX)
        result.update(table=table, markdown=markdown)
    if log_to_wandb and table is not None and kind != "runs":
        _log_to_wandb(folder, frame, result)
    return result


def _clear_figures_and_tex(out: Path) -> None:
    """A figure or table an earlier report drew, from data or axes this one no longer has,
    must not sit beside the new results as if it were current."""
    for path in out.iterdir():
        stem, suffix = path.stem, path.suffix
        drawn = suffix in (".pdf", ".png") and (
            stem in ("heatmap", "prompt_length") or stem.startswith(("by_", "optuna_"))
        )
        if drawn or path.name == TABLE_TEX:
            path.unlink()


def _log_to_wandb(sweep_dir: Path, frame: pd.DataFrame, result: dict[str, Any]) -> None:
    """The table and figures as one 'report' run in the sweep's W&B group."""
    cfg_file = sweep_dir / MULTIRUN_FILE
    if not cfg_file.is_file():
        return
    cfg = OmegaConf.load(cfg_file)
    logger_cfg = cfg.get("logger")
    if logger_cfg is None or logger_cfg.backend != "wandb" or logger_cfg.mode == "disabled":
        return
    import wandb

    from ptexp.tracking import wandb_run

    group = sweep_dir.name
    report_cfg = OmegaConf.merge(logger_cfg, {"job_type": "report", "name": f"{group}/report"})
    out_dir = sweep_dir / REPORT_DIR
    with wandb_run(report_cfg, out_dir, f"{group}/report", {"sweep": group}, group=group) as wb:
        table = result["table"].astype({a: str for a in result["axes"]})
        wb.log({"ablation": wandb.Table(dataframe=table), "results": wandb.Table(dataframe=frame.astype(str))})
        for path in result["figures"]:
            wb.log({path.stem: wandb.Image(str(path))})
        result["wandb_dir"] = str(out_dir / "wandb")


def print_report(result: dict[str, Any], folder: Path) -> None:
    if "markdown" in result:
        print(f"\nAblation ({folder}):\n{result['markdown']}\n")
    else:
        for note in result["notes"]:
            print(note)
    for name, path in result["files"].items():
        print(f"  {name}: {path}")
    if result["failed"]:
        print(f"\n{len(result['failed'])} of {result['jobs']} jobs did not complete:", file=sys.stderr)
        for job, status, error in result["failed"]:
            print(f"  {status:11s} {job}  {error or ''}", file=sys.stderr)
        if result["kind"] != "runs":
            print("Re-launch the same command to retry only these.", file=sys.stderr)


class ReportCallback(Callback):
    """Reports a multirun when it ends; the sweep exits non-zero if any job failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        # The metric each job selects its epoch by, not the sweeper's progress-line metric.
        result = report(sweep_dir)
        print_report(result, sweep_dir)
        if result["failed"]:
            raise SystemExit(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ptexp-report",
        description="Table and figures for a sweep folder (outputs/multiruns/<sweep>) or any folder of runs "
        "(outputs/runs/<day>). The best configuration is selected on validation and reported on test.",
    )
    parser.add_argument("folder", type=Path, help="a sweep folder or a folder holding run folders")
    parser.add_argument(
        "--metric",
        default=None,
        help="metric name in metrics.json, e.g. accuracy, macro_f1, loss (default: the one the runs select "
        "their best epoch by, trainer.metric_for_best_model); test.accuracy / validation.macro_f1 also accepted",
    )
    parser.add_argument("--no-wandb", action="store_true", help="do not log the table to W&B")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(
            f"ptexp-report: {args.folder} is not a folder (give outputs/multiruns/<sweep> or outputs/runs/<day>).",
            file=sys.stderr,
        )
        return 2
    result = report(args.folder, metric=args.metric, log_to_wandb=not args.no_wandb)
    if not result["jobs"]:
        print(
            f"ptexp-report: no run folders in {args.folder} (none holds {CONFIG_FILE}, {METRICS_FILE}, "
            f"{STATUS_FILE} or {HYDRA_DIR}/overrides.yaml).",
            file=sys.stderr,
        )
        return 2
    if result.get("unknown_metric"):
        print(f"ptexp-report: {result['notes'][0]}", file=sys.stderr)
        return 2
    print_report(result, args.folder)
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

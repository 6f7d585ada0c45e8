"""Turn a folder of finished runs into results a paper can use: ``results.csv``, an ablation
table whose best cell is selected on validation and reported on test, and figures. When the
runs differ in training method, also a methods table (``methods.md``/``.tex``: accuracy and
macro-F1, trainable parameters, time, memory, saved size, the majority-class floor) and a
Pareto figure of test accuracy against trainable parameters (``pareto.pdf``/``.png``).

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ptexp.experiment import DEFAULT_METHOD, DEFAULT_METRIC, NON_EXPERIMENT_KEYS, greater_is_better, selection_metric
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
METHODS_MD = "methods.md"
METHODS_TEX = "methods.tex"
PARETO = "pareto"
SEED = "seed"
TOKENS = "prompt_encoder.num_virtual_tokens"


def preferred_x_axes() -> list[str]:
    """The axes the methods say their figures plot against (prompt length first), in order."""
    from ptexp.methods import all_methods

    ordered = [TOKENS]
    for method in all_methods().values():
        ordered += [a for a in method.report_axes if a not in ordered]
    return ordered


# The training method: the `method` group's choice, recorded as method.name in config.yaml.
METHOD = "method"
METHOD_NAME = "method.name"

# The methods table shows every metric of the runs' task (these for runs that record none);
# the report's metric is added when it is another.
METHOD_METRICS = ("accuracy", "macro_f1")


def task_metrics(frame: pd.DataFrame) -> list[str]:
    """The metrics the tabulated runs' task computes (metrics.json's ``task``), in its order."""
    from ptexp.tasks import get_task

    tasks = [str(t) for t in frame["task"].dropna().unique()] if "task" in frame else []
    names: list[str] = []
    for name in tasks:
        try:
            names.extend(get_task(name).metrics)
        except Exception:  # a task this install lacks: its runs still show the report's metric
            continue
    # A task's options may choose what it computes (a generation mode): only what runs recorded.
    recorded = [n for n in _unique(names) if any(_numbers(frame, f"{s}.{n}").size for s in SPLITS)]
    return recorded or list(METHOD_METRICS)


MIB = 2**20  # peak_memory_mb is MiB (ru_maxrss / 1024); saved sizes use the same unit
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
    return _flatten(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]


def _flatten(data: dict[str, Any] | None) -> dict[str, Any]:
    import pandas as pd

    flat = pd.json_normalize(data).iloc[0].to_dict() if data else {}
    return {
        k: json.dumps(v, default=str) if isinstance(v, (list, dict)) else v for k, v in flat.items() if not _ignored(k)
    }


def _method_ignores(method: str, cfg: DictConfig) -> frozenset[str]:
    """The config keys (and whole groups, such as ``prompt_encoder``) that ``method`` ignores,
    as its own ``effective`` normalisation says: the sweep dedupes on the same rule, so LoRA's
    job keeps whatever num_virtual_tokens its overrides named although LoRA has none. The
    report shows such a value as "–" rather than as a setting the run had."""
    import copy

    try:
        from ptexp.methods import get_method

        data = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(data, dict)
        kept = set(_flatten(get_method(method).effective(copy.deepcopy(data))))
    except Exception as err:  # noqa: BLE001  (an unknown or broken method must not cost the report)
        log.debug("method %s: effective config unavailable (%s); no key shown as not applying", method, err)
        return frozenset()
    removed = set(_flatten(data)) - kept
    groups = {
        prefix
        for key in removed
        for prefix in (key.rsplit(".", i)[0] for i in range(1, key.count(".") + 1))
        if prefix not in kept and not any(k.startswith(f"{prefix}.") for k in kept)
    }
    return frozenset(removed | groups)


@dataclass
class JobRecord:
    job: Job
    status: str
    overrides: dict[str, Any]
    config: dict[str, Any]  # flat_config of the saved config.yaml; empty if the job never got that far
    choices: dict[str, Any]  # Hydra's config-group choices (prompt_encoder: lstm)
    metrics: dict[str, Any]
    error: str | None = None
    method: str = DEFAULT_METHOD
    # Keys the job's method ignores (LoRA: prompt_encoder.*): their value is no setting of the run.
    ignored: frozenset[str] = frozenset()
    labels: list[str] | None = None  # the class names (run.json), for the majority-class macro-F1

    def value(self, key: str) -> Any:
        """The value this job ran with: the saved config is the truth; a key a launch did not
        sweep (an axis added later) is found there too. None for a key its method ignores."""
        if key == METHOD:
            return self.method
        if key in self.ignored:
            return None
        for source in (self.config, self.choices, self.overrides):
            if key in source:
                return source[key]
        return None


def read_job(job: Job) -> JobRecord:
    import pandas as pd

    status = job_status(job.dir)
    config_file = job.dir / CONFIG_FILE
    saved = OmegaConf.load(config_file) if config_file.is_file() else None
    config = flat_config(saved) if saved is not None else {}
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
    overrides = parse_overrides(job.overrides)
    method = str(
        config.get(METHOD_NAME)
        or choices.get(METHOD)
        or overrides.get(METHOD_NAME)
        or overrides.get(METHOD)
        or DEFAULT_METHOD
    )
    ignored = _method_ignores(method, saved) if saved is not None else frozenset()
    if config:
        # A run from before the method registry was P-tuning: it groups with today's p_tuning runs.
        config.setdefault(METHOD_NAME, method)
    run_file = job.dir / RUN_FILE
    labels = read_json(run_file).get("labels") if status == "completed" and run_file.is_file() else None
    return JobRecord(
        job,
        status,
        overrides,
        config,
        choices,
        metrics,
        error,
        method=method,
        ignored=ignored,
        labels=[str(label) for label in labels] if isinstance(labels, list) else None,
    )


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
    # must not make a constant key look swept. Nor does a job whose method ignores the key:
    # LoRA beside P-tuning must not make every prompt_encoder key a column.
    known = [
        r
        for r in records
        if (key == METHOD or key in r.config or key in r.choices or key in r.overrides) and key not in r.ignored
    ]
    return len({_canon(r.value(key)) for r in known}) > 1


def _unique(keys: list[str]) -> list[str]:
    return list(dict.fromkeys(keys))


def find_axes(records: list[JobRecord], kind: str, folder: Path) -> tuple[list[str], list[str]]:
    """The columns that tell cells apart (the seed is the replicate, never an axis), and notes
    on any the sweep did not declare."""
    done = [r for r in records if r.status == "completed"]
    axes, notes = _find_axes(records, done, kind, folder)
    # One name for the method whichever way it was chosen (method=lora, method.name=lora, or
    # the config of single runs): the value is JobRecord.method either way.
    return _unique([METHOD if a == METHOD_NAME else a for a in axes]), notes


def _find_axes(records: list[JobRecord], done: list[JobRecord], kind: str, folder: Path) -> tuple[list[str], list[str]]:
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
        # The method always, even for a sweep of one method: results.csv from several sweeps
        # then concatenate into one comparison.
        row: dict[str, Any] = {"job": r.job.name, "status": r.status, "error": r.error, METHOD: r.method}
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
    # A "best" is chosen among runs on the same data only: a folder of single runs may hold
    # runs on several datasets, and their scores do not compete.
    data_axes = [a for a in axes if a.startswith("dataset.")]
    same_data: dict[tuple, list[int]] = {}
    for idx, row in table.iterrows():
        same_data.setdefault(tuple(_canon(row[a]) for a in data_axes), []).append(idx)
    table["selected"] = False
    for members in same_data.values():
        means = table.loc[members, "validation_mean"]
        if means.notna().any():
            table.loc[means.idxmax() if greater_is_better(metric) else means.idxmin(), "selected"] = True
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
    for best in table.index[table["selected"]]:  # one per dataset when the runs saw several
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

    # dropna=False: "–" (a method without the axis) is a column of the heatmap like any value.
    preferred = [a for a in preferred_x_axes() if a in axes]
    x_key = preferred[0] if preferred else max(axes, key=lambda a: table[a].map(_canon).nunique(dropna=False))
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


def _is_number(value: Any) -> bool:
    canon = _canon(value)
    return canon is not None and canon[0] == "num"


def legend_columns(labels: list[str], most: int = 4) -> int:
    """As many legend columns (up to ``most``) as fit a column-wide figure: a legend wider than
    the axes widens the saved figure past the paper's column. Matplotlib fills a legend column
    by column; width is estimated from the label lengths at the 7-pt legend font."""
    font = float(FIGURE_STYLE["legend.fontsize"])
    for ncol in range(min(most, len(labels)), 1, -1):
        rows = -(-len(labels) // ncol)
        columns = [labels[i : i + rows] for i in range(0, len(labels), rows)]
        # per column: handle (2 em) + gap (0.4 em) + text (~0.55 em a character) + spacing (1 em)
        width = sum(font * (3.4 + 0.55 * max(len(text) for text in column)) for column in columns)
        if width <= COLUMN_WIDTH_IN * 72:
            return ncol
    return 1


def line_plot(table: pd.DataFrame, axes: list[str], metric: str, out: Path) -> list[Path]:
    """Test metric against prompt length (else the first numeric axis), one line per value of
    the other axes, error bars = std over seeds. A cell whose method lacks the x axis (LoRA
    beside P-tuning's prompt lengths) is a horizontal line, not left out."""
    import matplotlib
    import numpy as np
    from matplotlib.figure import Figure

    # Numeric where set; "–" (None) is a method without the axis.
    numeric = [a for a in axes if all(_canon(v) is None or _is_number(v) for v in table[a])]
    candidates = [
        a
        for a in [p for p in preferred_x_axes() if p in numeric] + numeric
        if len({c for c in table[a].map(_canon) if c is not None}) >= 2  # two x values that ran, "–" aside
    ]
    if not candidates:
        return []
    x_key = candidates[0]
    others = [a for a in axes if a != x_key]
    placed = table[table[x_key].map(_is_number)]
    flat = table[~table[x_key].map(_is_number)]
    groups: dict[tuple, list[int]] = {}
    for idx, r in placed.iterrows():
        groups.setdefault(tuple(_canon(r[a]) for a in others), []).append(idx)
    if len(groups) + len(flat) > MAX_LINES:
        log.info("line plot skipped: %d lines would not be readable", len(groups) + len(flat))
        return []
    names = short_names(axes)
    stem = "prompt_length" if x_key == TOKENS else f"by_{names[x_key].replace('.', '_')}"
    xs = [float(v) for v in placed[x_key]]
    base = _log_base(xs)
    span = (math.log10(max(xs) / min(xs)) if base else max(xs) - min(xs)) or 1.0
    with matplotlib.rc_context(FIGURE_STYLE):
        fig = Figure(figsize=(COLUMN_WIDTH_IN, 2.6 if others else 2.4), layout="constrained")
        ax = fig.add_subplot()
        handles, labels = [], []
        selected = None
        for k, members in enumerate(groups.values()):
            part = placed.loc[members].sort_values(x_key, key=lambda s: s.astype(float))
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
        for k, (_, r) in enumerate(flat.iterrows(), start=len(groups)):
            # No x value to sit at: the cell's mean across the plot, dotted, in its own colour.
            best = bool(r["selected"])
            line = ax.axhline(r["test_mean"], color=LINE_COLORS[k], ls=":", lw=2.0 if best else 1.2)
            handles.append(line)
            values = ", ".join(show(r[a]) for a in others) or "all runs"
            labels.append(f"{values} (best by validation {metric})" if best else values)
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
            title = ", ".join(names[a] for a in others)
            fig.legend(
                handles,
                labels,
                title=f"{title} (dotted: no {names[x_key]})" if len(flat) else title,
                loc="outside lower center",
                ncol=legend_columns(labels),
                frameon=False,
                columnspacing=1.0,
                handletextpad=0.4,
            )
        else:  # one line, its label empty: the legend names only the ring and any flat line
            ax.legend(handles[len(groups) :], labels[len(groups) :], frameon=False, loc="best")
        return _save_figure(fig, out, stem)


# -- the methods table --------------------------------------------------------------------------------------------
# metrics.json columns (flattened by read_job) the methods table averages over a row's seeds.
RESOURCES = (
    "trainable_params",
    "total_params",
    "train_runtime",
    "peak_memory_mb.cpu_rss",
    "peak_memory_mb.cuda",
    "saved_bytes",
)


def method_axes(frame: pd.DataFrame, axes: list[str]) -> list[str]:
    """The axes that split a method into several rows (prompt length within P-tuning). An
    axis that only follows the method (each method's own learning rate, LoRA's r) is part
    of what the method is, not a column."""
    done = frame[frame["status"] == "completed"]
    extras = []
    for axis in axes:
        if axis == METHOD or axis not in done:
            continue
        values: dict[Any, set] = {}
        for method, value in zip(done[METHOD], done[axis]):
            values.setdefault(method, set()).add(_canon(value))  # None ("–") counts: dropna=False
        if any(len(v) > 1 for v in values.values()):
            extras.append(axis)
    return extras


def _numbers(part: pd.DataFrame, column: str) -> pd.Series:
    import pandas as pd

    return pd.to_numeric(part[column], errors="coerce").dropna() if column in part else pd.Series([], dtype=float)


def methods_table(frame: pd.DataFrame, extras: list[str], metric: str) -> pd.DataFrame | None:
    """One row per method (and value of ``extras``; seeds pooled): n, validation and test mean and
    std of accuracy, macro-F1 and ``metric``, the mean of each resource column, sorted by mean
    validation ``metric`` (best first); ``selected`` marks the first. None unless the jobs
    differ in method."""
    import numpy as np
    import pandas as pd

    val = f"validation.{metric}"
    if METHOD not in frame or frame[METHOD].map(_canon).nunique(dropna=False) < 2 or val not in frame:
        return None
    done = frame[(frame["status"] == "completed") & frame[val].notna()]
    if done.empty:
        return None
    keys = [METHOD, *extras]
    # By canonical value, as the ablation table groups: a method lacking an axis (None) keeps
    # its own row, where pandas' groupby would drop it (dropna=True) without a word.
    cells: dict[tuple, list[int]] = {}
    for idx, row in done.iterrows():
        cells.setdefault(tuple(_canon(row[k]) for k in keys), []).append(idx)
    rows = []
    for members in cells.values():
        part = done.loc[members]
        row: dict[str, Any] = {k: part.iloc[0][k] for k in keys}
        row["n"] = len(part)
        for split in SPLITS:
            for name in _unique([*task_metrics(done), metric]):
                values = _numbers(part, f"{split}.{name}")
                row[f"{split}_{name}_mean"] = float(values.mean()) if len(values) else np.nan
                row[f"{split}_{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else np.nan
        for column in RESOURCES:
            values = _numbers(part, column)
            row[column] = float(values.mean()) if len(values) else np.nan
        row["seeds"] = ",".join(str(s) for s in part[SEED]) if SEED in part else ""
        rows.append(row)
    sign = -1.0 if greater_is_better(metric) else 1.0
    mean = f"validation_{metric}_mean"
    rows.sort(
        key=lambda r: (
            math.isnan(r[mean]),  # a row without the metric last, never dropped
            sign * r[mean] if not math.isnan(r[mean]) else 0.0,
            *(_sort_key(r[k]) for k in keys),
        )
    )
    table = pd.DataFrame(rows)
    table["selected"] = [i == 0 and not math.isnan(r[mean]) for i, r in enumerate(rows)]
    return table


@dataclass
class Majority:
    """The floor of always predicting train's most frequent label, from metrics.json's
    ``majority_class``: its accuracy per split as (lowest, highest) over the jobs (equal when
    they saw the same data), and the number of classes (run.json's labels) for its macro-F1."""

    label: str | None
    accuracy: dict[str, tuple[float, float]]
    classes: int | None
    #: macro-F1 as the runs computed it (newer metrics.json), preferred over the formula
    macro_f1: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: the baseline's name as the task gives it (metrics.json's ``baseline.name``)
    name: str | None = None
    #: any other metric of the task's baseline: (split, metric) -> (lowest, highest)
    other: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)

    @property
    def row_name(self) -> str:
        if self.name:
            return self.name
        return f"majority class ({self.label})" if self.label else "majority class"

    def value(self, split: str, metric: str) -> tuple[float, float] | None:
        """(lowest, highest) of ``metric`` on ``split``; None for a metric it has no value of."""
        if (split, metric) in self.other:
            return self.other[split, metric]
        low, high = self.accuracy.get(split, (math.nan, math.nan))
        if math.isnan(low):
            return None
        if metric == "accuracy":
            return low, high
        recorded = self.macro_f1.get(split, (math.nan, math.nan))
        if metric == "macro_f1" and not math.isnan(recorded[0]):
            return recorded
        if metric == "macro_f1" and self.classes:
            return majority_macro_f1(low, self.classes), majority_macro_f1(high, self.classes)
        return None


def majority_macro_f1(share: float, classes: int) -> float:
    """Macro-F1 of always predicting one class that is ``share`` of the labels: that class has
    precision ``share`` and recall 1, so F1 = 2p/(1+p); every other class scores 0 (never
    predicted), and the macro average divides by the number of classes."""
    return 2 * share / (1 + share) / classes


def majority_class(frame: pd.DataFrame, records: list[JobRecord]) -> tuple[Majority | None, list[str]]:
    """The majority-class row's figures over the tabulated jobs, and notes when the jobs
    disagree (they did not see the same data) or lack what it needs."""
    done = frame[frame["status"] == "completed"]
    if any(str(c).startswith("baseline.") for c in done):
        return task_baseline(done)
    accuracy, macro = {}, {}
    for split in SPLITS:
        values = _numbers(done, f"majority_class.{split}_accuracy")
        accuracy[split] = (float(values.min()), float(values.max())) if len(values) else (math.nan, math.nan)
        f1 = _numbers(done, f"majority_class.{split}_macro_f1")
        macro[split] = (float(f1.min()), float(f1.max())) if len(f1) else (math.nan, math.nan)
    if all(math.isnan(low) for low, _ in accuracy.values()):
        return None, ["No job recorded majority_class in metrics.json (runs older than it): no majority-class row."]
    notes = []
    labels = sorted({str(v) for v in done["majority_class.label"].dropna()}) if "majority_class.label" in done else []
    differ = [f"{split} accuracy {low:.4f}–{high:.4f}" for split, (low, high) in accuracy.items() if low != high]
    if len(labels) > 1:
        differ.append(f"label {', '.join(labels)}")
    if differ:
        notes.append(
            f"The jobs disagree on the majority class ({'; '.join(differ)}): they did not all see the same data "
            "(dataset options differ between jobs?); its row shows the range."
        )
    counts = {len(r.labels) for r in records if r.status == "completed" and r.labels}
    classes = next(iter(counts)) if len(counts) == 1 else None
    if classes is None:
        reason = "disagree on" if counts else "do not record"
        notes.append(
            f"The majority class's macro-F1 needs the number of classes (run.json's labels): the jobs {reason} it."
        )
    return Majority(labels[0] if len(labels) == 1 else None, accuracy, classes, macro), notes


def task_baseline(done: pd.DataFrame) -> tuple[Majority | None, list[str]]:
    """The baseline row from metrics.json's ``baseline`` (what the runs' task recorded: the
    majority class, or a generation task's trivial answer), each metric as (lowest, highest)."""
    values: dict[tuple[str, str], tuple[float, float]] = {}
    for column in done:
        parts = str(column).split(".")
        if len(parts) == 3 and parts[0] == "baseline" and parts[1] in SPLITS:
            numbers = _numbers(done, column)
            if len(numbers):
                values[parts[1], parts[2]] = (float(numbers.min()), float(numbers.max()))
    names = sorted({str(v) for v in done["baseline.name"].dropna()}) if "baseline.name" in done else []
    if not values:
        return None, ["No job recorded a baseline in metrics.json: no baseline row."]
    notes = []
    differ = [f"{split} {m} {lo:.4f}–{hi:.4f}" for (split, m), (lo, hi) in values.items() if lo != hi]
    if len(names) > 1:
        differ.append(f"baseline {', '.join(names)}")
    if differ:
        notes.append(
            f"The jobs disagree on the baseline ({'; '.join(differ)}): they did not all see the same data "
            "(dataset options differ between jobs?); its row shows the range."
        )
    name = names[0] if len(names) == 1 else None
    label = name[len("majority class (") : -1] if name and name.startswith("majority class (") else None
    accuracy = {split: values.get((split, "accuracy"), (math.nan, math.nan)) for split in SPLITS}
    macro = {split: values.get((split, "macro_f1"), (math.nan, math.nan)) for split in SPLITS}
    return Majority(label, accuracy, None, macro, name=name, other=values), notes


def count_text(count: float) -> str:
    """A parameter count as a paper prints it: 1.2 M, 148 k, 475."""
    if not math.isfinite(count):
        return "–"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= scale * 0.9995:  # 999,600 is "1 M", not "1e+03 k"
            return f"{count / scale:.3g} {unit}"
    return f"{count:.0f}"


def _significant(value: float, digits: int = 2) -> str:
    """``digits`` significant digits without an exponent (0.0012, 0.15, 12, 100)."""
    if not math.isfinite(value):
        return "–"
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def _amount(value: float) -> str:
    """Seconds and megabytes: three significant digits, whole numbers from 100 up."""
    if not math.isfinite(value):
        return "–"
    return _significant(value, 3) if abs(value) < 100 else f"{value:.0f}"


def _params_cell(trainable: float, total: float) -> str:
    if not math.isfinite(trainable):
        return "–"
    if not math.isfinite(total) or total <= 0:
        return count_text(trainable)
    return f"{count_text(trainable)} ({_significant(100 * trainable / total)} %)"


def _table_metrics(table: pd.DataFrame) -> list[str]:
    """The metrics :func:`methods_table` tabulated, in its order."""
    return [
        c.removeprefix("validation_").removesuffix("_mean")
        for c in table
        if c.startswith("validation_") and c.endswith("_mean")
    ]


def methods_caption(metric: str, metrics: list[str] | None = None, baseline: str | None = None) -> str:
    direction = "" if greater_is_better(metric) else " (lower is better)"
    metrics = _unique([*(metrics or METHOD_METRICS), metric])
    if baseline is None or baseline.startswith("majority class"):
        floor = (
            "Majority class: always predicting the most frequent training label "
            "(macro-F1 = 2p/(1+p)/K for its share p among K classes)."
        )
    else:
        floor = f"Last row: the task's trivial baseline ({baseline})."
    return (
        f"Methods: validation and test {' and '.join(metrics)}, mean ± std over n runs "
        f"(seeds), each run at its epoch selected on validation; rows sorted by mean validation {metric}{direction}; "
        f"best method (bold) selected by mean validation {metric}; test {metric} reported. Trainable parameters: "
        "count and share of the model's; train time: mean seconds of training; peak memory: mean peak CPU resident "
        "set (and GPU memory allocated) per run, MB = 1,048,576 bytes; saved: what the run saved (adapter or "
        f"model, and trainable state). {floor}"
    )


def format_methods_table(
    table: pd.DataFrame, extras: list[str], metric: str, majority: Majority | None, latex: bool = False
) -> str:
    """Markdown (or LaTeX) of :func:`methods_table`, with the majority class as the last row; the
    selected method's name and test ``metric`` cell are bold."""
    import pandas as pd

    def text(value: str) -> str:
        return _tex(value) if latex else value

    def bold(value: str) -> str:
        return f"\\textbf{{{value}}}" if latex else f"**{value}**"

    names = short_names(extras)
    metrics = _unique([*_table_metrics(table), metric])
    shown = pd.DataFrame({METHOD: [text(show(v)) for v in table[METHOD]]})
    for axis in extras:
        shown[names[axis]] = [text(show(v)) for v in table[axis]]
    metric_columns = {}
    for split in SPLITS:
        for name in metrics:
            column = f"{split} {name} (mean ± std)"
            metric_columns[split, name] = column
            shown[column] = [
                _cell(r[f"{split}_{name}_mean"], r[f"{split}_{name}_std"], int(r["n"]), latex)
                for _, r in table.iterrows()
            ]
    shown["trainable params"] = [
        text(_params_cell(r["trainable_params"], r["total_params"])) for _, r in table.iterrows()
    ]
    shown["train time (s)"] = [_amount(v) for v in table["train_runtime"]]
    shown["peak memory (MB)"] = [_amount(v) for v in table["peak_memory_mb.cpu_rss"]]
    has_cuda = bool(table["peak_memory_mb.cuda"].notna().any())
    if has_cuda:  # a GPU run: its CUDA peak is the memory that limits it
        shown["peak GPU memory (MB)"] = [_amount(v) for v in table["peak_memory_mb.cuda"]]
    shown["saved (MB)"] = [_amount(v / MIB) for v in table["saved_bytes"]]
    shown["n"] = [str(int(n)) for n in table["n"]]
    if table["selected"].any():
        best = int(table.index[table["selected"]][0])
        shown.at[best, METHOD] = bold(shown.at[best, METHOD])
        column = metric_columns["test", metric]
        if shown.at[best, column] == "–":  # no test figure: the validation one that chose it
            column = metric_columns["validation", metric]
        shown.at[best, column] = bold(shown.at[best, column])
    if majority is not None:
        row = dict.fromkeys(shown.columns, "–")
        row[METHOD] = text(majority.row_name)
        for (split, name), column in metric_columns.items():
            span = majority.value(split, name)
            if span is not None:
                low, high = span
                row[column] = f"{low:.4f}" if math.isclose(low, high) else f"{low:.4f}–{high:.4f}"
        row["trainable params"] = "0"
        shown = pd.concat([shown, pd.DataFrame([row])], ignore_index=True)
    if not latex:
        return shown.to_markdown(index=False, disable_numparse=True)
    shown.columns = [_tex(c) for c in shown.columns]
    tex = shown.to_latex(index=False, escape=False, caption=_tex(methods_caption(metric)), label="tab:methods")
    if majority is not None:
        # A rule above the floor: it is a reference, not a method ranked with the others.
        tex = re.sub(r"\n(majority class)", r"\n\\midrule\n\1", tex, count=1)
    return tex


def _missing_axis_note(table: pd.DataFrame, extras: list[str]) -> list[str]:
    names = short_names(extras)
    lacking = {f"{show(r[METHOD])}: {names[a]}" for _, r in table.iterrows() for a in extras if _canon(r[a]) is None}
    if not lacking:
        return []
    return [f"–: a setting the method does not have ({'; '.join(sorted(lacking))})."]


def pareto_front(points: list[tuple[float, float]], greater: bool = True) -> list[int]:
    """Indexes of the points (trainable parameters, mean metric) no other point dominates: none
    has as few or fewer parameters and a better mean, with one of the two strictly so."""

    def better(a: float, b: float) -> bool:
        return a > b if greater else a < b

    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (xj <= x and (better(yj, y) or yj == y)) and (xj < x or better(yj, y))
            for j, (xj, yj) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def _point_label(row: pd.Series, extras: list[str]) -> str:
    values = [show(row[a]) for a in extras if _canon(row[a]) is not None]
    return f"{show(row[METHOD])} ({', '.join(values)})" if values else show(row[METHOD])


def pareto_figure(
    table: pd.DataFrame, extras: list[str], metric: str, majority: Majority | None
) -> tuple[Figure | None, list[str]]:
    """Test ``metric`` against trainable parameters (log x), one labelled point per row with
    its std as error bar, the Pareto frontier as a step line, the majority class dashed, the
    row selected on validation ringed. Notes name rows it cannot place."""
    import matplotlib
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    mean, std = f"test_{metric}_mean", f"test_{metric}_std"
    usable = table[(table["trainable_params"] > 0) & table[mean].notna()]
    notes = []
    left_out = [show(r[METHOD]) for i, r in table.iterrows() if i not in usable.index]
    if left_out:
        notes.append(
            f"Not in the Pareto figure (no trainable_params or test {metric} in metrics.json): {', '.join(left_out)}."
        )
    if len(usable) < 2:
        return None, notes
    greater = greater_is_better(metric)
    xs = usable["trainable_params"].to_numpy(dtype=float)
    ys = usable[mean].to_numpy(dtype=float)
    errs = np.nan_to_num(usable[std].to_numpy(dtype=float))
    front = pareto_front(list(zip(xs, ys)), greater)
    methods = list(dict.fromkeys(show(m) for m in table[METHOD]))  # colour by method, stable across rows
    floor = majority.value("test", metric) if majority is not None else None
    with matplotlib.rc_context(FIGURE_STYLE):
        # Taller with more points: their labels need the room (a column figure cannot widen).
        height = min(2.9 + 0.12 * max(0, len(usable) - 8), 4.5)
        fig = Figure(figsize=(COLUMN_WIDTH_IN, height), layout="constrained")
        ax = fig.add_subplot()
        # Okabe & Ito without its yellow: a lone marker in it vanishes on white.
        colors = [c for c in LINE_COLORS if c != "#F0E442"]
        for x, y, err, (_, r) in zip(xs, ys, errs, usable.iterrows()):
            k = methods.index(show(r[METHOD])) % len(colors)
            ax.errorbar([x], [y], yerr=[err], color=colors[k], marker=MARKERS[k], ls="none", zorder=3)
        handles, labels = [], []
        # Limits before the frontier: its last step runs to the right edge (more parameters buy
        # nothing beyond it), and the labels need room on both sides of the outermost points.
        low, high = math.log10(xs.min()), math.log10(xs.max())
        centre, half = (low + high) / 2, max((high - low) / 2 + 0.45, 1.0)
        ax.set_xscale("log")
        ax.set_xlim(10 ** (centre - half), 10 ** (centre + half))
        bottom, top = float((ys - errs).min()), float((ys + errs).max())
        if floor is not None:
            bottom, top = min(bottom, floor[0]), max(top, floor[1])
        pad = max(top - bottom, 0.02) * 0.12
        ax.set_ylim(bottom - pad, top + pad)
        # The frontier as explicit corners (not drawstyle="steps-post"), so that the label
        # placement sees the path that is drawn.
        order = sorted(front, key=lambda i: xs[i])
        corners_x, corners_y = [xs[order[0]]], [ys[order[0]]]
        for i in order[1:]:
            corners_x += [xs[i], xs[i]]
            corners_y += [corners_y[-1], ys[i]]
        corners_x.append(ax.get_xlim()[1])
        corners_y.append(corners_y[-1])
        (step,) = ax.plot(corners_x, corners_y, color="0.35", lw=1.0, zorder=2)
        handles.append(step)
        labels.append("Pareto frontier")
        if floor is not None:
            level = (floor[0] + floor[1]) / 2
            handles.append(ax.axhline(level, color="0.35", ls="--", lw=1.0, zorder=1))
            labels.append(majority.row_name.split(" (")[0] + ("" if math.isclose(*floor) else " (mean; jobs differ)"))
        ringed = None
        if usable["selected"].any():
            i = ringed = int(np.flatnonzero(usable["selected"].to_numpy())[0])
            ax.plot([xs[i]], [ys[i]], marker="o", ms=10, mfc="none", mec="black", ls="none", zorder=4)
            handles.append(Line2D([], [], marker="o", ms=8, mfc="none", mec="black", ls="none"))
            labels.append(f"best by validation {metric}")
        ax.xaxis.set_major_locator(LogLocator(base=10))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: count_text(v)))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("trainable parameters (log scale)")
        ax.set_ylabel(f"test {metric}")
        spread = (
            f"mean ± std over seeds ({_n_phrase(usable['n'])} per point)"
            if usable["n"].max() > 1
            else "one run per point"
        )
        names = short_names(extras)
        ax.set_title(
            f"Test {metric}, {spread}" + (f"\nlabels: method ({', '.join(names[a] for a in extras)})" if extras else "")
        )
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncol=legend_columns(labels, most=3),
            frameon=False,
            columnspacing=1.0,
            handletextpad=0.4,
        )
        place_labels(
            fig,
            ax,
            list(zip(xs, ys, errs)),
            [_point_label(r, extras) for _, r in usable.iterrows()],
            lines=[step, *handles[1:2]] if floor is not None else [step],
            ringed=ringed,
        )
    return fig, notes


# Where a point's label may go, in order of preference: beside, above or below, then on a
# diagonal, then between those; each at growing distances (points), the farther ones joined to
# the point by a leader line.
LABEL_ANGLES = (0, 180, 90, 270, 45, 135, 315, 225, 22.5, 157.5, 337.5, 202.5, 67.5, 112.5, 292.5, 247.5)
LABEL_DISTANCES = (6.5, 12.0, 18.0, 26.0, 36.0, 48.0)


def _label_anchor(angle: float) -> tuple[float, float, str, str]:
    """Unit offset and the text alignment that puts the text on that side of its point."""
    dx, dy = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    ha = "left" if dx > 0.3 else "right" if dx < -0.3 else "center"
    va = "bottom" if dy > 0.3 else "top" if dy < -0.3 else "center"
    return dx, dy, ha, va


def place_labels(
    fig: Figure,
    ax: Any,
    points: list[tuple[float, float, float]],
    texts: list[str],
    lines: Sequence[Any] = (),
    ringed: int | None = None,
) -> list[Any]:
    """Label each (x, y, error) point where its text overlaps no other label, marker or error bar
    and stays inside the axes (else where it overlaps least): matplotlib places annotations
    where told, so seven methods within a decade of parameters would print over each other.
    ``ringed``: the index of the point drawn with the selection ring, which labels keep clear of."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.transforms import Bbox

    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # the constrained layout fixes the axes before anything is measured in them
    renderer = canvas.get_renderer()
    scale = fig.dpi / 72  # points to pixels
    frame = ax.get_window_extent(renderer)
    to_pixels = ax.transData.transform
    obstacles: list[tuple[Bbox, float]] = []
    # The ring (10 pt across) is wider than a marker: its label starts farther out.
    gaps = [3.0 if i == ringed else 0.0 for i in range(len(points))]
    for i, (x, y, err) in enumerate(points):
        px, py = to_pixels((x, y))
        r = (6.0 if i == ringed else 3.5) * scale  # a marker (4 pt) or the ring, and a little air
        obstacles.append((Bbox.from_extents(px - r, py - r, px + r, py + r), 1.0))
        (_, y0), (_, y1) = to_pixels((x, y - err)), to_pixels((x, y + err))
        c = 2.0 * scale  # the error bar's cap half-width
        obstacles.append((Bbox.from_extents(px - c, min(y0, y1), px + c, max(y0, y1)), 1.0))
    for line in lines:
        # Crossing a line is allowed (labels have a white backing) but avoided when there is room.
        path = line.get_transform().transform(line.get_xydata())
        for (ax0, ay0), (ax1, ay1) in zip(path[:-1], path[1:]):
            w = 0.8 * scale
            box = Bbox.from_extents(min(ax0, ax1) - w, min(ay0, ay1) - w, max(ax0, ax1) + w, max(ay0, ay1) + w)
            obstacles.append((box, 0.05))

    labels: list[Bbox] = []

    def leader_boxes(x: float, y: float, ox: float, oy: float) -> list[Bbox]:
        # A leader line, as small squares along it (its own bounding box would be far too big).
        px, py = to_pixels((x, y))
        centres = [(px + t * ox * scale, py + t * oy * scale) for t in np.linspace(0.15, 0.85, 8)]
        return [Bbox.from_extents(cx - scale, cy - scale, cx + scale, cy + scale) for cx, cy in centres]

    def overlap(box: Bbox, leader: list[Bbox]) -> float:
        inside = frame.padded(-1.0)
        outside = box.width * box.height - _area(box, inside)
        crossing = sum(_area(part, label) for part in leader for label in labels)  # a leader through a label
        return 1e6 * outside + 10 * crossing + sum(weight * _area(box, other) for other, weight in obstacles)

    def crowding(i: int) -> int:
        px, py = to_pixels(points[i][:2])
        near = 40 * scale
        return sum(
            1 for j, q in enumerate(points) if j != i and np.hypot(*(to_pixels(q[:2]) - np.array([px, py]))) < near
        )

    # The most crowded points choose first: they have the fewest free places.
    order = sorted(range(len(points)), key=lambda i: (-crowding(i), points[i][0], points[i][1]))
    placed = []
    for i in order:
        (x, y, _), label, gap = points[i], texts[i], gaps[i]
        style = {"fontsize": 6.5, "zorder": 5, "annotation_clip": False}
        backing = {"boxstyle": "square,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85}
        probe = ax.annotate(label, (x, y), xytext=(0, 0), textcoords="offset points", **style)
        best: tuple[float, tuple[float, float, str, str, float], Bbox] | None = None
        for distance in (d + gap for d in LABEL_DISTANCES):
            for dx, dy, ha, va in map(_label_anchor, LABEL_ANGLES):
                probe.set_position((dx * distance, dy * distance))
                probe.set_horizontalalignment(ha)
                probe.set_verticalalignment(va)
                box = probe.get_window_extent(renderer).padded(1.5 * scale)
                far = distance > LABEL_DISTANCES[0] + gap
                score = overlap(box, leader_boxes(x, y, dx * distance, dy * distance) if far else [])
                if best is None or score < best[0]:  # the first, most preferred, of equal scores
                    best = (score, (dx * distance, dy * distance, ha, va, distance), box)
            if best is not None and best[0] == 0:
                break
        probe.remove()
        assert best is not None
        (ox, oy, ha, va, distance), box = best[1], best[2]
        leader = (
            {"arrowprops": {"arrowstyle": "-", "color": "0.5", "lw": 0.5, "shrinkA": 0, "shrinkB": 3}}
            if distance > LABEL_DISTANCES[0] + gap
            else {}
        )
        text = ax.annotate(
            label, (x, y), xytext=(ox, oy), textcoords="offset points", ha=ha, va=va, bbox=backing, **style, **leader
        )
        text.set_in_layout(False)  # measured in this layout: it must not move the axes
        obstacles.append((box, 1.0))
        labels.append(box)
        if leader:  # later labels keep off the leader line too
            obstacles += [(part, 0.5) for part in leader_boxes(x, y, ox, oy)]
        placed.append(text)
    return placed


def _area(a: Any, b: Any) -> float:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return width * height if width > 0 and height > 0 else 0.0


def pareto_plot(
    table: pd.DataFrame, extras: list[str], metric: str, majority: Majority | None, out: Path
) -> tuple[list[Path], list[str]]:
    """``pareto.pdf`` and ``pareto.png`` (see :func:`pareto_figure`), and its notes."""
    import matplotlib

    # Saved in the style too: pdf.fonttype is read when the file is written.
    with matplotlib.rc_context(FIGURE_STYLE):
        fig, notes = pareto_figure(table, extras, metric, majority)
        return (_save_figure(fig, out, PARETO) if fig is not None else []), notes


def frontier_note(table: pd.DataFrame, extras: list[str], metric: str) -> list[str]:
    """The methods on the Pareto frontier, by name, for the text beside the table."""
    mean = f"test_{metric}_mean"
    usable = table[(table["trainable_params"] > 0) & table[mean].notna()].reset_index(drop=True)
    if len(usable) < 2:
        return []
    points = list(zip(usable["trainable_params"].astype(float), usable[mean].astype(float)))
    front = sorted(pareto_front(points, greater_is_better(metric)), key=lambda i: points[i][0])
    names = "; ".join(
        f"{_point_label(usable.loc[i], extras)}: {count_text(points[i][0])}, {points[i][1]:.4f}" for i in front
    )
    return [
        f"Pareto frontier of test {metric} against trainable parameters (no other method is as good or better on "
        f"both, and better on one): {names}."
    ]


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
    done = frame[frame["status"] == "completed"]
    if not done.empty and f"validation.{metric}" not in frame:
        # A mistyped --metric must not replace a good report with an empty one: write nothing.
        by_split = [{c.split(".", 1)[1] for c in frame.columns if c.startswith(f"{s}.")} for s in SPLITS]
        timing = {"runtime", "samples_per_second", "steps_per_second"}
        recorded = sorted(by_split[0] & by_split[1] - timing)
        result["unknown_metric"] = True
        result["notes"] = [f"No job recorded validation {metric}; the runs record: {', '.join(recorded)}."]
        return result
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
    job_notes = exclusion_notes(frame, metric)
    merged = (read_sweep(folder).get("merged") or {}) if kind == "sweep" else {}
    if merged:
        count = sum(len(v) for v in merged.values())
        job_notes.append(
            f"{count} planned job(s) not run: same effective config as another job ({SWEEP_FILE}: merged)."
        )
    notes += job_notes
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
    methods = methods_report(frame, records, axes, metric, out)
    if methods is not None:
        methods_markdown, methods_latex, method_table, methods_figure = methods
        methods_markdown = "\n\n".join([methods_markdown, *job_notes])
        write_atomic(out / METHODS_MD, methods_markdown + "\n")
        write_atomic(out / METHODS_TEX, "".join(f"% {n}\n" for n in job_notes) + methods_latex)
        result["files"].update(methods_markdown=out / METHODS_MD, methods_latex=out / METHODS_TEX)
        result.update(methods_table=method_table, methods_markdown=methods_markdown)
        figures["pareto"] = methods_figure
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


def methods_report(
    frame: pd.DataFrame, records: list[JobRecord], axes: list[str], metric: str, out: Path
) -> tuple[str, str, pd.DataFrame, list[Path]] | None:
    """When the jobs differ in method: the methods table as Markdown (caption, table, notes) and
    LaTeX, the table itself, and the Pareto figure's files. None otherwise."""
    extras = method_axes(frame, axes)
    table = methods_table(frame, extras, metric)
    if table is None:
        return None
    majority, notes = majority_class(frame, records)
    figure, figure_notes = pareto_plot(table, extras, metric, majority, out)
    notes += _missing_axis_note(table, extras) + frontier_note(table, extras, metric) + figure_notes
    markdown = "\n\n".join(
        [
            f"Table: {methods_caption(metric, _table_metrics(table), majority.row_name if majority else None)}",
            format_methods_table(table, extras, metric, majority),
            *notes,
        ]
    )
    latex = "".join(f"% {n}\n" for n in notes) + format_methods_table(table, extras, metric, majority, latex=True)
    return markdown, latex, table, figure


def _clear_figures_and_tex(out: Path) -> None:
    """A figure or table an earlier report drew, from data or axes this one no longer has,
    must not sit beside the new results as if it were current."""
    for path in out.iterdir():
        stem, suffix = path.stem, path.suffix
        drawn = suffix in (".pdf", ".png") and (
            stem in ("heatmap", "prompt_length", PARETO) or stem.startswith(("by_", "optuna_"))
        )
        if drawn or path.name in (TABLE_TEX, METHODS_MD, METHODS_TEX):
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
        if "methods_table" in result:
            wb.log({"methods": wandb.Table(dataframe=result["methods_table"].astype(str))})
        for path in result["figures"]:
            wb.log({path.stem: wandb.Image(str(path))})
        result["wandb_dir"] = str(out_dir / "wandb")


def print_report(result: dict[str, Any], folder: Path) -> None:
    if "markdown" in result:
        print(f"\nAblation ({folder}):\n{result['markdown']}\n")
    if "methods_markdown" in result:
        print(f"Methods ({folder}):\n{result['methods_markdown']}\n")
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

"""A sweep folder → results.csv, a mean ± std ablation table (Markdown, LaTeX) and plots.

``ptexp-report <sweep dir>`` by hand, or automatically when a multirun ends
(:class:`ReportCallback`, configured under ``hydra.callbacks``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ptexp.jobs import STATUS_FILE, job_status, read_sweep
from ptexp.outputs import read_json, write_atomic

log = logging.getLogger("ptexp.report")

REPORT_DIR = "report"
SEED = "seed"
TOKENS = "prompt_encoder.num_virtual_tokens"
HIDDEN = "prompt_encoder.encoder_hidden_size"


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out[prefix] = value


def _planned_jobs(sweep_dir: Path) -> list[tuple[Path, list[str]]]:
    """Every job of the sweep with its overrides: the ptexp sweeper's plan when there is one
    (so a job killed before it wrote anything still shows up), else the job folders."""
    plan = read_sweep(sweep_dir).get("jobs")
    if plan:
        return [(sweep_dir / job["dir"], list(job["overrides"])) for job in plan]
    folders = sorted(p for p in sweep_dir.iterdir() if (p / ".hydra" / "overrides.yaml").is_file())
    return [(p, [str(o) for o in OmegaConf.load(p / ".hydra" / "overrides.yaml")]) for p in folders]


def collect(sweep_dir: Path) -> Any:
    """One row per job: its overrides, status, error and metrics."""
    import pandas as pd

    rows = []
    for job_dir, overrides in _planned_jobs(sweep_dir):
        row: dict[str, Any] = {"job": job_dir.name, "status": job_status(job_dir)}
        for item in overrides:
            key, _, value = item.partition("=")
            row[key.lstrip("+~")] = _parse(value)
        if row["status"] == "completed":
            _flatten("", read_json(job_dir / "metrics.json"), row)
        elif (job_dir / STATUS_FILE).is_file():
            row["error"] = read_json(job_dir / STATUS_FILE).get("error")
        rows.append(row)
    return pd.DataFrame(rows)


def _parse(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def axes_of(frame: Any, sweep_dir: Path) -> list[str]:
    """The swept keys (from sweep.json, else the override keys that vary), seeds excluded."""
    declared = read_sweep(sweep_dir).get("axes")
    meta = {"job", "status", "error"}
    candidates = declared or [c for c in frame.columns if c not in meta and "." in c or c == SEED]
    return [c for c in candidates if c in frame.columns and c != SEED and frame[c].nunique(dropna=False) > 1]


def ablation_table(frame: Any, axes: list[str], metric: str) -> Any:
    done = frame[frame["status"] == "completed"]
    if metric not in done.columns or done.empty:
        return None
    keys = axes or ["status"]
    grouped = done.groupby(keys, sort=True)[metric]
    table = grouped.agg(["mean", "std", "count"]).reset_index()
    table["std"] = table["std"].fillna(0.0)
    return table


def format_table(table: Any, axes: list[str], metric: str, latex: bool = False) -> str:
    best = table["mean"].idxmax()
    cells = []
    for idx, row in table.iterrows():
        text = f"{row['mean']:.4f} ± {row['std']:.4f}" if not latex else f"{row['mean']:.4f} $\\pm$ {row['std']:.4f}"
        if idx == best:
            text = f"\\textbf{{{text}}}" if latex else f"**{text}**"
        cells.append(text)
    shown = table[axes].copy() if axes else table[[]].copy()
    shown.columns = [a.rsplit(".", 1)[-1] for a in shown.columns]
    shown[f"{metric} (mean ± std)"] = cells
    if latex:
        shown.columns = [c.replace("_", "\\_").replace("±", "$\\pm$") for c in shown.columns]
    shown["seeds"] = table["count"].astype(int).values
    if latex:
        return shown.to_latex(index=False, escape=False, caption=f"{metric}, mean $\\pm$ std over seeds")
    return shown.to_markdown(index=False)


def heatmap(frame: Any, metric: str, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    done = frame[frame["status"] == "completed"]
    if not {TOKENS, HIDDEN} <= set(done.columns) or done.empty:
        return False
    grid = done.pivot_table(index=HIDDEN, columns=TOKENS, values=metric, aggfunc="mean")
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * grid.shape[1], 1.0 + 0.8 * grid.shape[0]))
    image = ax.imshow(grid.values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [str(i) for i in grid.index])
    ax.set_xlabel("num_virtual_tokens")
    ax.set_ylabel("encoder_hidden_size")
    for (i, j), value in np.ndenumerate(grid.values):
        ax.text(j, i, f"{value:.3f}", ha="center", va="center", color="white", fontsize=8)
    fig.colorbar(image, ax=ax, label=f"{metric} (mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def length_plot(frame: Any, axes: list[str], metric: str, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = frame[frame["status"] == "completed"]
    if TOKENS not in done.columns or done[TOKENS].nunique() < 2:
        return False
    others = [a for a in axes if a != TOKENS]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, part in done.groupby(others) if others else [((), done)]:
        stats = part.groupby(TOKENS)[metric].agg(["mean", "std"]).fillna(0.0)
        label = ", ".join(
            f"{a.rsplit('.', 1)[-1]}={v}" for a, v in zip(others, key if isinstance(key, tuple) else (key,))
        )
        ax.errorbar(stats.index, stats["mean"], yerr=stats["std"], marker="o", capsize=3, label=label or None)
    ax.set_xscale("log")
    ax.set_xlabel("prompt length (num_virtual_tokens)")
    ax.set_ylabel(metric)
    if others:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def report(sweep_dir: Path, metric: str = "test.accuracy", log_to_wandb: bool = True) -> dict[str, Any]:
    """Write the report files into <sweep_dir>/report; returns what was written and the failures."""
    sweep_dir = Path(sweep_dir)
    frame = collect(sweep_dir)
    out = sweep_dir / REPORT_DIR
    out.mkdir(exist_ok=True)
    result: dict[str, Any] = {"jobs": len(frame), "failed": [], "files": {}}
    if frame.empty:
        log.warning("no jobs found in %s", sweep_dir)
        return result
    write_atomic(out / "results.csv", frame.to_csv(index=False))
    result["files"]["results"] = out / "results.csv"
    failed = frame[frame["status"] != "completed"]
    result["failed"] = [
        (row["job"], row["status"], row.get("error") if isinstance(row.get("error"), str) else "")
        for _, row in failed.iterrows()
    ]
    axes = axes_of(frame, sweep_dir)
    table = ablation_table(frame, axes, metric)
    if table is not None:
        markdown = format_table(table, axes, metric)
        write_atomic(out / "ablation.md", markdown + "\n")
        write_atomic(out / "ablation.tex", format_table(table, axes, metric, latex=True))
        result["files"].update(markdown=out / "ablation.md", latex=out / "ablation.tex")
        result["table"] = table
        result["markdown"] = markdown
    if heatmap(frame, metric, out / "heatmap.png"):
        result["files"]["heatmap"] = out / "heatmap.png"
    if length_plot(frame, axes, metric, out / "prompt_length.png"):
        result["files"]["prompt_length"] = out / "prompt_length.png"
    if log_to_wandb and table is not None:
        _log_to_wandb(sweep_dir, frame, result)
    return result


def _log_to_wandb(sweep_dir: Path, frame: Any, result: dict[str, Any]) -> None:
    """The table (and plots) as one 'report' run in the sweep's W&B group."""
    cfg_file = sweep_dir / "multirun.yaml"
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
    with wandb_run(
        report_cfg, out_dir := sweep_dir / REPORT_DIR, f"{group}/report", {"sweep": group}, group=group
    ) as wb:
        wb.log(
            {"ablation": wandb.Table(dataframe=result["table"]), "results": wandb.Table(dataframe=frame.astype(str))}
        )
        for name in ("heatmap", "prompt_length"):
            if name in result["files"]:
                wb.log({name: wandb.Image(str(result["files"][name]))})
        result["wandb_dir"] = str(out_dir / "wandb")


def print_report(result: dict[str, Any], sweep_dir: Path) -> None:
    if "markdown" in result:
        print(f"\nAblation ({sweep_dir}):\n{result['markdown']}\n")
    for name, path in result["files"].items():
        print(f"  {name}: {path}")
    if result["failed"]:
        print(f"\n{len(result['failed'])} of {result['jobs']} jobs did not complete:", file=sys.stderr)
        for job, status, error in result["failed"]:
            print(f"  {status:9s} {job}  {error or ''}", file=sys.stderr)
        print("Re-launch the same command to retry only these.", file=sys.stderr)


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover
    Callback = object  # type: ignore[misc,assignment]


class ReportCallback(Callback):
    """Aggregates a multirun when it ends; the sweep exits non-zero if any job failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        metric = OmegaConf.select(config, "hydra.sweeper.metric", default="test.accuracy")
        result = report(sweep_dir, metric=metric)
        print_report(result, sweep_dir)
        if result["failed"]:
            raise SystemExit(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ptexp-report", description="Aggregate a ptexp sweep folder.")
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--metric", default="test.accuracy", help="dotted key of metrics.json (default test.accuracy)")
    parser.add_argument("--no-wandb", action="store_true", help="do not log the table to W&B")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"ptexp-report: {args.sweep_dir} is not a folder (give outputs/multiruns/<sweep>).", file=sys.stderr)
        return 2
    result = report(args.sweep_dir, metric=args.metric, log_to_wandb=not args.no_wandb)
    if not result["jobs"]:
        print(f"ptexp-report: no job folders in {args.sweep_dir}.", file=sys.stderr)
        return 2
    print_report(result, args.sweep_dir)
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

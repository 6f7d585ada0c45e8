"""Combine the recipe study's levers into one candidate recipe, by the study's rule (issue 13):
within each study dataset rank a lever's values by mean VALIDATION accuracy over seeds (test
is never looked at), average the ranks across datasets, and take the value with the best mean
rank. Prints the chosen values as ptexp-train overrides (one line) for a candidate sweep,
and the reasoning on stderr.

    python scripts/study_choose.py <study root> [--levers lr,epochs,...] [--min-datasets 4]

A lever's cell is its preset's fixed settings plus the swept values; ``epochs+patience`` makes
two levers' cells compete as one (the budget: fixed epochs, or 10 epochs with early stopping).
A lever counts only on datasets where every one of its values has at least two finished seeds,
and only when at least --min-datasets datasets qualify. Levers are taken in the order given: a
later lever whose value touches a key an earlier one already set is left out (and said so).
The template lever is not combined: its values differ between single-text and pair datasets.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from statistics import mean

import yaml

LEVERS = ["lr", "epochs+patience", "trainable", "init", "head_lr", "prompt_length", "encoder", "schedule"]
DATASETS = ["sms_spam", "hate_offensive", "clickbait", "drug_reviews", "clinc_domain", "clinc_pairs"]


def finished_jobs(sweep: Path) -> list[tuple[list[str], float]]:
    """(overrides, validation accuracy) of each finished job of a sweep folder."""
    jobs = []
    for metrics_file in sweep.glob("*/metrics.json"):
        overrides_file = metrics_file.parent / ".hydra" / "overrides.yaml"
        metrics = json.loads(metrics_file.read_text())
        accuracy = (metrics.get("validation") or {}).get("accuracy")
        if accuracy is None or not overrides_file.exists():
            continue
        jobs.append((yaml.safe_load(overrides_file.read_text()), float(accuracy)))
    return jobs


def preset_settings(lever: str) -> dict[str, str]:
    """What a lever's sweep preset fixes for all its jobs (e.g. study_patience's 10 epochs)."""
    preset = Path(__file__).resolve().parent.parent / "ptexp" / "conf" / "sweep" / f"study_{lever}.yaml"
    if not preset.exists():
        return {}
    settings: dict[str, str] = {}

    def flatten(node: object, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                flatten(value, f"{prefix}{key}." if prefix or key else "")
        else:
            settings[prefix.rstrip(".")] = _text(node)

    data = yaml.safe_load(preset.read_text()) or {}
    flatten({k: v for k, v in data.items() if k not in ("hydra", "sweep_name", "defaults")}, "")
    return settings


def _text(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ",".join(_text(v) for v in value) + "]"
    return str(value)


def _number(value: str) -> str:
    """One spelling per value: 1e-2 and 0.01 are one cell."""
    try:
        return repr(float(value)) if not value.lstrip("-").isdigit() else value
    except ValueError:
        return value


def cells(jobs: list[tuple[list[str], float]], fixed: dict[str, str]) -> dict[tuple[str, ...], dict[str, float]]:
    """Validation accuracy by cell and seed. A cell is the preset's fixed settings plus the
    overrides that differ between the sweep's jobs (less seed); null (= the default) is left
    out, so the same recipe from two levers' sweeps is one cell."""
    seen: dict[str, set[str]] = defaultdict(set)
    for overrides, _ in jobs:
        for item in overrides:
            key, _, value = item.partition("=")
            seen[key].add(value)
    varying = {k for k, v in seen.items() if len(v) > 1 and k != "seed"}
    by_cell: dict[tuple[str, ...], dict[str, float]] = defaultdict(dict)
    for overrides, accuracy in jobs:
        settings = dict(fixed)
        seed = "?"
        for item in overrides:
            key, _, value = item.partition("=")
            if key in varying:
                settings[key] = value
            elif key == "seed":
                seed = value
        cell = tuple(sorted(f"{k}={_number(v)}" for k, v in settings.items() if v != "null"))
        by_cell[cell][seed] = accuracy
    return by_cell


def ranks(means: dict[tuple[str, ...], float]) -> dict[tuple[str, ...], float]:
    """Rank 1 = best validation mean; ties share the average of their ranks."""
    ordered = sorted(means, key=lambda c: -means[c])
    out: dict[tuple[str, ...], float] = {}
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and means[ordered[j + 1]] == means[ordered[i]]:
            j += 1
        for c in ordered[i : j + 1]:
            out[c] = (i + j) / 2 + 1
        i = j + 1
    return out


def choose(root: Path, lever: str, min_datasets: int, log: list[str]) -> tuple[str, ...] | None:
    """The cell of best mean validation rank; ``lever`` may join sweeps (``epochs+patience``)
    whose cells compete as one lever."""
    per_dataset: dict[str, dict[tuple[str, ...], float]] = {}
    all_cells: set[tuple[str, ...]] = set()
    for dataset in DATASETS:
        by_cell: dict[tuple[str, ...], dict[str, float]] = defaultdict(dict)
        for part in lever.split("+"):
            sweep = root / "multiruns" / f"study_{part}_{dataset}"
            for cell, seeds in cells(finished_jobs(sweep), preset_settings(part)).items():
                by_cell[cell].update(seeds)
        all_cells |= set(by_cell)
        if by_cell and all(len(v) >= 2 for v in by_cell.values()):
            per_dataset[dataset] = {c: mean(v.values()) for c, v in by_cell.items()}
    complete = {d: m for d, m in per_dataset.items() if set(m) == all_cells}
    if len(complete) < min_datasets:
        log.append(f"{lever}: left out, complete on {len(complete)} dataset(s) ({', '.join(complete) or 'none'})")
        return None
    mean_rank = {c: mean(ranks(m)[c] for m in complete.values()) for c in all_cells}
    best = min(sorted(mean_rank), key=lambda c: mean_rank[c])
    by_rank = sorted(mean_rank.items(), key=lambda x: x[1])
    table = ", ".join(f"{' '.join(c) or '(default)'}: {r:.2f}" for c, r in by_rank)
    log.append(f"{lever}: mean validation rank over {len(complete)} datasets: {table}")
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--levers", default=",".join(LEVERS))
    parser.add_argument("--min-datasets", type=int, default=4)
    args = parser.parse_args()
    log: list[str] = []
    chosen: dict[str, str] = {}
    for lever in [lever for lever in args.levers.split(",") if lever]:
        best = choose(args.root, lever, args.min_datasets, log)
        if best is None:
            continue
        keys = {o.partition("=")[0] for o in best}
        clash = keys & set(chosen)
        if clash:
            log.append(f"{lever}: {' '.join(best)} not combined: {', '.join(sorted(clash))} set by an earlier lever")
            continue
        chosen.update({o.partition("=")[0]: o.partition("=")[2] for o in best})
    print("\n".join(log), file=sys.stderr)
    # ++ sets a key whether or not the composed config has it (early_stopping_patience is added).
    print(" ".join(f"++{k}={v}" if "." in k else f"{k}={v}" for k, v in chosen.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

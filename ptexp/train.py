"""`ptexp-train`: the Hydra entry point for one run or (with -m) a sweep.

Only hydra/omegaconf are imported at start-up, so `--help` and `--cfg job` are instant;
torch and transformers load when the task runs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import ptexp.schema  # noqa: F401  (registers the structured configs)
from ptexp.errors import ConfigError

log = logging.getLogger("ptexp")


def slug(text: str, limit: int = 80) -> str:
    """A folder-safe name for a list of overrides; long ones keep a readable head plus a hash."""
    if not text:
        return "default"
    safe = re.sub(r"[^A-Za-z0-9=,._+-]+", "_", text)
    if len(safe) <= limit:
        return safe
    return f"{safe[: limit - 13]}_{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def _or_now(name: str | None) -> str:
    return name or datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def _parent_dir(path: str) -> str:
    """A file path whose folder exists (sqlite cannot create folders for an optuna study)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return path


for _name, _fn in (("ptexp_slug", slug), ("ptexp_or_now", _or_now), ("ptexp_parent_dir", _parent_dir)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn, use_cache=True)


def _thread_budget(hc: Any) -> None:
    """Split the machine's cores between the jobs a parallel launcher runs at once."""
    n_jobs = hc.launcher.get("n_jobs") if "launcher" in hc else None
    if isinstance(n_jobs, int) and n_jobs > 1 and "PTEXP_NUM_THREADS" not in os.environ:
        cores = len(os.sched_getaffinity(0))
        os.environ["PTEXP_NUM_THREADS"] = str(max(1, cores // n_jobs))


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from ptexp.run import run

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    overrides = list(hc.overrides.task)
    metric = "validation." + str(cfg.trainer.get("metric_for_best_model", "accuracy")).removeprefix("eval_")
    if hc.mode == RunMode.MULTIRUN:
        from ptexp.jobs import read_sweep, run_isolated

        _thread_budget(hc)
        axes = set(read_sweep(run_dir.parent).get("axes", []))
        tags = [
            o.split("=", 1)[0].rsplit(".", 1)[-1] + "=" + o.split("=", 1)[1]
            for o in overrides
            if o.split("=", 1)[0] in axes
        ]
        group = run_dir.parent.name
        name = cfg.run_name or run_dir.name
        return run_isolated(run_dir, lambda: run(cfg, run_dir, overrides, group=group, tags=tags, name=name), metric)
    try:
        metrics = run(cfg, run_dir, overrides=overrides)
    except ConfigError as err:
        log.error("%s", err)
        sys.stderr.write(f"\nptexp: configuration error: {err}\n")
        raise SystemExit(2) from None
    return metrics["validation"].get(metric.split(".", 1)[1])


if __name__ == "__main__":
    main()

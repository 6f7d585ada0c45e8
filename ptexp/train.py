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


def _share_machine(hc: Any) -> None:
    """Split the machine between the jobs a parallel launcher runs at once: cores // n_jobs
    torch threads each, and on a multi-GPU node one GPU per job."""
    from ptexp.distributed import assign_gpu

    n_jobs = hc.launcher.get("n_jobs") if "launcher" in hc else None
    if not isinstance(n_jobs, int) or n_jobs <= 1:
        return
    os.environ.setdefault("PTEXP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // n_jobs)))
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
    if not visible:
        from ptexp.outputs import gpu_count

        visible = [str(i) for i in range(gpu_count())]
    gpu = assign_gpu(int(hc.job.num), n_jobs, visible)
    if gpu is not None:
        # joblib workers are reused: this only takes effect before the worker first touches CUDA.
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from ptexp.distributed import is_main_process, setup_from_slurm
    from ptexp.run import run

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    overrides = list(hc.overrides.task)
    metric = "validation." + str(cfg.trainer.get("metric_for_best_model", "accuracy")).removeprefix("eval_")
    setup_from_slurm()
    if hc.mode == RunMode.MULTIRUN:
        from ptexp.jobs import read_sweep, run_isolated

        _share_machine(hc)
        axes = set(read_sweep(run_dir.parent).get("axes", []))
        swept = [o.split("=", 1) for o in overrides if o.split("=", 1)[0] in axes]
        tags = [f"{key.rsplit('.', 1)[-1]}={value}" for key, value in swept]
        name = cfg.run_name or run_dir.name

        def job() -> dict:
            return run(cfg, run_dir, overrides, group=run_dir.parent.name, tags=tags, name=name)

        if not is_main_process():  # other ranks of a multi-GPU job train; rank 0 records
            job()
            return None
        return run_isolated(run_dir, job, metric)
    try:
        metrics = run(cfg, run_dir, overrides=overrides)
    except ConfigError as err:
        log.error("%s", err)
        sys.stderr.write(f"\nptexp: configuration error: {err}\n")
        raise SystemExit(2) from None
    return metrics["validation"].get(metric.split(".", 1)[1])


if __name__ == "__main__":
    main()

"""Weights & Biases: one W&B run per ptexp run, always finished, files in the run folder."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

log = logging.getLogger(__name__)


@dataclass
class Tracking:
    """How a run appears in W&B: its name, and for a sweep job its group and tags."""

    name: str
    group: str | None = None
    tags: list[str] = field(default_factory=list)


def sweep_job_tracking(run_name: str | None, job_dir: Path, overrides: list[str]) -> Tracking:
    """A sweep job's W&B run: named after its folder, grouped by the sweep folder, tagged with
    the values of the swept axes (``sweep.json``'s axes)."""
    from ptexp.jobs import read_sweep

    axes = set(read_sweep(job_dir.parent).get("axes", []))
    swept = [o.split("=", 1) for o in overrides if o.split("=", 1)[0].lstrip("+") in axes]
    return Tracking(
        name=run_name or job_dir.name,
        group=job_dir.parent.name,
        tags=[f"{key.rsplit('.', 1)[-1]}={value}" for key, value in swept],
    )


def stable_run_id(run_dir: Path) -> str:
    """Derived from the run folder (and SLURM job), so a resumed or requeued job continues its
    own W&B run instead of starting a duplicate."""
    return hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:12]


@contextmanager
def wandb_run(
    logger_cfg: DictConfig,
    run_dir: Path,
    name: str,
    config: dict[str, Any],
    group: str | None = None,
    tags: list[str] | None = None,
    reinit: str = "finish_previous",
) -> Iterator[Any]:
    """Start the run (or nothing for logger=none) and finish it however the body ends.
    ``reinit="create_new"`` keeps the process's other open runs open (sweep fusion trains
    several runs in one process); the default finishes a run a previous job left open."""
    if logger_cfg.backend != "wandb" or logger_cfg.mode == "disabled":
        yield None
        return
    import wandb

    if reinit == "finish_previous":
        # The Trainer's callback reads these; with several runs open they are each run's own init arguments.
        os.environ["WANDB_MODE"] = logger_cfg.mode
        os.environ["WANDB_DIR"] = str(run_dir)
    os.environ.setdefault("WANDB_SILENT", "true")
    run = init_when_free(
        wandb,
        project=logger_cfg.project,
        entity=logger_cfg.entity,
        group=logger_cfg.group or group,
        name=logger_cfg.name or name,
        tags=list(logger_cfg.tags) + list(tags or []),
        job_type=logger_cfg.job_type,
        notes=logger_cfg.notes,
        config=config,
        dir=str(run_dir),
        mode=logger_cfg.mode,
        id=stable_run_id(run_dir),
        resume="allow",
        # Without it a second job in the same process silently reuses the first job's run
        # (wandb 0.31's default reinit returns the active run).
        reinit=reinit,
    )
    exit_code = 1
    try:
        yield run
        exit_code = 0
    finally:
        try:
            run.finish(exit_code=exit_code)
        except Exception as err:  # a dead W&B service must not mask the run's own outcome
            log.warning("wandb.finish failed: %s", err)


def init_when_free(wandb: Any, attempts: int = 24, wait_s: float = 5.0, **kwargs: Any) -> Any:
    """wandb.init, waiting while a killed predecessor's W&B service still holds this run id.

    A job killed with SIGKILL and relaunched at once (a resumed sweep, a requeued SLURM job)
    finds its orphaned wandb-core alive for a few seconds: init fails with "run ID ... is in
    use" until it exits. Starting a new id instead would duplicate the run.
    """
    for attempt in range(attempts):
        try:
            return wandb.init(**kwargs)
        except Exception as err:  # wandb raises its internal ServerResponseError here
            if "is in use" not in str(err) or attempt == attempts - 1:
                raise
            time.sleep(wait_s)
    raise AssertionError("unreachable")

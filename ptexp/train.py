"""`ptexp-train`: the command-line entry point for one run or (with -m) a sweep.

Only hydra/omegaconf are imported at start-up, so ``--help`` and ``--cfg job`` are instant;
torch and transformers load when the task runs. The overrides are checked (ptexp.cli)
before Hydra composes them; a run that fails validation exits 2 and leaves no folder behind.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import ptexp.naming  # noqa: F401  (registers the resolvers conf/train.yaml uses)
import ptexp.schema  # noqa: F401  (registers the structured configs)
from ptexp.errors import ConfigError
from ptexp.experiment import selection_metric
from ptexp.layout import HYDRA_DIR, LOG_FILE

log = logging.getLogger("ptexp")


def _config_error(err: ConfigError) -> SystemExit:
    sys.stderr.write(f"ptexp: configuration error: {err}\n")
    return SystemExit(2)


def _remove_if_only_hydra(run_dir: Path, root: Path) -> None:
    """A run that failed validation wrote nothing of ptexp's: drop the folder Hydra made for it,
    and the folders above it up to ``paths.root`` that it leaves empty."""
    if not run_dir.is_dir() or not {p.name for p in run_dir.iterdir()} <= {HYDRA_DIR, LOG_FILE}:
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    root = root.resolve()
    for folder in run_dir.resolve().parents:
        if not folder.is_relative_to(root) or any(folder.iterdir()):
            break
        folder.rmdir()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    from ptexp.distributed import is_main_process, setup_from_slurm, share_machine
    from ptexp.run import run
    from ptexp.tracking import sweep_job_tracking

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    overrides = list(hc.overrides.task)
    metric = "validation." + selection_metric(cfg)
    setup_from_slurm()
    if hc.mode == RunMode.MULTIRUN:
        from ptexp.jobs import run_isolated

        threads = share_machine(hc)
        tracking = sweep_job_tracking(cfg.run_name, run_dir, overrides)

        def job() -> dict:
            return run(cfg, run_dir, overrides, tracking=tracking, num_threads=threads)

        if not is_main_process():  # other ranks of a multi-GPU job train; rank 0 records
            job()
            return None
        return run_isolated(run_dir, job, metric)
    try:
        metrics = run(cfg, run_dir, overrides=overrides)
    except ConfigError as err:
        _remove_if_only_hydra(run_dir, Path(cfg.paths.root))
        raise _config_error(err) from None
    # The value an Optuna sweep optimises: the validation metric the run selected its epoch by.
    return metrics["validation"].get(metric.split(".", 1)[1])


def main() -> None:
    """Console entry: ptexp's own help page and override checks, then Hydra."""
    from ptexp.cli import check_overrides, help_page

    arguments = sys.argv[1:]
    if "--help" in arguments or "-h" in arguments:
        print(help_page())
        return
    from ptexp.sweep import multirun_cfg_message

    if (message := multirun_cfg_message(arguments)) is not None:
        sys.stderr.write(message + "\n")
        raise SystemExit(2)
    try:
        check_overrides(arguments)
    except ConfigError as err:
        raise _config_error(err) from None
    _hydra_main()


if __name__ == "__main__":
    main()

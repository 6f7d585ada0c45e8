"""ptexp's Hydra plugin classes: Hydra instantiates plugins only from the ``hydra_plugins``
namespace, so the sweepers (whose logic lives in ptexp.sweep) are re-exported here, next to
the SLURM launcher that waits for every job of an array."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf

from ptexp import sweep

log = logging.getLogger(__name__)


class PtexpSweeper(sweep.PtexpSweeper):
    pass


if sweep.OptunaSweeper is not None:

    class PtexpOptunaSweeper(sweep.PtexpOptunaSweeper):
        pass


sweep.register()


class PtexpSlurmLauncher(SlurmLauncher):
    """Hydra's SLURM launcher, but waiting for every job of an array.

    Hydra's (hydra-submitit-launcher 1.2.0) ends its launch with
    ``[job.results()[0] for job in jobs]``: the first job killed by scancel, a time limit or
    OOM raises there, abandoning the jobs still running. Here submitting and waiting are
    separate steps, and a job that did not complete becomes a FAILED JobReturn (the sweep
    records and reports it) while the wait goes on.
    """

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        jobs = self.submit(job_overrides, initial_job_idx)
        return [wait_for_job(job, overrides) for job, overrides in zip(jobs, job_overrides)]

    def submit(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[Any]:
        """Submit the jobs as one SLURM array; the submitit jobs, not yet finished.

        The same steps as hydra-submitit-launcher 1.2.0's ``BaseSubmititLauncher.launch``
        before its final wait: executor, parameters, sweep folder, array submission.
        """
        import submitit
        from submitit.core.utils import FailedJobError

        assert self.config is not None
        assert len(job_overrides) > 0
        init_keys = {"max_num_timeout", "submitit_folder"}
        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR,
            folder=self.params["submitit_folder"],
            **{f"{self._EXECUTOR}_max_num_timeout": self.params[k] for k in ("max_num_timeout",) if k in self.params},
        )
        # Keys every submitit executor knows pass as they are; the rest are slurm_-prefixed.
        generic = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                key if key in generic else f"{self._EXECUTOR}_{key}": value
                for key, value in self.params.items()
                if key not in init_keys
            }
        )
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {self.config.hydra.sweep.dir}")
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        job_params: list[Any] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        try:
            return list(executor.map_array(self, *zip(*job_params)))
        except FailedJobError as err:
            # sbatch refused the array (resources the cluster lacks, a wrong partition): say so
            # in one paragraph instead of a traceback through submitit.
            sys.stderr.write(
                f"ptexp: sbatch refused the sweep's jobs: {str(err).strip()}. Check hydra.launcher's resources "
                "(gpus_per_node, cpus_per_task, mem_gb, partition) against the cluster's "
                "(sinfo -o '%P %c %m %G'); on scripts/slurm-local.sh's node (no GPU) use "
                "hydra/launcher=slurm_local.\n"
            )
            raise SystemExit(2) from None


def wait_for_job(job: Any, overrides: Sequence[str]) -> JobReturn:
    """A submitit job's JobReturn once it ends; one killed before it could return one
    (scancel, time limit, OOM, node failure) as FAILED, carrying submitit's error."""
    from submitit.core.utils import UncompletedJobError

    try:
        return job.results()[0]
    except UncompletedJobError as err:
        failed = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
        failed.return_value = err
        return failed

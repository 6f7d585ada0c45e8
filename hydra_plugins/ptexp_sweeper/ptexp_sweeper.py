"""Hydra instantiates plugins only from classes defined in the `hydra_plugins` namespace;
the sweep logic lives in ptexp.sweep."""

from collections.abc import Sequence
from typing import Any
from unittest.mock import patch

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

from ptexp import sweep


class PtexpSweeper(sweep.PtexpSweeper):
    pass


sweep.register()


class PtexpSlurmLauncher(SlurmLauncher):
    """Hydra's SLURM launcher, but waiting for every job of an array.

    Hydra's returns ``[job.results()[0] for job in jobs]``: the first job killed by scancel,
    a time limit or OOM raises there, abandoning the jobs still running. Here that job
    becomes a FAILED JobReturn (the sweep reports it) and the wait goes on.
    """

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        original = submitit.Job.results

        def results_or_failure(job: Any) -> list[JobReturn]:
            try:
                return original(job)
            except submitit.core.utils.UncompletedJobError as err:
                failed = JobReturn()
                failed.status = JobStatus.FAILED
                failed._return_value = err
                return [failed]

        with patch.object(submitit.Job, "results", results_or_failure):
            return super().launch(job_overrides, initial_job_idx)

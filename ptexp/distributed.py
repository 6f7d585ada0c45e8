"""Where a process runs: its rank in a multi-GPU job, its CPU threads and its GPU.

The Trainer does the distributed training; ptexp only needs to know which process is rank 0
(the one that writes run files, checkpoints, markers and W&B), to export under SLURM the
torch.distributed variables submitit derives from the task layout, and to share one machine
between the jobs a parallel launcher runs at once.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any


def setup_from_slurm() -> None:
    """Under a multi-task SLURM job started by submitit, export RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR and MASTER_PORT so the Trainer initialises torch.distributed."""
    if "RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return
    import submitit

    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def assign_gpu(job_num: int, n_jobs: int, visible: list[str]) -> str | None:
    """The GPU a job of a single-node parallel sweep should see: jobs launched together
    (consecutive job numbers) get distinct GPUs; more jobs than GPUs share round-robin."""
    if not visible or n_jobs <= 1:
        return None
    return visible[job_num % len(visible)]


def cpu_allotment() -> int:
    """CPUs this job may use: SLURM's allotment, else the process's affinity mask."""
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        return max(1, int(os.environ["SLURM_CPUS_PER_TASK"]))
    return max(1, len(os.sched_getaffinity(0)))


def gpu_count() -> int:
    """Visible NVIDIA GPUs, without importing torch (which would initialise CUDA too early)."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def share_machine(hydra_cfg: Any) -> int | None:
    """Split the machine between the jobs a parallel launcher runs at once: returns this job's
    torch thread count (cores // n_jobs), and on a multi-GPU node makes one GPU visible to it.
    None when the launcher runs one job at a time."""
    n_jobs = hydra_cfg.launcher.get("n_jobs") if "launcher" in hydra_cfg else None
    if not isinstance(n_jobs, int) or n_jobs <= 1:
        return None
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
    gpu = assign_gpu(int(hydra_cfg.job.num), n_jobs, visible or [str(i) for i in range(gpu_count())])
    if gpu is not None:
        # joblib workers are reused: this only takes effect before the worker first touches CUDA.
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    return max(1, len(os.sched_getaffinity(0)) // n_jobs)

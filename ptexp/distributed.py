"""Process roles for multi-GPU jobs: torchrun, or one SLURM task per GPU (slurm_ddp).

The Trainer does the distributed training; ptexp only needs to know which process is rank 0
(the one that writes run files, checkpoints, markers and W&B) and, under SLURM, to export
the torch.distributed variables submitit derives from the SLURM task layout.
"""

from __future__ import annotations

import os


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

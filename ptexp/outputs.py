"""Run folder files: written atomically, with the provenance needed to reproduce a run."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("ptexp", "torch", "transformers", "peft", "datasets", "accelerate", "hydra-core", "omegaconf", "wandb")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, text: str) -> None:
    """Write via a temp file + rename, so a crash never leaves a half-written file. The file
    gets the mode any other tool's output would (0666 minus the umask): mkstemp's 0600 would
    hide results from colleagues on a shared cluster."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def respect_umask(*paths: Path) -> None:
    """Give files that libraries wrote (safetensors writes its files 0600 whatever the umask)
    the mode ptexp's own files get, so colleagues can load the weights too."""
    mode = 0o666 & ~_umask()
    for path in paths:
        files = [path] if path.is_file() else [p for p in Path(path).rglob("*") if p.is_file()]
        for file in files:
            os.chmod(file, mode)


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(cwd: Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the code that ran (the ptexp checkout, else the launch dir). An
    untracked file counts as dirty: a new module in the package is code the run may have used."""
    where = cwd or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=normal"],
                cwd=where,
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
        )
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def environment() -> dict[str, Any]:
    import torch

    device = "cpu"
    if torch.cuda.is_available():
        device = f"cuda:{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "packages": package_versions(),
        "git": git_state(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }

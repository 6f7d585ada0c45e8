"""The life of one sweep job in its folder: skip it if finished, record its status, keep a
failure from taking the sweep down, and tell a job still running from one whose process died.

A job folder is *completed* when it holds ``metrics.json``, which a run writes last and
atomically. ``status.json`` records everything else; this module is its only writer.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ptexp.layout import METRICS_FILE, STATUS_FILE, SWEEP_FILE
from ptexp.outputs import read_json, write_json

log = logging.getLogger("ptexp")

#: Every status a job folder can be in.
STATUSES = ("completed", "failed", "running", "interrupted", "missing")


def write_status(job_dir: Path, status: str, **fields: Any) -> None:
    """Record a job's status with who wrote it (pid, host, SLURM job), so that a reader can
    tell a live ``running`` from one whose process was killed."""
    record = {
        "status": status,
        "time": datetime.now(UTC).isoformat(),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        **fields,
    }
    write_json(job_dir / STATUS_FILE, record)


def read_status(job_dir: Path) -> dict[str, Any]:
    path = job_dir / STATUS_FILE
    return read_json(path) if path.is_file() else {}


def job_status(job_dir: Path) -> str:
    """One of :data:`STATUSES`; ``interrupted`` is a ``running`` whose process is gone."""
    if (job_dir / METRICS_FILE).is_file():
        return "completed"
    record = read_status(job_dir)
    if not record:
        return "missing"
    status = record.get("status", "running")
    if status == "running" and not _writer_alive(record):
        return "interrupted"
    return status


def _writer_alive(record: dict[str, Any]) -> bool:
    """Whether the process that wrote a ``running`` status still runs. Same host: its pid;
    a SLURM job elsewhere: squeue; otherwise we cannot tell and trust the record."""
    pid, host = record.get("pid"), record.get("host")
    if isinstance(pid, int) and host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    slurm_id = record.get("slurm_job_id")
    if slurm_id:
        try:
            out = subprocess.run(
                ["squeue", "-h", "-j", str(slurm_id), "-o", "%T"], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return True
        return out.returncode == 0 and bool(out.stdout.strip())
    return True


def read_metric(job_dir: Path, dotted: str) -> float | None:
    path = job_dir / METRICS_FILE
    if not path.is_file():
        return None
    value: Any = read_json(path)
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return float(value) if isinstance(value, (int, float)) else None


def read_sweep(sweep_dir: Path) -> dict[str, Any]:
    """The sweep's plan (axes, jobs, merged duplicates) as the ptexp sweeper wrote it."""
    path = sweep_dir / SWEEP_FILE
    return read_json(path) if path.is_file() else {}


def run_isolated(job_dir: Path, body: Callable[[], dict[str, Any]], metric: str) -> float | None:
    """Run one sweep job: skip if completed; on any error record it and return None."""
    if job_status(job_dir) == "completed":
        log.info("%s already finished: skipped", job_dir.name)
        return read_metric(job_dir, metric)
    started = _now()
    write_status(job_dir, "running")
    try:
        metrics = body()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as err:  # noqa: BLE001  (any failure of one job is recorded, the sweep goes on)
        write_status(job_dir, "failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc(limit=8))
        log.error("job %s failed: %s: %s", job_dir.name, type(err).__name__, err)
        return None
    write_status(job_dir, "completed", started=started)
    return read_metric(job_dir, metric) if metrics is not None else None


def job_wall_seconds(job_dir: Path) -> float | None:
    """A finished job's wall time in its launcher (data, model, training, saving, W&B), from
    its status record; None for jobs recorded before it was kept."""
    record = read_status(job_dir)
    if record.get("status") != "completed" or "started" not in record:
        return None
    return (datetime.fromisoformat(record["time"]) - datetime.fromisoformat(record["started"])).total_seconds()


def _now() -> str:
    return datetime.now(UTC).isoformat()


def record_lost_job(job_dir: Path, error: BaseException) -> None:
    """A job that died without recording anything itself (SIGKILL, scancel, time limit, OOM)."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    write_status(job_dir, "failed", error=f"{type(error).__name__}: {first}")

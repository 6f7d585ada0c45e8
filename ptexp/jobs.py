"""One job of a sweep: skip it if finished, record it if it fails, never take the sweep down.

A job folder is *completed* when it holds ``metrics.json``, which a run writes last and
atomically; ``status.json`` records a failure (with its error) or a job in progress.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ptexp.outputs import read_json, write_json

log = logging.getLogger("ptexp")

SWEEP_FILE = "sweep.json"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.json"


def job_status(job_dir: Path) -> str:
    """completed | failed | running (or killed while running) | missing"""
    if (job_dir / METRICS_FILE).is_file():
        return "completed"
    status = job_dir / STATUS_FILE
    if status.is_file():
        return read_json(status).get("status", "running")
    return "missing"


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
    write_json(job_dir / STATUS_FILE, {"status": "running", "started": _now()})
    try:
        metrics = body()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as err:  # noqa: BLE001  (any failure of one job is recorded, the sweep goes on)
        write_json(
            job_dir / STATUS_FILE,
            {
                "status": "failed",
                "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc(limit=8),
                "ended": _now(),
            },
        )
        log.error("job %s failed: %s: %s", job_dir.name, type(err).__name__, err)
        return None
    write_json(job_dir / STATUS_FILE, {"status": "completed", "ended": _now()})
    return read_metric(job_dir, metric) if metrics is not None else None


def _now() -> str:
    return datetime.now(UTC).isoformat()

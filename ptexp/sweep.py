"""ptexp's Hydra sweeper: Hydra's grid plus what Hydra lacks for ablations.

- paired axes (``hydra.sweeper.paired``): lists zipped together instead of multiplied;
- no-op axes: jobs whose *effective* config is identical (peft's MLP ignores
  ``encoder_num_layers`` and ``encoder_dropout``) run once, and the sweep says which axis had
  no effect;
- resume: jobs whose folder already holds ``metrics.json`` (written last, GUIDE §4) are not
  launched again; unfinished ones resume from their last checkpoint inside the job;
- progress: one line per finished job with k/N, status, metric, elapsed and time left.

Hydra only instantiates sweepers from the ``hydra_plugins`` namespace, so
``hydra_plugins/ptexp_sweeper`` re-exports this class.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict

from ptexp.jobs import STATUS_FILE, SWEEP_FILE, job_status, read_metric
from ptexp.outputs import write_json

log = logging.getLogger("ptexp.sweep")

# Keys that never change a job's result: two jobs differing only here are the same experiment.
NON_EXPERIMENT_KEYS = ("logger", "paths", "run_name", "sweep_name", "num_threads", "save_predictions")


@dataclass
class PtexpSweeperConf:
    _target_: str = "hydra_plugins.ptexp_sweeper.ptexp_sweeper.PtexpSweeper"
    max_batch_size: int | None = None
    # Grid axes, multiplied (Hydra's syntax: "1,5,10", "range(1,4)").
    params: dict[str, str] | None = None
    # Zipped axes: every value list the same length; the i-th values go together.
    paired: dict[str, str] | None = None
    # Run jobs with identical effective configs once.
    dedupe: bool = True
    # Metric shown in progress lines (a key of metrics.json, dotted).
    metric: str = "test.accuracy"


def register() -> None:
    ConfigStore.instance().store(group="hydra/sweeper", name="ptexp", node=PtexpSweeperConf, provider="ptexp")


def effective_key(cfg: DictConfig) -> str:
    """What determines a job's result, with the values peft ignores normalised away."""
    task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    data = OmegaConf.to_container(task, resolve=True)
    assert isinstance(data, dict)
    for key in NON_EXPERIMENT_KEYS:
        data.pop(key, None)
    pe = data.get("prompt_encoder", {})
    if pe.get("encoder_reparameterization_type") == "MLP":
        pe["encoder_num_layers"], pe["encoder_dropout"] = 2, 0.0
    return json.dumps(data, sort_keys=True, default=str)


class PtexpSweeper(BasicSweeper):
    def __init__(
        self,
        max_batch_size: int | None = None,
        params: dict[str, str] | None = None,
        paired: dict[str, str] | None = None,
        dedupe: bool = True,
        metric: str = "test.accuracy",
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.paired = dict(paired or {})
        self.dedupe = dedupe
        self.metric = metric

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        # Resolve the sweep folder once: launchers that start other processes would
        # otherwise re-evaluate ${now:...} there and scatter the jobs.
        with open_dict(config):
            config.hydra.sweep.dir = str(config.hydra.sweep.dir)

    # -- building the job list ------------------------------------------------------------
    def _expand(self, arguments: list[str]) -> tuple[list[list[str]], list[str]]:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([*self._parse_config(), *arguments])
        axes: OrderedDict[str, list[str]] = OrderedDict()
        for override in overrides:
            key = override.get_key_element()
            if override.is_sweep_override():
                if not override.is_discrete_sweep():
                    raise HydraException(f"ptexp sweeper: {key} must be a list of values (a,b,c or range())")
                axes[key] = [f"{key}={v}" for v in override.sweep_string_iterator()]
            else:
                axes[key] = [f"{key}={override.get_value_element_as_str()}"]
        lists = list(axes.values())
        swept = [k for k, v in axes.items() if len(v) > 1]
        if self.paired:
            pairs = parser.parse_overrides([f"{k}={v}" for k, v in self.paired.items()])
            columns = []
            for override in pairs:
                key = override.get_key_element()
                values = (
                    list(override.sweep_string_iterator())
                    if override.is_sweep_override()
                    else [override.get_value_element_as_str()]
                )
                columns.append([f"{key}={v}" for v in values])
                swept.append(key)
            lengths = {len(c) for c in columns}
            if len(lengths) != 1:
                raise HydraException(
                    "hydra.sweeper.paired: every paired axis needs the same number of values; got "
                    + ", ".join(f"{o.get_key_element()}: {len(c)}" for o, c in zip(pairs, columns))
                )
            lists.append([list(row) for row in zip(*columns)])
        jobs = []
        for combo in itertools.product(*lists):
            job: list[str] = []
            for item in combo:
                job.extend(item if isinstance(item, list) else [item])
            jobs.append(job)
        return jobs, swept

    @staticmethod
    def _job_names(jobs: list[list[str]], swept: list[str]) -> list[str]:
        """Each job's folder name: its swept values only (``num_virtual_tokens=5,seed=1``),
        readable and stable across re-launches with the same axes."""
        from ptexp.train import slug

        short = {k: k.rsplit(".", 1)[-1] for k in swept}
        if len(set(short.values())) < len(short):
            short = {k: k for k in swept}
        names = []
        for job in jobs:
            values = dict(o.split("=", 1) for o in job)
            names.append(slug(",".join(f"{short[k]}={values[k]}" for k in swept if k in values) or "job"))
        return names

    def _dedupe(self, jobs: list[list[str]], swept: list[str]) -> tuple[list[list[str]], dict[str, list[str]]]:
        groups: OrderedDict[str, list[list[str]]] = OrderedDict()
        for job in jobs:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
            groups.setdefault(effective_key(cfg), []).append(job)
        kept, merged = [], {}
        for members in groups.values():
            kept.append(members[0])
            if len(members) > 1:
                merged[" ".join(members[0])] = [" ".join(m) for m in members[1:]]
        if merged:
            noop = sorted(
                {
                    key
                    for members in groups.values()
                    if len(members) > 1
                    for key in swept
                    if len({o for job in members for o in job if o.startswith(f"{key}=")}) > 1
                }
            )
            log.warning(
                "%d of %d jobs have the same effective config as another job and are not run%s.",
                len(jobs) - len(kept),
                len(jobs),
                f": {', '.join(noop)} had no effect (peft's MLP prompt encoder ignores encoder_num_layers and "
                "encoder_dropout)"
                if noop
                else "",
            )
        return kept, merged

    # -- running ----------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> Any:
        jobs, swept = self._expand(arguments)
        merged: dict[str, list[str]] = {}
        if self.dedupe:
            jobs, merged = self._dedupe(jobs, swept)
        names = self._job_names(jobs, swept)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        plan = [{"overrides": job, "dir": name} for job, name in zip(jobs, names)]
        write_json(sweep_dir / SWEEP_FILE, {"axes": swept, "jobs": plan, "merged": merged})
        # The folder is ours to name: each job carries it as a Hydra override.
        jobs = [[*job, f"hydra.sweep.subdir='{name}'"] for job, name in zip(jobs, names)]
        dirs = [sweep_dir / name for name in names]
        todo = [(j, d) for j, d in zip(jobs, dirs) if job_status(d) != "completed"]
        done = len(jobs) - len(todo)
        if done:
            log.info("%d of %d jobs already finished in %s: not run again.", done, len(jobs), sweep_dir)
        batch = self.max_batch_size or _launcher_parallelism(self.config)
        returns = []
        started = time.perf_counter()
        finished_here = 0
        for start in range(0, len(todo), batch):
            chunk = todo[start : start + batch]
            self.validate_batch_is_legal([j for j, _ in chunk])
            results = self.launcher.launch([j for j, _ in chunk], initial_job_idx=done + start)
            returns.append(results)
            for (_, job_dir), result in zip(chunk, results):
                finished_here += 1
                if result.status == JobStatus.FAILED and job_status(job_dir) in ("running", "missing"):
                    _record_lost_job(job_dir, result._return_value)
                elapsed = time.perf_counter() - started
                left = len(todo) - finished_here
                eta = elapsed / finished_here * left
                metric = read_metric(job_dir, self.metric)
                metric_text = f"{self.metric}={metric:.4f}" if metric is not None else ""
                log.info(
                    "[%d/%d] %-9s %-40s %s  elapsed %s, ~%s left",
                    done + finished_here,
                    len(jobs),
                    job_status(job_dir),
                    job_dir.name,
                    metric_text,
                    _hms(elapsed),
                    _hms(eta),
                )
        return returns


def _record_lost_job(job_dir: Path, error: BaseException) -> None:
    """A job that died without recording anything itself (SIGKILL, scancel, time limit, OOM)."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    write_json(job_dir / STATUS_FILE, {"status": "failed", "error": f"{type(error).__name__}: {first}"})


def _launcher_parallelism(config: DictConfig) -> int:
    launcher = config.hydra.launcher
    for key in ("n_jobs", "array_parallelism"):
        value = launcher.get(key)
        if isinstance(value, int) and value > 0:
            return value if key == "n_jobs" else 10_000
    return 1


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"

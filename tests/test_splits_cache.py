"""The prepared-splits cache: a second load of the same dataset config on the same files reads
the cached splits (equal to a fresh read); any change that decides the splits misses it."""

from __future__ import annotations

import logging
import os

import pytest

from ptexp import splits_cache
from ptexp.data import load_splits
from tests.conftest import compose_cfg, write_table


@pytest.fixture
def cache_on(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("PTEXP_SPLITS_CACHE", "on")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    return tmp_path / "hf-cache" / "ptexp_splits"


def _cfg(path, *extra: str):
    return compose_cfg(
        ["dataset=csv", f"dataset.train_file={path}", "dataset.text_column=tweet", "dataset.label_column=mood", *extra]
    ).dataset


def _as_lists(data) -> dict:
    return {split: ds.to_dict() for split, ds in data.splits.items()} | {"labels": data.label_names}


def test_second_load_reads_the_cache_and_equals_a_fresh_read(tmp_path, tweets_rows, cache_on, caplog) -> None:
    path = write_table(tmp_path / "t.csv", tweets_rows[:300])
    with caplog.at_level(logging.INFO, logger="ptexp.data"):
        first = load_splits(_cfg(path))
    assert "t.csv: 300 rows" in caplog.text and "prepared-splits cache" not in caplog.text
    assert len(list(cache_on.iterdir())) == 1
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ptexp.data"):
        second = load_splits(_cfg(path))
    assert "prepared-splits cache" in caplog.text and "t.csv: 300 rows" not in caplog.text
    assert _as_lists(second) == _as_lists(first)
    # max_length only changes tokenisation: same entry
    assert splits_cache.cache_dir(_cfg(path, "dataset.max_length=16"), _task()) == splits_cache.cache_dir(
        _cfg(path), _task()
    )


def _task():
    from ptexp.tasks import get_task

    return get_task("SEQ_CLS")


def test_what_decides_the_splits_misses_the_cache(tmp_path, tweets_rows, cache_on) -> None:
    path = write_table(tmp_path / "t.csv", tweets_rows[:300])
    base = splits_cache.cache_dir(_cfg(path), _task())
    assert splits_cache.cache_dir(_cfg(path, "dataset.split_seed=7"), _task()) != base
    assert splits_cache.cache_dir(_cfg(path, "dataset.max_train_samples=50"), _task()) != base
    load_splits(_cfg(path))
    # an edited file (new rows, new modification time) is read again, not served from the cache
    write_table(path, tweets_rows[:240])
    os.utime(path, ns=(1, 1))
    assert splits_cache.cache_dir(_cfg(path), _task()) != base
    data = load_splits(_cfg(path))
    assert sum(len(d) for d in data.splits.values()) == 240


def test_off_switch_and_hub_sources_skip_the_cache(tmp_path, tweets_rows, cache_on, monkeypatch) -> None:
    path = write_table(tmp_path / "t.csv", tweets_rows[:300])
    monkeypatch.setenv("PTEXP_SPLITS_CACHE", "off")
    assert splits_cache.cache_dir(_cfg(path), _task()) is None
    load_splits(_cfg(path))
    assert not cache_on.exists()
    monkeypatch.setenv("PTEXP_SPLITS_CACHE", "on")
    assert splits_cache.cache_dir(compose_cfg(["dataset=sst2"]).dataset, _task()) is None


def test_a_half_written_entry_is_never_read(tmp_path, tweets_rows, cache_on) -> None:
    path = write_table(tmp_path / "t.csv", tweets_rows[:300])
    folder = splits_cache.cache_dir(_cfg(path), _task())
    folder.mkdir(parents=True)  # as a job killed before writing the labels file leaves it
    assert splits_cache.load(folder) is None
    data = load_splits(_cfg(path))
    assert len(data.splits["train"]) > 0

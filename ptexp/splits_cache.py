"""A prepared-splits cache: the train/validation/test splits of a dataset config, kept on disk
after the first run that reads them, so the next run (every job of a sweep) starts training
seconds after launch instead of re-reading, deduplicating, carving and subsampling its files.

datasets already caches ``map`` results (tokenisation) by fingerprint, but reading a CSV
through ptexp's row checks and carving stratified splits are not ``map`` calls, so nothing
caches them; this module does, keyed like datasets' fingerprints: by everything that decides
the splits. That is the dataset config (all keys but ``max_length``, which only tokenisation
reads), each source file's path, size and modification time, and the source code of the
modules that read and split (so a fixed reader never serves data the old one prepared). Hub
datasets are not cached here (no file stamp to key by; datasets caches their download).

``PTEXP_SPLITS_CACHE=off`` turns it off; so does ``datasets.disable_caching()``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ptexp.data import LabeledSplits
    from ptexp.tasks import Task

log = logging.getLogger("ptexp.data")

LABELS_FILE = "ptexp_labels.json"
#: Keys of the dataset config that do not change the splits.
NOT_IN_KEY = ("max_length",)


def enabled() -> bool:
    import datasets

    off = os.environ.get("PTEXP_SPLITS_CACHE", "on").lower() in ("0", "off", "false", "no")
    return not off and datasets.is_caching_enabled()


def _source_files(cfg: Any) -> list[Path]:
    from ptexp.data import SPLITS
    from ptexp.embedded import embedded_dataset_file

    if cfg.source == "embedded":
        return [embedded_dataset_file(cfg.name)]
    return [Path(cfg.get(f"{s}_file")).expanduser() for s in SPLITS if cfg.get(f"{s}_file")]


def cache_dir(cfg: Any, task: Task) -> Path | None:
    """Where the splits of this dataset config are (or will be) cached; None when not cached."""
    if cfg.source == "hub" or not enabled():
        return None
    import datasets
    from omegaconf import OmegaConf

    import ptexp.data

    config = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else dict(cfg)
    assert isinstance(config, dict)
    files = []
    for path in _source_files(cfg):
        stat = path.stat()
        files.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    code = hashlib.sha256()
    for module in (ptexp.data, inspect.getmodule(type(task))):
        code.update(inspect.getsource(module).encode())
    key = json.dumps(
        {
            "config": {k: v for k, v in config.items() if k not in NOT_IN_KEY},
            "files": files,
            "code": code.hexdigest(),
            "datasets": datasets.__version__,
        },
        sort_keys=True,
        default=str,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return Path(datasets.config.HF_DATASETS_CACHE) / "ptexp_splits" / digest


def load(folder: Path | None) -> LabeledSplits | None:
    from datasets import DatasetDict

    from ptexp.data import LabeledSplits

    if folder is None or not (folder / LABELS_FILE).is_file():
        return None
    splits = DatasetDict.load_from_disk(str(folder))
    labels = json.loads((folder / LABELS_FILE).read_text())
    log.info(
        "splits from the prepared-splits cache %s (written by the first run of this dataset config on these "
        "files, which read and checked every row; PTEXP_SPLITS_CACHE=off reads them again)",
        folder,
    )
    return LabeledSplits(splits=splits, label_names=labels)


def save(folder: Path | None, data: LabeledSplits) -> None:
    """Write atomically: a second job preparing the same splits at the same time, or a job
    killed while writing, never leaves a half-written entry that a later run would read."""
    if folder is None:
        return
    partial = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}")
    try:
        data.splits.save_to_disk(str(partial))
        (partial / LABELS_FILE).write_text(json.dumps(data.label_names))
        partial.rename(folder)
    except OSError as err:  # another job won the race, or the cache is read-only: the run goes on
        if not (folder / LABELS_FILE).is_file():
            log.warning("could not write the prepared-splits cache %s (%s)", folder, err)
    finally:
        shutil.rmtree(partial, ignore_errors=True)

"""Turn a `dataset` config into labelled train/validation/test splits.

Every source (embedded, csv, json, hub) ends in the same shape: columns ``text``,
optionally ``text_pair``, and ``label`` as a ``ClassLabel`` whose names come from the
data (so ``num_labels``/``id2label`` are never typed by hand). Splits the source lacks
are carved from train, stratified, with a fixed seed, so every run sees the same split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset, DatasetDict, load_dataset
from datasets.exceptions import DatasetGenerationError

from ptexp.embedded import embedded_dataset_file
from ptexp.errors import ConfigError

SPLITS = ("train", "validation", "test")
SOURCES = ("embedded", "csv", "json", "hub")


@dataclass
class LabeledSplits:
    splits: DatasetDict
    label_names: list[str]

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def _file_builder(path: Path, source: str) -> tuple[str, dict[str, Any]]:
    suffix = path.suffix.lower()
    if source == "json" or suffix in (".json", ".jsonl"):
        return "json", {}
    if suffix == ".tsv":
        return "csv", {"delimiter": "\t"}
    return "csv", {}


def _check_file(key: str, value: str | None) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"dataset.{key}='{value}' does not exist (looked at {path.resolve()}). Give the path "
            "of a CSV/TSV/JSON(L) file, absolute or relative to the directory you launch from."
        )
    return path


def _has_rows(path: Path, builder: str) -> bool:
    lines = path.read_bytes()[:65536].strip().splitlines()
    return len(lines) >= (2 if builder == "csv" else 1)  # a CSV's first line is its header


def check_sources(cfg: Any) -> None:
    """Checks that need no data loading: run before anything heavy."""
    if cfg.source not in SOURCES:
        raise ConfigError(f"dataset.source='{cfg.source}' is not valid; choose one of {list(SOURCES)}.")
    if cfg.source in ("csv", "json"):
        if cfg.train_file is None:
            raise ConfigError(f"dataset.train_file is required for dataset.source={cfg.source}.")
        for split in SPLITS:
            _check_file(f"{split}_file", cfg.get(f"{split}_file"))
    if cfg.source == "embedded":
        embedded_dataset_file(cfg.name)
    if cfg.source == "hub" and not cfg.name:
        raise ConfigError("dataset.name must name a hub dataset (e.g. nyu-mll/glue) for dataset.source=hub.")
    for key in ("validation_size", "test_size"):
        size = cfg[key]
        if size <= 0 or (isinstance(size, float) and size >= 1 and not float(size).is_integer()):
            raise ConfigError(f"dataset.{key}={size}: give a fraction in (0, 1) or a number of examples.")
    for key in ("max_length", "max_train_samples", "max_eval_samples", "max_test_samples"):
        if cfg[key] is not None and cfg[key] <= 0:
            raise ConfigError(f"dataset.{key}={cfg[key]} must be a positive integer (or null for no limit).")


def _load_raw(cfg: Any) -> DatasetDict:
    kwargs = dict(cfg.load_kwargs or {})
    if cfg.source == "embedded":
        path = embedded_dataset_file(cfg.name)
        # ~4,900 lines of the tweets corpus hold bytes that are not UTF-8 (GUIDE §2).
        return load_dataset("csv", data_files={"train": str(path)}, encoding_errors="replace", **kwargs)
    if cfg.source in ("csv", "json"):
        out = {}
        for split in SPLITS:
            path = _check_file(f"{split}_file", cfg.get(f"{split}_file"))
            if path is None:
                continue
            # Each file by its own suffix: a .csv train set may come with .tsv dev/test files.
            builder, extra = _file_builder(path, cfg.source)
            if not _has_rows(path, builder):
                raise ConfigError(f"dataset.{split}_file='{path}' holds no examples (the {split} split is empty).")
            try:
                out[split] = load_dataset(builder, data_files={split: str(path)}, **{**extra, **kwargs})[split]
            except DatasetGenerationError as err:
                cause = err.__cause__ or err
                raise ConfigError(
                    f"dataset.{split}_file='{path}' could not be read as {builder.upper()} "
                    f"({type(cause).__name__}: {str(cause).strip().splitlines()[-1]}). Check the delimiter "
                    "(.tsv files are read tab-separated; pass dataset.load_kwargs.delimiter otherwise)."
                ) from None
        return DatasetDict(out)
    raw = load_dataset(cfg.name, cfg.subset, **kwargs)
    wanted = {"train": cfg.train_split, "validation": cfg.validation_split, "test": cfg.test_split}
    out = {}
    for split, name in wanted.items():
        if name is None:
            continue
        if name not in raw:
            raise ConfigError(f"dataset.{split}_split='{name}' is not a split of {cfg.name}; it has {list(raw)}.")
        out[split] = raw[name]
    return DatasetDict(out)


def _normalise_columns(raw: DatasetDict, cfg: Any) -> DatasetDict:
    wanted = {cfg.text_column: "text", cfg.label_column: "label"}
    if cfg.text_pair_column:
        wanted[cfg.text_pair_column] = "text_pair"
    role = {cfg.text_column: "text_column", cfg.label_column: "label_column", cfg.text_pair_column: "text_pair_column"}
    for split, ds in raw.items():
        for column in wanted:
            if column not in ds.column_names:
                raise ConfigError(
                    f"dataset.{role[column]}='{column}' is not a column of the {split} split; "
                    f"its columns are {ds.column_names}."
                )
    out = DatasetDict()
    for split, ds in raw.items():
        ds = ds.select_columns(list(wanted))
        ds = ds.rename_columns({k: v for k, v in wanted.items() if k != v})
        text_cols = [c for c in ("text", "text_pair") if c in ds.column_names]
        ds = ds.filter(_is_complete, fn_kwargs={"text_cols": text_cols})
        out[split] = _deduplicate(ds, text_cols) if cfg.deduplicate else ds
    return out


def _is_complete(example: dict, text_cols: list[str]) -> bool:
    return example["label"] is not None and all(isinstance(example[c], str) and example[c].strip() for c in text_cols)


def _deduplicate(ds: Dataset, text_cols: list[str]) -> Dataset:
    # select() on first-occurrence indices keeps the dataset on disk and fingerprinted,
    # so later map() calls stay cached.
    frame = ds.select_columns(text_cols).to_pandas()
    keep = (~frame.duplicated(subset=text_cols, keep="first")).to_numpy().nonzero()[0]
    return ds if len(keep) == len(ds) else ds.select(keep)


def _label_names(train: Dataset, cfg: Any) -> list[str]:
    feature = train.features["label"]
    if isinstance(feature, ClassLabel):
        return list(cfg.label_names or feature.names)
    if cfg.label_names:
        return [str(n) for n in cfg.label_names]
    return sorted(
        {str(v) for v in train.unique("label")},
        key=lambda s: (not s.lstrip("-").isdigit(), int(s) if s.lstrip("-").isdigit() else 0, s),
    )


def _encode_labels(ds: DatasetDict, names: list[str], cfg: Any) -> DatasetDict:
    index = {n: i for i, n in enumerate(names)}
    out = DatasetDict()
    for split, d in ds.items():
        feature = d.features["label"]
        if isinstance(feature, ClassLabel):
            d = d.map(lambda ex, f=feature: {"label": f.int2str(ex["label"]) if ex["label"] >= 0 else None})
            d = d.filter(lambda ex: ex["label"] is not None)
        seen = {str(v) for v in d.unique("label")}
        unknown = sorted(seen - set(index))
        if unknown:
            raise ConfigError(
                f"The {split} split has labels never seen in train: {unknown[:10]} "
                f"(column dataset.label_column='{cfg.label_column}'; train labels are {names}). "
                "Fix the data, or list every label in dataset.label_names."
            )
        d = d.map(lambda ex: {"label_id": index[str(ex["label"])]}).remove_columns("label")
        d = d.rename_column("label_id", "label").cast_column("label", ClassLabel(names=names))
        out[split] = d
    return out


def _carve(ds: Dataset, size: float | int, seed: int) -> tuple[Dataset, Dataset]:
    size = int(size) if size >= 1 else size
    try:
        parts = ds.train_test_split(test_size=size, stratify_by_column="label", seed=seed)
    except ValueError:  # a class too rare to stratify: fall back to a seeded random split
        parts = ds.train_test_split(test_size=size, seed=seed)
    return parts["train"], parts["test"]


def _subsample(ds: Dataset, n: int | None, seed: int) -> Dataset:
    if n is None or n >= len(ds):
        return ds
    try:
        return ds.train_test_split(train_size=n, stratify_by_column="label", seed=seed)["train"]
    except ValueError:
        return ds.shuffle(seed=seed).select(range(n))


def load_splits(cfg: Any) -> LabeledSplits:
    check_sources(cfg)
    raw = _normalise_columns(_load_raw(cfg), cfg)
    if "train" not in raw or len(raw["train"]) == 0:
        raise ConfigError(f"The train split of dataset '{cfg.name or cfg.train_file}' is empty.")
    names = _label_names(raw["train"], cfg)
    if len(names) < 2:
        raise ConfigError(
            f"dataset.label_column='{cfg.label_column}' has {len(names)} distinct label(s) in train "
            f"({names}); classification needs at least two."
        )
    splits = _encode_labels(raw, names, cfg)
    train = splits["train"]
    if "test" not in splits:
        train, splits["test"] = _carve(train, cfg.test_size, cfg.split_seed)
    if "validation" not in splits:
        size = cfg.validation_size
        if "test" not in raw and size < 1:  # keep validation_size a fraction of the whole data
            size = size / (1 - cfg.test_size) if cfg.test_size < 1 else size
        train, splits["validation"] = _carve(train, size, cfg.split_seed)
    splits["train"] = train
    limits = {"train": cfg.max_train_samples, "validation": cfg.max_eval_samples, "test": cfg.max_test_samples}
    splits = DatasetDict({s: _subsample(splits[s], limits[s], cfg.split_seed) for s in SPLITS})
    for split, d in splits.items():
        if len(d) == 0:
            raise ConfigError(
                f"The {split} split is empty after loading and filtering (rows need a non-empty "
                f"'{cfg.text_column}' and a '{cfg.label_column}'); check the file and split sizes."
            )
    return LabeledSplits(splits=splits, label_names=names)

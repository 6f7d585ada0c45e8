"""Turn a `dataset` config into train/validation/test splits, losing no row silently.

Every source (embedded, csv, json, hub) ends in the same shape: the columns the task reads,
renamed to their roles (``text``, optionally ``text_pair``, ``label``). What a label is
(a class, a tag sequence, a target text), when a row is empty and how labels become ids is
the task's (``ptexp.tasks``). Splits the source lacks are carved from train, stratified
where the task says so, with a fixed seed, so every run sees the same split.

Files are checked as they are read: the rows read are logged per file and compared with the
records the file holds, and a row with the wrong number of fields stops the run with the file
and line named. A ``.tsv`` file is one example per line (GLUE's convention): a stray quote
never joins lines. Rows left out on purpose (empty text or label, duplicates) are counted in
the log.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ptexp.embedded import embedded_dataset_file
from ptexp.errors import ConfigError

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

    from ptexp.tasks import Task

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
SOURCES = ("embedded", "csv", "json", "hub")
# load_kwargs the one-example-per-line TSV reader honours; any other key (e.g. quoting) sends a
# .tsv file through the CSV parser with those options instead.
TSV_READER_KWARGS = frozenset({"encoding", "encoding_errors"})
# The CSV dialect options pandas (datasets' csv builder) and Python's csv module share, under
# the csv module's names: with only these (and COUNT_NEUTRAL_KWARGS) in load_kwargs, the
# records of a file can be counted independently of pandas.
CSV_DIALECT_KWARGS = {
    "delimiter": "delimiter",
    "sep": "delimiter",
    "quotechar": "quotechar",
    "quoting": "quoting",
    "doublequote": "doublequote",
    "escapechar": "escapechar",
}
COUNT_NEUTRAL_KWARGS = frozenset(
    {"encoding", "encoding_errors", "features", "dtype", "na_values", "keep_default_na", "na_filter", "cache_dir"}
    | {"download_mode", "verification_mode", "keep_in_memory", "num_proc"}
)


@dataclass
class LabeledSplits:
    splits: DatasetDict
    label_names: list[str]

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


@dataclass
class Table:
    """A data file read row by row: its columns, its rows, and each row's line in the file."""

    columns: list[str]
    rows: list[dict[str, Any]]
    lines: list[int]


# --- checks that need no data loading -------------------------------------------------------


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


def check_sources(cfg: Any) -> None:
    """Checks that need no data loading: ptexp.validate.check_run runs them once per run,
    before anything heavy (load_splits does not repeat them)."""
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


# --- reading files row by row (no pandas: the independent count every load is checked against)


def file_format(path: Path, source: str = "csv", load_kwargs: dict[str, Any] | None = None) -> tuple[str, dict]:
    """("tsv" | "csv" | "json", the options to read it with) for a data file, by its suffix."""
    kwargs = dict(load_kwargs or {})
    suffix = path.suffix.lower()
    if source == "json" or suffix in (".json", ".jsonl"):
        return "json", kwargs
    if suffix == ".tsv":
        if set(kwargs) <= TSV_READER_KWARGS:
            return "tsv", kwargs
        return "csv", {"delimiter": "\t", **kwargs}
    return "csv", kwargs


def _encoding(options: dict[str, Any]) -> tuple[str, str]:
    encoding = options.get("encoding") or "utf-8"
    # utf-8-sig reads a byte-order mark (as spreadsheets write) as nothing, not as part of the first column name.
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        encoding = "utf-8-sig"
    return encoding, options.get("encoding_errors") or "strict"


@contextmanager
def _decoding(what: str, options: dict[str, Any], path: Path) -> Iterator[None]:
    try:
        yield
    except UnicodeDecodeError as err:
        # The reader decodes ahead in blocks: the line being read is not where the bad byte is.
        raw = Path(path).read_bytes()
        try:
            raw.decode(_encoding(options)[0])
            line = "?"
        except UnicodeDecodeError as exact:
            line = str(raw[: exact.start].count(b"\n") + 1)
        raise ConfigError(
            f"{what} is not {options.get('encoding') or 'UTF-8'} text ({err.reason}) on line {line}. "
            "Name its encoding with +dataset.load_kwargs.encoding=latin-1 (for example), or replace the "
            "bad bytes with +dataset.load_kwargs.encoding_errors=replace."
        ) from None


def _unquote(field: str) -> str:
    """A field quoted as a whole the way spreadsheets and csv/pandas writers quote ("...", inner
    quotes doubled) loses its quotes; any other quote is part of the text."""
    if len(field) >= 2 and field[0] == field[-1] == '"':
        inner = field[1:-1]
        if '"' not in inner.replace('""', ""):
            return inner.replace('""', '"')
    return field


def _tsv_records(path: Path, what: str, options: dict[str, Any]) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank line; fields are split at tabs."""
    encoding, errors = _encoding(options)
    # newline="\n": only a line feed ends a record, so a carriage return inside a text stays text.
    with _decoding(what, options, path), open(path, encoding=encoding, errors=errors, newline="\n") as f:
        for number, line in enumerate(f, 1):
            line = line.removesuffix("\n").removesuffix("\r")
            if line.strip():
                yield number, [_unquote(field) for field in line.split("\t")]


def _csv_dialect(options: dict[str, Any]) -> dict[str, Any]:
    dialect = {CSV_DIALECT_KWARGS[k]: v for k, v in options.items() if k in CSV_DIALECT_KWARGS}
    dialect.setdefault("delimiter", ",")
    return dialect


def _csv_records(path: Path, what: str, options: dict[str, Any]) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) of every non-blank record, by Python's csv module: a quoted field
    may hold delimiters and line breaks."""
    encoding, errors = _encoding(options)
    limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # a long text is data, not an error
    try:
        with _decoding(what, options, path), open(path, encoding=encoding, errors=errors, newline="") as f:
            reader = csv.reader(f, **_csv_dialect(options))
            start = 1
            try:
                for fields in reader:
                    if fields:  # ",": an empty record is still a row (dropped and counted later)
                        yield start, fields
                    start = reader.line_num + 1
            except csv.Error as err:
                raise ConfigError(f"{what} could not be read as CSV at line {start} ({err}).") from None
    finally:
        csv.field_size_limit(limit)


def _json_records(path: Path, what: str, options: dict[str, Any]) -> Iterator[tuple[int, Any]]:
    """(line or position, record) of a JSON-lines file or of a file holding one JSON list."""
    encoding, errors = _encoding(options)
    text = path.read_text(encoding=encoding, errors=errors)
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{what} is not valid JSON (line {err.lineno}: {err.msg}).") from None
        yield from enumerate(records, 1)
        return
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(
                f"{what}: line {number} is not a JSON object ({err.msg} at column {err.colno}). ptexp reads "
                "JSON lines (one object per line) or one JSON list of objects; for other layouts name the list with "
                "+dataset.load_kwargs.field=..."
            ) from None


def _ragged_message(what: str, kind: str, options: dict[str, Any], header: list[str], ragged: list) -> str:
    line, n = ragged[0]
    others = f"; {len(ragged) - 1} more line(s) after it too" if len(ragged) > 1 else ""
    if kind == "tsv":
        hint = (
            "A .tsv file is read one example per line, fields split at tabs, quotes taken as text: "
            "a tab inside a text makes extra fields, a line break inside a text makes too few. "
            "Replace tabs and line breaks inside texts with spaces."
        )
    else:
        delimiter = _csv_dialect(options)["delimiter"]
        name = {",": "comma", "\t": "tab", ";": "semicolon"}.get(delimiter, repr(delimiter))
        hint = (
            f'A {name} inside a text splits it unless the text is quoted ("hello, world"); a quote '
            "that opens a field and never closes swallows the lines after it. Quote such texts "
            "(any CSV writer does), or write the file tab-separated as .tsv."
        )
    return (
        f"{what} has {n} field(s) on line {line} but its header has {len(header)} "
        f"({', '.join(header)}){others}, so its rows would be misread. {hint}"
    )


def _checked_records(path: Path, what: str, kind: str, options: dict[str, Any]) -> tuple[list[str], Iterator]:
    """The header and an iterator of (line, fields) that raises on the first ragged row —
    after counting the others, so the message says how many there are."""
    records = (_tsv_records if kind == "tsv" else _csv_records)(path, what, options)
    first = next(records, None)
    if first is None:
        raise ConfigError(f"{what} is empty: it has no header line.")
    header = first[1]

    def rows() -> Iterator[tuple[int, list[str]]]:
        ragged = []
        for line, fields in records:
            if len(fields) != len(header):
                ragged.append((line, len(fields)))
            elif not ragged:
                yield line, fields
        if ragged:
            raise ConfigError(_ragged_message(what, kind, options, header, ragged))

    return header, rows()


def read_table(path: Path, what: str | None = None, load_kwargs: dict[str, Any] | None = None) -> Table:
    """Every row of a .csv/.tsv/.json(l) file, with the same checks as training data (ragged rows
    are an error naming the line). Empty cells read as None."""
    what = what or f"{path}"
    kind, options = file_format(path, "csv", load_kwargs)
    if kind == "json":
        rows, lines = [], []
        for line, record in _json_records(path, what, options):
            if not isinstance(record, dict):
                raise ConfigError(f"{what}: record {line} is not a JSON object with named fields.")
            rows.append(record)
            lines.append(line)
        columns = list(dict.fromkeys(k for r in rows for k in r))
        return Table(columns, rows, lines)
    header, records = _checked_records(path, what, kind, options)
    rows, lines = [], []
    for line, fields in records:
        rows.append({k: (v if v != "" else None) for k, v in zip(header, fields)})
        lines.append(line)
    return Table(header, rows, lines)


def _count_records(path: Path, what: str, kind: str, options: dict[str, Any]) -> int:
    if kind == "json":
        return sum(1 for _ in _json_records(path, what, options))
    _, records = _checked_records(path, what, kind, options)
    return sum(1 for _ in records)


# --- loading splits --------------------------------------------------------------------------


def _tsv_examples(path: str, stamp: tuple[int, int], options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    # `stamp` (mtime, size) is unused here: it is part of the datasets cache key, so an edited
    # file is read again instead of served from the cache.
    yield from read_table(Path(path), path, options).rows


@contextmanager
def _quiet_datasets_parsers() -> Iterator[None]:
    """datasets logs a parser failure at ERROR level before raising it; ptexp reports it once,
    as a ConfigError that names the file, so the log line would only repeat it."""
    loggers = [logging.getLogger(f"datasets.packaged_modules.{m}.{m}") for m in ("csv", "json")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _first_difference(path: Path, what: str, options: dict[str, Any], ds: Dataset, column: str) -> int | None:
    """The line of the first record whose text the parser read differently (where rows merged)."""
    header, records = _checked_records(path, what, "csv", options)
    if column not in header or column not in ds.column_names:
        return None
    index, parsed, line = header.index(column), ds[column], None
    for i, (line, fields) in enumerate(records):
        if i >= len(parsed) or (parsed[i] is not None and str(parsed[i]) != fields[index]):
            return line
    return line


def _check_no_merged_lines(ds: Dataset, what: str) -> None:
    """A TSV read with quote processing (an opt-in): one example per line is the format, so a
    field holding a line break or a tab means a quote joined lines, which no row count of the
    same parser can see."""
    for column in ds.column_names:
        for row, value in enumerate(ds[column]):
            if isinstance(value, str) and ("\n" in value or "\t" in value):
                raise ConfigError(
                    f"{what}: row {row + 1}'s {column!r} holds a line break or a tab: with quote processing "
                    "(dataset.load_kwargs) a quote joined lines of this TSV. Drop the quoting option: ptexp reads "
                    ".tsv files one example per line, quotes kept as text."
                )


def read_data_file(
    path: Path, what: str, source: str = "csv", load_kwargs: dict[str, Any] | None = None, text_column: str = "text"
) -> Dataset:
    """One data file as a datasets.Dataset, every record of the file read as one row (else a
    ConfigError naming the line); logs the rows read."""
    from datasets import Dataset, Features, Value, load_dataset
    from datasets.exceptions import DatasetGenerationError

    kind, options = file_format(path, source, load_kwargs)
    if kind == "tsv":
        header = read_table(path, what, options).columns  # checks every line before the cache is filled
        stat = path.stat()
        ds = Dataset.from_generator(
            _tsv_examples,
            gen_kwargs={"path": str(path.resolve()), "stamp": (stat.st_mtime_ns, stat.st_size), "options": options},
            features=Features({c: Value("string") for c in header}),
        )
        log.info("%s: %d rows", path.name, len(ds))
        return ds
    unchecked = sorted(set(options) - COUNT_NEUTRAL_KWARGS - set(CSV_DIALECT_KWARGS))
    expected = None if unchecked else _count_records(path, what, kind, options)
    builder = "json" if kind == "json" else "csv"
    try:
        with _quiet_datasets_parsers():
            ds = load_dataset(builder, data_files={"data": str(path)}, **options)["data"]
    except DatasetGenerationError as err:
        cause = err.__cause__ or err
        raise ConfigError(
            f"{what} could not be read as {builder.upper()} "
            f"({type(cause).__name__}: {str(cause).strip().splitlines()[-1]}). Check the delimiter "
            "(.tsv files are read tab-separated; pass +dataset.load_kwargs.delimiter=... otherwise)."
        ) from None
    if kind == "csv" and path.suffix.lower() == ".tsv":
        _check_no_merged_lines(ds, what)
    if expected is None:
        log.info("%s: %d rows (not compared with the file: dataset.load_kwargs sets %s)", path.name, len(ds), unchecked)
    elif len(ds) != expected:
        line = _first_difference(path, what, options, ds, text_column) if kind == "csv" else None
        where = f", from line {line} on" if line else ""
        raise ConfigError(
            f"{what} holds {expected} records but {len(ds)} rows were read{where}: rows were merged or "
            f"split by the {builder.upper()} parser. Check the quoting around that line (a quote that opens "
            "a field and never closes joins the lines after it), or pass the parser options that fit the "
            "file as +dataset.load_kwargs.<key>=... (delimiter, quotechar, quoting)."
        )
    else:
        log.info("%s: %d rows", path.name, len(ds))
    return ds


def _load_raw(cfg: Any) -> tuple[DatasetDict, dict[str, str]]:
    """The source's splits, and for each a name to report it by (its file's name)."""
    from datasets import DatasetDict, load_dataset

    kwargs = dict(cfg.load_kwargs or {})
    if cfg.source == "embedded":
        path = embedded_dataset_file(cfg.name)
        # ~4,900 lines of the tweets corpus hold bytes that are not UTF-8.
        what = f"the embedded dataset '{cfg.name}' ({path})"
        ds = read_data_file(path, what, "csv", {"encoding_errors": "replace", **kwargs}, cfg.text_column)
        return DatasetDict({"train": ds}), {"train": f"the embedded '{cfg.name}' corpus"}
    if cfg.source in ("csv", "json"):
        out, names = {}, {}
        for split in SPLITS:
            path = _check_file(f"{split}_file", cfg.get(f"{split}_file"))
            if path is None:
                continue
            # Each file by its own suffix: a .csv train set may come with .tsv dev/test files.
            what = f"dataset.{split}_file='{path}'"
            if not _has_rows(path, file_format(path, cfg.source, kwargs)[0]):
                raise ConfigError(f"{what} holds no examples (the {split} split is empty).")
            out[split] = read_data_file(path, what, cfg.source, kwargs, cfg.text_column)
            names[split] = path.name
        return DatasetDict(out), names
    raw = load_dataset(cfg.name, cfg.subset, **kwargs)
    wanted = {"train": cfg.train_split, "validation": cfg.validation_split, "test": cfg.test_split}
    out, names = {}, {}
    for split, name in wanted.items():
        if name is None:
            continue
        if name not in raw:
            raise ConfigError(f"dataset.{split}_split='{name}' is not a split of {cfg.name}; it has {list(raw)}.")
        out[split] = raw[name]
        names[split] = f"the '{name}' split of {cfg.name}"
        log.info("%s: %d rows", names[split], len(raw[name]))
    return DatasetDict(out), names


def _has_rows(path: Path, kind: str) -> bool:
    lines = path.read_bytes()[:65536].strip().splitlines()
    return len(lines) >= (1 if kind == "json" else 2)  # a CSV/TSV's first line is its header


def _normalise_columns(raw: DatasetDict, cfg: Any, names: dict[str, str], task: Task) -> DatasetDict:
    from datasets import DatasetDict

    wanted = task.columns(cfg)
    role = {column: task.column_keys[r] for column, r in wanted.items()}
    for split, ds in raw.items():
        for column in wanted:
            if column not in ds.column_names:
                raise ConfigError(
                    f"dataset.{role[column]}='{column}' is not a column of the {split} split "
                    f"({names[split]}); its columns are {ds.column_names}."
                )
    out = DatasetDict()
    for split, ds in raw.items():
        ds = ds.select_columns(list(wanted))
        ds = ds.rename_columns({k: v for k, v in wanted.items() if k != v})
        text_cols = [c for c in task.input_roles if c in ds.column_names]
        before = len(ds)
        ds = ds.filter(task.is_complete, desc="complete rows")
        if len(ds) < before:
            empty = " or ".join(text_cols)
            log.warning("dropped %d rows of %s with an empty %s or label", before - len(ds), names[split], empty)
        if cfg.deduplicate:
            before = len(ds)
            ds = _deduplicate(ds, text_cols)
            if len(ds) < before:
                log.info(
                    "removed %d duplicate texts from %s (dataset.deduplicate=true keeps the first of each)",
                    before - len(ds),
                    names[split],
                )
        out[split] = ds
    return out


def _deduplicate(ds: Dataset, text_cols: list[str]) -> Dataset:
    # Keys as JSON: a tagging task's inputs are lists, which neither sets nor pandas hash.
    seen: set[str] = set()
    keep = []
    for i, key in enumerate(zip(*(ds[c] for c in text_cols))):
        text = json.dumps(key, ensure_ascii=False)
        if text not in seen:
            seen.add(text)
            keep.append(i)
    # select() on first-occurrence indices keeps the dataset on disk and fingerprinted,
    # so later map() calls stay cached.
    return ds if len(keep) == len(ds) else ds.select(keep)


def _carve(ds: Dataset, size: float | int, seed: int, stratify: str | None) -> tuple[Dataset, Dataset]:
    size = int(size) if size >= 1 else size
    try:
        parts = ds.train_test_split(test_size=size, stratify_by_column=stratify, seed=seed)
    except ValueError:  # a class too rare to stratify: fall back to a seeded random split
        parts = ds.train_test_split(test_size=size, seed=seed)
    return parts["train"], parts["test"]


def _subsample(ds: Dataset, n: int | None, seed: int, stratify: str | None) -> Dataset:
    if n is None or n >= len(ds):
        return ds
    try:
        return ds.train_test_split(train_size=n, stratify_by_column=stratify, seed=seed)["train"]
    except ValueError:
        return ds.shuffle(seed=seed).select(range(n))


def load_splits(cfg: Any) -> LabeledSplits:
    """The train/validation/test splits of a `dataset` config that check_sources has passed
    (ptexp.validate.check_run runs it once per run, before this), labels encoded by the task."""
    from datasets import DatasetDict

    from ptexp import splits_cache
    from ptexp.tasks import get_task

    task = get_task(cfg.task)
    cache = splits_cache.cache_dir(cfg, task)
    cached = splits_cache.load(cache)
    if cached is not None:
        return cached
    raw, names = _load_raw(cfg)
    raw = _normalise_columns(raw, cfg, names, task)
    if "train" not in raw or len(raw["train"]) == 0:
        raise ConfigError(f"The train split of dataset '{cfg.name or cfg.train_file}' is empty.")
    splits, label_names = task.encode_labels(raw, cfg, names)
    stratify = task.stratify_column
    train = splits["train"]
    if "test" not in splits:
        train, splits["test"] = _carve(train, cfg.test_size, cfg.split_seed, stratify)
    if "validation" not in splits:
        size = cfg.validation_size
        if "test" not in raw and size < 1:  # keep validation_size a fraction of the whole data
            size = size / (1 - cfg.test_size) if cfg.test_size < 1 else size
        train, splits["validation"] = _carve(train, size, cfg.split_seed, stratify)
    splits["train"] = train
    limits = {"train": cfg.max_train_samples, "validation": cfg.max_eval_samples, "test": cfg.max_test_samples}
    splits = DatasetDict({s: _subsample(splits[s], limits[s], cfg.split_seed, stratify) for s in SPLITS})
    for split, d in splits.items():
        if len(d) == 0:
            raise ConfigError(
                f"The {split} split is empty after loading and filtering (rows need a non-empty "
                f"'{cfg.text_column}' and a '{cfg.label_column}'); check the file and split sizes."
            )
    data = LabeledSplits(splits=splits, label_names=label_names)
    splits_cache.save(cache, data)
    return data

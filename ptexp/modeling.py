"""The backbone: where it comes from (embedded, local folder, HF cache, hub), loading it with
its task head quietly, and handing it to the run's method."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ptexp.embedded import resolve_model_path
from ptexp.errors import ConfigError
from ptexp.tasks import Task

log = logging.getLogger(__name__)


def _looks_local(value: str) -> bool:
    return value.startswith((".", "/", "~")) or Path(value).expanduser().exists()


def load_backbone_config(model_cfg: DictConfig) -> tuple[str, Any]:
    """Resolve ``model.name_or_path`` and read its config.json only (no weights).

    Order: the embedded package, a local folder, the local HF cache, then the hub —
    and a missing local folder is an error at once rather than a hub lookup.
    """
    from transformers import AutoConfig

    path = resolve_model_path(model_cfg.name_or_path)
    kwargs = {"revision": model_cfg.revision, "trust_remote_code": model_cfg.trust_remote_code}
    if _looks_local(path):
        if not Path(path).expanduser().is_dir():
            raise ConfigError(
                f"model.name_or_path='{model_cfg.name_or_path}' looks like a local folder but does not exist "
                f"({Path(path).expanduser().resolve()}). Give an existing folder with config.json and weights, "
                "a hub id such as bert-base-uncased, or embedded:all-MiniLM-L6-v2."
            )
        path = str(Path(path).expanduser())
    try:
        return path, AutoConfig.from_pretrained(path, local_files_only=True, **kwargs)
    except OSError:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise ConfigError(
            f"model.name_or_path='{model_cfg.name_or_path}' is not a local folder nor in the local HF cache, "
            "and HF_HUB_OFFLINE is set. Download it once with network, point to a local copy, or use model=minilm "
            "(embedded; an encoder, for SEQ_CLS and TOKEN_CLS)."
        )
    endpoint = hub_endpoint()
    if not reachable(endpoint):
        # huggingface_hub would retry for most of a minute, warning each time, before failing.
        raise ConfigError(
            f"model.name_or_path='{model_cfg.name_or_path}' is not a local folder nor in the local HF cache, "
            f"and the hub ({endpoint}) cannot be reached from this machine. Download it once where there is a "
            "network (or set HF_HOME to a shared cache), point to a local copy, or use model=minilm "
            "(embedded; an encoder, for SEQ_CLS and TOKEN_CLS)."
        )
    try:
        return path, AutoConfig.from_pretrained(path, **kwargs)
    except OSError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"model.name_or_path='{model_cfg.name_or_path}' is not a local folder, not in the local HF cache, "
            f"and could not be fetched from the hub ({first_line}). Check the id or the network, point to a "
            "local copy, or use model=minilm (embedded, offline; an encoder, for SEQ_CLS and TOKEN_CLS)."
        ) from None


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def reachable(url: str, timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to the URL's host opens within a few seconds."""
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False


HEAD_PREFIXES = ("classifier.", "score.", "pre_classifier.", "qa_outputs.")
DROPPED_PREFIXES = ("pooler.",)


class _NewHeadOnly(logging.Filter):
    """Drops transformers' LOAD REPORT when all it reports is the task head being new, which
    is how every P-tuning run starts (and predict restores the head from the adapter)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message:
            return True
        rows = [line.split("|") for line in message.splitlines() if line.count("|") >= 2]
        entries = [(key.strip(), status.strip()) for key, status, *_ in rows[1:] if key.strip()]
        # A token-classification model has no pooler: the checkpoint's pooler is expected to go unused.
        expected = [(k, st) for k, st in entries if not (st == "UNEXPECTED" and k.startswith(DROPPED_PREFIXES))]
        head_only = bool(expected) and all(st == "MISSING" and k.startswith(HEAD_PREFIXES) for k, st in expected)
        if head_only:
            log.info("new task head: %s", ", ".join(k for k, _ in entries))
        return not head_only


@contextmanager
def quiet_new_head() -> Iterator[None]:
    """Load a backbone without the "newly initialized" report for its (expected) new head."""
    from transformers.utils import logging as hf_logging

    logger = hf_logging.get_logger("transformers.modeling_utils")
    quiet = _NewHeadOnly()
    logger.addFilter(quiet)
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        logger.removeFilter(quiet)
        if was_enabled:
            hf_logging.enable_progress_bar()


def count_parameters(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def load_backbone(model_cfg: DictConfig, task: Task, label_names: list[str], backbone: Any = None) -> tuple[Any, Any]:
    """(tokenizer, backbone with a fresh task head). ``backbone`` (a transformers config) builds
    random weights instead of loading pretrained ones: the tests' tiny models."""
    from transformers import AutoTokenizer

    path = str(Path(resolve_model_path(model_cfg.name_or_path)).expanduser())
    tokenizer = AutoTokenizer.from_pretrained(path, revision=model_cfg.revision)
    auto = task.auto_model_class()
    kwargs = task.model_kwargs(label_names)
    if backbone is not None:
        for key, value in kwargs.items():
            setattr(backbone, key, value)
        base = auto.from_config(backbone)
    else:
        with quiet_new_head():
            base = auto.from_pretrained(
                path, revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code, **kwargs
            )
    if base.config.pad_token_id is None and tokenizer.pad_token_id is not None:
        base.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, base


def build_model(cfg: DictConfig, task: Task, label_names: list[str], backbone: Any = None) -> tuple[Any, Any]:
    """(tokenizer, model): the backbone prepared by the run's method (``cfg.method``)."""
    from ptexp.methods import get_method

    tokenizer, base = load_backbone(cfg.model, task, label_names, backbone)
    model = get_method(cfg.method.name).build(base, cfg, task, tokenizer)
    trainable, total = count_parameters(model)
    log.info("parameters: %s trainable of %s (%.3f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    return tokenizer, model

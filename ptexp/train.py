"""`ptexp-train`: the Hydra entry point for one run or (with -m) a sweep.

Only hydra/omegaconf are imported at start-up, so `--help` and `--cfg job` are instant;
torch and transformers load when the task runs.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import ptexp.schema  # noqa: F401  (registers the structured configs)
from ptexp.errors import ConfigError

log = logging.getLogger("ptexp")


def slug(text: str, limit: int = 80) -> str:
    """A folder-safe name for a list of overrides; long ones keep a readable head plus a hash."""
    if not text:
        return "default"
    safe = re.sub(r"[^A-Za-z0-9=,._+-]+", "_", text)
    if len(safe) <= limit:
        return safe
    return f"{safe[: limit - 13]}_{hashlib.sha1(text.encode()).hexdigest()[:12]}"


if not OmegaConf.has_resolver("ptexp_slug"):
    OmegaConf.register_new_resolver("ptexp_slug", slug)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from ptexp.run import run

    hc = HydraConfig.get()
    try:
        metrics = run(cfg, Path(hc.runtime.output_dir), overrides=list(hc.overrides.task))
    except ConfigError as err:
        log.error("%s", err)
        sys.stderr.write(f"\nptexp: configuration error: {err}\n")
        raise SystemExit(2) from None
    return metrics["validation"].get(cfg.trainer.get("metric_for_best_model", "accuracy"))


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, then run it.
# torch goes first and pinned: an unpinned requirement would pull a multi-GB CUDA build
# (a CPU wheel of torch 2.13.0 is what pip finds on the project's machines).
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
python -m pip install --quiet --disable-pip-version-check -e ".[test]"

export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_SILENT=true
python -m ruff check ptexp tests scripts hydra_plugins

# A real single-node SLURM (munge, slurmctld, slurmd, slurmdbd + MariaDB) for the slurm-marked
# tests; PTEXP_SKIP_SLURM=1 runs the rest of the suite without it.
if [ "${PTEXP_SKIP_SLURM:-0}" != "1" ]; then
  bash scripts/slurm-local.sh up
  eval "$(bash scripts/slurm-local.sh env)"
  trap 'bash scripts/slurm-local.sh down >/dev/null 2>&1 || true' EXIT
else
  set -- -m "not slurm" "$@"
fi
python -m pytest "$@"
